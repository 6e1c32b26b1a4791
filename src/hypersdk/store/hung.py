"""Calls to PostgreSQL that the server never answers, and how to end them.

A call blocked in libpq on a connection whose peer acknowledges every byte but never answers is
woken by nothing but its socket being shut down (from another thread: closing the connection there
would not be safe). libpq then reports the connection lost at once.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator


class CallsInFlight:
    """The connections calls are using now, each with its deadline (``time.monotonic``: real hangs)."""

    def __init__(self, seconds: float):
        self._seconds = seconds
        self._lock = threading.Lock()
        self._calls: dict[object, tuple[Any, float]] = {}

    @contextmanager
    def watched(self, conn) -> Iterator[None]:
        key = object()
        with self._lock:
            self._calls[key] = (conn, time.monotonic() + self._seconds)
        try:
            yield
        finally:
            with self._lock:  # (held while cutting: a connection is never cut once its call is over)
                del self._calls[key]

    def cut(self, overdue_only: bool) -> int:
        """Shut down the sockets of the calls past their deadline (or of all of them): how many."""
        now, count = time.monotonic(), 0
        with self._lock:
            for conn, deadline in self._calls.values():
                if not overdue_only or now > deadline:
                    abort_connection(conn)
                    count += 1
        return count


def abort_connection(conn) -> None:
    """End a connection whose call may be blocked in another thread: shutting its socket down wakes that
    call with an error at once (closing it from here would not be safe)."""
    try:
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # already closed
        pass
