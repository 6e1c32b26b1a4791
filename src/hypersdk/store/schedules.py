"""Schedules and their runs, in the job store's database, on its engine's thread.

The scheduler holds the schedules in memory and writes each change through;
these functions run on the store's thread via ``JobStore.run_with_db``.
"""

from __future__ import annotations

import json
from typing import Callable, Optional

from attrs import evolve

from ..errors import Conflict
from ..schedules.model import RUNNING, Schedule, ScheduleRun
from .secretbox import SecretBox
from .engine import Db
from .jobs import JobStore

KEEP_RUNS = 100  # run history kept per schedule; the counters keep the totals
_DEFINITION_FIELDS = ("name", "description", "cron", "timezone", "missed_runs", "job_template")
_STATE_COLUMNS = ("enabled", "updated_at", "last_run", "next_run", "run_count", "last_job_ids",
                  "succeeded_runs", "failed_runs", "skipped_runs")


class ScheduleStore:
    def __init__(self, store: JobStore, on_change: Callable[[], None] = lambda: None):
        """``on_change``: called after each write (the other nodes reload the schedules)."""
        self._with_db = store.run_with_db
        self._node = store.node.name
        self._on_change = on_change

    def _write(self, fn, *args):
        return self._with_db(fn, *args).addCallback(self._changed)

    def _changed(self, result):
        self._on_change()
        return result

    def load(self):
        return self._with_db(_thd_load)

    def insert(self, schedule: Schedule, secrets: dict[str, str]):
        return self._write(_thd_insert, schedule, secrets)

    def save(self, schedule: Schedule, secrets: Optional[dict[str, str]] = None):
        """Write every field of ``schedule`` (and its secrets when given)."""
        return self._write(_thd_save, schedule, secrets)

    def delete(self, schedule_id: str):
        return self._write(lambda db, box: _in_transaction(db, "DELETE FROM schedules WHERE id = ?", schedule_id))

    def claim_due(self, schedule_id: str, due: float, next_run: Optional[float]):
        """Move a schedule's next_run from ``due`` on to ``next_run``: True for the one node that does,
        and so runs it (every node's timer fires for it)."""
        return self._with_db(lambda db, box: _in_transaction(
            db, "UPDATE schedules SET next_run = ? WHERE id = ? AND next_run = ?", next_run, schedule_id, due) == 1)

    def secrets(self, schedule_id: str):
        return self._with_db(_thd_secrets, schedule_id)

    def record_run(self, run: ScheduleRun, schedule: Schedule):
        """Insert or update ``run`` together with its schedule's counters; returns the run with its id."""
        return self._write(_thd_record_run, run, schedule, self._node)

    def runs(self, schedule_id: str, limit: int = 20):
        return self._with_db(_thd_runs, "WHERE schedule_id = ? ORDER BY id DESC LIMIT ?", (schedule_id, limit))

    def open_runs(self):
        """The unfinished runs this node follows."""
        return self._with_db(_thd_runs, "WHERE outcome = ? AND (node = ? OR node IS NULL) ORDER BY id",
                             (RUNNING, self._node))


def _thd_load(db: Db, box: SecretBox) -> list[Schedule]:
    return [_schedule(row) for row in db.execute("SELECT * FROM schedules ORDER BY created_at, id")]


def _thd_insert(db: Db, box: SecretBox, schedule: Schedule, secrets: dict[str, str]) -> None:
    with db.transaction():
        if db.execute("SELECT 1 FROM schedules WHERE id = ?", (schedule.id,)).fetchone():
            raise Conflict(f"a schedule with id {schedule.id} already exists")
        db.execute("INSERT INTO schedules (id, definition, secrets, enabled, created_at, updated_at)"
                   " VALUES (?, ?, ?, ?, ?, ?)",
                   (schedule.id, _definition(schedule), box.seal(secrets), schedule.enabled, schedule.created_at,
                    schedule.updated_at))
        _update(db, schedule)


