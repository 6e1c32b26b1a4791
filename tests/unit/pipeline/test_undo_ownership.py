"""The clean-up of a failed or cancelled job removes what the store says it made, newest first, and
touches the destination only after this node has confirmed it still holds the job: a job another
node has taken over keeps its disks and domain, which are the new owner's now."""

from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from hypersdk.config import parse_config
from hypersdk.errors import JobLost, Unavailable
from hypersdk.jobs.model import NewJob, Progress
from hypersdk.jobs.progress import ProgressReporter
from hypersdk.pipeline.leftovers import JobLeftovers, Leftover
from hypersdk.pipeline.migration import MigrationPipeline, _Job
from hypersdk.pipeline.transfer.plan import ChunkRecord
from hypersdk.store.leftovers import LeftoverStore
from tests.helpers import result_of
from tests.stores import sqlite_store

DISK = Leftover.file("/srv/vm-disk1.qcow2")
DOMAIN = Leftover.domain("qemu:///system", "vm")


class Remover:
    """Removes nothing but says what it was asked to remove, in order."""

    def __init__(self):
        self.removed = []

    def remove(self, leftover, job_id):
        self.removed.append(leftover.describe())
        return succeed(True)


def running_job(tmp_path, confirm):
    store = sqlite_store()
    result_of(store.open())
    result_of(store.insert([NewJob(id="j", definition={"id": "j"}, secrets={}, created_at=1.0)]))
    result_of(store.claim_next(2.0))
    result_of(store.save_transfer("j", 0, {"target": DISK.path}))
    result_of(store.save_chunks("j", 0, [ChunkRecord(0, "h", False)]))
    remover = Remover()
    pipeline = MigrationPipeline(Clock(), parse_config({}), str(tmp_path), vsphere=None, store=store,
                                 confirm=confirm, remover=remover)
    job = _Job(spec=None, job_id="j", reporter=ProgressReporter(Progress(), lambda: 0.0, lambda p, note: None),
               work_dir="", seconds=lambda: 0.0, leftovers=JobLeftovers(LeftoverStore(store), "j", lambda: 3.0))
    for leftover in (DISK, DOMAIN):
        result_of(job.leftovers.record(leftover))
    return store, pipeline, job, remover


async def confirmed(job_id, progress):
    return None


def test_the_clean_up_removes_what_the_store_recorded_newest_first_once_the_job_is_confirmed_this_node_s(tmp_path):
    store, pipeline, job, remover = running_job(tmp_path, confirmed)
    assert result_of(pipeline._undo(job)) is True
    assert remover.removed == [DOMAIN.describe(), DISK.describe()]
    assert result_of(job.leftovers.made()) == []  # each forgotten once removed
    assert result_of(store.transfers("j")) == {}  # a node taking it over now fails it rather than resume


def test_a_job_taken_over_or_not_confirmable_is_left_as_it_is(tmp_path):
    for refusal in (JobLost("j"), Unavailable("the daemon is stopping")):
        async def refused(job_id, progress, error=refusal):
            raise error

        store, pipeline, job, remover = running_job(tmp_path, refused)
        assert result_of(pipeline._undo(job)) is False
        assert remover.removed == [] and result_of(job.leftovers.made()) == [DISK, DOMAIN]
        assert result_of(store.transfers("j")) != {}
