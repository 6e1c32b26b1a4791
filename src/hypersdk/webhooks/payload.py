"""The ``data`` of each event's payload: the job as GET /jobs/{id} shows it, or the schedule run."""

from __future__ import annotations

from typing import Any

from ..api.serialize import job_json
from ..events import Event
from ..schedules.model import ScheduleEvent


def event_data(event: Event) -> dict[str, Any]:
    subject = event.subject
    if isinstance(subject, ScheduleEvent):
        return {"schedule_id": subject.schedule_id, "event": subject.event, "job_ids": list(subject.job_ids),
                "run_id": subject.run_id, "reason": subject.reason}
    return job_json(subject)
