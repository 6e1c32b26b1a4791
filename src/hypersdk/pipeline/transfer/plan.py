"""Pure bookkeeping of a disk transfer: chunks, what is done, progress, and mismatched ranges.

A disk is cut into chunks of ``chunk_size`` bytes (the last one shorter). Each chunk is read
by one HTTP range request, hashed as it is read, and recorded once written: the record (index,
hash, all zeros or not: ``store.checkpoints.ChunkRecord``) is the checkpoint a resume starts from
and what verification compares the destination with.

A copy of given areas of a disk (changed block tracking: where the source holds data, or what
changed since the last pass) reads only the areas' bytes, chunk by chunk: ``area_pieces`` cuts the
areas at the chunk boundaries, ``area_work`` says which chunks the worker (re)copies and what the
target holds outside their pieces, and which chunks need only a record of zeros.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Iterable, Mapping, Optional, Sequence

from attrs import frozen

from ...store.checkpoints import ChunkRecord

DEFAULT_CHUNK = 8 * 1024 * 1024  # large enough that a request's cost is small, small enough to resume near


@frozen
class Chunk:
    index: int
    offset: int  # in the disk (guest-visible bytes)
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


def chunks(size: int, chunk_size: int = DEFAULT_CHUNK) -> list[Chunk]:
    if size < 0 or chunk_size <= 0:
        raise ValueError("size must be >= 0 and chunk_size > 0")
    return [Chunk(i, offset, min(chunk_size, size - offset)) for i, offset in enumerate(range(0, size, chunk_size))]


def remaining(all_chunks: Sequence[Chunk], done: Mapping[int, ChunkRecord]) -> list[Chunk]:
    return [c for c in all_chunks if c.index not in done]


def bytes_done(all_chunks: Sequence[Chunk], done: Iterable[int]) -> int:
    by_index = {c.index: c.length for c in all_chunks}
    return sum(by_index.get(i, 0) for i in set(done))


def ranges(all_chunks: Iterable[Chunk], indexes: Iterable[int]) -> list[tuple[int, int]]:
    """The byte ranges [start, end) the chunks of ``all_chunks`` with these indexes cover, neighbours
    merged (for messages); ``all_chunks`` may be part of a plan."""
    wanted = set(indexes)
    merged: list[list[int]] = []
    for chunk in sorted((c for c in all_chunks if c.index in wanted), key=lambda c: c.offset):
        if merged and merged[-1][1] == chunk.offset:
            merged[-1][1] = chunk.end
        else:
            merged.append([chunk.offset, chunk.end])
    return [(start, end) for start, end in merged]


def describe_ranges(spans: Sequence[tuple[int, int]], limit: int = 3) -> str:
    """``bytes 8388608-16777215, 33554432-41943039 and 2 more`` (inclusive ends, as HTTP writes them)."""
    shown = ", ".join(f"{start}-{end - 1}" for start, end in spans[:limit])
    more = f" and {len(spans) - limit} more" if len(spans) > limit else ""
    return f"bytes {shown}{more}"


def zero_chunks(all_chunks: Sequence[Chunk], extents: Iterable[dict]) -> set[int]:
    """The chunks that lie wholly in extents reading as zeros (``qemu-img map --output=json``:
    ``zero`` true, or no data): verification need not read them."""
    zero = sorted((e["start"], e["start"] + e["length"]) for e in extents if e.get("zero") or not e.get("data"))
    found, i = set(), 0
    for chunk in all_chunks:
        while i < len(zero) and zero[i][1] <= chunk.offset:
            i += 1
        j, covered = i, chunk.offset
        while j < len(zero) and zero[j][0] <= covered < chunk.end:
            covered = max(covered, zero[j][1])
            j += 1
        if covered >= chunk.end:
            found.add(chunk.index)
    return found


Piece = tuple[int, int]  # (start in the disk, length)


def area_pieces(all_chunks: Sequence[Chunk], areas: Iterable[Piece]) -> dict[int, list[Piece]]:
    """The chunks ``areas`` touch, each with the parts of the areas inside it: sorted, overlapping or
    adjacent parts merged (one range request each), areas crossing a boundary cut there. Empty areas
    are left out; an area outside the disk is a ValueError (the caller's extents are of another disk)."""
    size = all_chunks[-1].end if all_chunks else 0
    starts = [c.offset for c in all_chunks]
    pieces: dict[int, list[list[int]]] = {}
    for start, length in sorted(areas):
        if start < 0 or length < 0 or start + length > size:
            raise ValueError(f"the area of {length} bytes at {start} is not inside the disk of {size} bytes")
        end = start + length
        i = bisect_right(starts, start) - 1
        while start < end:
            chunk = all_chunks[i]
            stop = min(end, chunk.end)
            spans = pieces.setdefault(chunk.index, [])
            if spans and spans[-1][1] >= start:
                spans[-1][1] = max(spans[-1][1], stop)
            else:
                spans.append([start, stop])
            start, i = stop, i + 1
    return {index: [(a, b - a) for a, b in spans] for index, spans in pieces.items()}


@frozen
class AreaWork:
    """What a copy of areas does with a disk's chunks."""

    copy: tuple[Chunk, ...]  # chunks the worker (re)copies: it reads only their pieces from the source
    pieces: Mapping[int, tuple[Piece, ...]]  # per chunk copied: what it reads (none: it only clears the chunk)
    outside: Mapping[int, str]  # per chunk copied, what the target holds outside its pieces:
    # "target": the recorded bytes (read them locally); "zero": zeros (nothing to read);
    # "clear": not known, the source's zeros must be written there
    zero: tuple[Chunk, ...]  # chunks no area touches and without a record, on a fresh target: zeros already

    @property
    def read_bytes(self) -> int:
        return sum(length for spans in self.pieces.values() for _start, length in spans)


def area_work(all_chunks: Sequence[Chunk], done: Mapping[int, ChunkRecord], pieces: Mapping[int, Sequence[Piece]],
              fresh: bool) -> AreaWork:
    """Outside the areas the source holds what the chunk's record says, or zeros where a chunk has no
    record. So: a chunk no area touches keeps its record; without one it is zeros: recorded so at once on
    a fresh (empty) target, cleared by the worker on another. A chunk an area touches is copied again,
    what lies outside its pieces taken from the target (a recorded chunk) or zeros (any other)."""
    copy, zero, outside, spans = [], [], {}, {}
    for chunk in all_chunks:
        touched = pieces.get(chunk.index)
        record = done.get(chunk.index)
        if not touched:
            if record is not None:
                continue
            if fresh:
                zero.append(chunk)
                continue
            outside[chunk.index] = "clear"
        elif record is not None:
            outside[chunk.index] = "zero" if record.zero else "target"
        else:
            outside[chunk.index] = "zero" if fresh else "clear"
        copy.append(chunk)
        spans[chunk.index] = tuple(touched or ())
    return AreaWork(tuple(copy), spans, outside, tuple(zero))


@frozen
class SourceIdentity:
    """What says the source disk is still the one a checkpoint was taken of."""

    size: int
    modified: Optional[str] = None  # HTTP Last-Modified of the datastore file
    change_id: Optional[str] = None  # the disk's changeId where changed block tracking is on

    def differs(self, other: "SourceIdentity", trusted: bool = False) -> Optional[str]:
        """Why ``other`` is not the same source, or None (``trusted``: the caller knows what changed,
        only the size must be the same)."""
        if self.size != other.size:
            return f"its size changed from {self.size} to {other.size} bytes"
        if trusted:
            return None
        if self.change_id and other.change_id and self.change_id != other.change_id:
            return f"its changeId changed from {self.change_id} to {other.change_id}"
        if self.modified and other.modified and self.modified != other.modified:
            return f"it was modified at {other.modified} (the checkpoint was taken of {self.modified})"
        return None
