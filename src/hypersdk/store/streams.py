"""Datastore streams in use per vCenter, across every node sharing the database (run on the job
store's engine): ``limits.streams_per_vcenter`` holds for the cluster, not per node.

A grant counts only while its job runs under the instance that took it, so the grants of a node
that was killed or lost its jobs stop counting without anyone removing them (the next grant for
that vCenter sweeps them).
"""

from __future__ import annotations

from ..cluster.model import NodeId
from ..jobs.model import RUNNING
from .engine import Db
from .ownership import thd_check_owned

GRANT_LOCK = 0x68797067  # PostgreSQL: nodes granting streams at once take turns (an advisory lock id)


def streams_for(wanted: int, free: int) -> int:
    """How many streams a disk gets of the vCenter's ``free`` ones: as many as it wants and there are
    (none when none is free: the disk waits)."""
    return max(0, min(wanted, free))


def thd_grant(db: Db, box, me: NodeId, grant_id: str, job_id: str, vcenter: str, wanted: int, limit: int) -> int:
    """Up to ``wanted`` of the vCenter's free streams for the job (0 when none is free)."""
    with db.transaction():
        if db.dialect == "postgresql":
            db.execute("SELECT pg_advisory_xact_lock(?)", (GRANT_LOCK,))
        thd_check_owned(db, job_id, me.instance)
        granted = db.one("SELECT streams FROM stream_grants WHERE id = ?", (grant_id,))
        if granted is not None:  # a call tried again after its answer was lost: granted already
            return int(granted["streams"])
        db.execute(f"DELETE FROM stream_grants WHERE vcenter_key = ? AND NOT EXISTS (SELECT 1 FROM jobs j"
                   f" WHERE j.id = stream_grants.job_id AND j.status = '{RUNNING}' AND j.owner = stream_grants.owner)",
                   (vcenter,))
        used = db.one("SELECT coalesce(sum(streams), 0) AS used FROM stream_grants WHERE vcenter_key = ?",
                      (vcenter,))["used"]
        granted = streams_for(wanted, limit - int(used))
        if granted:
            db.execute("INSERT INTO stream_grants (id, job_id, owner, vcenter_key, streams) VALUES (?, ?, ?, ?, ?)",
                       (grant_id, job_id, me.instance, vcenter, granted))
        return granted


def thd_release(db: Db, box, grant_id: str) -> None:
    db.execute("DELETE FROM stream_grants WHERE id = ?", (grant_id,))


def thd_in_use(db: Db, box, vcenter: str) -> int:
    """Streams counted against the vCenter now (grants of running jobs under their owners)."""
    return int(db.one(f"SELECT coalesce(sum(g.streams), 0) AS used FROM stream_grants g JOIN jobs j ON j.id = g.job_id"
                      f" AND j.owner = g.owner AND j.status = '{RUNNING}' WHERE g.vcenter_key = ?", (vcenter,))["used"])
