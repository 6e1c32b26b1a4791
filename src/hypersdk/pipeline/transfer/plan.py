"""Pure bookkeeping of a disk transfer: chunks, what is done, progress, and mismatched ranges.

A disk is cut into chunks of ``chunk_size`` bytes (the last one shorter). Each chunk is read
by one HTTP range request, hashed as it is read, and recorded once written: the record (index,
hash, all zeros or not: ``store.checkpoints.ChunkRecord``) is the checkpoint a resume starts from
and what verification compares the destination with.
"""

from __future__ import annotations

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


@frozen
class SourceIdentity:
    """What says the source disk is still the one a checkpoint was taken of."""

    size: int
    modified: Optional[str] = None  # HTTP Last-Modified of the datastore file
    change_id: Optional[str] = None  # the disk's changeId where changed block tracking is on

    def differs(self, other: "SourceIdentity") -> Optional[str]:
        """Why ``other`` is not the same source, or None."""
        if self.size != other.size:
            return f"its size changed from {self.size} to {other.size} bytes"
        if self.change_id and other.change_id and self.change_id != other.change_id:
            return f"its changeId changed from {self.change_id} to {other.change_id}"
        if self.modified and other.modified and self.modified != other.modified:
            return f"it was modified at {other.modified} (the checkpoint was taken of {self.modified})"
        return None
