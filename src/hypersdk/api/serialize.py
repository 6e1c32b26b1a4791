"""The JSON shapes of the API, written out field by field."""

from __future__ import annotations

from typing import Any, Optional

from ..jobs.model import HistoryEntry, Job, Progress
from ..timefmt import rfc3339


def progress_json(p: Progress) -> dict[str, Any]:
    return {
        "stage": p.stage,
        "percent_complete": round(p.percent_complete, 2),
        "current_bytes": p.current_bytes,
        "total_bytes": p.total_bytes,
        "disk_index": p.disk_index,
        "disk_count": p.disk_count,
        "rate_bytes_per_second": round(p.rate_bytes_per_second),
        "eta_seconds": None if p.eta_seconds is None else round(p.eta_seconds),
        "message": p.message,
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
    }
    if history is not None:
        body["history"] = [
            {"at": rfc3339(h.at), "status": h.status, "stage": h.stage, "message": h.message} for h in history
        ]
    return body
