"""Runs blocking store calls on dedicated threads (one for SQLite), off the reactor."""

from __future__ import annotations

from twisted.internet.threads import deferToThreadPool

from ..threads import RemoteCallPool


class ThreadRunner:
    def __init__(self, reactor, name: str, threads: int = 1):
        self._reactor = reactor
        # a call a database server never answers must not hold the daemon's exit up (it is cut first)
        self._pool = RemoteCallPool(minthreads=1, maxthreads=threads, name=name)

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        """Join the threads (off the reactor when a call is still blocked); call once the last store
        call has returned or been cut."""
        self._pool.stop()

    def run(self, fn, *args, **kwargs):
        return deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)
