"""A resumed cold copy with changed block tracking reads only the allocated areas of chunks it has not
checkpointed yet."""

from hypersdk.pipeline.copying import still_to_copy
from hypersdk.pipeline.transfer.copier import DiskTransfer
from hypersdk.pipeline.transfer.engine import StreamSource
from hypersdk.pipeline.transfer.plan import chunks
from hypersdk.store.checkpoints import ChunkRecord

MiB = 1 << 20


def disk_with(done: set[int]) -> DiskTransfer:
    plan = chunks(32 * MiB, 8 * MiB)  # chunks 0..3
    source = StreamSource(url="https://vc/folder/x-flat.vmdk", cookie_file="", tls={}, offset=0, size=32 * MiB,
                          where="vc:443")
    return DiskTransfer(0, "Hard disk 1", source=source, target=None, chunks=plan,
                        done={i: ChunkRecord(i, "h", False) for i in done})


def test_areas_in_checkpointed_chunks_are_not_read_again_and_areas_are_cut_at_their_edges():
    areas = [(MiB, MiB), (7 * MiB, 2 * MiB), (20 * MiB, 8 * MiB)]
    assert still_to_copy(disk_with(set()), areas) == areas
    assert still_to_copy(disk_with({0}), areas) == [(8 * MiB, MiB), (20 * MiB, 8 * MiB)]
    assert still_to_copy(disk_with({1, 2}), areas) == [(MiB, MiB), (7 * MiB, MiB), (24 * MiB, 4 * MiB)]
    assert still_to_copy(disk_with({0, 1, 2, 3}), areas) == []
