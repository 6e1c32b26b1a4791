"""Membership on a Clock over a real store (both engines): takeover after the lease (judged on the
database's clock), and not right after an outage; a node that comes back learns which jobs it lost;
a node that cannot renew its lease fences itself after half of it."""

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from hypersdk.cluster.membership import Membership
from hypersdk.errors import Unavailable
from hypersdk.jobs.model import FAILED, NewJob, Progress
from hypersdk.store.jobs import this_node
from hypersdk.store.nodes import NodeStore
from tests.helpers import result_of
from tests.stores import silence

pytestmark = pytest.mark.usefixtures("store_engine")

LEASE = 3.0


class FakeManager:
    """The JobManager's side of membership, recording what it is told."""

    def __init__(self, running=()):
        self.running = list(running)
        self.lost, self.settled, self.paused = [], [], None
        self.fenced = []

    def fence(self, reason):
        self.fenced.append(reason)

    def unfence(self):
        self.fenced.append(None)

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

    async def requeue_orphans(self):
        pass


class FlakyNodes(NodeStore):
    """A NodeStore whose heartbeat fails while ``down`` (the database unreachable)."""

    down = False

    def heartbeat(self):
        return fail(Unavailable("down")) if self.down else super().heartbeat()


def member(db, name, clock, manager, nodes_class=NodeStore):
    membership = Membership(nodes_class(db.for_node(this_node(name))), manager, clock, heartbeat_interval=0.5,
                            lease_seconds=LEASE, resumable_stages=("conversion",))
    membership.fence.follow(manager.fence, manager.unfence)
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
    silence(db, "n1", LEASE - 0.5)  # not yet a whole lease by the database's clock
    beat_for(clock, 0.5, m2)
    assert second.settled == []
    silence(db, "n1", 1.0)  # now longer than its lease
    beat_for(clock, 0.5, m2)
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
    silence(db, "n1", 10.0)
    m2._nodes.down = False
    beat_for(clock, LEASE - 0.5, m2)  # back, but n1 has had no chance to beat yet
    assert second.settled == []
    beat_for(clock, 1.0, m2)
    assert [j.id for j, _ in second.settled] == ["j"]


def test_leases_are_judged_on_the_database_s_clock_not_on_the_nodes_own_clocks(db):
    clock1, clock2 = Clock(), Clock()
    clock1.advance(100)
    clock2.advance(100 + 3600)  # n2's clock is an hour ahead of n1's
    second = FakeManager()
    m1 = member(db, "n1", clock1, FakeManager())
    m2 = member(db, "n2", clock2, second)
    result_of(db.insert([NewJob(id="j", definition={"id": "j"}, secrets={}, created_at=1.0)]))
    result_of(db.for_node(m1._nodes.me).claim_next(100.0))
    for _ in range(2 * int(LEASE / 0.5)):
        beat_for(clock1, 0.5, m1)
        beat_for(clock2, 0.5, m2)
    assert second.settled == []
    assert {n.name: n.state for n, _ in m2.known} == {"n1": "up", "n2": "up"}


def test_a_node_that_cannot_renew_its_lease_fences_itself_after_half_of_it_and_not_before(db):
    clock = Clock()
    clock.advance(100)
    manager = FakeManager()
    m = member(db, "n1", clock, manager, FlakyNodes)
    beat_for(clock, 1.0, m)
    m._nodes.down = True
    clock.advance(LEASE / 2 - 0.1)  # half a lease after the last renewal was sent, less a little
    assert manager.fenced == [] and m.fence.fresh()
    clock.advance(0.1)
    assert manager.fenced and "could not renew its lease" in manager.fenced[0]
    assert not m.fence.fresh()
    m._nodes.down = False
    result_of(m.beat())
    assert manager.fenced[-1] is None and m.fence.fresh()  # renewed: it takes jobs again


def test_confirming_a_job_waits_while_fenced_and_says_when_another_node_has_it(db):
    from hypersdk.errors import JobLost

    clock = Clock()
    clock.advance(100)
    m1 = member(db, "n1", clock, FakeManager(), FlakyNodes)
    result_of(db.insert([NewJob(id="j", definition={"id": "j"}, secrets={}, created_at=1.0)]))
    result_of(db.for_node(m1._nodes.me).claim_next(100.0))
    result_of(m1.fence.confirm("j", Progress(stage="inspection")))  # fresh and its own: where it is, stored
    assert result_of(db.get("j")).progress.stage == "inspection"
    m1._nodes.down = True
    clock.advance(LEASE)
    waiting = Deferred.fromCoroutine(m1.fence.confirm("j", Progress(stage="import")))
    assert not waiting.called  # fenced: no side effect until the lease is renewed
    result_of(db.for_node(this_node("n2")).run_with_db(
        lambda db_, box: db_.execute("UPDATE jobs SET owner = 'another' WHERE id = 'j'")))  # taken over meanwhile
    m1._nodes.down = False
    result_of(m1.beat())
    with pytest.raises(JobLost):
        result_of(waiting)
    assert result_of(db.get("j")).progress.stage == "inspection"  # nothing recorded for a job not its own


def test_a_node_whose_name_another_daemon_took_fences_at_once_and_for_good(db):
    clock = Clock()
    clock.advance(100)
    manager = FakeManager()
    m1 = member(db, "n1", clock, manager)
    silence(db, "n1", LEASE + 1)
    result_of(NodeStore(db.for_node(this_node("n1"))).register(LEASE, pid_alive=lambda pid: True))  # a second daemon
    result_of(m1.beat())
    assert manager.paused and manager.fenced and "another daemon has taken node_name n1" in manager.fenced[0]
    result_of(m1.beat())
    assert manager.fenced[-1] is not None and not m1.fence.fresh()


def test_a_stopping_daemon_s_confirmations_give_up_instead_of_waiting_for_a_lease(db):
    from hypersdk.errors import Unavailable as Stopping

    clock = Clock()
    clock.advance(100)
    m1 = member(db, "n1", clock, FakeManager(), FlakyNodes)
    m1._nodes.down = True
    clock.advance(LEASE)
    waiting = Deferred.fromCoroutine(m1.fence.confirm("j", Progress()))
    m1.fence.stopping()
    with pytest.raises(Stopping):
        result_of(waiting)
    with pytest.raises(Stopping):
        result_of(Deferred.fromCoroutine(m1.fence.confirm("j", Progress())))
