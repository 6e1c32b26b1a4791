"""Jobs that run on another node sharing the database: finding them, and waiting for one to end
after this node asked its node to cancel it."""

from __future__ import annotations

from typing import Collection, Optional

from twisted.internet.task import deferLater

from .model import RUNNING

POLL_SECONDS = 0.2


async def running_elsewhere(store, here: Collection[str], job_ids: Optional[list[str]]) -> list[str]:
    """Which of ``job_ids`` (every running job when None) run, but not ``here``."""
    if job_ids == []:
        return []
    jobs, _ = await store.query([RUNNING], job_ids, 10_000, 0, count=False)
    return [job.id for job in jobs if job.id not in here]


async def until_ended(store, clock, job_id: str, seconds: float) -> Optional[str]:
    """The status a job on another node ends with, within ``seconds`` (polled); else None."""
    deadline = clock.seconds() + seconds
    while clock.seconds() < deadline:
        job = await store.get(job_id)
        if job is None or job.status != RUNNING:
            return job.status if job else None
        await deferLater(clock, POLL_SECONDS, lambda: None)
    return None


async def why_not_cancellable(store, job_id: str) -> str:
    job = await store.get(job_id)
    if job is None:
        return "job not found"
    if job.status == RUNNING:
        return "job is running on another daemon"
    return f"job already {job.status}"
