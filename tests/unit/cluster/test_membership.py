"""Membership on a Clock over a real store (both engines): takeover after the lease, and not
right after an outage; a node that comes back learns which jobs it lost."""

import pytest
from twisted.internet.defer import fail
from twisted.internet.task import Clock

from hypersdk.cluster.membership import Membership
from hypersdk.errors import Unavailable
from hypersdk.jobs.model import FAILED, NewJob
from hypersdk.store.jobs import this_node
from hypersdk.store.nodes import NodeStore
from tests.helpers import result_of

pytestmark = pytest.mark.usefixtures("store_engine")

LEASE = 3.0


class FakeManager:
    """The JobManager's side of membership, recording what it is told."""

    def __init__(self, running=()):
        self.running = list(running)
        self.lost, self.settled, self.paused = [], [], None

    def running_ids(self):
        return list(self.running)

    def lose(self, job_ids):
        self.lost.extend(job_ids)

    def took_over(self, settled):
        self.settled.extend(settled)

    def pause(self, reason):
        self.paused = reason

    async def refresh_counts(self):
        pass


class FlakyNodes(NodeStore):
    """A NodeStore whose heartbeat fails while ``down`` (the database unreachable)."""

    down = False

    def heartbeat(self, now):
        return fail(Unavailable("down")) if self.down else super().heartbeat(now)


def member(db, name, clock, manager, nodes_class=NodeStore):
    membership = Membership(nodes_class(db.for_node(this_node(name))), manager, clock, heartbeat_interval=0.5,
                            lease_seconds=LEASE, resumable_stages=("conversion",))
    result_of(membership.start())
    membership._loop.stop()  # the test beats for each node itself (a silent node is one it leaves out)
    return membership


def beat_for(clock, seconds, *members):
    for _ in range(int(seconds / 0.5)):
        clock.advance(0.5)
        for m in members:
            result_of(m.beat())


def test_a_silent_node_s_job_is_taken_over_after_the_lease_and_the_node_learns_it_lost_it(db):
    clock = Clock()
    clock.advance(100)
    first, second = FakeManager(), FakeManager()
    m1 = member(db, "n1", clock, first)
    m2 = member(db, "n2", clock, second)
    result_of(db.insert([NewJob(id="j", definition={"id": "j"}, secrets={}, created_at=1.0)]))
    job = result_of(db.for_node(m1._nodes.me).claim_next(100.0))
    first.running = [job.id]
    beat_for(clock, 5, m1, m2)  # both alive: nothing moves
    assert second.settled == [] and first.lost == []
    beat_for(clock, LEASE + 0.5, m2)  # n1 silent for longer than its lease
    assert [(j.id, j.status, requeued) for j, requeued in second.settled] == [("j", FAILED, False)]
    assert "node n1 was lost" in second.settled[0][0].error
    assert [(n.name, n.state) for n, _ in m2.known] == [("n1", "lost"), ("n2", "up")]
    result_of(m1.beat())  # n1 comes back
    assert first.lost == ["j"]


def test_after_an_outage_a_node_waits_a_whole_lease_of_heartbeats_before_judging_the_others(db):
    clock = Clock()
    clock.advance(100)
    m1 = member(db, "n1", clock, FakeManager())
    second = FakeManager()
    m2 = member(db, "n2", clock, second, FlakyNodes)
    result_of(db.insert([NewJob(id="j", definition={"id": "j"}, secrets={}, created_at=1.0)]))
    result_of(db.for_node(m1._nodes.me).claim_next(100.0))
    m2._nodes.down = True
    for _ in range(20):  # 10 s without heartbeats on n2's side (n1 is cut off too: it is silent)
        clock.advance(0.5)
        with pytest.raises(Unavailable):
            result_of(m2.beat())
    m2._nodes.down = False
    beat_for(clock, LEASE - 0.5, m2)  # back, but n1 has had no chance to beat yet
    assert second.settled == []
    beat_for(clock, 1.0, m2)
    assert [j.id for j, _ in second.settled] == ["j"]
