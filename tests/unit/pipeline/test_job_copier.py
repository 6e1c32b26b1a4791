"""JobCopier with a store that behaves as the job store does (save_transfer drops the disk's records,
save_chunks replaces them, save_change_id keeps them): resuming a source modified on purpose, a pass's changeId kept with the
checkpoint, and a copy of given areas: zero records without reading, the worker given only the chunks
the areas touch, progress and bytes read counted by the areas."""

import json

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from hypersdk.pipeline.conversion import Target
from hypersdk.pipeline.transfer.copier import CopyProgress, JobCopier
from hypersdk.pipeline.transfer.engine import StreamSource
from hypersdk.pipeline.transfer.plan import SourceIdentity
from hypersdk.pipeline.transfer.worker import chunk_hash
from hypersdk.store.checkpoints import ChunkRecord
from tests.fakes.processes import FakeProcesses

MiB = 1 << 20
SIZE = 32 * MiB
CHUNK = 8 * MiB
MODIFIED = "Mon, 01 Dec 2026 10:00:00 GMT"


class Store:
    def __init__(self):
        self.disks: dict[int, tuple[dict, dict]] = {}

    def transfers(self, job_id):
        return succeed({d: (json.loads(json.dumps(info)), dict(records)) for d, (info, records) in self.disks.items()})

    def save_transfer(self, job_id, disk, info):
        self.disks[disk] = (json.loads(json.dumps(info)), {})  # as the store: the records go
        return succeed(None)

    def save_change_id(self, job_id, disk, change_id):
        info, _ = self.disks[disk]
        info["identity"] = {**info["identity"], "change_id": change_id}
        return succeed(None)

    def save_chunks(self, job_id, disk, records):
        self.disks[disk][1].update((r.index, r) for r in records)
        return succeed(None)


class Pool:
    async def acquire(self, vcenter, wanted):
        return wanted

    def release(self, vcenter, streams):
        pass


class Reporter:
    def __init__(self):
        self.updates = []

    def update(self, **fields):
        self.updates.append(fields)


async def in_thread(f, *args):
    return f(*args)


async def nothing():
    pass


class World:
    def __init__(self, tmp_path):
        self.store, self.processes, self.notes, self.reporter = Store(), FakeProcesses(), [], Reporter()
        self.path = str(tmp_path / "disk.raw")
        self.copier = JobCopier(processes=self.processes, clock=Clock(), store=self.store, pool=Pool(),
                                vcenter="vc:443", job_id="j1", in_thread=in_thread, renew_cookie=nothing,
                                refresh_cookie=nothing, streams_per_disk=2, stall_timeout=60, chunk_size=CHUNK,
                                max_bytes_per_second=None, note=self.notes.append)

    def prepare(self, modified=MODIFIED, change_id="52 aa/1", size=SIZE, **kw):
        source = StreamSource("https://vc/folder/x", "/w/cookie", {}, 0, size, "vc:443")
        target = Target(path=self.path, format="raw", exists=False)
        wanted = [("Hard disk 1", source, target, SourceIdentity(size, modified, change_id))]
        return result_of(Deferred.fromCoroutine(self.copier.prepare(wanted, **kw)))[0]

    def copy(self, disk, areas):
        progress = CopyProgress(self.reporter, [disk], lambda: 0.0, (0.0, 100.0))
        return Deferred.fromCoroutine(self.copier.copy([disk], progress, areas=areas))

    def checkpoint(self, records=range(4), change_id="52 aa/1"):
        self.store.disks[0] = ({"identity": {"size": SIZE, "modified": MODIFIED, "change_id": change_id},
                                "chunk_size": CHUNK, "target": self.path, "format": "raw"},
                               {i: ChunkRecord(i, f"h{i}", False) for i in records})
        open(self.path, "wb").close()


def result_of(d: Deferred):
    box = []
    d.addBoth(box.append)
    assert box, "it did not end"
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


def test_a_source_modified_on_purpose_resumes_when_trusted_and_only_while_its_size_is_the_same(tmp_path):
    w = World(tmp_path)
    w.checkpoint()
    disk = w.prepare(modified="Tue, 02 Dec 2026 10:00:00 GMT", change_id="52 aa/9", trust_source=True)
    assert disk.resumed and not disk.fresh and set(disk.done) == {0, 1, 2, 3} and w.notes == []
    assert disk.change_id == "52 aa/1"  # the checkpoint's: the target is a whole copy of that source

    w.checkpoint()
    assert not w.prepare(modified="Tue, 02 Dec 2026 10:00:00 GMT").resumed  # not trusted: starts over
    assert "the source changed since the checkpoint" in w.notes[-1]

    w.checkpoint()
    disk = w.prepare(size=SIZE + CHUNK, trust_source=True)
    assert not disk.resumed and disk.done == {} and "size changed" in w.notes[-1] and disk.change_id is None


