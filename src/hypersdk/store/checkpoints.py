"""The records of a transfer checkpoint, as the store keeps them: the pipeline makes them and reads
them back, the store knows nothing of how they were made."""

from __future__ import annotations

from attrs import frozen


@frozen
class ChunkRecord:
    """A chunk as it was read and written: the checkpoint."""

    index: int
    hash: str  # of the chunk's bytes as read from the source
    zero: bool  # all zeros: nothing was written (the destination reads zeros there)
