"""The daemon's side of a disk transfer: it runs the worker, keeps its checkpoints, watches for stalls.

Only JSON lines reach the reactor (a few a second); the data flows in the worker and, for a qcow2
target, ``qemu-nbd``. A disk whose source sends no byte for ``stall_timeout`` seconds is stopped,
its children killed, and the job fails naming the vCenter and the disk (resumable: its chunks are
checkpointed). A session cookie vCenter refuses is renewed, and during long copies it is renewed
before it can expire.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from contextlib import asynccontextmanager
from typing import Awaitable, Callable, Optional, Sequence

from attrs import frozen
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from twisted.logger import Logger

from ...errors import HyperSDKError
from ...store.checkpoints import ChunkRecord
from .. import conditions
from ..process import ChildProcess, ProcessFailed, ProcessRunner
from .plan import AreaWork, Chunk, describe_ranges, ranges

log = Logger()
COOKIE_REFRESH_SECONDS = 600.0  # vCenter ends idle sessions after 30 min by default
SERVER_START_SECONDS = 30.0
# The worker is this package's module, run by the daemon's own interpreter.
SRC_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


class TransferFailed(HyperSDKError):
    code = "transfer_failed"
    keep_destination = True  # the checkpointed chunks stay: POST /jobs/{id}/resume goes on from them
    resumable = True


class ChunksDiffer(HyperSDKError):
    code = "verification_failed"


@frozen
class StreamSource:
    """A flat extent on a datastore, as the worker reads it."""

    url: str
    cookie_file: str
    tls: dict  # {"verify": bool, "cafile": path or None, "pin": hex digest or None}
    offset: int  # where the disk's data starts in the file
    size: int
    where: str  # "vcenter:443", for messages


@frozen
class TargetFile:
    path: str
    format: str  # "raw" | "qcow2"
    exists: bool  # a libvirt volume made beforehand, or a file of an earlier (resumed) run


def worker_argv(job_id: str) -> list[str]:
    """The worker; the job it works for is in its command line, for ps (and the tests)."""
    return [sys.executable, "-m", "hypersdk.pipeline.transfer.worker", "--job", job_id]


def worker_env() -> dict:
    return {"PYTHONPATH": SRC_DIR, "PYTHONUNBUFFERED": "1"}


async def zero_extents(processes: ProcessRunner, target: TargetFile) -> list[dict]:
    """Where a qcow2 holds no data (``qemu-img map``); nothing for a raw file (the worker asks the file)."""
    if target.format != "qcow2":
        return []
    lines: list[str] = []
    result = await processes.run("qemu-img map", ["qemu-img", "map", "--output=json", "-U", target.path],
                                 on_output=lambda stream, line: stream == "stdout" and lines.append(line))
    if not result.ok:
        return []  # verification then reads every chunk
    try:
        return json.loads("".join(lines))
    except ValueError:
        return []


@asynccontextmanager
async def target_spec(processes: ProcessRunner, target: TargetFile, size: int, read_only: bool = False):
    """How the worker reaches ``target``: a raw file directly, a qcow2 through qemu-nbd on a private socket."""
    if target.format == "raw":
        yield {"kind": "file", "path": target.path, "size": None if read_only else size}
        return
    directory = tempfile.mkdtemp(prefix="hypersdk-nbd-")  # short: a socket path has 107 bytes at most
    socket, pidfile = os.path.join(directory, "target.sock"), os.path.join(directory, "qemu-nbd.pid")
    server = None
    try:
        server = await _serve(processes, target, socket, pidfile, read_only)
        yield {"kind": "nbd", "socket": socket, "path": target.path}
    finally:
        if server is not None:
            await processes.stop(server)
        shutil.rmtree(directory, ignore_errors=True)


# none: qemu-nbd writes the image straight to the disk (O_DIRECT) instead of copying it into the page
# cache, which costs the machine CPU for each GiB, the more so when memory is full of other files
# (benchmarks/transfer.py, part G); verification then reads back the disk itself. Either way a flush
# (each of the worker's checkpoints) syncs the file, and qemu orders its own metadata writes, so that a
# power loss leaves a consistent image. writeback: for a file system without O_DIRECT (ramfs, tmpfs
# before Linux 6.6, some FUSE ones), the same through the page cache.
CACHE_MODES = ("none", "writeback")


async def _serve(processes: ProcessRunner, target: TargetFile, socket: str, pidfile: str, read_only: bool):
    """qemu-nbd serving ``target`` on ``socket``, once its pid file says it serves it."""
    for cache in CACHE_MODES:
        argv = ["qemu-nbd", "--format=qcow2", "--shared=32", "--persistent", f"--cache={cache}", "--socket", socket,
                "--pid-file", pidfile, *(["--read-only"] if read_only else ["--discard=unmap"]), target.path]
        server = processes.spawn("qemu-nbd", argv)
        try:  # (its socket is there before it opens the image: the pid file says it serves it)
            await processes.wait_for(server, lambda: os.path.exists(pidfile), SERVER_START_SECONDS,
                                     "qemu-nbd to serve")
            return server
        except ProcessFailed:  # (it ended: it says why on its last line, as "Read-only file system")
            last = server.result.last_line if server.result is not None else ""
            if "does not support O_DIRECT" in last and cache != CACHE_MODES[-1]:
                log.info("{path}: its file system does not support O_DIRECT: qemu-nbd writes it through the page"
                         " cache", path=target.path)
                continue
            said = conditions.in_tool_output(last, f"qemu-nbd opening {target.path}")
            if said is None:
                raise
            raise ProcessFailed(said) from None
        except BaseException:
            await processes.stop(server)
            raise


# What each of the worker's lines holds: its kind (the first of these keys it has) and its fields.
MESSAGES = {
    "chunk": {"chunk": int, "hash": str, "zero": bool},
    "read": {"read": int},
    "retry": {"retry": int, "attempt": int, "error": str},
    "auth": {"auth": int},
    "error": {"error": str, "kind": str},
    "done": {"done": bool},
    "checked": {"checked": int, "hash": str},
}


def worker_message(line: str) -> Optional[tuple[str, dict]]:
    """``(kind, message)`` of one of the worker's lines, or None when it is not one the worker writes."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    kind = next((k for k in MESSAGES if k in message), None)
    if kind is None:
        return None
    for name, kind_of in MESSAGES[kind].items():
        value = message.get(name)
        if not isinstance(value, kind_of) or (kind_of is int and isinstance(value, bool)):
            return None
    return kind, message


