"""Small file systems for destinations that fill up or cannot be written: a tmpfs mounted on a
directory of its own (root only), unmounted after, and a filler file that takes its free space."""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.polling import wait_for


@contextmanager
def small_filesystem(size: int, prefix: str = "hypersdk-small-"):
    """A directory (mode 0755, reachable by qemu's user) that is a tmpfs of ``size`` bytes."""
    with _mounted("tmpfs", f"size={size},mode=0755", prefix) as directory:
        yield directory


@contextmanager
def ramfs(prefix: str = "hypersdk-ramfs-"):
    """A directory on a ramfs: a file system that refuses O_DIRECT (as tmpfs did before Linux 6.6) and
    reports no size."""
    with _mounted("ramfs", "mode=0755", prefix) as directory:
        yield directory


@contextmanager
def _mounted(kind: str, options: str, prefix: str):
    """A new directory with a file system of ``kind`` mounted on it (root only), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a file system needs root")
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    subprocess.run(["mount", "-t", kind, "-o", options, "hypersdk-test", str(directory)],
                   check=True, timeout=10, capture_output=True)
    try:
        yield directory
    finally:
        # a child of the test may still be closing a file there: try again until it lets go
        wait_for(lambda: subprocess.run(["umount", str(directory)], capture_output=True, timeout=10).returncode == 0,
                 10, f"unmounting {directory}")
        directory.rmdir()


def read_only(directory: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True, timeout=10, capture_output=True)


def fill(directory: Path, leave: int = 0) -> Path:
    """Take the file system's free space but ``leave`` bytes, in one file (returned: remove it to free it)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        size, piece = 0, 8 << 20
        while piece >= 4096:  # a writer may take space meanwhile: grow by pieces, smaller once refused
            free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize - leave
            if free <= 0:
                break
            try:
                os.posix_fallocate(fd, size, min(free, piece))
                size += min(free, piece)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                piece //= 2
    finally:
        os.close(fd)
    return filler
