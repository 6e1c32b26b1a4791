import pytest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from hypersdk import events
from hypersdk.errors import HyperSDKError, Unavailable
from hypersdk.events import EventBus
from hypersdk.jobs.definition import SubmitContext
from hypersdk.jobs.manager import JobManager
from hypersdk.jobs.model import CANCELLED, COMPLETED, FAILED, PENDING, RUNNING
from tests.stores import make_store, sqlite_store
from tests.fakes.pipeline import ScriptedPipeline
from tests.fakes.runner import ImmediateRunner
from tests.helpers import definition, result_of

pytestmark = pytest.mark.usefixtures("store_engine")  # every test on SQLite and on PostgreSQL


class Harness:
    def __init__(self, workers=2, cleanup_seconds=0.0, store=None):
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = store or make_store()  # the engine the test runs on (store_engine)
        self.pipeline = ScriptedPipeline(self.clock, cleanup_seconds)
        self.bus = EventBus()
        self.events = []
        self.bus.subscribe(lambda e: e.type.startswith("job.") and self.events.append((e.type, e.subject.id, e.subject.status)))
        self.manager = JobManager(self.store, self.pipeline, self.clock, self.bus, workers)

    def start(self, open_store=True):
        if open_store:
            result_of(self.store.open())
        result_of(self.manager.start())
        return self

    def submit(self, n=1, **changes):
        specs = self.manager.validate([definition(**changes) for _ in range(n)])
        return [job.id for job in result_of(self.manager.submit(specs))]

    def status(self, job_id):
        return result_of(self.store.get(job_id)).status


@pytest.fixture
def h():
    return Harness().start()


def test_at_most_worker_count_jobs_run_and_the_rest_wait_in_order(h):
    ids = h.submit(5)
    assert h.pipeline.started == ids[:2]
    assert h.manager.status()["active_workers"] == 2
    assert [h.status(i) for i in ids] == [RUNNING, RUNNING, PENDING, PENDING, PENDING]
    h.pipeline.runs[ids[1]].complete()
    assert h.pipeline.started == ids[:3]
    h.pipeline.runs[ids[0]].complete()
    assert h.pipeline.started == ids[:4]
    assert h.status(ids[0]) == COMPLETED


def test_status_counts_follow_every_transition(h):
    ids = h.submit(3)
    h.pipeline.runs[ids[0]].complete()
    h.pipeline.runs[ids[1]].fail(HyperSDKError("boom"))
    assert h.manager.status() == {
        "total_jobs": 3, "running_jobs": 1, "completed_jobs": 1, "failed_jobs": 1,
        "worker_count": 2, "active_workers": 1, "pending_jobs": 0, "cancelled_jobs": 0,
    }


def test_completed_job_has_result_and_done_progress(h):
    [job_id] = h.submit()
    h.pipeline.runs[job_id].complete({"domain_name": "web-1"})
    job = result_of(h.store.get(job_id))
    assert job.result == {"domain_name": "web-1"}
    assert job.progress.stage == "done" and job.progress.percent_complete == 100


def test_failure_names_the_stage_and_the_cause(h):
    [job_id] = h.submit()
    run = h.pipeline.runs[job_id]
    run.reporter.stage_started("conversion")
    run.fail(HyperSDKError("qemu-img exited 1: read error"))
    job = result_of(h.store.get(job_id))
    assert (job.status, job.error) == (FAILED, "conversion: qemu-img exited 1: read error")


def test_unexpected_exception_fails_the_job_without_stopping_the_queue(h):
    ids = h.submit(3)
    h.pipeline.runs[ids[0]].fail(ZeroDivisionError("division by zero"))
    assert h.status(ids[0]) == FAILED
    assert "ZeroDivisionError" in result_of(h.store.get(ids[0])).error
    assert h.pipeline.started == ids


def test_cancelling_a_pending_job_means_it_never_starts(h):
    ids = h.submit(3)
    cancelled, errors = result_of(h.manager.cancel([ids[2]], []))
    assert cancelled == [ids[2]] and errors == {}
    h.pipeline.runs[ids[0]].complete()
    assert ids[2] not in h.pipeline.started
    assert h.status(ids[2]) == CANCELLED


