"""Chunk planning, checkpoint bookkeeping, zero runs: pure (the stream pool: tests/unit/store/test_stream_grants.py)."""

from hypothesis import given
from hypothesis import strategies as st

from hypersdk.pipeline.transfer.plan import SourceIdentity, bytes_done, chunks, describe_ranges, ranges, remaining
from hypersdk.pipeline.transfer.worker import runs
from hypersdk.store.checkpoints import ChunkRecord

MiB = 1 << 20


@given(st.integers(0, 1 << 40), st.integers(1, 1 << 30))
def test_chunks_cover_the_disk_exactly_once_in_order(size, chunk_size):
    plan = chunks(size, chunk_size) if size // chunk_size < 10_000 else chunks(size, max(chunk_size, size // 1000 + 1))
    assert sum(c.length for c in plan) == size
    assert all(a.end == b.offset for a, b in zip(plan, plan[1:]))
    assert [c.index for c in plan] == list(range(len(plan)))
    assert all(0 < c.length for c in plan)


@given(st.sets(st.integers(0, 99)))
def test_what_remains_is_what_is_not_checkpointed(done):
    plan = chunks(100 * MiB + 5, MiB)
    records = {i: ChunkRecord(i, "h", False) for i in done}
    left = remaining(plan, records)
    assert {c.index for c in left} == set(range(101)) - done
    assert bytes_done(plan, done) + sum(c.length for c in left) == 100 * MiB + 5


def test_mismatched_chunks_are_named_as_merged_byte_ranges():
    plan = chunks(64 * MiB, 8 * MiB)
    spans = ranges(plan, [1, 2, 5])
    assert spans == [(8 * MiB, 24 * MiB), (40 * MiB, 48 * MiB)]
    assert describe_ranges(spans) == f"bytes {8 * MiB}-{24 * MiB - 1}, {40 * MiB}-{48 * MiB - 1}"
    assert describe_ranges([(0, 1), (2, 3), (4, 5), (6, 7)]).endswith("and 1 more")


def test_a_changed_source_is_said_why():
    then = SourceIdentity(1000, "Mon, 01 Dec 2026 10:00:00 GMT")
    assert then.differs(SourceIdentity(1000, "Mon, 01 Dec 2026 10:00:00 GMT")) is None
    assert "size changed from 1000 to 2000" in then.differs(SourceIdentity(2000, then.modified))
    assert "modified at Tue" in then.differs(SourceIdentity(1000, "Tue, 02 Dec 2026 10:00:00 GMT"))
    assert "changeId" in SourceIdentity(1, change_id="a/1").differs(SourceIdentity(1, change_id="a/2"))


def test_zero_blocks_inside_a_chunk_are_runs_of_their_own():
    block = 64 * 1024
    data = bytearray(6 * block)
    data[block + 5] = 1
    data[4 * block:5 * block] = b"\x07" * block
    assert list(runs(data, len(data), block)) == [
        (0, block, False), (block, 2 * block, True), (2 * block, 4 * block, False), (4 * block, 5 * block, True),
        (5 * block, 6 * block, False)]
    assert list(runs(bytearray(10), 10, block)) == [(0, 10, False)]
    assert list(runs(bytearray(b"\0\0\1"), 3, 2)) == [(0, 2, False), (2, 3, True)]


def test_chunks_wholly_in_zero_extents_need_not_be_read_to_be_verified():
    from hypersdk.pipeline.transfer.plan import zero_chunks

    plan = chunks(64 * MiB, 8 * MiB)
    extents = [{"start": 0, "length": 8 * MiB + 1, "data": False, "zero": True},
               {"start": 8 * MiB + 1, "length": 8 * MiB, "data": True, "zero": False},
               {"start": 16 * MiB + 1, "length": 4 * MiB, "data": False, "zero": True},
               {"start": 20 * MiB + 1, "length": 44 * MiB - 1, "data": True, "zero": True}]
    assert zero_chunks(plan, extents) == {0, 3, 4, 5, 6, 7}
    assert zero_chunks(plan, []) == set()
