"""DiskCopy's reading of its worker: checkpoints stored per batch, every chunk accounted for, the stall
timer, cookie renewal; verification by chunk hashes."""

import json

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock

from hypersdk.errors import JobLost
from hypersdk.pipeline.transfer.engine import (
    COOKIE_REFRESH_SECONDS, ChunksDiffer, DiskCopy, StreamSource, TransferFailed, verify_chunks,
)
from hypersdk.pipeline.transfer.plan import chunks
from hypersdk.store.checkpoints import ChunkRecord
from tests.fakes.processes import FakeProcesses

MiB = 1 << 20


class World:
    def __init__(self, stall=120.0, save_fails=None):
        self.clock = Clock()
        self.processes = FakeProcesses()
        self.saved, self.done, self.renewed, self.refreshed = [], [], 0, 0
        self.save_fails = save_fails
        self.copy = DiskCopy(
            self.processes, self.clock, job_id="j1", label="Hard disk 1",
            source=StreamSource("https://vc/folder/x", "/w/cookie", {}, 0, 32 * MiB, "vc:443"),
            chunks=chunks(32 * MiB, 8 * MiB), save=self._save, renew_cookie=self._renew,
            refresh_cookie=self._refresh, on_done=self.done.append, stall_timeout=stall, streams=4, fresh=True)
        self.run = Deferred.fromCoroutine(self.copy.run({"kind": "file", "path": "/d"}))
        self.child = self.processes.children[0]

    def _save(self, records):
        if self.save_fails is not None:
            return fail(self.save_fails)
        self.saved.append([r.index for r in records])
        return succeed(None)

    async def _renew(self):
        self.renewed += 1

    async def _refresh(self):
        self.refreshed += 1

    def say(self, **message):
        self.child.say(json.dumps(message))

    def report(self, *indexes):
        for i in indexes:
            self.say(chunk=i, hash=f"h{i}", zero=False)
        self.say(read=MiB)

    def outcome(self):
        box = []
        self.run.addBoth(box.append)
        return box[0] if box else None


def test_the_worker_gets_its_spec_on_stdin_and_never_the_cookie_on_its_command_line():
    w = World()
    spec = json.loads(w.child.stdin[0])
    assert spec["streams"] == 4 and [c[0] for c in spec["chunks"]] == [0, 1, 2, 3] and spec["fresh"] is True
    assert "--job" in w.child.argv and "j1" in w.child.argv and "cookie" not in " ".join(w.child.argv)


def test_checkpoints_are_stored_once_per_worker_batch_and_counted_as_done():
    w = World()
    w.say(chunk=0, hash="a", zero=False)
    w.say(chunk=2, hash="b", zero=True)
    assert w.saved == [] and w.done == [8 * MiB, 8 * MiB]
    w.say(read=24 * MiB)  # ends a batch
    w.say(chunk=1, hash="c", zero=False)
    w.say(chunk=3, hash="d", zero=False)
    w.say(done=True)
    w.child.exit(0)
    assert w.saved == [[0, 2], [1, 3]] and w.outcome() is None


def test_a_source_silent_for_the_stall_timeout_stops_the_worker_and_fails_resumably():
    w = World(stall=120)
    w.clock.advance(100)
    w.say(read=MiB)  # a byte came: the timer starts again
    w.clock.advance(100)
    assert w.processes.stopped == []
    w.clock.advance(21)
    assert w.processes.stopped == [w.child]
    failure = w.outcome()
    assert failure.check(TransferFailed)
    assert failure.value.message.startswith("no data from vCenter vc:443 for 120 s while copying Hard disk 1")
    assert failure.value.keep_destination and failure.value.resumable


def test_a_refused_cookie_is_renewed_and_the_session_is_refreshed_during_long_copies():
    w = World(stall=10 * COOKIE_REFRESH_SECONDS)
    w.say(auth=401)
    assert w.renewed == 1
    for _ in range(3):
        w.say(read=MiB * (w.refreshed + 2))
        w.clock.advance(COOKIE_REFRESH_SECONDS)
    assert w.refreshed == 3
    w.report(0, 1, 2, 3)
    w.child.exit(0)
    assert w.outcome() is None


def test_a_worker_error_fails_the_copy_naming_the_vcenter_and_disk():
    w = World()
    w.say(error="bytes 0-8388607: HTTP 503 (5 retries)", kind="transport")
    w.child.exit(1)
    failure = w.outcome()
    assert failure.value.message == "copying Hard disk 1 from vCenter vc:443: bytes 0-8388607: HTTP 503 (5 retries)"


def test_cancelling_stops_the_worker_and_ends_the_copy_cancelled_with_no_timer_left():
    w = World()
    w.report(0)
    w.run.cancel()
    assert w.processes.stopped == [w.child]
    failure = w.outcome()
    assert failure is not None, "the copy did not end"
    assert failure.check(CancelledError)
    assert w.saved == [[0]]  # what the worker checkpointed before is stored: a resume goes on from it
    assert w.clock.getDelayedCalls() == []  # no stall timer or cookie refresh fires later


# -- every chunk accounted for ---------------------------------------------------------------------------

def test_a_worker_that_says_done_without_one_of_its_chunks_fails_the_copy_naming_that_range():
    w = World()
    w.report(0, 1, 3)
    w.say(done=True)
    w.child.exit(0)
    failure = w.outcome()
    assert failure.check(TransferFailed)
    assert failure.value.message == ("copying Hard disk 1 from vCenter vc:443: the worker ended without copying"
                                     f" bytes {16 * MiB}-{24 * MiB - 1}")
    assert w.saved == [[0, 1, 3]]  # what was copied stays checkpointed: a resume copies only the rest


