"""SQLite job store: WAL mode, versioned schema, one dedicated thread.

Every method hands a ``thd_*`` function to the injected runner, which executes
it on the store's single thread (or inline in unit tests). The connection is
only ever touched from there.
"""

from __future__ import annotations

import json
import os
import sqlite3
from importlib import resources
from typing import Any, Callable, Optional, Sequence

from attrs import asdict, fields

from ..errors import Conflict
from ..jobs.model import CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, STATUSES, HistoryEntry, Job, NewJob, Progress
from . import transfers
from .secretbox import SecretBox, thd_load_or_create_key

_JOB_COLUMNS = ("id, status, definition, progress, result, error, created_at, started_at, completed_at, updated_at,"
                " vcenter_key")
_PROGRESS_FIELDS = {f.name for f in fields(Progress)}
_PENDING_FIFO = f"INDEXED BY jobs_pending_fifo WHERE status = '{PENDING}'"  # a literal, to match the partial index


def migrations() -> list[tuple[int, str]]:
    """The numbered schema files, in order: (version, sql)."""
    found = []
    for entry in resources.files(__package__).joinpath("schema").iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


class SQLiteJobStore:
    def __init__(self, path: str, runner, key_path: Optional[str]):
        """``key_path``: the secrets key file (created on first open); None keeps
        a throw-away key in memory (tests, ``:memory:`` databases)."""
        self._path = path
        self._key_path = key_path
        self._run: Callable[..., Any] = runner.run
        self._box: Optional[SecretBox] = None
        self._conn: Optional[sqlite3.Connection] = None

    # -- lifecycle ---------------------------------------------------------

    def open(self):
        return self._run(self._thd_open)

    def close(self):
        return self._run(self._thd_close)

    def ping(self):
        return self._run(lambda: self._db.execute("SELECT 1").fetchone())

    def _thd_open(self) -> None:
        if self._path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self._path)), mode=0o700, exist_ok=True)
        self._box = SecretBox(thd_load_or_create_key(self._key_path)) if self._key_path else SecretBox.generate()
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None, timeout=10)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        conn.execute("PRAGMA foreign_keys=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, sql in migrations():
            if number > version:
                conn.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;")
        self._conn = conn

    def _thd_close(self) -> None:
        if self._conn is not None:
            self._conn.execute("PRAGMA optimize")
            self._conn.close()
            self._conn = None

    def run_with_db(self, fn: Callable[..., Any], *args):
        """``fn(connection, secret_box, *args)`` on the store's thread: for the
        repositories that share this database (schedules)."""
        return self._run(lambda: fn(self._db, self._box, *args))

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("job store is not open")
        return self._conn

    # -- writes --------------------------------------------------------------

    def insert(self, jobs: Sequence[NewJob]):
        return self._run(self._thd_insert, list(jobs))

    def _thd_insert(self, jobs: list[NewJob]) -> None:
        rows = [
            (
                job.id,
                PENDING,
                json.dumps(job.definition),
                self._box.seal(job.secrets),
                _dump_progress(Progress()),
                job.created_at,
                job.created_at,
                job.vcenter_key,
            )
            for job in jobs
        ]
        with transaction(self._db) as db:
            duplicate = _first_duplicate(db, [job.id for job in jobs])
            if duplicate is not None:
                raise Conflict(f"a job with id {duplicate} already exists")
            db.executemany(
                "INSERT INTO jobs (id, status, definition, secrets, progress, created_at, updated_at, vcenter_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            _add_history(db, [(job.id, job.created_at, PENDING, "queued", "submitted") for job in jobs])

    def claim_next(self, now: float, busy_vcenters: Sequence[str] = ()):
        return self._run(self._thd_claim_next, now, tuple(busy_vcenters))

    def _thd_claim_next(self, now: float, busy_vcenters: Sequence[str] = ()) -> Optional[Job]:
        skip = f" AND vcenter_key NOT IN ({', '.join('?' * len(busy_vcenters))})" if busy_vcenters else ""
        with transaction(self._db) as db:
            row = db.execute(
                # Without statistics the planner sorts every pending job on each claim;
                # the partial index is the oldest-first list already.
                f"UPDATE jobs SET status = ?, started_at = ?, updated_at = ?"
                f" WHERE seq = (SELECT seq FROM jobs {_PENDING_FIFO}{skip} ORDER BY seq LIMIT 1)"
                f" RETURNING {_JOB_COLUMNS}",
                (RUNNING, now, now, *busy_vcenters),
            ).fetchone()
            if row is None:
                return None
            job = _job(row)
            _add_history(db, [(job.id, now, RUNNING, job.progress.stage, "started")])
            return job

    def save_progress(self, job_id: str, progress: Progress, now: float, note: Optional[str] = None):
        return self._run(self._thd_save_progress, job_id, progress, now, note)

    def _thd_save_progress(self, job_id, progress, now, note) -> bool:
        with transaction(self._db) as db:
            changed = db.execute(
                "UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ? AND status = ?",
                (_dump_progress(progress), now, job_id, RUNNING),
            ).rowcount
            if changed and note:
                _add_history(db, [(job_id, now, RUNNING, progress.stage, note)])
            return bool(changed)

    def finish(self, job_id, status, now, *, from_statuses, error=None, result=None, progress=None):
        return self._run(self._thd_finish, job_id, status, now, tuple(from_statuses), error, result, progress)

    def _thd_finish(self, job_id, status, now, from_statuses, error, result, progress) -> Optional[Job]:
        marks = ",".join("?" * len(from_statuses))
        completed_at = now if status in (COMPLETED, FAILED, CANCELLED) else None
        with transaction(self._db) as db:
            row = db.execute(
                f"UPDATE jobs SET status = ?, error = ?, result = ?, completed_at = ?, updated_at = ?,"
                f" progress = COALESCE(?, progress)"
                f" WHERE id = ? AND status IN ({marks}) RETURNING {_JOB_COLUMNS}",
                (
                    status,
                    error,
                    None if result is None else json.dumps(result),
                    completed_at,
                    now,
                    None if progress is None else _dump_progress(progress),
                    job_id,
                    *from_statuses,
                ),
            ).fetchone()
            if row is None:
                return None
            job = _job(row)
            _add_history(db, [(job_id, now, status, job.progress.stage, error or status)])
            return job

    def cancel_pending(self, job_ids, now: float):
        return self._run(self._thd_cancel_pending, None if job_ids is None else list(job_ids), now)

    def _thd_cancel_pending(self, job_ids: Optional[list[str]], now: float) -> list[Job]:
        if job_ids == []:
            return []
        match = "" if job_ids is None else f" AND id IN ({','.join('?' * len(job_ids))})"
        with transaction(self._db) as db:
            rows = db.execute(
                f"UPDATE jobs SET status = ?, completed_at = ?, updated_at = ?"
                f" WHERE status = '{PENDING}'{match} RETURNING {_JOB_COLUMNS}",
                (CANCELLED, now, now, *(job_ids or ())),
            ).fetchall()
            jobs = [_job(row) for row in rows]
            _add_history(db, [(job.id, now, CANCELLED, job.progress.stage, CANCELLED) for job in jobs])
        return jobs

    def fail_interrupted(self, now: float, resumable: Sequence[str] = ()):
        return self._run(self._thd_fail_interrupted, now, tuple(resumable))

    def _thd_fail_interrupted(self, now: float, resumable: tuple[str, ...]) -> tuple[list[Job], list[Job]]:
        with transaction(self._db) as db:
            rows = db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = ?", (RUNNING,)).fetchall()
            requeued, failed = [], []
            for row in rows:
                stage = _job(row).progress.stage
                if stage in resumable and transfers.thd_has_transfers(db, row["id"]):
                    requeued.append(self._thd_requeue_in(db, row["id"], now, (RUNNING,),
                                                         f"interrupted by a restart during {stage}: resuming"))
                    continue
                error = f"interrupted: daemon restarted during {stage}"
                updated = db.execute(
                    f"UPDATE jobs SET status = ?, error = ?, completed_at = ?, updated_at = ?"
                    f" WHERE id = ? AND status = ? RETURNING {_JOB_COLUMNS}",
                    (FAILED, error, now, now, row["id"], RUNNING),
                ).fetchone()
                _add_history(db, [(row["id"], now, FAILED, stage, error)])
                failed.append(_job(updated))
            return requeued, failed

    def requeue(self, job_id: str, now: float, from_statuses: Sequence[str], note: str):
        return self._run(self._thd_requeue, job_id, now, tuple(from_statuses), note)

    def _thd_requeue(self, job_id, now, from_statuses, note) -> Optional[Job]:
        with transaction(self._db) as db:
            return self._thd_requeue_in(db, job_id, now, from_statuses, note)

    def _thd_requeue_in(self, db, job_id, now, from_statuses, note) -> Optional[Job]:
        marks = ",".join("?" * len(from_statuses))
        row = db.execute(
            f"UPDATE jobs SET status = ?, error = NULL, result = NULL, completed_at = NULL, updated_at = ?"
            f" WHERE id = ? AND status IN ({marks}) RETURNING {_JOB_COLUMNS}",
            (PENDING, now, job_id, *from_statuses)).fetchone()
        if row is None:
            return None
        job = _job(row)
        _add_history(db, [(job_id, now, PENDING, job.progress.stage, note)])
        return job

    # -- transfer checkpoints ----------------------------------------------------------

    def save_transfer(self, job_id: str, disk: int, info: dict):
        return self._run(self._in_transaction, transfers.thd_save_transfer, job_id, disk, info)

    def save_chunks(self, job_id: str, disk: int, records):
        return self._run(self._in_transaction, transfers.thd_save_chunks, job_id, disk, list(records))

    def transfers(self, job_id: str):
        return self._run(lambda: transfers.thd_transfers(self._db, job_id))

    def clear_transfers(self, job_id: str):
        return self._run(self._in_transaction, transfers.thd_clear_transfers, job_id)

    def _in_transaction(self, fn, *args):
        with transaction(self._db) as db:
            return fn(db, *args)

    # -- reads -----------------------------------------------------------------

    def get(self, job_id: str):
        return self._run(self._thd_get, job_id)

    def _thd_get(self, job_id: str) -> Optional[Job]:
        row = self._db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def secrets(self, job_id: str):
        return self._run(self._thd_secrets, job_id)

    def _thd_secrets(self, job_id: str) -> dict[str, str]:
        row = self._db.execute("SELECT secrets FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return {} if row is None else self._box.open(row["secrets"])

    def history(self, job_id: str):
        return self._run(self._thd_history, job_id)

    def _thd_history(self, job_id: str) -> list[HistoryEntry]:
        rows = self._db.execute(
            "SELECT at, status, stage, message FROM job_history WHERE job_id = ? ORDER BY at, rowid", (job_id,)
        ).fetchall()
        return [HistoryEntry(at=r["at"], status=r["status"], stage=r["stage"], message=r["message"]) for r in rows]

    def query(self, statuses, job_ids, limit: int, offset: int, count: bool = True):
        return self._run(self._thd_query, statuses, job_ids, limit, offset, count)

    def _thd_query(self, statuses, job_ids, limit, offset, count) -> tuple[list[Job], Optional[int]]:
        where, params = [], []
        if statuses is not None:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        if job_ids is not None:
            where.append(f"id IN ({','.join('?' * len(job_ids))})")
            params.extend(job_ids)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = self._db.execute(f"SELECT count(*) FROM jobs{clause}", params).fetchone()[0] if count else None
        rows = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs{clause} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        ).fetchall()
        return [_job(r) for r in rows], total

    def counts(self):
        return self._run(self._thd_counts)

    def _thd_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for status in STATUSES:  # one index probe per status beats a GROUP BY scan
            counts[status] = self._db.execute("SELECT count(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0]
        return counts


class transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (autocommit connection)."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _first_duplicate(db: sqlite3.Connection, ids: list[str]) -> Optional[str]:
    """The first id that is stored already or repeated in ``ids``, else None."""
    seen = set()
    for job_id in ids:
        if job_id in seen or db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone():
            return job_id
        seen.add(job_id)
    return None


def _add_history(db, rows: list[tuple[str, float, str, str, str]]) -> None:
    """History lines: (job_id, at, status, stage, message)."""
    db.executemany("INSERT INTO job_history (job_id, at, status, stage, message) VALUES (?, ?, ?, ?, ?)", rows)


def _dump_progress(progress: Progress) -> str:
    return json.dumps(asdict(progress))


def _job(row: sqlite3.Row) -> Job:
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
    )
