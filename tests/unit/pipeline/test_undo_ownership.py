"""The clean-up of a failed or cancelled job touches the destination only after this node has
confirmed it still holds the job: a job another node has taken over keeps its disks and domain,
which are the new owner's now."""

from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from hypersdk.config import parse_config
from hypersdk.errors import JobLost, Unavailable
from hypersdk.pipeline.migration import MigrationPipeline, _Job
from tests.helpers import result_of


def pipeline_confirming(tmp_path, confirm) -> MigrationPipeline:
    return MigrationPipeline(Clock(), parse_config({}), str(tmp_path), vsphere=None, store=None, confirm=confirm)


def job_with_undo(done: list) -> _Job:
    job = _Job(spec=None, job_id="j", reporter=None, work_dir="", seconds=lambda: 0.0)
    job.on_failure("remove the disk", lambda: succeed(done.append("disk removed")))
    job.on_failure("undefine the domain", lambda: succeed(done.append("domain undefined")))
    return job


async def confirmed(job_id):
    return None


def test_the_clean_up_runs_in_reverse_once_the_job_is_confirmed_this_node_s(tmp_path):
    done = []
    assert result_of(pipeline_confirming(tmp_path, confirmed)._undo(job_with_undo(done))) is True
    assert done == ["domain undefined", "disk removed"]


def test_a_job_taken_over_or_not_confirmable_is_left_as_it_is(tmp_path):
    for refusal in (JobLost("j"), Unavailable("the daemon is stopping")):
        async def refused(job_id, error=refusal):
            raise error

        done = []
        assert result_of(pipeline_confirming(tmp_path, refused)._undo(job_with_undo(done))) is False
        assert done == []