class _Lines:
    """The worker's lines of the ``kinds`` expected, handed to ``handle``; any other line to ``garbled``
    (the process runner only logs what a handler raises: nothing may be lost that way)."""

    def __init__(self, kinds: set[str], handle: Callable[[str, dict], None], garbled: Callable[[str], None]):
        self._kinds = kinds
        self._handle = handle
        self._garbled = garbled

    def __call__(self, stream: str, line: str) -> None:
        if stream != "stdout":
            log.debug("transfer worker: {line}", line=line)
            return
        parsed = worker_message(line)
        if parsed is None or parsed[0] not in self._kinds:
            self._garbled(line)
        else:
            self._handle(*parsed)


def _garbled(line: str) -> str:
    shown = line if len(line) <= 80 else line[:80] + "..."
    return f"the worker wrote a line that is not one of its records: {shown!r}"


class DiskCopy:
    """One disk copied by one worker, from the chunks not yet checkpointed. It is done only when the
    worker ended well and reported each of its chunks exactly once."""

    def __init__(self, processes: ProcessRunner, clock, *, job_id: str, label: str, source: StreamSource,
                 chunks: Sequence[Chunk],
                 save: Callable[[list[ChunkRecord]], Deferred], renew_cookie: Callable[[], Awaitable[None]],
                 refresh_cookie: Callable[[], Awaitable[None]], on_done: Callable[[int], None], stall_timeout: float, streams: int, fresh: bool,
                 stream_rate: Optional[int] = None, timeout: int = 30, areas: Optional[AreaWork] = None):
        """``areas``: the chunks of ``chunks`` that are copied by pieces (plan.area_work); ``on_done`` then
        gets the bytes of a chunk's pieces (what was read for it) rather than its length."""
        self._processes = processes
        self._clock = clock
        self._job_id = job_id
        self._label = label
        self._source = source
        self._chunks = {c.index: c for c in chunks}
        self._areas = areas
        pieces = areas.pieces if areas is not None else {}
        self._weight = {i: sum(n for _s, n in pieces[i]) for i in self._chunks if i in pieces}  # (what on_done counts)
        self._save = save
        self._renew = renew_cookie  # a fresh login: the datastore refused the cookie
        self._refresh = refresh_cookie  # the session kept alive
        self._batch: list[ChunkRecord] = []  # checkpointed by the worker, not yet stored
        self._reported: set[int] = set()
        self._on_done = on_done  # (bytes of a chunk now on the destination)
        self._stall = stall_timeout
        self._streams = streams
        self._fresh = fresh
        self._rate = stream_rate
        self._timeout = timeout
        self._read = 0
        self._child: Optional[ChildProcess] = None
        self._error: Optional[dict] = None
        self._problem: Optional[str] = None  # a record the worker should not have written: it is stopped
        self._save_failure: Optional[Failure] = None  # storing a checkpoint failed (JobLost...): it is stopped
        self._stalled = False
        self._pending_saves: list[Deferred] = []
        self.retries = 0

    async def run(self, target: dict) -> None:
        spec = {"mode": "copy", "url": self._source.url, "cookie_file": self._source.cookie_file,
                "tls": self._source.tls, "source_offset": self._source.offset, "streams": self._streams,
                "chunks": [[c.index, c.offset, c.length] for c in self._chunks.values()], "fresh": self._fresh,
                "target": target, "timeout": self._timeout, "stream_rate": self._rate}
        if self._areas is not None:
            spec["areas"] = {str(i): {"pieces": [list(p) for p in self._areas.pieces[i]],
                                      "outside": self._areas.outside[i]}
                             for i in self._chunks if i in self._areas.pieces}
        lines = _Lines(set(MESSAGES) - {"checked"}, self._line, lambda line: self._stop_for(_garbled(line)))
        child = self._child = self._processes.spawn("transfer worker", worker_argv(self._job_id), env=worker_env(),
                                                    on_output=lines)
        child.send(json.dumps(spec))
        stall = self._clock.callLater(self._stall, self._stalled_out, child)
        refresh = self._clock.callLater(COOKIE_REFRESH_SECONDS, self._refresh_cookie)
        self._stall_timer = stall
        try:
            result = await self._processes.wait(child)
        finally:
            for timer in (stall, refresh, getattr(self, "_refresh_timer", None)):
                if timer is not None and timer.active():
                    timer.cancel()
            self._store_batch()
        # Every checkpoint the worker reported is stored before we go on. A copy stopped from outside
        # (cancelled: by the user, the daemon's stop, the node fencing itself) has left above without
        # waiting for them: its qemu-nbd must go at once, whether the database answers or not.
        for d in self._pending_saves:
            await d
        if self._save_failure is not None:
            self._save_failure.raiseException()  # as it is: a lost job is not a failed copy
        where = f"copying {self._label} from vCenter {self._source.where}"
        if self._stalled:
            raise TransferFailed(f"no data from vCenter {self._source.where} for {self._stall:g} s while copying"
                                 f" {self._label}: stopped (its copied chunks are kept)")
        if self._problem is not None:
            raise TransferFailed(f"{where}: {self._problem}{self._not_copied('; ')}")
        if self._error is not None:
            raise TransferFailed(f"{where}: {self._error['error']}")
        if not result.ok:
            raise TransferFailed(f"{result.describe('the transfer worker')}{self._not_copied(': ')}")
        if self._not_copied():
            raise TransferFailed(f"{where}: the worker ended without copying {self._not_copied()}")

    @property
    def read_bytes(self) -> int:
        """The bytes the worker has read from the source so far (as it last said)."""
        return self._read

    def _not_copied(self, before: str = "") -> str:
        """``bytes A-B, C-D`` of the chunks not reported, for messages ("" when every one was)."""
        missing = [i for i in self._chunks if i not in self._reported]
        if not missing:
            return ""
        return f"{before}{describe_ranges(ranges(self._chunks.values(), missing))}" + (" not copied" if before else "")

    def _line(self, kind: str, message: dict) -> None:
        if kind == "chunk":
            index = message["chunk"]
            chunk = self._chunks.get(index)
            if chunk is None:
                self._stop_for(f"the worker reported chunk {index}, which it was not given")
            elif index in self._reported:
                self._stop_for(f"the worker reported {describe_ranges(ranges([chunk], [index]))} twice")
            else:
                self._reported.add(index)
                self._batch.append(ChunkRecord(chunk.index, message["hash"], message["zero"]))
                self._on_done(self._weight.get(index, chunk.length))
                if self._stall_timer.active():  # a chunk cleared or rebuilt from the target reads nothing
                    self._stall_timer.reset(self._stall)
        elif kind == "read":  # ends each of the worker's checkpoints: one store transaction for it
            self._store_batch()
            if message["read"] > self._read:
                self._read = message["read"]
                if self._stall_timer.active():  # (not once the worker is stopped)
                    self._stall_timer.reset(self._stall)
        elif kind == "retry":
            self.retries += 1
            log.info("{disk}: chunk {chunk} again ({attempt}): {error}", disk=self._label, chunk=message["retry"],
                     attempt=message["attempt"], error=message["error"])
        elif kind == "auth":
            log.info("{disk}: vCenter refused the session cookie (HTTP {status}): renewing it", disk=self._label,
                     status=message["auth"])
            Deferred.fromCoroutine(self._renew()).addErrback(
                lambda f: log.failure("renewing the vCenter session cookie failed", f))
        elif kind == "error":
            self._error = message
        elif kind == "done":
            log.info("{disk}: copied in {copy} s", disk=self._label, copy=message.get("copy_seconds"))

    def _stop_for(self, problem: str) -> None:
        if self._problem is None:
            self._problem = problem
        self._stop()

    def _stop(self) -> None:
        if self._child is not None and self._child.running:
            Deferred.fromCoroutine(self._processes.stop(self._child))

    def _store_batch(self) -> None:
        if self._batch and self._save_failure is None:
            batch, self._batch = self._batch, []
            self._pending_saves.append(maybeDeferred(self._save, batch).addErrback(self._save_failed))

    def _save_failed(self, failure: Failure) -> None:
        """No copying on without checkpoints (nor for a job another node now runs): the worker stops now."""
        if self._save_failure is None:
            self._save_failure = failure
        self._stop()

    def _stalled_out(self, child: ChildProcess) -> None:
        self._stalled = True
        self._stop()

    def _refresh_cookie(self) -> None:
        """Keep the session alive through long copies (a fresh login if it expired anyway)."""
        Deferred.fromCoroutine(self._refresh()).addErrback(
            lambda f: log.failure("refreshing the vCenter session cookie failed", f))
        self._refresh_timer = self._clock.callLater(COOKIE_REFRESH_SECONDS, self._refresh_cookie)


