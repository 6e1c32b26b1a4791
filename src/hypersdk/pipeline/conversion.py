"""Streaming one disk: nbdkit's curl plugin → qemu-img convert, and the comparison after.

nbdkit serves the datastore file on a private unix socket and qemu-img reads it
from there straight into the destination: no intermediate copy. Both are
supervised children; cancelling kills qemu-img, then nbdkit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import asynccontextmanager
from typing import Callable, Optional

from attrs import frozen
from twisted.logger import Logger

from ..errors import HyperSDKError
from . import commands
from .disks import DiskSource
from .process import ProcessRunner
from .progress import RateMeter, qemu_img_percent


log = Logger()
SERVER_START_SECONDS = 30.0


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
    async with nbd_server(processes, serve) as uri:
        argv = commands.qemu_img_convert(uri, disk.format, target.path, target.format, target_exists=target.exists)
        result = await processes.run("qemu-img convert", argv, on_output=_percent_handler(on_percent))
    if not result.ok:
        raise ToolFailed(result.describe("qemu-img"))


async def verify(processes: ProcessRunner, serve: ServerArgv, disk: DiskSource, target: Target,
                 on_percent: Callable[[float], None]) -> None:
    """The destination's guest-visible content equals the source's, byte for byte."""
    async with nbd_server(processes, serve) as uri:
        argv = commands.qemu_img_compare(uri, disk.format, target.path, target.format)
        result = await processes.run("qemu-img compare", argv, on_output=_percent_handler(on_percent))
    if result.exit_code == 1:
        detail = next((line for line in reversed(result.stderr_tail) if line.strip()), "")
        raise VerificationFailed(f"{disk.disk.label} differs from the source{': ' + detail if detail else ''}")
    if not result.ok:
        raise ToolFailed(result.describe("qemu-img compare"))


@asynccontextmanager
async def nbd_server(processes: ProcessRunner, serve: ServerArgv):
    """nbdkit serving one disk on a private unix socket; yields its NBD URI, stops it after."""
    directory = tempfile.mkdtemp(prefix="hypersdk-nbd-")  # short: socket paths are limited to 107 bytes
    socket, pidfile = os.path.join(directory, "nbd.sock"), os.path.join(directory, "nbdkit.pid")
    server = processes.spawn("nbdkit", serve(socket, pidfile), on_output=_log_nbdkit)
    try:
        await processes.wait_for(server, lambda: os.path.exists(pidfile), SERVER_START_SECONDS, "nbdkit to listen")
        yield commands.nbd_uri(socket)
    finally:
        await processes.stop(server)
        shutil.rmtree(directory, ignore_errors=True)


def _log_nbdkit(stream: str, line: str) -> None:
    log.debug("nbdkit: {line}", line=line)


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

