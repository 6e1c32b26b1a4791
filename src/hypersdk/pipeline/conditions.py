"""What went wrong on the destination, in the user's words: pure.

qemu-img, qemu-nbd and the transfer worker say it as the C library does: ``No space left on
device``, errno 28, libnbd's ``nbd_pwrite: write: command failed: No space left on device``. A user
needs the condition, the file it happened to, and what to do:

    no space left on the destination's file system (writing /var/lib/vms/web-disk1.qcow2): free space there

``of_errno`` and ``found_in`` (a tool's last lines, as the C library words them in the C locale the
children run with) give the condition; ``sentence`` puts it with what was being done to which file,
its remedy, and what follows for the job (``then``: resume, or submit again).
"""

from __future__ import annotations

import errno
import os
from typing import Iterable, Optional

from attrs import frozen

# What follows for the job, after the remedy.
RESUME = "then resume the job: the chunks copied so far are kept"  # the transfer engine's copies
AGAIN = "then submit the job again"  # other failures: the job's files are removed


@frozen
class Condition:
    code: int  # the errno
    words: str  # the condition, for a user
    remedy: str  # what to do about it ("" when nothing general can be said)


_CONDITIONS = (
    Condition(errno.ENOSPC, "no space left on the destination's file system", "free space there"),
    Condition(errno.EDQUOT, "the disk quota on the destination's file system is used up",
              "free space there or raise the quota"),
    Condition(errno.EROFS, "the destination's file system is read-only",
              "make it writable, or choose another output_dir or storage pool"),
    Condition(errno.EACCES, "permission denied", "give the daemon's user access to it"),
    Condition(errno.EPERM, "operation not permitted", "give the daemon's user access to it"),
    Condition(errno.EFBIG, "the file would be larger than the destination's file system allows",
              "choose a file system that holds files this large"),
    Condition(errno.EIO, "input/output error: the destination's disk or file system failed",
              "check it (the kernel log says more)"),
    Condition(errno.ENOENT, "no such file or directory", ""),
)
_BY_ERRNO = {c.code: c for c in _CONDITIONS}
_BY_TEXT = {os.strerror(c.code): c for c in _CONDITIONS}  # "No space left on device", ... (glibc, C locale)


def of_errno(code: Optional[int]) -> Optional[Condition]:
    return _BY_ERRNO.get(code) if code is not None else None


def found_in(lines: Iterable[str]) -> Optional[Condition]:
    """The condition named in the last of ``lines`` that names one (a tool's stderr, libnbd's text)."""
    for line in reversed(list(lines)):
        for text, condition in _BY_TEXT.items():
            if text in line:
                return condition
    return None


def sentence(condition: Condition, doing: str, then: str = "") -> str:
    """``<condition> (<doing>): <remedy>, <then>``; ``doing`` names the file ("writing /x/a.qcow2")."""
    advice = ", ".join(part for part in (condition.remedy, then) if part)
    return f"{condition.words} ({doing})" + (f": {advice}" if advice else "")


def in_tool_output(last_line: str, doing: str, then: str = AGAIN) -> Optional[str]:
    """The sentence for a tool whose last line names a condition (``qemu-img: /x/a.qcow2: Could not
    create '/x/a.qcow2': Read-only file system``); None when it names none."""
    condition = found_in([last_line])
    return None if condition is None else sentence(condition, doing, then)
