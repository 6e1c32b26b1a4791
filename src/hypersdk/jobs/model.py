"""Job values: what the store returns and the API serializes."""

from __future__ import annotations

from typing import Any, Optional

from attrs import frozen

PENDING = "pending"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"

STATUSES = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED)
ACTIVE = (PENDING, RUNNING)
TERMINAL = (COMPLETED, FAILED, CANCELLED)

STAGES = (
    "queued",
    "connecting",
    "discovery",
    "preparation",
    "conversion",
    "import",
    "verification",
    "done",
)


@frozen
class Progress:
    stage: str = "queued"
    percent_complete: float = 0.0
    current_bytes: int = 0
    total_bytes: int = 0
    disk_index: int = 0
    disk_count: int = 0
    disk_current_bytes: int = 0  # of the disk being copied (disk_index)
    disk_total_bytes: int = 0
    rate_bytes_per_second: float = 0.0
    eta_seconds: Optional[float] = None
    message: str = ""


@frozen
class Job:
    id: str
    definition: dict[str, Any]  # the normalized definition, secrets already "***"
    status: str
    progress: Progress
    created_at: float
    updated_at: float
    started_at: Optional[float] = None
    completed_at: Optional[float] = None
    result: Optional[dict[str, Any]] = None
    error: Optional[str] = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@frozen
class NewJob:
    """A validated job ready to be stored."""

    id: str
    definition: dict[str, Any]  # redacted: secrets replaced by "***"
    secrets: dict[str, str]  # "source.password" -> value; encrypted by the store
    created_at: float


@frozen
class HistoryEntry:
    at: float
    status: str
    stage: str
    message: str


def vcenter_key(definition: dict[str, Any]) -> str:
    """The vCenter a job reads from: its configured name, else its URL (limits.jobs_per_vcenter)."""
    source = definition.get("source", {})
    return source.get("vcenter") or source.get("vcenter_url") or ""
