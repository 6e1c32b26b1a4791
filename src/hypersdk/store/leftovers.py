"""What jobs made outside the database, as the pipeline records it before making it (run on the job
store's engine). Each is a JSON object the pipeline reads back (``{"kind": "file", "path": ...}``);
the store only keeps it, with whether it is kept on purpose."""

from __future__ import annotations

import json
from typing import Optional

from ..jobs.model import PENDING, RUNNING
from . import transfers
from .engine import Db


def _key(what: dict) -> str:
    return json.dumps(what, sort_keys=True)


def thd_record(db: Db, box, job_id: str, what: dict, now: float) -> None:
    db.execute("INSERT INTO job_leftovers (job_id, what, kept, created_at) VALUES (?, ?, ?, ?)"
               " ON CONFLICT (job_id, what) DO NOTHING", (job_id, _key(what), False, now))


def thd_forget(db: Db, box, job_id: str, what: Optional[dict]) -> None:
    """One of them (gone now), or all of the job's (``what`` None: they are its result)."""
    if what is None:
        db.execute("DELETE FROM job_leftovers WHERE job_id = ?", (job_id,))
    else:
        db.execute("DELETE FROM job_leftovers WHERE job_id = ? AND what = ?", (job_id, _key(what)))


def thd_keep(db: Db, box, job_id: str) -> list[dict]:
    """Every one of the job's is kept on purpose (a copy to resume, a domain to look at): which."""
    db.execute("UPDATE job_leftovers SET kept = ? WHERE job_id = ?", (True, job_id))
    return thd_list(db, box, job_id, True)


def thd_list(db: Db, box, job_id: str, kept_too: bool) -> list[dict]:
    """The job's, in the order they were made."""
    rows = db.all(f"SELECT what FROM job_leftovers WHERE job_id = ?{'' if kept_too else ' AND NOT kept'}"
                  f" ORDER BY seq", (job_id,))
    return [json.loads(row["what"]) for row in rows]


def thd_jobs_to_clean(db: Db, box, node: str) -> list[str]:
    """This node's ended jobs that still have leftovers not kept on purpose (a crash came between making
    them and removing them)."""
    rows = db.all(f"SELECT DISTINCT l.job_id FROM job_leftovers l JOIN jobs j ON j.id = l.job_id"
                  f" WHERE NOT l.kept AND j.status NOT IN ('{PENDING}', '{RUNNING}') AND (j.node = ? OR j.node IS NULL)",
                  (node,))
    return [row["job_id"] for row in rows]


def thd_kept_before(db: Db, box, before: float) -> list[str]:
    """Ended jobs whose kept leftovers are older than ``before`` (by when the job ended)."""
    rows = db.all(f"SELECT DISTINCT l.job_id FROM job_leftovers l JOIN jobs j ON j.id = l.job_id"
                  f" WHERE l.kept AND j.status NOT IN ('{PENDING}', '{RUNNING}') AND j.completed_at < ?", (before,))
    return [row["job_id"] for row in rows]


def thd_note(db: Db, box, job_id: str, now: float, message: str, resumable: Optional[bool]) -> None:
    """A history line for an ended job (its status stays); ``resumable`` False: what it kept is gone, so
    is the way to resume it (and its checkpoints)."""
    with db.transaction():
        row = db.one("SELECT status, progress, result FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            return
        if resumable is False and row["result"]:
            result = {**json.loads(row["result"]), "resumable": False, "kept": []}
            db.execute("UPDATE jobs SET result = ? WHERE id = ?", (json.dumps(result), job_id))
            transfers.thd_clear_transfers(db, job_id)
        stage = json.loads(row["progress"]).get("stage", "")
        db.execute("INSERT INTO job_history (job_id, at, status, stage, message) VALUES (?, ?, ?, ?, ?)",
                   (job_id, now, row["status"], stage, message))


class LeftoverStore:
    """The leftovers of jobs, on the job store's database."""

    def __init__(self, store):
        self._with_db = store.run_with_db
        self._durable = store.run_with_db_durable
        self._node = store.node

    def record(self, job_id: str, what: dict, now: float):
        return self._durable(thd_record, job_id, what, now)

    def forget(self, job_id: str, what: Optional[dict] = None):
        return self._durable(thd_forget, job_id, what)

    def keep(self, job_id: str):
        return self._durable(thd_keep, job_id)

    def of(self, job_id: str, kept_too: bool = False):
        return self._durable(thd_list, job_id, kept_too)

    def jobs_to_clean(self):
        return self._with_db(thd_jobs_to_clean, self._node.name)

    def kept_before(self, before: float):
        return self._with_db(thd_kept_before, before)

    def note(self, job_id: str, now: float, message: str, resumable: Optional[bool] = None):
        return self._durable(thd_note, job_id, now, message, resumable)
