"""Streaming one disk: nbdkit's curl plugin → qemu-img convert, and the comparison after.

nbdkit serves the datastore file on a private unix socket and qemu-img reads it
from there straight into the destination: no intermediate copy. Both are
supervised children; cancelling kills qemu-img, then nbdkit.

A failure says which side failed, in the user's words: the source disk with what nbdkit said about
it, or the destination's condition (``conditions.py``) with its file.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import deque
from contextlib import asynccontextmanager
from typing import Callable, Optional

from attrs import frozen
from twisted.logger import Logger

from ..errors import HyperSDKError
from . import commands, conditions
from .disks import DiskSource
from .process import ProcessResult, ProcessRunner
from .progress import RateMeter, qemu_img_percent


log = Logger()
SERVER_START_SECONDS = 30.0
NBDKIT_ERROR = re.compile(r"^nbdkit: (?:[^:]*: )?error: ")  # "nbdkit: curl[3]: error: <what>"


class ToolFailed(HyperSDKError):
    code = "tool_failed"


class VerificationFailed(HyperSDKError):
    code = "verification_failed"


@frozen
class Target:
    path: str  # local file the tool writes (or compares)
    format: str  # "qcow2" | "raw"
    exists: bool = False  # created beforehand (a libvirt volume): write into it


def _percent_handler(on_percent: Callable[[float], None]):
    def on_output(stream: str, line: str) -> None:
        percent = qemu_img_percent(line)
        if percent is not None:
            on_percent(percent)

    return on_output


# Builds the nbdkit argv serving one disk on (socket, pidfile).
ServerArgv = Callable[[str, str], list[str]]


async def convert(processes: ProcessRunner, serve: ServerArgv, disk: DiskSource, target: Target,
                  on_percent: Callable[[float], None]) -> None:
    async with nbd_server(processes, serve) as server:
        argv = commands.qemu_img_convert(server.uri, disk.format, target.path, target.format,
                                         target_exists=target.exists)
        result = await processes.run("qemu-img convert", argv, on_output=_percent_handler(on_percent))
    if not result.ok:
        raise ToolFailed(tool_failure(result, "qemu-img", "writing", disk, target, server.errors))


async def verify(processes: ProcessRunner, serve: ServerArgv, disk: DiskSource, target: Target,
                 on_percent: Callable[[float], None]) -> None:
    """The destination's guest-visible content equals the source's, byte for byte."""
    async with nbd_server(processes, serve) as server:
        argv = commands.qemu_img_compare(server.uri, disk.format, target.path, target.format)
        result = await processes.run("qemu-img compare", argv, on_output=_percent_handler(on_percent))
    if result.exit_code == 1:
        detail = result.last_line
        raise VerificationFailed(f"{disk.disk.label} differs from the source{': ' + detail if detail else ''}")
    if not result.ok:
        raise ToolFailed(tool_failure(result, "qemu-img compare", "reading", disk, target, server.errors))


def tool_failure(result: ProcessResult, name: str, doing: str, disk: DiskSource, target: Target,
                 source_errors) -> str:
    """Why qemu-img failed: reading the source (with what nbdkit said), or the destination's condition
    and file (``doing`` it: "writing"); else its own last line."""
    last = result.last_line
    if source_errors and ("while reading" in last or "nbd+unix:" in last):
        return (f"{name} could not read {disk.disk.label} ({disk.datastore} {disk.path}) from the datastore:"
                f" nbdkit: {source_errors[-1]} ({last})")
    if "while writing" in last or target.path in last:
        said = conditions.in_tool_output(last, f"{name} {doing} {target.path}",
                                         conditions.AGAIN if doing == "writing" else "")
        if said is not None:
            return said
    return result.describe(name)


@frozen
class NbdServer:
    uri: str
    errors: deque  # nbdkit's last error lines, without their "nbdkit: curl[1]: error: " prefix


@asynccontextmanager
async def nbd_server(processes: ProcessRunner, serve: ServerArgv):
    """nbdkit serving one disk on a private unix socket; yields its NbdServer, stops it after."""
    directory = tempfile.mkdtemp(prefix="hypersdk-nbd-")  # short: socket paths are limited to 107 bytes
    socket, pidfile = os.path.join(directory, "nbd.sock"), os.path.join(directory, "nbdkit.pid")
    errors: deque = deque(maxlen=5)
    server = processes.spawn("nbdkit", serve(socket, pidfile),
                             on_output=lambda stream, line: _nbdkit_line(errors, line))
    try:
        await processes.wait_for(server, lambda: os.path.exists(pidfile), SERVER_START_SECONDS, "nbdkit to listen")
        yield NbdServer(commands.nbd_uri(socket), errors)
    finally:
        await processes.stop(server)
        shutil.rmtree(directory, ignore_errors=True)


def _nbdkit_line(errors: deque, line: str) -> None:
    log.debug("nbdkit: {line}", line=line)
    found = NBDKIT_ERROR.match(line)
    if found:
        errors.append(line[found.end():])


class TransferProgress:
    """Job-wide bytes, rate and ETA from per-disk percentages."""

    def __init__(self, reporter, sizes: list[int], seconds: Callable[[], float], percent_range: tuple[float, float]):
        self._reporter = reporter
        self._sizes = sizes
        self._total = sum(sizes)
        self._seconds = seconds
        self._low, self._high = percent_range
        self._meter = RateMeter()
        self._done_before = 0
        self._index = 0

    def start_disk(self, index: int) -> None:
        self._index = index
        self._done_before = sum(self._sizes[:index])
        self._report(self._done_before)

    def disk_percent(self, percent: float) -> None:
        self._report(self._done_before + int(self._sizes[self._index] * percent / 100))

    def _report(self, done: int) -> None:
        now = self._seconds()
        self._meter.add(now, done)
        fraction = done / self._total if self._total else 1.0
        disk_size = self._sizes[self._index] if self._sizes else 0
        self._reporter.update(
            current_bytes=done,
            total_bytes=self._total,
            disk_index=self._index,
            disk_count=len(self._sizes),
            disk_current_bytes=min(disk_size, max(0, done - self._done_before)),
            disk_total_bytes=disk_size,
            rate_bytes_per_second=self._meter.rate(),
            eta_seconds=self._meter.eta(self._total - done),
            percent_complete=self._low + (self._high - self._low) * fraction,
        )


def transfer_range(verify: bool) -> tuple[tuple[float, float], Optional[tuple[float, float]]]:
    """Share of percent_complete for the copy and for the verification."""
    return ((2.0, 80.0), (80.0, 98.0)) if verify else ((2.0, 98.0), None)