def _thd_save(db: Db, box: SecretBox, schedule: Schedule, secrets) -> None:
    with db.transaction():
        _update(db, schedule)
        if secrets is not None:
            db.execute("UPDATE schedules SET secrets = ? WHERE id = ?", (box.seal(secrets), schedule.id))


def _update(db: Db, s: Schedule) -> None:
    assignments = ", ".join(f"{column} = ?" for column in ("definition",) + _STATE_COLUMNS)
    db.execute(f"UPDATE schedules SET {assignments} WHERE id = ?", (
        _definition(s), s.enabled, s.updated_at, s.last_run, s.next_run, s.run_count, json.dumps(list(s.last_job_ids)),
        s.succeeded_runs, s.failed_runs, s.skipped_runs, s.id,
    ))


def _in_transaction(db: Db, sql: str, *args) -> int:
    with db.transaction():
        return db.execute(sql, args).rowcount


def _thd_secrets(db: Db, box: SecretBox, schedule_id: str) -> dict[str, str]:
    row = db.execute("SELECT secrets FROM schedules WHERE id = ?", (schedule_id,)).fetchone()
    return {} if row is None else box.open(row["secrets"])


def _thd_record_run(db: Db, box: SecretBox, run: ScheduleRun, schedule: Schedule, node: str) -> ScheduleRun:
    values = (run.trigger, run.started_at, run.finished_at, run.outcome, json.dumps(list(run.job_ids)), run.reason)
    with db.transaction():
        if run.id is None:
            run_id = db.one("INSERT INTO schedule_runs (schedule_id, trigger, started_at, finished_at, outcome,"
                            " job_ids, reason, node) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                            (run.schedule_id,) + values + (node,))["id"]
            db.execute(  # keep this schedule's newest KEEP_RUNS ended runs, and any still running
                "DELETE FROM schedule_runs WHERE schedule_id = ? AND outcome != ? AND id NOT IN"
                " (SELECT id FROM schedule_runs WHERE schedule_id = ? ORDER BY id DESC LIMIT ?)",
                (run.schedule_id, RUNNING, run.schedule_id, KEEP_RUNS))
        else:
            run_id = run.id
            db.execute("UPDATE schedule_runs SET trigger = ?, started_at = ?, finished_at = ?, outcome = ?,"
                       " job_ids = ?, reason = ? WHERE id = ?", values + (run_id,))
        _update(db, schedule)
    return evolve(run, id=run_id)


def thd_adopt_runs(db: Db, lost_node: str, node: str) -> int:
    """A lost node's unfinished schedule runs become ``node``'s to follow; how many."""
    return db.execute("UPDATE schedule_runs SET node = ? WHERE node = ? AND outcome = ?",
                      (node, lost_node, RUNNING)).rowcount


def _thd_runs(db: Db, box: SecretBox, where: str, args: tuple) -> list[ScheduleRun]:
    return [
        ScheduleRun(id=row["id"], schedule_id=row["schedule_id"], trigger=row["trigger"], started_at=row["started_at"],
                    finished_at=row["finished_at"], outcome=row["outcome"], job_ids=tuple(json.loads(row["job_ids"])),
                    reason=row["reason"])
        for row in db.execute(f"SELECT * FROM schedule_runs {where}", args)
    ]


def _definition(s: Schedule) -> str:
    return json.dumps({name: getattr(s, name) for name in _DEFINITION_FIELDS})


def _schedule(row) -> Schedule:
    definition = json.loads(row["definition"])
    return Schedule(
        id=row["id"], **definition, enabled=bool(row["enabled"]), created_at=row["created_at"],
        updated_at=row["updated_at"], last_run=row["last_run"], next_run=row["next_run"], run_count=row["run_count"],
        last_job_ids=tuple(json.loads(row["last_job_ids"])), succeeded_runs=row["succeeded_runs"],
        failed_runs=row["failed_runs"], skipped_runs=row["skipped_runs"],
    )