def test_cancelling_a_running_job_stops_its_pipeline_and_waits_for_cleanup():
    h = Harness(cleanup_seconds=1.5).start()
    [job_id] = h.submit()
    d = ensureDeferred(h.manager.cancel([job_id], []))
    run = h.pipeline.runs[job_id]
    assert run.cancelled and not d.called  # still cleaning up
    assert h.status(job_id) == RUNNING
    h.clock.advance(1.5)
    assert run.cleaned_up
    assert result_of(d) == ([job_id], {})
    assert h.status(job_id) == CANCELLED
    assert h.manager.status()["active_workers"] == 0


def test_a_cancelled_job_stays_cancelled_when_its_pipeline_finishes_late(h):
    [job_id] = h.submit()
    run = h.pipeline.runs[job_id]
    result_of(h.manager.cancel([job_id], []))
    run.complete({"domain_name": "late"})
    assert h.status(job_id) == CANCELLED
    assert result_of(h.store.finish(job_id, COMPLETED, 2000.0, from_statuses=(RUNNING,))) is None
    assert result_of(h.manager.cancel([job_id], [])) == ([], {job_id: "job already cancelled"})


def test_cancel_by_status_and_reasons_for_the_rest(h):
    ids = h.submit(4)  # two run, two wait
    h.pipeline.runs[ids[0]].complete()  # the third starts
    cancelled, errors = result_of(h.manager.cancel([ids[0], "nope"], ["pending"]))
    assert cancelled == [ids[3]]
    assert errors == {ids[0]: "job already completed", "nope": "job not found"}
    cancelled, _ = result_of(h.manager.cancel([], ["running", "completed"]))
    assert sorted(cancelled) == sorted(ids[1:3])


def test_every_change_is_published_once(h):
    [job_id] = h.submit()
    run = h.pipeline.runs[job_id]
    run.reporter.stage_started("conversion")
    run.complete()
    assert h.events == [
        (events.JOB_SUBMITTED, job_id, PENDING),
        (events.JOB_STARTED, job_id, RUNNING),
        (events.JOB_PROGRESS, job_id, RUNNING),  # connecting
        (events.JOB_PROGRESS, job_id, RUNNING),  # conversion
        (events.JOB_COMPLETED, job_id, COMPLETED),
    ]


def test_progress_updates_are_throttled_to_two_per_second(h):
    [job_id] = h.submit()
    reporter = h.pipeline.runs[job_id].reporter
    h.events.clear()
    for i in range(10):  # 10 updates within 0.45 s
        reporter.update(current_bytes=i)
        h.clock.advance(0.05)
    assert len(h.events) == 0
    h.clock.advance(0.1)
    reporter.update(current_bytes=99)
    assert len(h.events) == 1
    assert result_of(h.manager.get(job_id)).progress.current_bytes == 99


def test_stopping_interrupts_running_jobs_and_refuses_new_ones():
    h = Harness(cleanup_seconds=1.0).start()
    ids = h.submit(3)
    stopped = ensureDeferred(h.manager.stop())
    assert not stopped.called
    h.clock.advance(1.0)
    result_of(stopped)
    for job_id in ids[:2]:
        job = result_of(h.store.get(job_id))
        assert (job.status, job.error) == (FAILED, "interrupted: daemon stopped during connecting")
    assert h.status(ids[2]) == PENDING  # never started; runs after the restart
    with pytest.raises(Unavailable):
        h.submit()


def test_restart_fails_interrupted_jobs_and_resumes_the_queue(tmp_path):
    db = str(tmp_path / "jobs.db")
    first = Harness(workers=1, store=sqlite_store(db, ImmediateRunner(), db + ".key")).start()
    ids = first.submit(2)
    first.pipeline.runs[ids[0]].reporter.stage_started("conversion")
    # The process dies here: nothing is stopped cleanly.
    second = Harness(workers=1, store=sqlite_store(db, ImmediateRunner(), db + ".key")).start()
    job = result_of(second.store.get(ids[0]))
    assert (job.status, job.error) == (FAILED, "interrupted: daemon restarted during conversion")
    assert second.pipeline.started == [ids[1]]
    assert second.pipeline.runs[ids[1]].spec.source.password == "s3cret-Pa55"
    assert (events.JOB_FAILED, ids[0], FAILED) in second.events


def test_jobs_beyond_the_per_vcenter_limit_wait_while_other_vcenters_go_ahead():
    h = Harness(workers=4)
    h.manager = JobManager(h.store, h.pipeline, h.clock, h.bus, 4, jobs_per_vcenter=1)
    h.start()
    source_a = {**definition()["source"], "vcenter_url": "vc-a.example.com"}
    source_b = {**definition()["source"], "vcenter_url": "vc-b.example.com"}
    a1, a2 = h.submit(2, source=source_a)
    (b1,) = h.submit(1, source=source_b)
    assert h.pipeline.started == [a1, b1]  # a2 waits for vc-a although workers are free
    assert h.status(a2) == PENDING
    h.pipeline.runs[a1].complete()
    assert h.pipeline.started == [a1, b1, a2]


