"""The WebSocket /ws: ``status`` and ``jobs`` on connect, ``status`` every 2 s, ``job_update`` on every
job change, ``schedule_event`` on every schedule run event.

One Autobahn factory serves every client. Each message is serialized and framed
once, then handed to every client. A client whose connection cannot keep up has
its messages held (the transport tells us to pause); past a bound it is dropped,
so one slow reader never delays the others or grows the daemon's memory.
"""

from __future__ import annotations

import json
import socket
from collections import deque
from typing import Any, Callable

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from .. import events
from ..errors import HyperSDKError, Unavailable
from ..events import Event, EventBus
from ..timefmt import rfc3339
from .serialize import job_json

STATUS_EVERY = 2.0
PING_EVERY, PING_TIMEOUT = 30, 60
HELD_BYTES_LIMIT = 1024 * 1024  # a client holding more than this unsent is dropped
# The kernel's send buffer per client, fixed rather than autotuned (up to 4 MiB each on
# Linux): it bounds memory with many clients, and a stalled client shows up sooner.
KERNEL_SEND_BUFFER = 256 * 1024
INITIAL_JOBS = 100


class UpgradeRequired(HyperSDKError):
    status = 426
    code = "upgrade_required"


# Not named ``log``: Autobahn keeps its own (txaio) logger there, whose debug lines
# (the raw opening handshake, a ?token= included) must never reach our log.
_log = Logger(namespace="hypersdk.api.ws")


class LiveFeed(WebSocketServerFactory):
    """The factory and the hub: knows every client, feeds them from the event bus."""

    def __init__(self, *, clock, bus: EventBus, status: Callable[[], dict], newest_jobs: Callable[[], Deferred],
                 max_clients: int = 1000, held_bytes_limit: int = HELD_BYTES_LIMIT, ping_every: float = PING_EVERY,
                 ping_timeout: float = PING_TIMEOUT):
        super().__init__()
        self.protocol = LiveProtocol
        self.setProtocolOptions(autoPingInterval=ping_every, autoPingTimeout=ping_timeout)
        self._clock = clock
        self._bus = bus
        self._status = status
        self.newest_jobs = newest_jobs
        self.max_clients = max_clients
        self.held_bytes_limit = held_bytes_limit
        self.clients: set[LiveProtocol] = set()
        self._ticker = LoopingCall(self._send_status)
        self._ticker.clock = clock
        self._unsubscribe = None
        self.dropped_slow = 0

    def start(self) -> None:
        self.startFactory()  # twisted.web does not start factories mounted as resources
        self._unsubscribe = self._bus.subscribe(self._on_event)
        self._ticker.start(STATUS_EVERY, now=False)

    def stop(self) -> None:
        if self._ticker.running:
            self._ticker.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
        for client in list(self.clients):
            client.sendClose(1001, "server stopping")
        self.stopFactory()

    # -- messages ------------------------------------------------------------------

    def message(self, kind: str, data: dict[str, Any]) -> bytes:
        envelope = {"type": kind, "timestamp": rfc3339(self._clock.seconds()), "data": data}
        return json.dumps(envelope, separators=(",", ":")).encode()

    def status_message(self) -> bytes:
        return self.message("status", self._status())

    def _send_status(self) -> None:
        if self.clients:
            self.broadcast(self.status_message())

    def _on_event(self, event: Event) -> None:
        if not self.clients:
            return
        if event.type.startswith("job."):
            self.broadcast(self.message("job_update", job_json(event.subject)))
        elif event.type in events.SCHEDULE_EVENTS.values():
            s = event.subject
            self.broadcast(self.message("schedule_event", {
                "schedule_id": s.schedule_id, "event": s.event, "job_ids": list(s.job_ids), "run_id": s.run_id,
                "reason": s.reason}))

    def broadcast(self, payload: bytes) -> None:
        prepared = self.prepareMessage(payload)  # framed once for every client
        for client in list(self.clients):
            client.send_prepared(prepared, len(payload))


@implementer(IPushProducer)
class _Flow:
    """Told by the transport when its buffer is full (pause) and drained (resume)."""

    def __init__(self, protocol: "LiveProtocol"):
        self._protocol = protocol

    def pauseProducing(self):
        self._protocol.paused = True

    def resumeProducing(self):
        self._protocol.paused = False
        self._protocol.flush_held()

    def stopProducing(self):
        pass


class LiveProtocol(WebSocketServerProtocol):
    def __init__(self):
        super().__init__()
        self.paused = False
        self.ready = False  # the initial status and jobs have gone out
        self._held: deque = deque()
        self._held_bytes = 0

    def onOpen(self):
        feed: LiveFeed = self.factory
        # The HTTP channel that upgraded was the transport's producer: now we are.
        self.transport.unregisterProducer()
        self.transport.registerProducer(_Flow(self), True)
        handle = getattr(self.transport, "getHandle", lambda: None)()
        if isinstance(handle, socket.socket):
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)
        feed.clients.add(self)  # from now on, updates are held until the initial messages are out
        self._send_direct(feed.status_message())
        d = feed.newest_jobs()
        d.addCallback(lambda jobs: self._send_initial(feed.message("jobs", {"jobs": [job_json(j) for j in jobs]})))
        d.addErrback(self._initial_failed)

    def _initial_failed(self, failure) -> None:
        _log.failure("websocket: reading the newest jobs failed", failure)
        self._send_initial(self.factory.message("jobs", {"jobs": []}))  # live updates still flow

    def _send_initial(self, payload: bytes) -> None:
        self._send_direct(payload)
        self.ready = True
        self.flush_held()

    def _send_direct(self, payload: bytes) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(payload)

    def send_prepared(self, prepared, size: int) -> None:
        if self.state != self.STATE_OPEN:
            return  # closing: no more data frames
        if self.ready and not self.paused and not self._held:
            self.sendPreparedMessage(prepared)
            return
        self._held.append((prepared, size))
        self._held_bytes += size
        if self._held_bytes > self.factory.held_bytes_limit:
            self.factory.dropped_slow += 1
            _log.warn("websocket client {peer} dropped: {held} bytes of messages it could not take",
                          peer=self.peer, held=self._held_bytes)
            self._held.clear()
            self.factory.clients.discard(self)
            self.dropConnection(abort=True)

    def flush_held(self) -> None:
        while self._held and self.ready and not self.paused and self.state == self.STATE_OPEN:
            prepared, size = self._held.popleft()
            self._held_bytes -= size
            self.sendPreparedMessage(prepared)

    def onMessage(self, payload, isBinary):
        pass  # the feed is one-way; pings and closes are Autobahn's

    def onClose(self, wasClean, code, reason):
        self.factory.clients.discard(self)
        self._held.clear()


class LiveArea:
    """GET /ws: the upgrade, or 426 for a plain request, or 503 past the client limit."""

    def __init__(self, feed: LiveFeed):
        self._feed = feed
        self._resource = WebSocketResource(feed)

    def register(self, app) -> None:
        app.route("/ws", methods=["GET"], branch=False, endpoint="ws")(self.ws)

    def ws(self, request):
        if (request.getHeader("upgrade") or "").lower() != "websocket":
            raise UpgradeRequired("/ws is a WebSocket: connect with a WebSocket client (ws://host:port/ws)")
        if len(self._feed.clients) >= self._feed.max_clients:
            raise Unavailable(f"too many WebSocket clients (limits.websocket_clients: {self._feed.max_clients})")
        return self._resource