async def verify_chunks(processes: ProcessRunner, *, job_id: str, label: str, target: dict, chunks: Sequence[Chunk],
                        expected: dict[int, ChunkRecord], on_checked: Callable[[int], None],
                        known_zero: set = frozenset()) -> None:
    """Read the destination by ``chunks`` and compare each hash with the one taken from the source
    (``known_zero``: chunks the destination holds no data for, hashed as zeros without reading).
    It passes only when every chunk has its record and was checked exactly once, and all match."""
    plan = {c.index: c for c in chunks}
    unrecorded = [i for i in plan if i not in expected]
    if unrecorded:
        raise ChunksDiffer(f"verifying {label}: no checkpoint was recorded for"
                           f" {describe_ranges(ranges(chunks, unrecorded))}: there is nothing to compare them with")
    differ: list[int] = []
    checked: set[int] = set()
    failure: list[str] = []
    problem: list[str] = []

    def stop_for(why: str) -> None:
        problem.append(why)
        if child.running:
            Deferred.fromCoroutine(processes.stop(child))

    def line(kind: str, message: dict) -> None:
        if kind == "checked":
            index = message["checked"]
            if index not in plan:
                stop_for(f"the worker checked chunk {index}, which it was not given")
            elif index in checked:
                stop_for(f"the worker checked {describe_ranges(ranges(chunks, [index]))} twice")
            else:
                checked.add(index)
                if expected[index].hash != message["hash"]:
                    differ.append(index)
                on_checked(plan[index].length)
        elif kind == "error":
            failure.append(message["error"])

    # four reads at once: a qcow2 is read back from the disk itself (qemu-nbd --cache=none), which
    # answers several requests at once faster than one after another
    spec = {"mode": "verify", "target": target, "chunks": [[c.index, c.offset, c.length] for c in chunks],
            "zero": sorted(known_zero), "streams": 4}
    lines = _Lines({"checked", "error", "done"}, line, lambda text: stop_for(_garbled(text)))
    child = processes.spawn("verification worker", worker_argv(job_id), env=worker_env(), on_output=lines)
    child.send(json.dumps(spec))
    result = await processes.wait(child)
    unchecked = [i for i in plan if i not in checked]
    left = f"; {describe_ranges(ranges(chunks, unchecked))} not checked" if unchecked else ""
    if problem:
        raise ChunksDiffer(f"verifying {label}: {problem[0]}{left}")
    if failure or not result.ok:
        raise ChunksDiffer(f"verifying {label}: {failure[0] if failure else result.describe('the worker')}")
    if differ:
        raise ChunksDiffer(f"{label} differs from the source at {describe_ranges(ranges(chunks, differ))}")
    if unchecked:
        raise ChunksDiffer(f"verifying {label}: the worker ended without checking"
                           f" {describe_ranges(ranges(chunks, unchecked))}")
