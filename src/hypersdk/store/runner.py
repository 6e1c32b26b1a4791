"""Runs blocking store calls on dedicated threads (one for SQLite), off the reactor."""

from __future__ import annotations

from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool


class ThreadRunner:
    def __init__(self, reactor, name: str, threads: int = 1):
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=threads, name=name)

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        """Join the thread; call once the last store call has returned."""
        self._pool.stop()

    def run(self, fn, *args, **kwargs):
        return deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)
