"""systemd's notify protocol (Type=notify): READY=1, STATUS=..., WATCHDOG=1, STOPPING=1.

Datagrams to $NOTIFY_SOCKET (a path, or @name for the abstract namespace), sent
without blocking; without the variable every call does nothing. The watchdog is
fed at half of $WATCHDOG_USEC when that is set for this process.
"""

from __future__ import annotations

import os
import socket
from typing import Callable, Optional

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

STATUS_EVERY = 5.0


class Notifier:
    log = Logger()

    def __init__(self, clock, status: Callable[[], str], environ: Optional[dict] = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._status = status
        self._clock = clock
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self._watchdog = int(usec) / 1e6 if usec.isdigit() and (not pid or pid == str(os.getpid())) else None
        self._loops: list[LoopingCall] = []
        self._socket: Optional[socket.socket] = None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def ready(self) -> None:
        if not self.enabled:
            return
        self._send(f"READY=1\nSTATUS={self._status()}\nMAINPID={os.getpid()}")
        self._every(STATUS_EVERY, lambda: self._send(f"STATUS={self._status()}"))
        if self._watchdog:
            self._every(self._watchdog / 2, lambda: self._send("WATCHDOG=1"))

    def status_changed(self) -> None:
        """A job changed state: `systemctl status` shows the new counts at once."""
        if self.enabled and self._loops:
            self._send(f"STATUS={self._status()}")

    def stopping(self) -> None:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        if self.enabled:
            self._send("STOPPING=1\nSTATUS=stopping")

    def _every(self, seconds: float, send: Callable[[], None]) -> None:
        loop = LoopingCall(send)
        loop.clock = self._clock
        loop.start(seconds, now=False)
        self._loops.append(loop)

    def _send(self, message: str) -> None:
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)
            self._socket.sendto(message.encode(), self._address)
        except OSError as e:  # never let systemd's socket stop the daemon
            self.log.warn("systemd notify failed: {error}", error=str(e))