def test_one_vcenter_spelled_three_ways_and_by_name_counts_once_against_its_limit():
    h = Harness(workers=4)
    context = SubmitContext(vcenter_urls={"prod": "https://vc.example.com/sdk"})
    h.manager = JobManager(h.store, h.pipeline, h.clock, h.bus, 4, context, jobs_per_vcenter=1)
    h.start()
    spellings = ["vc.example.com", "https://vc.example.com/sdk", "https://VC.example.com:443/sdk/"]
    ids = [h.submit(1, source={**definition()["source"], "vcenter_url": url})[0] for url in spellings]
    ids += h.submit(1, source={"type": "vsphere", "vcenter": "prod"})
    assert h.pipeline.started == ids[:1]
    assert [h.status(i) for i in ids] == [RUNNING, PENDING, PENDING, PENDING]
    h.pipeline.runs[ids[0]].complete()
    assert h.pipeline.started == ids[:2]


class Requeue(HyperSDKError):
    requeue = True


class Resumable(HyperSDKError):
    resumable = True


def test_a_run_suspended_by_the_daemons_stop_goes_back_to_the_queue():
    h = Harness(workers=1).start()
    [job_id] = h.submit()
    h.pipeline.runs[job_id].reporter.stage_started("conversion")
    h.pipeline.runs[job_id].fail(Requeue("the daemon stopped during conversion: resumes at its next start"))
    job = result_of(h.store.get(job_id))
    assert job.status == PENDING and job.error is None
    assert result_of(h.store.history(job_id))[-1].message.endswith("resumes at its next start")
    assert h.manager.status()["pending_jobs"] == 1 and h.manager.status()["running_jobs"] == 0


def test_a_resumable_failure_can_be_resumed_once_and_only_that():
    h = Harness(workers=1).start()
    [job_id, other] = h.submit(2)
    run = h.pipeline.runs[job_id]
    run.reporter.stage_started("conversion")
    run.fail(Resumable("no data from vCenter vc:443 for 120 s while copying Hard disk 1"))
    job = result_of(h.store.get(job_id))
    assert job.status == FAILED and job.result == {"resumable": True}
    assert job.error.endswith(f"(resumable: POST /jobs/{job_id}/resume)")
    h.pipeline.runs[other].fail(HyperSDKError("boom"))
    with pytest.raises(HyperSDKError, match="only a failed job whose copy was kept"):
        result_of(h.manager.resume(other))
    resumed = result_of(h.manager.resume(job_id))
    assert resumed.status == PENDING or h.status(job_id) == RUNNING
    assert h.pipeline.started.count(job_id) == 2  # it runs again
    with pytest.raises(HyperSDKError, match="is running"):
        result_of(h.manager.resume(job_id))
    with pytest.raises(HyperSDKError, match="not found"):
        result_of(h.manager.resume("no-such-job"))


def test_a_fenced_node_stops_its_copies_keeping_them_claims_nothing_and_takes_jobs_again_once_renewed(h):
    copying, importing, waiting = h.submit(3)
    h.pipeline.runs[copying].reporter.stage_started("conversion")
    h.pipeline.runs[copying].resumable = True
    h.pipeline.runs[importing].reporter.stage_started("import")
    h.manager.fence("this node could not renew its lease for 15 s")
    assert h.pipeline.runs[copying].cancelled and not h.pipeline.runs[copying].cleaned_up  # its copy is kept
    assert not h.pipeline.runs[importing].cancelled  # goes on: it confirms ownership before each side effect
    assert h.status(copying) == PENDING and h.status(waiting) == PENDING
    assert "could not renew its lease" in result_of(h.store.history(copying))[-1].message
    assert h.pipeline.started == [copying, importing]  # a free slot, but nothing claimed while fenced
    h.manager.unfence()
    assert h.pipeline.started == [copying, importing, copying]  # resumes first: it is the oldest


def test_a_job_another_node_took_over_ends_here_without_a_write_and_frees_its_slot():
    from hypersdk.errors import JobLost

    h = Harness(workers=1).start()
    lost, waiting = h.submit(2)
    h.pipeline.runs[lost].fail(JobLost(lost))
    job = result_of(h.store.get(lost))
    assert (job.status, job.error) == (RUNNING, None)  # as the node that owns it now keeps it
    assert ("job.failed", lost, FAILED) not in h.events
    assert h.pipeline.started == [lost, waiting]


