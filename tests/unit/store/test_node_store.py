"""Nodes sharing one database: names, leases, takeover and conditional writes (both engines)."""

import pytest

from hypersdk.errors import Conflict, JobLost
from hypersdk.jobs.model import FAILED, PENDING, RUNNING, NewJob, Progress
from hypersdk.store.checkpoints import ChunkRecord
from hypersdk.store.jobs import this_node
from hypersdk.schedules.model import Schedule, ScheduleRun
from hypersdk.store.nodes import NodeStore
from hypersdk.store.schedules import ScheduleStore
from hypersdk.store.webhooks import WebhookStore
from hypersdk.webhooks.model import API, Delivery, Webhook
from tests.helpers import result_of
from tests.stores import silence

pytestmark = pytest.mark.usefixtures("store_engine")

LEASE = 30.0


def new_job(job_id, created_at, vcenter="vc:443"):
    return NewJob(id=job_id, definition={"id": job_id, "vm_path": f"DC0/vm/{job_id}"}, secrets={},
                  created_at=created_at, vcenter_key=vcenter)


def node(db, name):
    """A node's job store and node store on the shared database."""
    store = db.for_node(this_node(name))
    return store, NodeStore(store)


def test_a_live_name_is_refused_to_a_second_daemon_and_free_again_once_its_lease_expires(db):
    _, first = node(db, "conv-1")
    result_of(first.register(LEASE))
    _, second = node(db, "conv-1")
    with pytest.raises(Conflict, match="node_name 'conv-1' is in use by a live daemon"):
        result_of(second.register(LEASE, pid_alive=lambda pid: True))
    silence(db, "conv-1", LEASE + 1)
    result_of(second.register(LEASE, pid_alive=lambda pid: True))
    assert result_of(first.heartbeat()) is False  # the first learns its name is gone
    assert result_of(second.heartbeat()) is True


def test_a_stopped_node_leaves_its_name_free_and_the_list_shows_each_node_with_its_running_jobs(db):
    store1, nodes1 = node(db, "conv-1")
    store2, nodes2 = node(db, "conv-2")
    result_of(nodes1.register(LEASE))
    result_of(nodes2.register(LEASE))
    result_of(db.insert([new_job("a", 1.0), new_job("b", 2.0)]))
    assert result_of(store1.claim_next(101.0)).node == "conv-1"
    result_of(nodes2.leave())
    listed = [(n.name, n.state, running) for n, running in result_of(nodes1.nodes())]
    assert listed == [("conv-1", "up", 1), ("conv-2", "stopped", 0)]
    _, again = node(db, "conv-2")
    result_of(again.register(LEASE, pid_alive=lambda pid: True))


