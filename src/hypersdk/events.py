"""In-process event bus.

Jobs and schedules publish each change once; the WebSocket, webhooks and
metrics subscribe. A subscriber that raises is logged and never disturbs the
publisher or the other subscribers.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from attrs import frozen
from twisted.logger import Logger

JOB_SUBMITTED = "job.submitted"
JOB_STARTED = "job.started"
JOB_PROGRESS = "job.progress"
JOB_COMPLETED = "job.completed"
JOB_FAILED = "job.failed"
JOB_CANCELLED = "job.cancelled"
JOB_CUTOVER_STARTED = "job.cutover_started"  # a warm job's cutover was asked for
JOB_ENDED = (JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED)  # a job reached a terminal status
SCHEDULE_TRIGGERED = "schedule.triggered"
SCHEDULE_COMPLETED = "schedule.completed"
SCHEDULE_FAILED = "schedule.failed"
SCHEDULE_EVENTS = {"triggered": SCHEDULE_TRIGGERED, "completed": SCHEDULE_COMPLETED, "failed": SCHEDULE_FAILED}


@frozen
class Event:
    type: str
    timestamp: float
    subject: Any  # a jobs.model.Job for job events, a schedules.model.ScheduleEvent for schedule events
    origin: Optional[str] = None  # the node it happened on, when another one (cluster.events)


class EventBus:
    log = Logger()

    def __init__(self) -> None:
        self._subscribers: list[Callable[[Event], None]] = []

    def subscribe(self, callback: Callable[[Event], None], *, local_only: bool = False) -> Callable[[], None]:
        """Call ``callback(event)`` for every event (``local_only``: those of this node); returns the
        unsubscribe function."""
        if local_only:
            callback = _local(callback)
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def publish(self, event: Event) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                self.log.failure("event subscriber failed on {event_type}", event_type=event.type)


def _local(callback: Callable[[Event], None]) -> Callable[[Event], None]:
    def on_local(event: Event) -> None:
        if event.origin is None:
            callback(event)

    return on_local
