"""Supervised child processes: own process group, death with the daemon, clean kill.

Every tool (nbdkit, qemu-img, nbdcopy, virt-v2v) is started as
``setsid setpriv --pdeathsig KILL -- tool ...``: ``setsid`` makes the tool the
leader of its own process group (pid == pgid, so one ``killpg`` reaches it and
everything it started) and ``setpriv`` has the kernel SIGKILL it if the daemon
dies, even by SIGKILL. Output is decoded incrementally and split on both
``\\r`` and ``\\n`` (qemu-img redraws its progress with ``\\r``).
"""

from __future__ import annotations

import codecs
import os
import re
import signal
from collections import deque
from typing import Callable, Mapping, Optional, Sequence

from attrs import frozen
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ..errors import HyperSDKError

BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
SUPERVISE = ("setsid", "setpriv", "--pdeathsig", "KILL", "--")
TAIL_LINES = 20
READY_POLL_SECONDS = 0.01
_LINE_BREAK = re.compile(r"[\r\n]")

OutputCallback = Callable[[str, str], None]  # (stream "stdout" | "stderr", line)


class ProcessFailed(HyperSDKError):
    code = "process_failed"


@frozen
class ProcessResult:
    exit_code: Optional[int]  # None when killed by a signal
    signal: Optional[int]
    stderr_tail: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def last_line(self) -> str:
        """The last line the process wrote on stderr that is not blank ("" if none)."""
        return next((line for line in reversed(self.stderr_tail) if line.strip()), "")

    def describe(self, name: str) -> str:
        """``qemu-img exited 1: <last stderr line>``"""
        how = f"exited {self.exit_code}" if self.exit_code is not None else f"was killed by signal {self.signal}"
        last = self.last_line
        return f"{name} {how}: {last}" if last else f"{name} {how}"


class _LineSplitter:
    def __init__(self, emit: Callable[[str], None]):
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._buffer = ""
        self._emit = emit

    def feed(self, data: bytes, final: bool = False) -> None:
        self._buffer += self._decoder.decode(data, final)
        *lines, self._buffer = _LINE_BREAK.split(self._buffer)
        if final and self._buffer:
            lines.append(self._buffer)
            self._buffer = ""
        for line in lines:
            if line:
                self._emit(line)


class ChildProcess(ProcessProtocol):
    log = Logger()

    def __init__(self, name: str, on_output: Optional[OutputCallback]):
        self.name = name
        self.pid: Optional[int] = None
        self.result: Optional[ProcessResult] = None
        self._on_output = on_output
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._waiters: list[Deferred] = []
        self._stdout = _LineSplitter(lambda line: self._line("stdout", line))
        self._stderr = _LineSplitter(lambda line: self._line("stderr", line))

    def _line(self, stream: str, line: str) -> None:
        if stream == "stderr":
            self._tail.append(line)
        if self._on_output is not None:
            try:
                self._on_output(stream, line)
            except Exception:
                self.log.failure("output handler of {name} failed", name=self.name)

    def connectionMade(self):
        self.pid = self.transport.pid

    def outReceived(self, data: bytes):
        self._stdout.feed(data)

    def errReceived(self, data: bytes):
        self._stderr.feed(data)

    def processEnded(self, reason):
        self._stdout.feed(b"", final=True)
        self._stderr.feed(b"", final=True)
        value = reason.value
        exit_code = getattr(value, "exitCode", 0)
        sig = getattr(value, "signal", None) if isinstance(value, ProcessTerminated) else None
        self.result = ProcessResult(exit_code=exit_code, signal=sig, stderr_tail=tuple(self._tail))
        self.log.debug("{name} (pid {pid}) ended: {exit_code}", name=self.name, pid=self.pid, exit_code=exit_code)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self.result)

    @property
    def running(self) -> bool:
        return self.result is None

    def send(self, line: str) -> None:
        """One line to the child's standard input."""
        if self.running:
            self.transport.write(line.encode("utf-8") + b"\n")

    def ended(self) -> Deferred:
        """A new Deferred firing with the ProcessResult (cancelling it leaves the process alone)."""
        if self.result is not None:
            d: Deferred = Deferred()
            d.callback(self.result)
            return d
        d = Deferred()
        self._waiters.append(d)
        return d

    def signal_group(self, signum: int) -> None:
        if self.running and self.pid:
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                pass


class ProcessRunner:
    """Starts supervised children and stops them: SIGTERM to the group, SIGKILL after a grace."""

    log = Logger()

    def __init__(self, reactor, kill_grace: float = 5.0, supervise: Sequence[str] = SUPERVISE):
        self._reactor = reactor
        self._kill_grace = kill_grace
        self._supervise = tuple(supervise)

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str] = (), on_output: Optional[OutputCallback] = None,
              cwd: Optional[str] = None) -> ChildProcess:
        child = ChildProcess(name, on_output)
        full = [*self._supervise, *argv]
        self._reactor.spawnProcess(child, full[0], full, env={**BASE_ENV, **dict(env)}, path=cwd)
        self.log.info("started {name} (pid {pid})", name=name, pid=child.pid)
        return child

    async def run(self, name: str, argv: Sequence[str], env: Mapping[str, str] = (),
                  on_output: Optional[OutputCallback] = None, cwd: Optional[str] = None) -> ProcessResult:
        """Run to the end; cancelling kills the process group and waits until it is gone."""
        child = self.spawn(name, argv, env, on_output, cwd)
        return await self.wait(child)

    async def wait(self, child: ChildProcess) -> ProcessResult:
        try:
            return await child.ended()
        except CancelledError:
            await self.stop(child)
            raise

    async def wait_for(self, child: ChildProcess, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready()`` until true; fail if ``child`` exits first or ``timeout`` passes."""
        deadline = self._reactor.seconds() + timeout
        while not ready():
            if not child.running:
                raise ProcessFailed(child.result.describe(child.name))
            if self._reactor.seconds() > deadline:
                await self.stop(child)
                raise ProcessFailed(f"timed out after {timeout:g} s waiting for {what}")
            await deferLater(self._reactor, READY_POLL_SECONDS, lambda: None)

    async def stop(self, child: ChildProcess) -> Optional[ProcessResult]:
        """SIGTERM the group, SIGKILL it after the grace period; return once it has exited."""
        if not child.running:
            return child.result
        child.signal_group(signal.SIGTERM)
        killer = self._reactor.callLater(self._kill_grace, child.signal_group, signal.SIGKILL)
        try:
            return await child.ended()
        finally:
            if killer.active():
                killer.cancel()
