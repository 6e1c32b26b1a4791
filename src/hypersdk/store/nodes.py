"""The nodes table: each daemon's name, heartbeat and lease, and the takeover of a lost node's jobs.

Runs on the job store's engine (``JobStore.run_with_db``). With SQLite there is one node; the same
statements keep its row and ``/status`` shows it.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from ..cluster.model import LOST, STOPPED, UP, Node, NodeId, name_in_use, takeover
from ..errors import Conflict
from ..jobs.model import FAILED, RUNNING, Job
from .engine import SERVER_NOW, Db
from . import transfers
from .jobs import JOB_COLUMNS, JobStore, add_history, job_from_row, requeue_job
from .schedules import thd_adopt_runs
from .webhooks import thd_adopt_deliveries

# Row locks: PostgreSQL nodes checking one another at once each take a different lost node.
_LOCK = {"sqlite": "", "postgresql": " FOR UPDATE SKIP LOCKED"}


class NodeStore:
    """Leases are judged on the database server's clock, never on the nodes' own: nodes whose clocks
    disagree still agree on whose lease has expired."""

    def __init__(self, store: JobStore):
        self._with_db = store.run_with_db
        self.me = store.node
        self.confirm_progress = store.confirm_progress  # (what the fence records before a side effect)

    def register(self, lease_seconds: float, pid_alive: Callable[[int], bool] = None):
        """Take this node's name (errors.Conflict if a live daemon holds it)."""
        return self._with_db(_thd_register, self.me, lease_seconds, pid_alive or _pid_alive)

    def heartbeat(self):
        """Renew this node's lease; False if another instance has taken its name."""
        return self._with_db(_thd_set_state, self.me, UP)

    def leave(self):
        return self._with_db(_thd_set_state, self.me, STOPPED)

    def nodes(self):
        """Every node with the number of jobs it runs: [(Node, running_jobs)]."""
        return self._with_db(_thd_nodes)

    def still_mine(self, job_ids: Sequence[str]):
        """Which of ``job_ids`` this instance still runs (the others were taken over)."""
        return self._with_db(_thd_still_mine, self.me, list(job_ids))


    def take_over(self, lease_seconds: float, resumable_stages: Sequence[str],
                  reachable: Callable[[str], bool] = os.path.exists):
        """Settle the running jobs of nodes whose lease expired (lost ones, and stopped ones that left
        jobs running) and adopt their pending webhook deliveries and unfinished schedule runs:
        ([(Job, requeued)], how many adopted)."""
        return self._with_db(_thd_take_over, self.me, lease_seconds, tuple(resumable_stages), reachable)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _node(row) -> Node:
    return Node(name=row["name"], instance=row["instance"], host=row["host"], pid=row["pid"], state=row["state"],
                started_at=row["started_at"], last_heartbeat=row["last_heartbeat"])


def _thd_register(db: Db, box, me: NodeId, lease_seconds: float, pid_alive) -> None:
    with db.transaction():
        now = db.server_now()
        db.execute("INSERT INTO nodes (name, instance, host, pid, state, started_at, last_heartbeat)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                   (me.name, me.instance, me.host, me.pid, UP, now, now))
        lock = " FOR UPDATE" if db.dialect == "postgresql" else ""
        holder = _node(db.one(f"SELECT * FROM nodes WHERE name = ?{lock}", (me.name,)))
        problem = name_in_use(holder, me, now, lease_seconds, pid_alive)
        if problem:
            raise Conflict(problem)
        db.execute("UPDATE nodes SET instance = ?, host = ?, pid = ?, state = ?, started_at = ?, last_heartbeat = ?"
                   " WHERE name = ?", (me.instance, me.host, me.pid, UP, now, now, me.name))


def _thd_set_state(db: Db, box, me: NodeId, state: str) -> bool:
    # one statement, its own transaction: the row is never held locked waiting for this node
    server_now = SERVER_NOW[db.dialect]
    return db.execute(f"UPDATE nodes SET state = ?, last_heartbeat = {server_now} WHERE name = ? AND instance = ?",
                      (state, me.name, me.instance)).rowcount == 1


def _thd_nodes(db: Db, box) -> list[tuple[Node, int]]:
    rows = db.all(f"SELECT n.*, (SELECT count(*) FROM jobs j WHERE j.status = '{RUNNING}' AND j.node = n.name)"
                  f" AS running_jobs FROM nodes n ORDER BY n.name")
    return [(_node(row), row["running_jobs"]) for row in rows]


def _thd_still_mine(db: Db, box, me: NodeId, job_ids: list[str]) -> set[str]:
    if not job_ids:
        return set()
    marks = ",".join("?" * len(job_ids))
    rows = db.all(f"SELECT id FROM jobs WHERE id IN ({marks}) AND status = '{RUNNING}' AND owner = ?",
                  (*job_ids, me.instance))
    return {row["id"] for row in rows}


def _thd_take_over(db: Db, box, me: NodeId, lease_seconds: float, resumable: tuple[str, ...],
                   reachable: Callable[[str], bool]) -> tuple[list[tuple[Job, bool]], int]:
    settled: list[tuple[Job, bool]] = []
    adopted = 0
    with db.transaction():
        now = db.server_now()
        candidates = db.all(f"SELECT * FROM nodes WHERE state IN ('{UP}', '{STOPPED}') AND name != ?"
                            f" AND last_heartbeat < ?{_LOCK[db.dialect]}", (me.name, now - lease_seconds))
        for gone in map(_node, candidates):
            if gone.state == UP:
                db.execute("UPDATE nodes SET state = ? WHERE name = ? AND instance = ?", (LOST, gone.name, gone.instance))
            for row in db.all(f"SELECT {JOB_COLUMNS} FROM jobs WHERE status = ? AND owner = ?",
                              (RUNNING, gone.instance)):
                settled.append(_settle(db, job_from_row(row), gone, now, resumable, reachable))
            adopted += thd_adopt_deliveries(db, gone.name, me.name) + thd_adopt_runs(db, gone.name, me.name)
    return settled, adopted


def _settle(db: Db, job: Job, gone: Node, now: float, resumable, reachable) -> tuple[Job, bool]:
    targets = transfers.thd_targets(db, job.id)
    fate = takeover(gone.name, gone.state, now - gone.last_heartbeat, job.progress.stage, resumable, targets,
                    [t for t in targets if not reachable(t)])
    if fate.requeue:
        return requeue_job(db, job.id, now, (RUNNING,), fate.message), True
    row = db.one(f"UPDATE jobs SET status = ?, error = ?, completed_at = ?, updated_at = ?, owner = NULL"
                 f" WHERE id = ? AND status = ? RETURNING {JOB_COLUMNS}",
                 (FAILED, fate.message, now, now, job.id, RUNNING))
    add_history(db, [(job.id, now, FAILED, job.progress.stage, fate.message)])
    return job_from_row(row), False
