"""Named thread pools for blocking calls to remote systems (vCenter, libvirt)."""

from __future__ import annotations

import threading

from twisted.python.threadpool import ThreadPool


def _daemon_thread(*args, **kwargs) -> threading.Thread:
    return threading.Thread(*args, daemon=True, **kwargs)


class RemoteCallPool(ThreadPool):
    """A ThreadPool whose stop() never waits for a call still blocked on the network.

    Its threads are daemon threads and the join happens off the reactor thread:
    a vCenter that stopped answering must not hold up the daemon's exit (each
    call still ends on its own socket timeout).
    """

    threadFactory = staticmethod(_daemon_thread)

    def stop(self) -> None:
        if not self.working:
            super().stop()
            return
        threading.Thread(target=super().stop, name=f"{self.name}-stop", daemon=True).start()
