"""Streaming one disk: nbdkit's curl plugin → qemu-img convert, and the comparison after.

Both run as one supervised process tree (``nbdkit --run 'qemu-img ...'``): no
intermediate copy, one process group to kill on cancel.
"""

from __future__ import annotations

from typing import Callable, Optional

from attrs import evolve, frozen

from ..errors import HyperSDKError
from . import commands
from .disks import DiskSource
from .process import ProcessRunner
from .progress import RateMeter, qemu_img_percent


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


async def convert(processes: ProcessRunner, source: commands.CurlSource, disk: DiskSource, target: Target,
                  on_percent: Callable[[float], None]) -> None:
    convert_argv = commands.qemu_img_convert(disk.format, target.path, target.format, target_exists=target.exists)
    result = await processes.run("qemu-img convert", commands.nbdkit_curl(source, convert_argv),
                                 on_output=_percent_handler(on_percent))
    if not result.ok:
        raise ToolFailed(result.describe("qemu-img"))


async def verify(processes: ProcessRunner, source: commands.CurlSource, disk: DiskSource, target: Target,
                 on_percent: Callable[[float], None]) -> None:
    """The destination's guest-visible content equals the source's, byte for byte."""
    compare_argv = commands.qemu_img_compare(disk.format, target.path, target.format)
    result = await processes.run("qemu-img compare", commands.nbdkit_curl(source, compare_argv),
                                 on_output=_percent_handler(on_percent))
    if result.exit_code == 1:
        detail = next((line for line in reversed(result.stderr_tail) if "differ" in line.lower() or "mismatch" in line.lower()), "")
        raise VerificationFailed(f"{disk.disk.label} differs from the source{': ' + detail if detail else ''}")
    if not result.ok:
        raise ToolFailed(result.describe("qemu-img compare"))


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
        self._reporter.update(
            current_bytes=done,
            total_bytes=self._total,
            disk_index=self._index,
            disk_count=len(self._sizes),
            rate_bytes_per_second=self._meter.rate(),
            eta_seconds=self._meter.eta(self._total - done),
            percent_complete=self._low + (self._high - self._low) * fraction,
        )


def transfer_range(verify: bool) -> tuple[tuple[float, float], Optional[tuple[float, float]]]:
    """Share of percent_complete for the copy and for the verification."""
    return ((2.0, 80.0), (80.0, 98.0)) if verify else ((2.0, 98.0), None)


__all__ = ["Target", "ToolFailed", "VerificationFailed", "TransferProgress", "convert", "verify", "transfer_range", "evolve"]
