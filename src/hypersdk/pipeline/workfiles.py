"""Private files in a job's work directory (blocking: run them in a thread)."""

from __future__ import annotations

import os


def thd_make_private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)


def thd_write_private(path: str, text: str) -> None:
    """Write ``text`` to a file only the daemon's user can read (cookies, passwords, keys)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


SECRET_FILES = ("cookie", "cookie.new", "password")  # what readers.py writes: a session cookie, a VDDK password


def thd_remove_secrets(work_dir: str) -> None:
    """The job's secrets go on every outcome, even where its work directory stays (a copy to resume)."""
    for name in SECRET_FILES:
        try:
            os.remove(os.path.join(work_dir, name))
        except FileNotFoundError:
            pass
