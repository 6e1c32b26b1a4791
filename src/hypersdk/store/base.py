"""The job repository interface.

The manager and the API depend on this, never on SQLite: a PostgreSQL backend
shared by several daemons implements the same methods. Every method returns a
Deferred (or is a coroutine) and never blocks the reactor thread. State changes
are conditional, so a terminal status is never overwritten.
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence

from ..jobs.model import HistoryEntry, Job, NewJob, Progress
from .checkpoints import ChunkRecord


class JobStore(Protocol):
    async def open(self) -> None:
        """Create or migrate the schema."""

    async def close(self) -> None:
        """Flush and close; no call may follow."""

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""

    async def insert(self, jobs: Sequence[NewJob]) -> None:
        """Store new pending jobs, all or none; errors.Conflict on a duplicate id."""

    async def get(self, job_id: str) -> Optional[Job]: ...

    async def history(self, job_id: str) -> list[HistoryEntry]: ...

    async def secrets(self, job_id: str) -> dict[str, str]:
        """The decrypted secrets of a job ({"source.password": ...})."""

    async def query(
        self,
        statuses: Optional[Sequence[str]],
        job_ids: Optional[Sequence[str]],
        limit: int,
        offset: int,
        count: bool = True,
    ) -> tuple[list[Job], Optional[int]]:
        """Matching jobs newest first, and how many match before limit/offset (None unless ``count``)."""

    async def counts(self) -> dict[str, int]:
        """Number of jobs per status (every status present, 0 when none)."""

    async def claim_next(self, now: float, jobs_per_vcenter: Optional[int] = None) -> Optional[Job]:
        """Move the oldest pending job to running on this node and return it, or None. With
        ``jobs_per_vcenter``, a job whose vCenter has that many jobs running on any node waits."""

    async def save_progress(self, job_id: str, progress: Progress, now: float, note: Optional[str]) -> bool:
        """Record a running job's progress (and a history line when ``note``)."""

    async def finish(
        self,
        job_id: str,
        status: str,
        now: float,
        *,
        from_statuses: Sequence[str],
        error: Optional[str] = None,
        result: Optional[dict] = None,
        progress: Optional[Progress] = None,
    ) -> Optional[Job]:
        """Move a job from one of ``from_statuses`` to ``status`` (with its last
        progress); None if it was not in one of them."""

    async def cancel_pending(self, job_ids: Optional[Sequence[str]], now: float) -> list[Job]:
        """Cancel the pending jobs among ``job_ids`` (every pending job when None), in one go."""

    async def fail_interrupted(self, now: float, resumable: Sequence[str] = ()) -> tuple[list[Job], list[Job]]:
        """Jobs left running by a previous process: those with transfer checkpoints whose stage is in
        ``resumable`` go back to the queue, the others fail. Returns (requeued, failed)."""

    async def requeue(self, job_id: str, now: float, from_statuses: Sequence[str], note: str) -> Optional[Job]:
        """Back to pending (a suspended or a resumed job); None if it was not in one of ``from_statuses``."""

    async def save_transfer(self, job_id: str, disk: int, info: dict) -> None:
        """What a disk's checkpoints are of (source identity, chunk size, target); its chunks are dropped."""

    async def save_change_id(self, job_id: str, disk: int, change_id: Optional[str]) -> None:
        """The changeId of the source a disk's target is now a whole copy of (a warm pass); its chunks stay."""

    async def save_chunks(self, job_id: str, disk: int, records: Sequence[ChunkRecord]) -> None:
        """Checkpoint chunks written (idempotent)."""

    async def transfers(self, job_id: str) -> dict[int, tuple[dict, dict[int, ChunkRecord]]]:
        """Per disk: its transfer info and the chunks checkpointed."""

    async def clear_transfers(self, job_id: str) -> None: ...
