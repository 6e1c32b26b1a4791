"""The clean-up of a failed or cancelled job touches the destination only after this node has
confirmed it still holds the job: a job another node has taken over keeps its disks and domain,
which are the new owner's now."""

from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from hypersdk.config import parse_config
from hypersdk.errors import JobLost, Unavailable
from hypersdk.jobs.model import Progress
from hypersdk.jobs.progress import ProgressReporter
from hypersdk.pipeline.migration import MigrationPipeline, _Job
from tests.helpers import result_of


class Checkpoints:
    """The store's side: the job's checkpoints, dropped before its copies are removed."""

    def __init__(self, done: list):
        self._done = done

    def forget_transfers(self, job_id):
        self._done.append("checkpoints forgotten")
        return succeed(None)


def pipeline_confirming(tmp_path, confirm, done: list) -> MigrationPipeline:
    return MigrationPipeline(Clock(), parse_config({}), str(tmp_path), vsphere=None, store=Checkpoints(done),
                             confirm=confirm)


def job_with_undo(done: list) -> _Job:
    job = _Job(spec=None, job_id="j", reporter=ProgressReporter(Progress(), lambda: 0.0, lambda p, note: None),
               work_dir="", seconds=lambda: 0.0)
    job.on_failure("remove the disk", lambda: succeed(done.append("disk removed")))
    job.on_failure("undefine the domain", lambda: succeed(done.append("domain undefined")))
    return job


async def confirmed(job_id, progress):
    return None


def test_the_clean_up_runs_in_reverse_once_the_job_is_confirmed_this_node_s_and_its_checkpoints_dropped(tmp_path):
    done = []
    assert result_of(pipeline_confirming(tmp_path, confirmed, done)._undo(job_with_undo(done))) is True
    assert done == ["checkpoints forgotten", "domain undefined", "disk removed"]


def test_a_job_taken_over_or_not_confirmable_is_left_as_it_is(tmp_path):
    for refusal in (JobLost("j"), Unavailable("the daemon is stopping")):
        async def refused(job_id, progress, error=refusal):
            raise error

        done = []
        assert result_of(pipeline_confirming(tmp_path, refused, done)._undo(job_with_undo(done))) is False
        assert done == []