def test_the_change_id_of_a_pass_is_kept_with_the_checkpoint_and_shown_only_over_a_whole_copy(tmp_path):
    w = World(tmp_path)
    w.checkpoint(records=range(3))  # a copy that did not end: its target is no whole copy of anything
    assert w.prepare(trust_source=True).change_id is None
    w.checkpoint()
    disk = w.prepare(trust_source=True)
    result_of(Deferred.fromCoroutine(w.copier.save_change_id(0, "52 aa/2")))
    assert disk.change_id == "52 aa/2"
    info, records = w.store.disks[0]
    assert info["identity"]["change_id"] == "52 aa/2" and sorted(records) == [0, 1, 2, 3]  # records kept
    assert w.prepare(change_id="52 aa/5", trust_source=True).change_id == "52 aa/2"


def test_an_allocated_only_copy_records_untouched_chunks_as_zeros_and_gives_the_worker_only_the_areas(tmp_path):
    w = World(tmp_path)
    disk = w.prepare()
    assert disk.fresh and not disk.resumed
    areas = [(CHUNK - 64 * 1024, 128 * 1024), (3 * CHUNK, MiB)]  # chunks 0, 1 (across the boundary) and 3
    copying = w.copy(disk, {0: areas})
    zero = w.store.disks[0][1]
    assert zero == {2: ChunkRecord(2, chunk_hash(bytes(CHUNK)), True)}  # as verification hashes zeros; none read
    assert open(w.path, "rb").seek(0, 2) == SIZE  # the emptied target reads zeros there
    worker = w.processes.children[0]
    spec = json.loads(worker.stdin[0])
    assert [c[0] for c in spec["chunks"]] == [0, 1, 3] and spec["fresh"] is True
    assert spec["areas"] == {"0": {"pieces": [[CHUNK - 64 * 1024, 64 * 1024]], "outside": "zero"},
                             "1": {"pieces": [[CHUNK, 64 * 1024]], "outside": "zero"},
                             "3": {"pieces": [[3 * CHUNK, MiB]], "outside": "zero"}}
    assert w.reporter.updates[-1]["total_bytes"] == MiB + 128 * 1024  # the pass's bytes: its areas
    for i in (0, 1, 3):
        worker.say(json.dumps({"chunk": i, "hash": f"n{i}", "zero": False}))
    worker.say(json.dumps({"read": MiB + 128 * 1024}))
    assert w.reporter.updates[-1]["current_bytes"] == MiB + 128 * 1024
    worker.say(json.dumps({"done": True}))
    worker.exit(0)
    assert result_of(copying) == 0
    assert disk.read_bytes == MiB + 128 * 1024 and sorted(disk.done) == [0, 1, 2, 3] and not disk.fresh
    assert sorted(w.store.disks[0][1]) == [0, 1, 2, 3]


def test_a_later_pass_rebuilds_touched_chunks_from_the_target_and_leaves_the_others(tmp_path):
    w = World(tmp_path)
    w.checkpoint()
    disk = w.prepare(modified="Tue, 02 Dec 2026 10:00:00 GMT", trust_source=True)
    copying = w.copy(disk, {0: [(2 * CHUNK + 4096, 4096)]})
    worker = w.processes.children[0]
    spec = json.loads(worker.stdin[0])
    assert spec["chunks"] == [[2, 2 * CHUNK, CHUNK]] and spec["fresh"] is False
    assert spec["areas"] == {"2": {"pieces": [[2 * CHUNK + 4096, 4096]], "outside": "target"}}
    worker.say(json.dumps({"chunk": 2, "hash": "new", "zero": False}))
    worker.say(json.dumps({"read": 4096}))
    worker.exit(0)
    result_of(copying)
    assert w.store.disks[0][1][2].hash == "new" and w.store.disks[0][1][1].hash == "h1"
    assert disk.read_bytes == 4096


def test_a_pass_with_no_areas_reads_nothing_and_areas_of_disks_not_copied_are_refused(tmp_path):
    w = World(tmp_path)
    w.checkpoint()
    disk = w.prepare(trust_source=True)
    assert result_of(w.copy(disk, {0: []})) == 0 and w.processes.children == [] and disk.read_bytes == 0
    with pytest.raises(ValueError, match="disks not copied"):
        result_of(w.copy(disk, {1: []}))
