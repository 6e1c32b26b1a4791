"""Events across nodes: what happens on one node reaches the others' WebSocket clients, metrics and
schedules (webhooks and D-Bus stay with the node where it happened).

Each event this node publishes is sent over the database's channel as JSON; each event from another
node is published on this node's bus with ``origin`` set to that node's name. A job too large for
one message is sent by id and read back from the store.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Optional

from attrs import asdict
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from .. import events
from ..events import Event, EventBus
from ..jobs.model import Job, Progress
from ..schedules.model import ScheduleEvent
from ..store.channel import MAX_PAYLOAD_BYTES
from .model import NodeId
from .outage import OnceLogged

# After another node moves jobs, this node recounts them (and looks for work) once per burst.
RECOUNT_DELAY = 0.1
_STATE_CHANGES = (events.JOB_SUBMITTED, events.JOB_STARTED, *events.JOB_ENDED)


def encode(event: Event, me: NodeId) -> str:
    message: dict[str, Any] = {"instance": me.instance, "node": me.name, "type": event.type, "at": event.timestamp}
    if isinstance(event.subject, Job):
        message["job"] = asdict(event.subject)
    else:
        message["schedule"] = asdict(event.subject)
    payload = json.dumps(message, separators=(",", ":"))
    if len(payload.encode()) > MAX_PAYLOAD_BYTES and "job" in message:
        message["job"] = {"id": event.subject.id}
        payload = json.dumps(message, separators=(",", ":"))
    return payload


def decode_subject(message: dict) -> Any:
    """The event's subject, or the id of a job to read from the store."""
    if "schedule" in message:
        s = message["schedule"]
        return ScheduleEvent(**{**s, "job_ids": tuple(s["job_ids"])})
    job = message["job"]
    if "definition" not in job:
        return job["id"]
    return Job(**{**job, "progress": Progress(**job["progress"])})


class EventBridge:
    log = Logger()

    def __init__(self, bus: EventBus, channel, me: NodeId, clock, *, read_job: Callable[[str], Deferred]):
        self._bus = bus
        self._channel = channel
        self._me = me
        self._clock = clock
        self._read_job = read_job
        self._recount: Callable[[], Awaitable] = lambda: succeed(None)
        self._reloads: dict[str, Callable[[], Awaitable]] = {}
        self._cancel: Callable[[str], None] = lambda job_id: None
        self._unsubscribe: Optional[Callable[[], None]] = None
        self._recount_call = None
        self._sending = OnceLogged(self.log, "events do not reach the other nodes: {error}",
                                   "events reach the other nodes again")

    def follow(self, recount: Callable[[], Awaitable], reloads: dict[str, Callable[[], Awaitable]],
               cancel: Callable[[str], None]) -> None:
        """``recount()`` after other nodes moved jobs; ``reloads[topic]()`` when another node announces
        that what ``topic`` names changed; ``cancel(job_id)`` when another node asks to cancel a job."""
        self._recount = recount
        self._reloads = reloads
        self._cancel = cancel

    def ask_cancel(self, job_id: str) -> None:
        """Ask the other nodes to cancel ``job_id`` (the one running it does)."""
        self._send_message({"cancel": job_id})

    def announce(self, topic: str) -> None:
        """Tell the other nodes that what ``topic`` names changed in the database."""
        self._send_message({"changed": topic})

    def _send_message(self, body: dict) -> None:
        self._post(json.dumps({"instance": self._me.instance, "node": self._me.name, **body}))

    def _post(self, payload: str) -> None:
        self._channel.send(payload).addCallbacks(self._sending.ok, self._sending.failed)

    def start(self) -> None:
        self._channel.start(self._received, on_reconnect=self._schedule_recount)
        self._unsubscribe = self._bus.subscribe(self._send, local_only=True)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._recount_call is not None and self._recount_call.active():
            self._recount_call.cancel()
        self._channel.stop()

    def _send(self, event: Event) -> None:
        self._post(encode(event, self._me))

    def _received(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            if message["instance"] == self._me.instance:
                return
            if "changed" in message:
                self._reload(message["changed"])
                return
            if "cancel" in message:
                self._cancel(message["cancel"])
                return
            subject = decode_subject(message)
        except (ValueError, KeyError, TypeError) as e:
            self.log.warn("ignoring a malformed message from another node: {error}", error=str(e))
            return
        if isinstance(subject, str):
            self._read_job(subject).addCallback(
                lambda job: job is not None and self._publish(message, job)).addErrback(
                lambda f: self.log.warn("could not read job {job_id}: {error}", job_id=subject,
                                        error=f.getErrorMessage()))
        else:
            self._publish(message, subject)

    def _publish(self, message: dict, subject: Any) -> None:
        self._bus.publish(Event(message["type"], message["at"], subject, origin=message["node"]))
        if message["type"] in _STATE_CHANGES:
            self._schedule_recount()

    def _reload(self, topic: str) -> None:
        reload = self._reloads.get(topic)
        if reload is not None:
            Deferred.fromCoroutine(_awaited(reload())).addErrback(
                lambda f: self.log.warn("reloading {topic}: {error}", topic=topic, error=f.getErrorMessage()))

    def _schedule_recount(self) -> None:
        if self._recount_call is None or not self._recount_call.active():
            self._recount_call = self._clock.callLater(RECOUNT_DELAY, self._run_recount)

    def _run_recount(self) -> None:
        Deferred.fromCoroutine(_awaited(self._recount())).addErrback(
            lambda f: self.log.warn("recounting jobs: {error}", error=f.getErrorMessage()))


async def _awaited(awaitable: Awaitable) -> None:
    await awaitable
