"""Whether the libguestfs appliance runs under KVM on this host, found out once, at start.

libguestfs reads and changes guests (virt-v2v, the guest inspector) from a small VM of its own, the
appliance. ``/dev/kvm`` may exist and open while KVM still cannot run it (a host that is itself a
VM whose CPU offers no VMX: qemu aborts on an MSR, or the appliance hangs), so nothing short of
starting it tells. The probe starts it once, on a scratch disk, through the guest inspector's
``--probe``, bounded in time and off the reactor. When it does not come up under KVM, or
``pipeline.libguestfs_force_tcg`` says so, libguestfs runs under TCG for the daemon's lifetime.
Jobs that need the appliance await ``backend()``; the API does not wait for the probe.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Callable, Optional, Sequence

from attrs import frozen
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from .. import guest
from ..threads import RemoteCallPool
from .commands import libguestfs_env
from .process import ProcessRunner
from .tools import Tools
from .workfiles import thd_make_private_dir

SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter with libguestfs' bindings (python3-guestfs)
INSPECTOR = os.path.join(os.path.dirname(guest.__file__), "inspector.py")  # not importable here: no guestfs
PROBE_TIMEOUT = 120.0  # a first start builds the appliance (seconds); a KVM that hangs is cut here
LOG_LINES = 5  # of libguestfs' own output, in a job's error
CACHE_DIR = ".libguestfs-cache"  # under the work directory: the appliance, built once and kept


def cache_dir(work_root: str) -> str:
    return os.path.join(work_root, CACHE_DIR)


def appliance_probe(reactor, *, work_root: str, forced: bool, kill_grace: float, vddk_libdir: Optional[str]
                    ) -> "ApplianceProbe":
    """The daemon's probe, with a thread of its own for its few file-system calls."""
    threads = RemoteCallPool(minthreads=0, maxthreads=1, name="appliance-probe")
    return ApplianceProbe(ProcessRunner(reactor, kill_grace), reactor,
                          lambda fn, *args: deferToThreadPool(reactor, threads, fn, *args), python=SYSTEM_PYTHON,
                          inspector=INSPECTOR, work_root=work_root, forced=forced,
                          problem=Tools(vddk_libdir).inspection_problem, threads=threads)


@frozen
class Backend:
    """How libguestfs starts its appliance here."""

    name: str  # "kvm" | "tcg"; "probing" until the probe answers; "unknown" when it cannot be probed
    why: str

    @property
    def force_tcg(self) -> bool:
        return self.name == "tcg"

    def describe(self) -> dict:
        return {"backend": self.name, "why": self.why}


PROBING = Backend("probing", "starting the libguestfs appliance once under KVM to see whether it runs there")
FORCED = Backend("tcg", "pipeline.libguestfs_force_tcg is set")


