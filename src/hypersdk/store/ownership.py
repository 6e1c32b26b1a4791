"""Whether an instance still runs a job: the condition of every write about a running job."""

from __future__ import annotations

from ..errors import JobLost
from ..jobs.model import RUNNING
from .engine import Db


def thd_check_owned(db: Db, job_id: str, instance: str) -> None:
    """Raise JobLost unless ``instance`` runs the job; inside a transaction, the job's row then stays
    so until it ends (PostgreSQL: a takeover waits for it, so no write of a node that lost the job
    lands after the takeover)."""
    share = " FOR SHARE" if db.dialect == "postgresql" else ""  # (SQLite's transactions are serial)
    if not db.one(f"SELECT 1 AS found FROM jobs WHERE id = ? AND status = '{RUNNING}' AND owner = ?{share}",
                  (job_id, instance)):
        raise JobLost(job_id)
