"""A systemd-logind inhibitor lock held while migrations run: shutdown and sleep wait (or are blocked).

logind's Inhibit() answers a file descriptor; the lock lasts as long as that
descriptor is open. Taken when the first job starts, released when the last
running job ends.
"""

from __future__ import annotations

import os
from typing import Optional

from twisted.logger import Logger

from .. import events
from ..events import Event

LOGIND, LOGIND_PATH, LOGIND_MANAGER = "org.freedesktop.login1", "/org/freedesktop/login1", \
    "org.freedesktop.login1.Manager"


class Inhibitor:
    log = Logger()

    def __init__(self, connection, running_jobs, *, what: str = "shutdown:sleep", mode: str = "delay"):
        self._conn = connection  # a txdbus connection to the bus logind is on
        self._running_jobs = running_jobs  # () -> how many jobs run now
        self._what = what
        self._mode = mode
        self._fd: Optional[int] = None
        self._asking = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def jobs_running(self) -> None:
        """Take the lock now if jobs already run (they started before D-Bus was connected)."""
        if self._running_jobs() > 0 and self._fd is None and not self._asking:
            self._take()

    def on_event(self, event: Event) -> None:
        if event.type == events.JOB_STARTED and self._fd is None and not self._asking:
            self._take()
        elif event.type in events.JOB_ENDED and self._running_jobs() == 0:
            self.release()

    def _take(self) -> None:
        self._asking = True
        d = self._conn.callRemote(LOGIND_PATH, "Inhibit", interface=LOGIND_MANAGER, destination=LOGIND,
                                  signature="ssss", body=[self._what, "hypersdk", "VM migrations are running",
                                                          self._mode])
        # No timeout: a reply arriving after one would carry a descriptor nobody closes (a lock held
        # forever). Stopping disconnects, which fails the call.
        d.addCallbacks(self._taken, self._refused)

    def _taken(self, fd: int) -> None:
        self._asking = False
        if self._running_jobs() == 0:  # the jobs ended while logind answered
            os.close(fd)
            return
        self._fd = fd
        self.log.info("holding a logind {mode} lock on {what} while jobs run", mode=self._mode, what=self._what)

    def _refused(self, failure) -> None:
        self._asking = False
        self.log.warn("could not take a logind inhibitor lock: {error}", error=failure.getErrorMessage())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.log.info("released the logind inhibitor lock: no job runs")
