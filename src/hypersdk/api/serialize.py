"""The JSON shapes of the API, written out field by field."""

from __future__ import annotations

from typing import Any, Optional

from ..jobs.model import HistoryEntry, Job, Progress
from ..schedules.model import Schedule, ScheduleRun
from ..timefmt import rfc3339


def progress_json(p: Progress) -> dict[str, Any]:
    return {
        "stage": p.stage,
        "percent_complete": round(p.percent_complete, 2),
        "current_bytes": p.current_bytes,
        "total_bytes": p.total_bytes,
        "disk_index": p.disk_index,
        "disk_count": p.disk_count,
        "disk_current_bytes": p.disk_current_bytes,
        "disk_total_bytes": p.disk_total_bytes,
        "rate_bytes_per_second": round(p.rate_bytes_per_second),
        "eta_seconds": None if p.eta_seconds is None else round(p.eta_seconds),
        "message": p.message,
        "disks": [dict(d) for d in p.disks],  # every disk being copied: index, label, current_bytes, total_bytes
        "resumed_at_bytes": p.resumed_at_bytes,
        "passes": [{**dict(w), "started_at": rfc3339(w["started_at"])} for w in p.passes],
        "next_pass_at": rfc3339(p.next_pass_at),
    }


def job_json(job: Job, history: Optional[list[HistoryEntry]] = None) -> dict[str, Any]:
    body = {
        "id": job.id,
        "definition": {**job.definition, "created_at": rfc3339(job.created_at)},
        "status": job.status,
        "progress": progress_json(job.progress),
        "result": job.result,
        "error": job.error,
        "created_at": rfc3339(job.created_at),
        "started_at": rfc3339(job.started_at),
        "completed_at": rfc3339(job.completed_at),
        "updated_at": rfc3339(job.updated_at),
        "node": job.node,
    }
    if history is not None:
        body["history"] = [
            {"at": rfc3339(h.at), "status": h.status, "stage": h.stage, "message": h.message} for h in history
        ]
    return body


def schedule_json(s: Schedule) -> dict[str, Any]:
    return {
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "schedule": s.cron,
        "timezone": s.timezone,
        "enabled": s.enabled,
        "missed_runs": s.missed_runs,
        "job_template": s.job_template,
        "created_at": rfc3339(s.created_at),
        "updated_at": rfc3339(s.updated_at),
        "last_run": rfc3339(s.last_run),
        "next_run": rfc3339(s.next_run),
        "run_count": s.run_count,
        "last_job_ids": list(s.last_job_ids),
        "successful_runs": s.succeeded_runs,
        "failed_runs": s.failed_runs,
        "skipped_runs": s.skipped_runs,
    }


def schedule_run_json(run: ScheduleRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "trigger": run.trigger,
        "outcome": run.outcome,
        "started_at": rfc3339(run.started_at),
        "finished_at": rfc3339(run.finished_at),
        "job_ids": list(run.job_ids),
        "reason": run.reason,
    }
