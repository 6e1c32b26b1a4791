"""Nodes and the decisions about them, free of I/O.

A node is a daemon sharing the database under its ``node_name``. Each start of the daemon is a new
*instance* of that node; a running job belongs to one instance, and every write about it is
conditional on that, so a node that comes back after losing its lease can never overwrite a job
another node has taken over. A node proves it is alive by its heartbeat: once its last heartbeat
is older than the lease, the others take its jobs over.
"""

from __future__ import annotations

from typing import Optional, Sequence

from attrs import frozen

UP = "up"
STOPPED = "stopped"
LOST = "lost"


@frozen
class NodeId:
    name: str
    instance: str  # unique per daemon start
    host: str  # the machine's host name, and the process: a restart on the same host can
    pid: int  # see that its predecessor is gone without waiting for the lease


@frozen
class Node:
    """A row of the nodes table, as /status shows it."""

    name: str
    instance: str
    host: str
    pid: int
    state: str
    started_at: float
    last_heartbeat: float


@frozen
class Takeover:
    """What becomes of a running job whose node was lost: back to the queue, or failed."""

    requeue: bool
    message: str


def lease_expired(last_heartbeat: float, now: float, lease_seconds: float) -> bool:
    return now - last_heartbeat > lease_seconds


def name_in_use(holder: Optional[Node], me: NodeId, now: float, lease_seconds: float, pid_alive) -> Optional[str]:
    """Why ``me`` may not take its name (another live instance holds it), or None.

    A holder on this same host whose process is gone is no obstacle: the daemon was killed and
    restarted, and need not wait for its old lease to expire."""
    if holder is None or holder.instance == me.instance or holder.state != UP:
        return None
    if lease_expired(holder.last_heartbeat, now, lease_seconds):
        return None
    if holder.host == me.host and not pid_alive(holder.pid):
        return None
    age = max(0.0, now - holder.last_heartbeat)
    return (f"node_name {me.name!r} is in use by a live daemon on {holder.host} (pid {holder.pid}, last heartbeat"
            f" {age:.0f} s ago): stop it, give this daemon another node_name, or wait for its lease"
            f" ({lease_seconds:.0f} s) to expire")


def takeover(node: str, state: str, last_heartbeat_age: float, stage: str, resumable_stages: Sequence[str],
             checkpoint_targets: Sequence[str], unreachable: Sequence[str]) -> Takeover:
    """The fate of a job left running by a node whose lease expired: lost (silent), or stopped with
    jobs still running (its stop timed out).

    A copy with checkpoints goes back to the queue to resume, provided its destination files can be
    reached from the node taking it over; every other job fails with an error naming the node."""
    how = "stopped" if state == STOPPED else "was lost"
    lost = f"node {node} {how} (no heartbeat for {last_heartbeat_age:.0f} s) during {stage}"
    if stage in resumable_stages and checkpoint_targets:
        if not unreachable:
            return Takeover(True, f"{lost}: resuming from its checkpoints on another node")
        return Takeover(False, f"{lost}; its copy ({', '.join(unreachable)}) cannot be reached from the other nodes")
    return Takeover(False, lost)
