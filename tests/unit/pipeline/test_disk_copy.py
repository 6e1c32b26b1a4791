"""DiskCopy's reading of its worker: checkpoints stored per batch, the stall timer, cookie renewal."""

import json

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from hypersdk.pipeline.transfer.engine import COOKIE_REFRESH_SECONDS, DiskCopy, StreamSource, TransferFailed
from hypersdk.pipeline.transfer.plan import chunks
from tests.fakes.processes import FakeProcesses

MiB = 1 << 20


class World:
    def __init__(self, stall=120.0):
        self.clock = Clock()
        self.processes = FakeProcesses()
        self.saved, self.done, self.renewed, self.refreshed = [], [], 0, 0
        self.copy = DiskCopy(
            self.processes, self.clock, job_id="j1", label="Hard disk 1",
            source=StreamSource("https://vc/folder/x", "/w/cookie", {}, 0, 32 * MiB, "vc:443"),
            chunks=chunks(32 * MiB, 8 * MiB), save=self._save, renew_cookie=self._renew,
            refresh_cookie=self._refresh, on_done=self.done.append, stall_timeout=stall, streams=4, fresh=True)
        self.run = Deferred.fromCoroutine(self.copy.run({"kind": "file", "path": "/d"}))
        self.child = self.processes.children[0]

    def _save(self, records):
        self.saved.append([r.index for r in records])
        return succeed(None)

    async def _renew(self):
        self.renewed += 1

    async def _refresh(self):
        self.refreshed += 1

    def say(self, **message):
        self.child.say(json.dumps(message))

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
    w.child.exit(0)
    assert w.outcome() is None


def test_a_worker_error_fails_the_copy_naming_the_vcenter_and_disk():
    w = World()
    w.say(error="bytes 0-8388607: HTTP 503 (5 retries)", kind="transport")
    w.child.exit(1)
    failure = w.outcome()
    assert failure.value.message == "copying Hard disk 1 from vCenter vc:443: bytes 0-8388607: HTTP 503 (5 retries)"


def test_cancelling_stops_the_worker():
    w = World()
    w.run.cancel()
    assert w.processes.stopped == [w.child]
    with pytest.raises(Exception):
        w.outcome().raiseException()