class ApplianceProbe:
    """Starts the appliance once (``start``); ``backend()`` answers when that is known."""

    log = Logger()

    def __init__(self, processes: ProcessRunner, clock, in_thread: Callable[..., Deferred], *, python: str,
                 inspector: str, work_root: str, forced: bool, problem: Callable[[], Optional[str]],
                 timeout: float = PROBE_TIMEOUT, threads: Optional[RemoteCallPool] = None):
        self._threads = threads  # the pool behind in_thread, when the probe owns it
        self._processes = processes
        self._clock = clock
        self._in_thread = in_thread  # (fn, *args) -> Deferred: runs fn in a thread
        self._argv = [python, inspector, "--probe"]
        self._cache_dir = cache_dir(work_root)
        self._forced = forced
        self._problem = problem  # () -> why libguestfs cannot be used here, or None
        self._timeout = timeout
        self._known: Optional[Backend] = FORCED if forced else None
        self._waiting: list[Deferred] = []
        self._probing: Optional[Deferred] = None

    # -- a worker of the service: start() and stop() ---------------------------------

    def start(self) -> None:
        if self._threads is not None:
            self._threads.start()
        if self._known is None and self._probing is None:
            self._probing = Deferred.fromCoroutine(self._probe())
            self._probing.addErrback(self._probe_failed)

    def stop(self) -> Deferred:
        """Cancels a probe still running (its child is stopped, its scratch directory removed), then
        stops the thread: fires once both are done."""
        probing, self._probing = self._probing, None
        if probing is None:
            probing = succeed(None)
        elif not probing.called:
            probing.cancel()
        return probing.addBoth(self._stop_threads)

    def _stop_threads(self, _) -> None:
        if self._threads is not None:
            self._threads.stop()

    # -- what jobs and /status read ----------------------------------------------------

    def backend(self) -> Deferred:
        """Fires with the Backend once the probe has answered."""
        d: Deferred = Deferred()
        if self._known is not None:
            d.callback(self._known)
        else:
            self._waiting.append(d)
        return d

    def describe(self) -> dict:
        return (self._known or PROBING).describe()

    # -- the probe -----------------------------------------------------------------------

    async def _probe(self) -> None:
        problem = self._problem()
        if problem is not None:
            self._answer(Backend("unknown", f"not probed: {problem}"))
            return
        started = self._clock.seconds()
        replies: list[dict] = []

        def on_output(stream: str, line: str) -> None:
            if stream == "stdout":
                try:
                    replies.append(json.loads(line))
                except ValueError:
                    pass

        await self._in_thread(thd_make_private_dir, self._cache_dir)  # libguestfs ignores its environment without it
        scratch = await self._in_thread(tempfile.mkdtemp, "", "hypersdk-gfs-")  # short: the appliance's sockets
        try:
            env = libguestfs_env(cache_dir=self._cache_dir, scratch=scratch, home=scratch, force_tcg=False)
            child = self._processes.spawn("libguestfs appliance probe", self._argv, env=env, on_output=on_output)
            timer = self._clock.callLater(self._timeout, lambda: Deferred.fromCoroutine(self._processes.stop(child)))
            try:
                result = await self._processes.wait(child)
            finally:
                timed_out = not timer.active()
                if not timed_out:
                    timer.cancel()
        finally:
            await self._in_thread(shutil.rmtree, scratch, True)
        seconds = self._clock.seconds() - started
        self._answer(probe_verdict(replies, result.ok, timed_out, self._timeout, result.stderr_tail), seconds)

    def _probe_failed(self, failure) -> None:
        if failure.check(CancelledError):
            return
        self.log.failure("the libguestfs appliance probe failed", failure)
        self._answer(Backend("tcg", f"the probe itself failed ({failure.getErrorMessage()}): TCG, to be safe"))

    def _answer(self, backend: Backend, seconds: Optional[float] = None) -> None:
        self._known = backend
        self.log.info("libguestfs appliance: {backend} ({why}){took}", backend=backend.name, why=backend.why,
                      took="" if seconds is None else f", probed in {seconds:.1f} s")
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(backend)


def unprobed(forced: bool) -> "Known":
    """For a pipeline built without a probe: the configuration alone decides."""
    return Known(FORCED if forced else Backend("kvm", "not probed: libguestfs chooses"))


class Known:
    """A backend decided beforehand: answers at once."""

    def __init__(self, backend: Backend):
        self._backend = backend

    def backend(self) -> Deferred:
        d: Deferred = Deferred()
        d.callback(self._backend)
        return d

    def describe(self) -> dict:
        return self._backend.describe()


def probe_verdict(replies: Sequence[dict], exited_ok: bool, timed_out: bool, timeout: float,
                  stderr_tail: Sequence[str]) -> Backend:
    """The backend the probe's answer calls for. Pure."""
    reply = replies[-1] if replies else {}
    if reply.get("started") and exited_ok:
        return Backend("kvm", "the appliance started under KVM")
    if "no_kvm" in reply:  # libguestfs would fall back to TCG itself: say so
        return Backend("tcg", reply["no_kvm"])
    if timed_out:
        return Backend("tcg", f"the appliance did not start under KVM within {timeout:g} s")
    said = last_lines(reply.get("log") or [], 1) or last_lines(list(stderr_tail), 1) or [reply.get("error", "")]
    return Backend("tcg", f"the appliance failed under KVM: {said[-1]}".rstrip(": "))


def last_lines(lines: Sequence[str], count: int = LOG_LINES) -> list[str]:
    """The last ``count`` non-empty lines, each cut to a readable length."""
    found = [" ".join(line.split()) for line in lines if line.strip()]
    return [line if len(line) <= 300 else line[:297] + "..." for line in found[-count:]]


def appliance_failure(env: dict, cache: str, lines: Sequence[str]) -> str:
    """A job's error when the appliance did not start: what to try, then what libguestfs said. Pure."""
    said = "; ".join(last_lines(lines)) or "nothing"
    if env.get("LIBGUESTFS_BACKEND_SETTINGS") == "force_tcg":
        advice = ("the libguestfs appliance (the small VM libguestfs reads guests with) did not start, even under"
                  " TCG: check that the conversion host has about 1.5 GiB of memory free and space in"
                  f" {cache}, and run `LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg"
                  " libguestfs-test-tool` there to see why")
    else:
        advice = ("the libguestfs appliance (the small VM libguestfs reads guests with) did not start under KVM:"
                  " if KVM cannot run it on this host, set pipeline.libguestfs_force_tcg: true and restart the"
                  " daemon; `libguestfs-test-tool` on the conversion host shows why")
    return f"{advice}. libguestfs said: {said}"
