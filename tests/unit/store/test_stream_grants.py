"""limits.streams_per_vcenter across the nodes sharing a database (both engines): grants are kept in
the database, a node's waiting disks go in order, and the grants of a job that no longer runs under
the instance that took them stop counting."""

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock

from hypersdk.errors import JobLost
from hypersdk.jobs.model import NewJob
from hypersdk.pipeline.transfer.streams import POLL_SECONDS, StreamPool
from hypersdk.store.jobs import this_node
from tests.helpers import result_of

pytestmark = pytest.mark.usefixtures("store_engine")


def claimed(store, *job_ids: str):
    """``store`` (a node's) after it claimed new jobs ``job_ids``."""
    for job_id in job_ids:
        result_of(store.insert([NewJob(id=job_id, definition={"id": job_id}, secrets={}, created_at=1.0)]))
        assert result_of(store.claim_next(2.0)).id == job_id
    return store


def node(db, name: str):
    return db.for_node(this_node(name))


def acquire(pool: StreamPool, job_id: str, vcenter: str, wanted: int) -> Deferred:
    return Deferred.fromCoroutine(pool.for_job(job_id).acquire(vcenter, wanted))


def test_two_nodes_share_one_limit_per_vcenter_and_a_waiting_disk_gets_streams_another_node_gave_back(db):
    clock = Clock()
    pool1 = StreamPool(claimed(node(db, "n1"), "a"), clock, per_vcenter=8)
    pool2 = StreamPool(claimed(node(db, "n2"), "b", "c"), clock, per_vcenter=8)
    a = pool1.for_job("a")
    assert result_of(Deferred.fromCoroutine(a.acquire("vc1", 4))) == 4
    assert result_of(acquire(pool2, "b", "vc1", 2)) == 2
    assert result_of(acquire(pool2, "c", "vc1", 4)) == 2  # what is left of the 8, whichever node asks
    assert result_of(acquire(pool2, "c", "vc2", 4)) == 4  # another vCenter has its own 8
    waiting = acquire(pool2, "b", "vc1", 4)
    clock.advance(POLL_SECONDS)
    assert not waiting.called and result_of(pool1.in_use("vc1")) == 8
    a.release("vc1", 4)  # on n1: n2 finds out when it asks again
    clock.advance(POLL_SECONDS)
    assert result_of(waiting) == 4
    assert result_of(pool2.in_use("vc1")) == 8


def test_the_grants_of_a_job_no_longer_running_under_its_instance_stop_counting(db):
    clock = Clock()
    pool1 = StreamPool(claimed(node(db, "n1"), "a"), clock, per_vcenter=4)
    pool2 = StreamPool(claimed(node(db, "n2"), "b"), clock, per_vcenter=4)
    assert result_of(acquire(pool1, "a", "vc", 4)) == 4
    waiting = acquire(pool2, "b", "vc", 4)
    clock.advance(POLL_SECONDS)
    assert not waiting.called
    # n1 was lost and its job went back to the queue: its grant was never given back
    result_of(db.run_with_db(lambda d, box: d.execute("UPDATE jobs SET status = 'pending', owner = NULL WHERE id = 'a'")))
    clock.advance(POLL_SECONDS)
    assert result_of(waiting) == 4
    with pytest.raises(JobLost):  # n1 asks for its lost job: refused
        result_of(acquire(pool1, "a", "vc2", 1))


def test_a_node_s_waiting_disks_go_in_order_and_a_cancelled_wait_leaves_the_line(db):
    clock = Clock()
    pool = StreamPool(claimed(node(db, "n1"), "a", "b", "c"), clock, per_vcenter=2)
    first = pool.for_job("a")
    assert result_of(Deferred.fromCoroutine(first.acquire("vc", 2))) == 2
    second, third = acquire(pool, "b", "vc", 2), acquire(pool, "c", "vc", 1)
    errors = []
    second.addErrback(lambda f: errors.append(f.check(CancelledError)))
    second.cancel()
    first.release("vc", 2)  # the release on this node wakes its next waiter at once
    assert errors == [CancelledError] and result_of(third) == 1


def test_a_grant_asked_again_after_its_answer_was_lost_is_the_same_grant(db):
    from hypersdk.store import streams as grants

    store = claimed(node(db, "n1"), "a")
    ask = (store.node, "g1", "a", "vc", 4, 8)
    assert result_of(store.run_with_db(grants.thd_grant, *ask)) == 4
    assert result_of(store.run_with_db(grants.thd_grant, *ask)) == 4  # not a second grant, nor an error
    assert result_of(StreamPool(store, Clock(), per_vcenter=8).in_use("vc")) == 4


def test_a_job_claimed_again_does_not_count_the_grants_an_earlier_run_never_gave_back(db):
    clock = Clock()
    store = claimed(node(db, "n1"), "a")
    pool = StreamPool(store, clock, per_vcenter=4)
    assert result_of(acquire(pool, "a", "vc", 4)) == 4  # never released: the run was interrupted
    result_of(store.requeue("a", 3.0, ("running",), "interrupted"))
    assert result_of(store.claim_next(4.0)).id == "a"  # the same instance runs it again
    assert result_of(acquire(pool, "a", "vc", 4)) == 4
