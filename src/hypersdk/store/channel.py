"""PostgreSQL's LISTEN/NOTIFY on one channel: how the nodes sharing the database tell one another.

Listening needs a connection of its own, held by a thread of its own that waits for notifications
and hands each to the reactor. Sending goes through one more connection on a single thread, so a
node's messages arrive in the order it sent them. Both reconnect after an outage; what was sent
meanwhile is lost (the state itself is in the database).
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .hung import abort_connection
from .runner import ThreadRunner

WAIT_SECONDS = 1.0  # how often the listening thread looks whether it should stop
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
MAX_PAYLOAD_BYTES = 7900  # PostgreSQL refuses payloads of 8000 bytes or more


class PgChannel:
    log = Logger()

    def __init__(self, reactor, conninfo: str, channel: str):
        self._reactor = reactor
        self._conninfo = conninfo
        self._channel = channel
        self._sender = ThreadRunner(reactor, name=f"{channel}-send")
        self._send_conn = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()

    def start(self, on_message: Callable[[str], None], on_reconnect: Callable[[], None] = lambda: None) -> None:
        self._sender.start()
        self._thread = threading.Thread(target=self._listen, args=(on_message, on_reconnect),
                                        name=f"{self._channel}-listen", daemon=True)
        self._thread.start()

    def send(self, payload: str) -> Deferred:
        return self._sender.run(self._thd_send, payload)

    def stop(self) -> None:
        self._stopping.set()
        if self._send_conn is not None:  # a send the server never answers would hold the thread for good
            abort_connection(self._send_conn)
        self._sender.run(self._thd_close_sender)
        self._sender.stop()
        if self._thread is not None:
            self._thread.join(WAIT_SECONDS + 1)

    def _connect(self):
        import psycopg

        return psycopg.connect(self._conninfo, autocommit=True)

    def _thd_send(self, payload: str) -> None:
        try:
            if self._send_conn is None:
                self._send_conn = self._connect()
            self._send_conn.execute("SELECT pg_notify(%s, %s)", (self._channel, payload))
        except Exception:
            self._thd_close_sender()
            raise

    def _thd_close_sender(self) -> None:
        if self._send_conn is not None:
            try:
                self._send_conn.close()
            finally:
                self._send_conn = None

    def _listen(self, on_message, on_reconnect) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f'LISTEN "{self._channel}"')
                    if failures:
                        self.log.info("listening to the other nodes again")
                        self._reactor.callFromThread(on_reconnect)
                    failures = 0
                    while not self._stopping.is_set():
                        for notification in conn.notifies(timeout=WAIT_SECONDS):
                            self._reactor.callFromThread(on_message, notification.payload)
            except Exception as e:
                if not failures:
                    self.log.warn("lost the other nodes' events: {error}", error=str(e).strip() or type(e).__name__)
                self._stopping.wait(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])  # stop() ends it
                failures += 1