def test_a_chunk_it_was_not_given_stops_the_worker_and_fails_the_copy():
    w = World()
    w.report(0)
    w.say(chunk=7, hash="x", zero=False)
    assert w.processes.stopped == [w.child]
    failure = w.outcome()
    assert failure.value.message == ("copying Hard disk 1 from vCenter vc:443: the worker reported chunk 7, which it"
                                     f" was not given; bytes {8 * MiB}-{32 * MiB - 1} not copied")
    assert w.done == [8 * MiB]


def test_a_chunk_reported_twice_fails_the_copy_naming_its_range():
    w = World()
    w.report(0, 1)
    w.say(chunk=1, hash="again", zero=False)
    failure = w.outcome()
    assert failure.value.message.startswith(
        f"copying Hard disk 1 from vCenter vc:443: the worker reported bytes {8 * MiB}-{16 * MiB - 1} twice")
    assert w.done == [8 * MiB, 8 * MiB]


@pytest.mark.parametrize("line", ["Traceback (most recent call last):", '{"chunk": 2, "hash": "h2"}', "[1, 2]",
                                  '{"checked": 2, "hash": "h2"}'])
def test_a_line_that_is_not_a_worker_record_stops_it_and_fails_naming_what_is_not_copied(line):
    w = World()
    w.report(0, 1)
    w.child.say(line)
    assert w.processes.stopped == [w.child]
    message = w.outcome().value.message
    assert message.startswith("copying Hard disk 1 from vCenter vc:443: the worker wrote a line that is not one of"
                              " its records: ")
    assert message.endswith(f"; bytes {16 * MiB}-{32 * MiB - 1} not copied")


def test_a_worker_killed_midway_names_the_ranges_it_did_not_copy():
    w = World()
    w.report(1)
    w.child.exit(None, signal=9)
    assert w.outcome().value.message == (f"the transfer worker was killed by signal 9: bytes 0-{8 * MiB - 1},"
                                         f" {16 * MiB}-{32 * MiB - 1} not copied")


@pytest.mark.parametrize("error", [JobLost("j1"), RuntimeError("database is locked")])
def test_a_checkpoint_that_cannot_be_stored_stops_the_worker_at_once_and_raises_that_error(error):
    w = World(save_fails=error)
    w.report(0)
    assert w.processes.stopped == [w.child]  # not one more chunk copied without its checkpoint
    failure = w.outcome()
    assert failure.value is error


# -- verification ------------------------------------------------------------------------------------------

class Verification:
    def __init__(self, recorded=range(4)):
        self.processes = FakeProcesses()
        self.plan = chunks(32 * MiB, 8 * MiB)
        self.checked = []
        expected = {i: ChunkRecord(i, f"h{i}", False) for i in recorded}
        self.run = Deferred.fromCoroutine(verify_chunks(
            self.processes, job_id="j1", label="Hard disk 1", target={"kind": "file", "path": "/d"}, chunks=self.plan,
            expected=expected, on_checked=self.checked.append))
        self.child = self.processes.children[0] if self.processes.children else None

    def say(self, **message):
        self.child.say(json.dumps(message))

    def outcome(self):
        box = []
        self.run.addBoth(box.append)
        return box[0] if box else None


def test_verification_passes_when_every_chunk_is_checked_once_and_matches():
    v = Verification()
    for i in range(4):
        v.say(checked=i, hash=f"h{i}")
    v.say(done=True)
    v.child.exit(0)
    assert v.outcome() is None and v.checked == [8 * MiB] * 4


def test_verification_refuses_a_disk_with_a_chunk_that_has_no_checkpoint_record():
    v = Verification(recorded=[0, 1, 3])
    failure = v.outcome()
    assert failure.check(ChunksDiffer) and v.processes.children == []
    assert failure.value.message == (f"verifying Hard disk 1: no checkpoint was recorded for bytes {16 * MiB}-"
                                     f"{24 * MiB - 1}: there is nothing to compare them with")


def test_verification_fails_when_the_worker_ends_without_checking_a_chunk():
    v = Verification()
    for i in (0, 1, 2):
        v.say(checked=i, hash=f"h{i}")
    v.say(done=True)
    v.child.exit(0)
    assert v.outcome().value.message == (f"verifying Hard disk 1: the worker ended without checking bytes"
                                         f" {24 * MiB}-{32 * MiB - 1}")


def test_verification_fails_on_a_chunk_checked_twice_or_not_planned_or_an_unreadable_line():
    for lines in ([{"checked": 0, "hash": "h0"}, {"checked": 0, "hash": "h0"}], [{"checked": 9, "hash": "h"}],
                  ["garbage"]):
        v = Verification()
        for line in lines:
            v.child.say(line if isinstance(line, str) else json.dumps(line))
        assert v.processes.stopped == [v.child]
        message = v.outcome().value.message
        assert message.startswith("verifying Hard disk 1: the worker ") and " not checked" in message, message


def test_a_differing_chunk_is_named_by_its_range():
    v = Verification()
    for i in range(4):
        v.say(checked=i, hash="other" if i == 2 else f"h{i}")
    v.child.exit(0)
    assert v.outcome().value.message == f"Hard disk 1 differs from the source at bytes {16 * MiB}-{24 * MiB - 1}"
