"""Schedule values. Services change them by producing new ones (attrs.evolve)."""

from __future__ import annotations

from typing import Any, Optional

from attrs import frozen

CATCH_UP = "catch_up"
SKIP = "skip"
MISSED_RUNS = (CATCH_UP, SKIP)

# How a run started
BY_CRON, BY_TRIGGER, BY_CATCH_UP = "cron", "trigger", "catch_up"
# How a run ended: RUNNING until its jobs have all finished
RUNNING, SUCCEEDED, FAILED, SKIPPED = "running", "succeeded", "failed", "skipped"


@frozen
class Schedule:
    id: str
    name: str
    description: str
    cron: str
    timezone: str
    enabled: bool
    missed_runs: str
    job_template: dict[str, Any]  # normalized job definition, secrets as "***"
    created_at: float
    updated_at: float
    last_run: Optional[float] = None
    next_run: Optional[float] = None  # None while disabled
    run_count: int = 0  # runs that were made (not skipped)
    last_job_ids: tuple[str, ...] = ()
    succeeded_runs: int = 0
    failed_runs: int = 0
    skipped_runs: int = 0


@frozen
class ScheduleRun:
    schedule_id: str
    trigger: str
    started_at: float
    outcome: str
    job_ids: tuple[str, ...] = ()
    reason: Optional[str] = None  # why it failed or was skipped
    finished_at: Optional[float] = None
    id: Optional[int] = None  # given by the store


@frozen
class ScheduleEvent:
    """The subject of schedule.* events on the bus."""

    schedule_id: str
    event: str  # "triggered" | "completed" | "failed"
    job_ids: tuple[str, ...]
    run_id: Optional[int] = None
    reason: Optional[str] = None