def test_a_job_whose_secrets_this_node_cannot_open_fails_once_and_the_node_stops_claiming():
    from hypersdk.store.secretbox import SecretBox

    sealing = Harness(workers=0).start()  # the node that took the jobs, with its key file
    first, second = sealing.submit(2)
    wrong_key = sealing.store.for_node(sealing.store.node)  # the same database and node...
    wrong_key._box = SecretBox.generate()  # ...with another key
    other = Harness(workers=2, store=wrong_key).start(open_store=False)
    failed = result_of(other.store.get(first))
    assert failed.status == FAILED and "cannot be opened with this node's key file" in failed.error
    assert other.status(second) == PENDING and other.pipeline.started == []


def test_a_job_this_node_claimed_without_hearing_back_goes_back_to_the_queue(h):
    [lost_answer] = h.submit()  # a claim that landed in the store while its answer never reached the manager:
    h.pipeline.runs[lost_answer].complete()
    [job_id] = h.submit()
    del h.manager._running[job_id]  # the same state: the store says this instance runs it, the manager does not
    result_of(h.manager.requeue_orphans())
    assert h.status(job_id) == PENDING
    assert "never started it" in result_of(h.store.history(job_id))[-1].message


def test_a_job_claimed_while_the_orphan_sweep_reads_the_store_is_not_sent_back_to_the_queue(h):
    from twisted.internet.defer import Deferred

    sweep_may_read = Deferred()
    real_requeue = h.store.requeue_orphans

    async def slow_requeue(running, now):  # the sweep's read reaches the database late
        await sweep_may_read
        return await real_requeue(running, now)

    h.store.requeue_orphans = slow_requeue
    sweeping = ensureDeferred(h.manager.requeue_orphans())
    [job_id] = h.submit()  # its claim lands before the sweep reads
    sweep_may_read.callback(None)
    result_of(sweeping)
    assert h.pipeline.started == [job_id] and h.status(job_id) == RUNNING
    assert not any("never started" in entry.message for entry in result_of(h.store.history(job_id)))


def test_a_warm_job_between_passes_holds_no_worker_slot_and_takes_one_back_before_pending_jobs():
    h = Harness(workers=1).start()
    warm, cold, later = h.submit(3)
    assert h.pipeline.started == [warm]
    h.pipeline.runs[warm].slot.give_back()  # waiting for its next pass
    assert h.pipeline.started == [warm, cold] and h.manager.status()["active_workers"] == 1
    taking = h.pipeline.runs[warm].slot.take_back()  # its next pass is due: the one slot is busy
    assert not taking.called
    h.pipeline.runs[cold].complete()
    assert taking.called and h.pipeline.started == [warm, cold]  # the warm job first, then the queue
    assert h.status(later) == PENDING and h.manager.status()["active_workers"] == 1
    h.pipeline.runs[warm].complete()
    assert h.pipeline.started == [warm, cold, later]


def test_a_warm_job_cancelled_while_it_waits_for_a_slot_leaves_the_slot_to_the_queue():
    h = Harness(workers=1).start()
    warm, cold, later = h.submit(3)
    h.pipeline.runs[warm].slot.give_back()
    h.pipeline.runs[warm].slot.take_back()
    result_of(h.manager.cancel([warm], []))
    assert h.status(warm) == CANCELLED and h.pipeline.started == [warm, cold]
    h.pipeline.runs[cold].complete()
    assert h.pipeline.started == [warm, cold, later]


def test_a_warm_job_taking_its_slot_back_while_a_job_is_claimed_waits_for_the_claim_to_end():
    h = Harness(workers=1).start()
    [warm] = h.submit()
    h.pipeline.runs[warm].slot.give_back()
    store_answers, claim = Deferred(), h.store.claim_next

    async def slow_claim(*args):
        await store_answers
        return await claim(*args)

    h.store.claim_next = slow_claim
    [cold] = h.submit()  # claimed: the store has not answered yet
    taking = h.pipeline.runs[warm].slot.take_back()
    assert not taking.called  # the claim holds the one slot
    store_answers.callback(None)
    assert h.pipeline.started == [warm, cold] and not taking.called
    assert h.manager.status()["active_workers"] == 1  # never two jobs at work on one slot
    h.pipeline.runs[cold].complete()
    assert taking.called
