"""The inspection stage: read what the copied guest carries, and write the few files it needs.

The guest inspector (``guest/inspector.py``) runs as a supervised child with the
system's Python and libguestfs. It reports the guest's OS, default kernel and
modules, and downloads that kernel's initramfs into the job's work directory;
the daemon reads the initramfs's member names in a thread, decides (pure code
in ``guest/``) which files to write, and sends them back: one appliance start
per disk set, also when it finds no operating system (it says so and exits:
nothing else starts the appliance for that job). Only copies are ever opened:
the source is never touched.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Optional, Sequence

from attrs import frozen
from twisted.internet.defer import Deferred, succeed

from ..errors import HyperSDKError
from ..guest.devices import DevicePlan
from ..guest.facts import GuestFacts, facts_from_report
from ..guest.initramfs import member_names
from ..guest.names import NamePlan
from .appliance import INSPECTOR, SYSTEM_PYTHON, appliance_failure
from .process import ChildProcess, ProcessRunner

# What to write once the facts are known: [(path in the guest, content)]
FilesFor = Callable[[GuestFacts], Sequence[tuple[str, str]]]


class InspectionFailed(HyperSDKError):
    code = "inspection_failed"


class NoOperatingSystem(InspectionFailed):
    code = "no_operating_system"


class _Replies:
    """The inspector's JSON lines, one awaited at a time; its other output is kept for errors."""

    def __init__(self):
        self._lines: list[dict] = []
        self._waiting: Optional[Deferred] = None
        self.stderr: list[str] = []
        self.timeout: Optional[float] = None
        self.timed_out = False

    def time_out(self, processes: ProcessRunner, child: ChildProcess) -> Deferred:
        self.timed_out = True
        return Deferred.fromCoroutine(processes.stop(child))

    def on_output(self, stream: str, line: str) -> None:
        if stream != "stdout":
            self.stderr = (self.stderr + [line])[-20:]
            return
        try:
            reply = json.loads(line)
        except ValueError:
            return
        if self._waiting is not None and not self._waiting.called:
            waiting, self._waiting = self._waiting, None
            waiting.callback(reply)
        else:
            self._lines.append(reply)

    def next(self, child: ChildProcess) -> Deferred:
        if self._lines:
            return succeed(self._lines.pop(0))
        waiting = self._waiting = Deferred()

        def ended(result):
            if waiting.called:
                return
            if self.timed_out:
                waiting.errback(InspectionFailed(f"the guest inspector did not finish within {self.timeout:g} s"
                                                 f" (last: {self.stderr[-1] if self.stderr else 'nothing'})"))
                return
            last = self.stderr[-1] if self.stderr else result.describe("the guest inspector")
            waiting.errback(InspectionFailed(f"the guest inspector ended early: {last}"))

        child.ended().addCallback(ended)
        return waiting


@frozen
class Adapted:
    """What the inspection stage decided: the domain's devices and the names written into the guest."""

    devices: DevicePlan
    facts: Optional[GuestFacts] = None
    names: Optional[NamePlan] = None
    written: tuple[str, ...] = ()
    note: str = ""  # why the guest was not read, when it was not
    unread: tuple[str, ...] = ()  # NICs whose names could not be known without reading the guest

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the user should know although the job goes on (a name that will not apply on KVM)."""
        return (self.names.warnings if self.names is not None else ()) + self.unread

    def describe(self) -> dict:
        return {"guest": None if self.facts is None else self.facts.describe(), "devices": self.devices.describe(),
                **(self.names.describe() if self.names is not None else {"pinned_interfaces": []}),
                "warnings": list(self.warnings), **({"guest_note": self.note} if self.note else {})}


async def inspect_guest(processes: ProcessRunner, in_thread, clock, *, drives: Sequence[tuple[str, str]],
                        work_dir: str, files_for: FilesFor, env: dict, timeout: float,
                        ) -> tuple[GuestFacts, list[str]]:
    """(what the guest carries, the files written into it). ``drives``: (path, format), boot disk first."""
    initramfs = os.path.join(work_dir, "guest-initramfs")
    argv = [SYSTEM_PYTHON, INSPECTOR, "--initramfs", initramfs, "--writable"]
    for path, fmt in drives:
        argv += ["--drive", f"{path}:{fmt}"]
    replies = _Replies()
    child = processes.spawn("guest inspector", argv, env=env, on_output=replies.on_output)
    replies.timeout = timeout
    timer = clock.callLater(timeout, replies.time_out, processes, child)
    try:
        report = await replies.next(child)
        if "error" in report:
            if report.get("launch_failed"):
                raise InspectionFailed("inspecting the copied guest: " + appliance_failure(
                    env, env.get("LIBGUESTFS_CACHEDIR", ""), report.get("log") or [report["error"]]))
            failure = NoOperatingSystem if report.get("no_os") else InspectionFailed
            raise failure(f"inspecting the copied guest: {report['error']}")
        paths = await in_thread(_thd_member_names, initramfs) if report.get("initramfs") else None
        facts = facts_from_report(report, paths)
        files = list(files_for(facts))
        child.send(json.dumps({"write": [{"path": path, "content": content} for path, content in files]}))
        written: list[str] = []
        if files:
            reply = await replies.next(child)
            if "error" in reply:
                raise InspectionFailed(f"writing into the copied guest: {reply['error']}")
            written = reply.get("written", [])
        result = await processes.wait(child)
        if not result.ok:
            raise InspectionFailed(result.describe("the guest inspector"))
        return facts, written
    finally:
        if timer.active():
            timer.cancel()
        await processes.stop(child)
        await in_thread(_thd_remove, initramfs)


def _thd_member_names(path: str) -> list[str]:
    with open(path, "rb") as f:
        return member_names(f.read())


def _thd_remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
