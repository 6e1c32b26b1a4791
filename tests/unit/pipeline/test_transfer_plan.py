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


# -- copies of areas (changed block tracking) --------------------------------------------------------------

def test_areas_are_cut_at_chunk_boundaries_and_merged_where_they_touch_within_a_chunk():
    from hypersdk.pipeline.transfer.plan import area_pieces

    plan = chunks(32 * MiB + 4096, 8 * MiB)  # the last chunk 4 KiB
    k = 64 * 1024
    areas = [(0, k), (k, k), (3 * k, k), (8 * MiB - k, 2 * k), (24 * MiB, 0), (16 * MiB, 16 * MiB + 4096)]
    assert area_pieces(plan, areas) == {
        0: [(0, 2 * k), (3 * k, k), (8 * MiB - k, k)],  # adjacent merged, apart kept apart
        1: [(8 * MiB, k)],  # the part over the boundary
        2: [(16 * MiB, 8 * MiB)],
        3: [(24 * MiB, 8 * MiB)],
        4: [(32 * MiB, 4096)],
    }
    assert area_pieces(plan, [(2 * k, k), (0, 3 * k)]) == {0: [(0, 3 * k)]}  # unsorted, overlapping
    assert area_pieces(plan, []) == {}


def test_an_area_outside_the_disk_is_refused():
    import pytest

    from hypersdk.pipeline.transfer.plan import area_pieces

    with pytest.raises(ValueError, match="not inside the disk"):
        area_pieces(chunks(16 * MiB, 8 * MiB), [(16 * MiB - 10, 11)])


@given(st.lists(st.tuples(st.integers(0, 40 * 16), st.integers(0, 64)), max_size=20))
def test_pieces_cover_exactly_the_bytes_of_the_areas_each_inside_its_chunk(raw):
    from hypersdk.pipeline.transfer.plan import area_pieces

    unit = 4096
    plan = chunks(700 * unit, 64 * unit)
    areas = [(s * unit, min(n * unit, 700 * unit - s * unit)) for s, n in raw if s * unit < 700 * unit]
    covered = set()
    for start, length in areas:
        covered.update(range(start // unit, (start + length) // unit))
    pieces = area_pieces(plan, areas)
    got = set()
    for index, spans in pieces.items():
        chunk = plan[index]
        for (a, n), (b, _m) in zip(spans, spans[1:]):
            assert a + n < b  # sorted, apart: adjacent ones are one request
        for start, length in spans:
            assert chunk.offset <= start and start + length <= chunk.end and length > 0
            got.update(range(start // unit, (start + length) // unit))
    assert got == covered


def test_what_a_copy_of_areas_does_with_each_chunk():
    from hypersdk.pipeline.transfer.plan import area_pieces, area_work

    plan = chunks(64 * MiB, 8 * MiB)
    pieces = area_pieces(plan, [(0, MiB), (17 * MiB, MiB), (40 * MiB, MiB)])  # chunks 0, 2, 5
    fresh = area_work(plan, {}, pieces, fresh=True)  # allocated areas, an empty target
    assert [c.index for c in fresh.copy] == [0, 2, 5] and fresh.outside == {0: "zero", 2: "zero", 5: "zero"}
    assert [c.index for c in fresh.zero] == [1, 3, 4, 6, 7]  # recorded as zeros, nothing read
    assert fresh.read_bytes == 3 * MiB and fresh.pieces[2] == ((17 * MiB, MiB),)

    done = {i: ChunkRecord(i, f"h{i}", i == 5) for i in range(8)}  # a later pass: every chunk recorded
    later = area_work(plan, done, pieces, fresh=False)
    assert [c.index for c in later.copy] == [0, 2, 5] and later.zero == ()
    assert later.outside == {0: "target", 2: "target", 5: "zero"}  # (a chunk recorded as zeros reads zeros)

    some = {i: done[i] for i in (0, 1)}  # an earlier start on a kept volume: what has no record is not known
    kept = area_work(plan, some, pieces, fresh=False)
    assert [c.index for c in kept.copy] == [0, 2, 3, 4, 5, 6, 7] and kept.zero == ()
    assert kept.outside == {0: "target", 2: "clear", 3: "clear", 4: "clear", 5: "clear", 6: "clear", 7: "clear"}
    assert kept.pieces[3] == () and kept.read_bytes == 3 * MiB

    nothing = area_work(plan, done, {}, fresh=False)
    assert nothing.copy == () and nothing.zero == () and nothing.read_bytes == 0


def test_a_trusted_source_resumes_unless_its_size_changed():
    then = SourceIdentity(1000, "Mon, 01 Dec 2026 10:00:00 GMT", "52 aa/1")
    assert then.differs(SourceIdentity(1000, "Tue, 02 Dec 2026 10:00:00 GMT", "52 aa/7"), trusted=True) is None
    assert "size changed" in then.differs(SourceIdentity(2000, then.modified, then.change_id), trusted=True)
