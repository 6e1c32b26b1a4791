"""The job store: jobs, their history and their transfer checkpoints, on either engine.

Every method hands a ``thd_*`` function to the engine, which runs it with a connection on its own
thread(s), never the reactor's. What a running job writes and reads goes through ``run_durable``:
while PostgreSQL cannot be reached it waits for it, so the job goes on and nothing it wrote is lost. State changes are conditional (``WHERE status IN (...)``), so a
terminal status is never overwritten. The secrets of jobs are sealed with a key kept in a file
beside the database (or named by the configuration), never in it.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from typing import Any, Callable, Optional, Sequence

from attrs import asdict, fields

from ..cluster.model import NodeId
from ..errors import Conflict
from ..jobs.model import CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, STATUSES, HistoryEntry, Job, NewJob, Progress
from . import transfers
from .engine import Db
from .ownership import thd_check_owned
from .secretbox import SecretBox, thd_open_box

JOB_COLUMNS = ("id, status, definition, progress, result, error, created_at, started_at, completed_at, updated_at,"
                " vcenter_key, node")
_PROGRESS_FIELDS = {f.name for f in fields(Progress)}
# The next pending job, oldest first. SQLite: without statistics its planner would sort every pending
# job on each claim, while the partial index is that list already. PostgreSQL: a job another node
# is claiming is skipped, not waited for.
_CLAIM = {
    "sqlite": f"SELECT seq FROM jobs INDEXED BY jobs_pending_fifo WHERE status = '{PENDING}'{{skip}}"
              f" ORDER BY seq LIMIT 1",
    "postgresql": f"SELECT seq FROM jobs WHERE status = '{PENDING}'{{skip}} ORDER BY seq LIMIT 1"
                  f" FOR UPDATE SKIP LOCKED",
}
# With limits.jobs_per_vcenter, the vCenters that have that many jobs running, on any node.
_FULL_VCENTERS = (f" AND vcenter_key NOT IN (SELECT vcenter_key FROM jobs WHERE status = '{RUNNING}'"
                  f" GROUP BY vcenter_key HAVING count(*) >= ?)")
# Claims that count running jobs per vCenter take turns across the nodes (PostgreSQL; SQLite
# transactions are serial already): two nodes counting at once could both take the last place.
CLAIM_LOCK = 0x68797066
# A running job is written only by the instance that runs it.
_OWNED = f"(status != '{RUNNING}' OR owner = ?)"
_HISTORY_ORDER = {"sqlite": "at, rowid", "postgresql": "at, seq"}


class JobStore:
    def __init__(self, engine, key_path: Optional[str], node: Optional[NodeId] = None):
        """``key_path``: the secrets key file (created on first open); None keeps
        a throw-away key in memory (tests, ``:memory:`` databases). ``node``: this daemon, as it
        claims and writes jobs (a fresh instance of this host's name by default)."""
        self._engine = engine
        self._key_path = key_path
        self._box: Optional[SecretBox] = None
        self.node = node or this_node(socket.gethostname())

    def for_node(self, node: NodeId) -> "JobStore":
        """This open database and key, as another node (or a later start of this one) uses them."""
        other = JobStore(self._engine, self._key_path, node)
        other._box = self._box
        return other

    @property
    def dialect(self) -> str:
        return self._engine.dialect

    # -- lifecycle ---------------------------------------------------------

    def open(self):
        """Connect, migrate the schema, load (or create) the secrets key."""
        return self._engine.call(self._thd_open)

    def _thd_open(self) -> None:
        self._engine.thd_open()
        self._box = self._engine.thd_run(thd_open_box, self._key_path) if self._key_path else SecretBox.generate()

    def close(self):
        """Close the database; calls still waiting for a server that does not answer are cut first."""
        self._engine.abort_calls()
        return self._engine.call(self._engine.thd_close)

    def ping(self):
        return self._engine.run(lambda db: db.one("SELECT 1 AS ok"))

    def run_with_db(self, fn: Callable[..., Any], *args):
        """``fn(db, secret_box, *args)`` on the engine's thread: for the stores that share this
        database (schedules, webhooks)."""
        return self._engine.run(lambda db: fn(db, self._box, *args))

    def run_with_db_durable(self, fn: Callable[..., Any], *args):
        """As ``run_with_db``, waiting through an outage of the database (for a running job)."""
        return self._engine.run_durable(lambda db: fn(db, self._box, *args))

    # -- writes --------------------------------------------------------------

    def insert(self, jobs: Sequence[NewJob]):
        return self._engine.run(self._thd_insert, list(jobs))

    def _thd_insert(self, db: Db, jobs: list[NewJob]) -> None:
        rows = [(job.id, PENDING, json.dumps(job.definition), self._box.seal(job.secrets), _dump_progress(Progress()),
                 job.created_at, job.created_at, job.vcenter_key) for job in jobs]
        with db.transaction():
            duplicate = _first_duplicate(db, [job.id for job in jobs])
            if duplicate is not None:
                raise Conflict(f"a job with id {duplicate} already exists")
            db.executemany(
                "INSERT INTO jobs (id, status, definition, secrets, progress, created_at, updated_at, vcenter_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            add_history(db, [(job.id, job.created_at, PENDING, "queued", "submitted") for job in jobs])

    def claim_next(self, now: float, jobs_per_vcenter: Optional[int] = None):
        return self._engine.run(self._thd_claim_next, now, jobs_per_vcenter)

    def _thd_claim_next(self, db: Db, now: float, jobs_per_vcenter: Optional[int] = None) -> Optional[Job]:
        limit = () if jobs_per_vcenter is None else (jobs_per_vcenter,)
        with db.transaction():
            if limit and db.dialect == "postgresql":
                db.execute("SELECT pg_advisory_xact_lock(?)", (CLAIM_LOCK,))
            row = db.one(
                f"UPDATE jobs SET status = ?, started_at = ?, updated_at = ?, node = ?, owner = ?"
                f" WHERE seq = ({_CLAIM[db.dialect].format(skip=_FULL_VCENTERS if limit else '')})"
                f" RETURNING {JOB_COLUMNS}",
                (RUNNING, now, now, self.node.name, self.node.instance, *limit),
            )
            if row is None:
                return None
            job = job_from_row(row)
            add_history(db, [(job.id, now, RUNNING, job.progress.stage, "started")])
            db.execute("DELETE FROM stream_grants WHERE job_id = ?", (job.id,))  # (an earlier run's, never given back)
            return job

    def save_progress(self, job_id: str, progress: Progress, now: float, note: Optional[str] = None):
        return self._engine.run_durable(self._thd_save_progress, job_id, progress, now, note)

    def _thd_save_progress(self, db: Db, job_id, progress, now, note) -> bool:
        with db.transaction():
            changed = db.execute(
                f"UPDATE jobs SET {_NEWER_PROGRESS} WHERE id = ? AND status = ? AND owner = ?",
                (now, _dump_progress(progress), now, now, job_id, RUNNING, self.node.instance),
            ).rowcount
            if changed and note:
                add_history(db, [(job_id, now, RUNNING, progress.stage, note)])
            return bool(changed)

    def confirm_progress(self, job_id: str, progress: Progress, now: float):
        """Store where a running job is, if this instance still runs it (else JobLost), waiting through
        an outage: what another node would read, were it to take the job over, is where it is."""
        return self._engine.run_durable(self._thd_owned, job_id, _thd_newer_progress, _dump_progress(progress), now)

    def finish(self, job_id, status, now, *, from_statuses, error=None, result=None, progress=None):
        return self._engine.run_durable(self._thd_finish, job_id, status, now, tuple(from_statuses), error, result, progress)

    def _thd_finish(self, db: Db, job_id, status, now, from_statuses, error, result, progress) -> Optional[Job]:
        marks = ",".join("?" * len(from_statuses))
        completed_at = now if status in (COMPLETED, FAILED, CANCELLED) else None
        with db.transaction():
            row = db.one(
                f"UPDATE jobs SET status = ?, error = ?, result = ?, completed_at = ?, updated_at = ?,"
                f" progress = COALESCE(?, progress)"
                f" WHERE id = ? AND status IN ({marks}) AND {_OWNED} RETURNING {JOB_COLUMNS}",
                (status, error, None if result is None else json.dumps(result), completed_at, now,
                 None if progress is None else _dump_progress(progress), job_id, *from_statuses, self.node.instance),
            )
            if row is None:
                return None
            job = job_from_row(row)
            add_history(db, [(job_id, now, status, job.progress.stage, error or status)])
            return job

    def cancel_pending(self, job_ids, now: float):
        return self._engine.run(self._thd_cancel_pending, None if job_ids is None else list(job_ids), now)

    def _thd_cancel_pending(self, db: Db, job_ids: Optional[list[str]], now: float) -> list[Job]:
        if job_ids == []:
            return []
        match = "" if job_ids is None else f" AND id IN ({','.join('?' * len(job_ids))})"
        with db.transaction():
            rows = db.all(
                f"UPDATE jobs SET status = ?, completed_at = ?, updated_at = ?"
                f" WHERE status = '{PENDING}'{match} RETURNING {JOB_COLUMNS}",
                (CANCELLED, now, now, *(job_ids or ())),
            )
            jobs = [job_from_row(row) for row in rows]
            add_history(db, [(job.id, now, CANCELLED, job.progress.stage, CANCELLED) for job in jobs])
        return jobs

    def fail_interrupted(self, now: float, resumable: Sequence[str] = ()):
        return self._engine.run(self._thd_fail_interrupted, now, tuple(resumable))

    def _thd_fail_interrupted(self, db: Db, now: float, resumable: tuple[str, ...]) -> tuple[list[Job], list[Job]]:
        with db.transaction():  # this node's jobs from before its restart (the other nodes' go on)
            rows = db.all(f"SELECT {JOB_COLUMNS} FROM jobs WHERE status = ? AND (node = ? OR node IS NULL)"
                          f" AND (owner IS NULL OR owner != ?)", (RUNNING, self.node.name, self.node.instance))
            requeued, failed = [], []
            for row in rows:
                stage = job_from_row(row).progress.stage
                if stage in resumable and transfers.thd_has_transfers(db, row["id"]):
                    requeued.append(requeue_job(db, row["id"], now, (RUNNING,),
                                             f"interrupted by a restart during {stage}: resuming"))
                    continue
                error = f"interrupted: daemon restarted during {stage}"
                updated = db.one(
                    f"UPDATE jobs SET status = ?, error = ?, completed_at = ?, updated_at = ?"
                    f" WHERE id = ? AND status = ? RETURNING {JOB_COLUMNS}",
                    (FAILED, error, now, now, row["id"], RUNNING),
                )
                add_history(db, [(row["id"], now, FAILED, stage, error)])
                failed.append(job_from_row(updated))
            return requeued, failed

    def requeue(self, job_id: str, now: float, from_statuses: Sequence[str], note: str):
        return self._engine.run_durable(self._thd_requeue, job_id, now, tuple(from_statuses), note)

    def _thd_requeue(self, db: Db, job_id, now, from_statuses, note) -> Optional[Job]:
        with db.transaction():
            return requeue_job(db, job_id, now, from_statuses, note, owner=self.node.instance)

    # -- transfer checkpoints ----------------------------------------------------------

    def save_transfer(self, job_id: str, disk: int, info: dict):
        return self._engine.run_durable(self._thd_owned, job_id, transfers.thd_save_transfer, disk, info)

    def save_change_id(self, job_id: str, disk: int, change_id):
        return self._engine.run_durable(self._thd_owned, job_id, transfers.thd_save_change_id, disk, change_id)

    def save_chunks(self, job_id: str, disk: int, records):
        return self._engine.run_durable(self._thd_owned, job_id, transfers.thd_save_chunks, disk, list(records))

    def _thd_owned(self, db: Db, job_id: str, fn: Callable[..., Any], *args) -> Any:
        """``fn(db, job_id, *args)`` in a transaction, if this instance still runs the job."""
        with db.transaction():
            thd_check_owned(db, job_id, self.node.instance)
            return fn(db, job_id, *args)

    def transfers(self, job_id: str):
        return self._engine.run_durable(transfers.thd_transfers, job_id)  # a running job's: waits out an outage

    def clear_transfers(self, job_id: str):
        return self._engine.run(_in_transaction, transfers.thd_clear_transfers, job_id)

    def forget_transfers(self, job_id: str):
        """Drop a running job's checkpoints before its copies are removed (JobLost if another instance
        runs it): a node taking it over from then on fails it instead of resuming into nothing."""
        return self._engine.run_durable(self._thd_owned, job_id, transfers.thd_clear_transfers)

    def requeue_orphans(self, running: Sequence[str], now: float):
        """Jobs this instance claimed but does not run (the claim's answer never came back): to the queue."""
        return self._engine.run(self._thd_requeue_orphans, list(running), now)

    def _thd_requeue_orphans(self, db: Db, running: list[str], now: float) -> list[Job]:
        with db.transaction():
            rows = db.all(f"SELECT id FROM jobs WHERE status = '{RUNNING}' AND owner = ?", (self.node.instance,))
            orphans = [row["id"] for row in rows if row["id"] not in running]
            note = "claimed by this node, which never started it (the claim's answer was lost): back to the queue"
            return [job for job in (requeue_job(db, job_id, now, (RUNNING,), note, owner=self.node.instance)
                                    for job_id in orphans) if job is not None]

    # -- reads -----------------------------------------------------------------

    def get(self, job_id: str):
        return self._engine.run(self._thd_get, job_id)

    def _thd_get(self, db: Db, job_id: str) -> Optional[Job]:
        row = db.one(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else job_from_row(row)

    def secrets(self, job_id: str):
        return self._engine.run_durable(self._thd_secrets, job_id)

    def _thd_secrets(self, db: Db, job_id: str) -> dict[str, str]:
        row = db.one("SELECT secrets FROM jobs WHERE id = ?", (job_id,))
        return {} if row is None else self._box.open(row["secrets"])

    def history(self, job_id: str):
        return self._engine.run(self._thd_history, job_id)

    def _thd_history(self, db: Db, job_id: str) -> list[HistoryEntry]:
        rows = db.all(f"SELECT at, status, stage, message FROM job_history WHERE job_id = ?"
                      f" ORDER BY {_HISTORY_ORDER[db.dialect]}", (job_id,))
        return [HistoryEntry(at=r["at"], status=r["status"], stage=r["stage"], message=r["message"]) for r in rows]

    def query(self, statuses, job_ids, limit: int, offset: int, count: bool = True):
        return self._engine.run(self._thd_query, statuses, job_ids, limit, offset, count)

    def _thd_query(self, db: Db, statuses, job_ids, limit, offset, count) -> tuple[list[Job], Optional[int]]:
        where, params = [], []
        if statuses is not None:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        if job_ids is not None:
            where.append(f"id IN ({','.join('?' * len(job_ids))})")
            params.extend(job_ids)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = db.one(f"SELECT count(*) AS n FROM jobs{clause}", params)["n"] if count else None
        rows = db.all(f"SELECT {JOB_COLUMNS} FROM jobs{clause} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                      (*params, limit, offset))
        return [job_from_row(r) for r in rows], total

    def counts(self):
        return self._engine.run(_thd_counts)


def _thd_counts(db: Db) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for status in STATUSES:  # one index probe per status beats a GROUP BY scan
        counts[status] = db.one("SELECT count(*) AS n FROM jobs WHERE status = ?", (status,))["n"]
    return counts


def _in_transaction(db: Db, fn: Callable[..., Any], *args) -> Any:
    with db.transaction():
        return fn(db, *args)


def requeue_job(db: Db, job_id: str, now: float, from_statuses: Sequence[str], note: str,
             owner: Optional[str] = None) -> Optional[Job]:
    """Back to the queue; with ``owner``, only if that instance runs it (or it is not running)."""
    marks = ",".join("?" * len(from_statuses))
    owned = (f" AND {_OWNED}", (owner,)) if owner is not None else ("", ())
    row = db.one(
        f"UPDATE jobs SET status = ?, error = NULL, result = NULL, completed_at = NULL, updated_at = ?, owner = NULL"
        f" WHERE id = ? AND status IN ({marks}){owned[0]} RETURNING {JOB_COLUMNS}",
        (PENDING, now, job_id, *from_statuses, *owned[1]))
    if row is None:
        return None
    job = job_from_row(row)
    add_history(db, [(job_id, now, PENDING, job.progress.stage, note)])
    return job


# Progress is replaced only by progress taken later (writes of one job may land out of order while
# the database is slow); updated_at follows.
_NEWER_PROGRESS = ("progress = CASE WHEN updated_at <= ? THEN ? ELSE progress END,"
                   " updated_at = CASE WHEN updated_at <= ? THEN ? ELSE updated_at END")


def _thd_newer_progress(db: Db, job_id: str, progress: str, now: float) -> None:
    db.execute(f"UPDATE jobs SET {_NEWER_PROGRESS} WHERE id = ?", (now, progress, now, now, job_id))


def _first_duplicate(db: Db, ids: list[str]) -> Optional[str]:
    """The first id that is stored already or repeated in ``ids``, else None."""
    seen = set()
    for job_id in ids:
        if job_id in seen or db.one("SELECT 1 AS found FROM jobs WHERE id = ?", (job_id,)):
            return job_id
        seen.add(job_id)
    return None


def add_history(db: Db, rows: list[tuple[str, float, str, str, str]]) -> None:
    """History lines: (job_id, at, status, stage, message)."""
    db.executemany("INSERT INTO job_history (job_id, at, status, stage, message) VALUES (?, ?, ?, ?, ?)", rows)


def _dump_progress(progress: Progress) -> str:
    return json.dumps(asdict(progress))


def job_from_row(row) -> Job:
    progress = json.loads(row["progress"])
    return Job(
        id=row["id"],
        definition=json.loads(row["definition"]),
        status=row["status"],
        progress=Progress(**{k: v for k, v in progress.items() if k in _PROGRESS_FIELDS}),
        result=None if row["result"] is None else json.loads(row["result"]),
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        updated_at=row["updated_at"],
        vcenter_key=row["vcenter_key"] or "",
        node=row["node"],
    )


def this_node(name: str) -> NodeId:
    """A new instance of the node ``name``: this process, on this host."""
    return NodeId(name=name, instance=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid())