def test_a_lost_nodes_copy_with_checkpoints_is_requeued_and_its_other_jobs_fail_naming_it(db):
    store1, nodes1 = node(db, "conv-1")
    store2, nodes2 = node(db, "conv-2")
    result_of(nodes1.register(LEASE))
    result_of(nodes2.register(LEASE))
    result_of(db.insert([new_job("copying", 1.0), new_job("importing", 2.0), new_job("far", 3.0)]))
    for job_id, stage in (("copying", "conversion"), ("importing", "import"), ("far", "conversion")):
        assert result_of(store1.claim_next(101.0)).id == job_id
        result_of(store1.save_progress(job_id, Progress(stage=stage), 102.0))
        result_of(store1.save_transfer(job_id, 0, {"target": f"/srv/{job_id}.qcow2"}))
        result_of(store1.save_chunks(job_id, 0, [ChunkRecord(0, "h0", False)]))
    hook = Webhook(key="h1", origin=API, url="https://hooks.example.com/x", created_at=1.0)
    result_of(WebhookStore(store1).add_webhook(hook))
    result_of(WebhookStore(store1).add(Delivery(id="d1", hook_key="h1", event="job.started", body=b"{}",
                                                created_at=101.0)))
    schedule = Schedule(id="s1", name="s1", description="", cron="0 2 * * *", timezone="UTC", enabled=True,
                        missed_runs="skip", job_template={}, created_at=1.0, updated_at=1.0)
    result_of(ScheduleStore(store1).insert(schedule, {}))
    result_of(ScheduleStore(store1).record_run(ScheduleRun("s1", "cron", 101.0, "running", ("copying",)), schedule))
    assert result_of(WebhookStore(store2).pending()) == [] and result_of(ScheduleStore(store2).open_runs()) == []

    silence(db, "conv-1", LEASE - 5)
    result_of(nodes2.heartbeat())
    assert result_of(nodes2.take_over(LEASE, ("conversion",))) == ([], 0)  # conv-1's lease runs 5 s more
    silence(db, "conv-1", 6)
    reachable = {"/srv/copying.qcow2", "/srv/importing.qcow2"}.__contains__
    settled, adopted = result_of(nodes2.take_over(LEASE, ("conversion",), reachable))
    settled = {job.id: (job.status, requeued, job.error) for job, requeued in settled}
    assert settled == {
        "copying": (PENDING, True, None),
        "importing": (FAILED, False, "node conv-1 was lost (no heartbeat for 31 s) during import"),
        "far": (FAILED, False, "node conv-1 was lost (no heartbeat for 31 s) during conversion; its copy"
                               " (/srv/far.qcow2) cannot be reached from the other nodes"),
    }
    assert result_of(db.history("copying"))[-1].message == ("node conv-1 was lost (no heartbeat for 31 s) during"
                                                            " conversion: resuming from its checkpoints on another node")
    assert adopted == 2  # conv-2 now sends the delivery and follows the run
    assert [d.id for d in result_of(WebhookStore(store2).pending())] == ["d1"]
    assert [r.job_ids for r in result_of(ScheduleStore(store2).open_runs())] == [("copying",)]
    assert result_of(WebhookStore(store1).pending()) == [] and result_of(ScheduleStore(store1).open_runs()) == []
    assert result_of(nodes2.take_over(LEASE, ("conversion",))) == ([], 0)  # settled once
    assert [(n.name, n.state) for n, _ in result_of(nodes2.nodes())] == [("conv-1", "lost"), ("conv-2", "up")]

    # conv-1 comes back: it learns it lost its jobs, and none of its writes lands
    assert result_of(nodes1.still_mine(["copying"])) == set()
    taken = result_of(store2.claim_next(141.0))
    assert (taken.id, taken.node) == ("copying", "conv-2")
    assert result_of(store1.save_progress("copying", Progress(stage="conversion", current_bytes=9), 142.0)) is False
    with pytest.raises(JobLost):
        result_of(store1.save_chunks("copying", 0, [ChunkRecord(0, "stale", False)]))
    assert result_of(store1.finish("copying", FAILED, 143.0, from_statuses=(RUNNING,), error="late")) is None
    assert result_of(store1.requeue("copying", 143.0, (RUNNING,), "late")) is None
    job = result_of(db.get("copying"))
    assert (job.status, job.node, job.error) == (RUNNING, "conv-2", None)
    assert result_of(db.transfers("copying"))[0][1] == {0: ChunkRecord(0, "h0", False)}
    assert result_of(nodes2.still_mine(["copying"])) == {"copying"}


def test_jobs_per_vcenter_counts_the_jobs_of_every_node(db):
    store1, _ = node(db, "conv-1")
    store2, _ = node(db, "conv-2")
    result_of(db.insert([new_job("a1", 1.0), new_job("a2", 2.0), new_job("b1", 3.0, vcenter="other:443")]))
    assert result_of(store1.claim_next(10.0, jobs_per_vcenter=1)).id == "a1"
    assert result_of(store2.claim_next(10.0, jobs_per_vcenter=1)).id == "b1"  # a2 waits for a1, wherever it runs
    assert result_of(store2.claim_next(10.0, jobs_per_vcenter=1)) is None
    result_of(store1.finish("a1", FAILED, 11.0, from_statuses=(RUNNING,), error="x"))
    assert result_of(store2.claim_next(12.0, jobs_per_vcenter=1)).id == "a2"


def test_a_stopped_node_s_jobs_still_running_are_settled_like_a_lost_node_s_once_its_lease_expires(db):
    store1, nodes1 = node(db, "conv-1")
    _, nodes2 = node(db, "conv-2")
    result_of(nodes1.register(LEASE))
    result_of(nodes2.register(LEASE))
    result_of(db.insert([new_job("copying", 1.0)]))
    result_of(store1.claim_next(101.0))
    result_of(store1.save_progress("copying", Progress(stage="conversion"), 102.0))
    result_of(store1.save_transfer("copying", 0, {"target": "/srv/copying.qcow2"}))
    result_of(nodes1.leave())  # its stop timed out with the copy still running
    assert result_of(nodes2.take_over(LEASE, ("conversion",), lambda path: True)) == ([], 0)
    silence(db, "conv-1", LEASE + 1)
    settled, _ = result_of(nodes2.take_over(LEASE, ("conversion",), lambda path: True))
    assert [(job.id, job.status, requeued) for job, requeued in settled] == [("copying", PENDING, True)]
    assert result_of(db.history("copying"))[-1].message.startswith("node conv-1 stopped (no heartbeat for")
    assert [(n.name, n.state) for n, _ in result_of(nodes2.nodes())] == [("conv-1", "stopped"), ("conv-2", "up")]
