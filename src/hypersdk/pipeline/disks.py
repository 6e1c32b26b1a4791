"""Where each source disk's data is, and in which format: pure decisions.

A disk's ``.vmdk`` on the datastore is either a text descriptor whose one flat
extent (``-flat.vmdk``) holds the raw data, or a hosted sparse /
streamOptimized file that qemu-img reads as ``vmdk`` itself. Anything else
(split extents, delta disks of snapshots) is refused with a clear message.
"""

from __future__ import annotations

from attrs import frozen

from ..errors import HyperSDKError
from ..vsphere.datastore import parse_datastore_path, parse_vmdk_descriptor, sibling_path, vmdk_kind
from ..vsphere.model import DiskInfo

HEAD_BYTES = 64 * 1024  # enough for a descriptor, or a sparse header and its embedded descriptor


class UnsupportedDisk(HyperSDKError):
    code = "unsupported_disk"


@frozen
class DiskSource:
    disk: DiskInfo
    datastore: str
    path: str  # datastore-relative path of the file holding the data
    format: str  # "raw" | "vmdk" as qemu-img reads it
    offset: int = 0  # raw data starts here (bytes)
    size: int = 0  # guest-visible size (bytes)


def resolve_source(disk: DiskInfo, head: bytes) -> DiskSource:
    """Decide how to read ``disk`` from the first bytes of its ``.vmdk`` file."""
    datastore, path = parse_datastore_path(disk.file_name)
    kind = vmdk_kind(head)
    if kind == "sparse":
        return DiskSource(disk, datastore, path, "vmdk", size=disk.capacity_bytes)
    if kind != "descriptor":
        raise UnsupportedDisk(f"{disk.label} ({disk.file_name}) is neither a VMDK descriptor nor a sparse VMDK")
    try:
        descriptor = parse_vmdk_descriptor(head.split(b"\x00", 1)[0].decode("utf-8", "replace"))
    except ValueError as e:
        raise UnsupportedDisk(f"{disk.label} ({disk.file_name}): unreadable VMDK descriptor: {e}") from None
    if descriptor.parent_cid not in (None, "ffffffff"):
        raise UnsupportedDisk(
            f"{disk.label} ({disk.file_name}) is a snapshot delta disk: delete or consolidate the VM's snapshots first"
        )
    if not descriptor.is_flat:
        raise UnsupportedDisk(
            f"{disk.label} ({disk.file_name}) has a {descriptor.create_type} layout with "
            f"{len(descriptor.extents)} extent(s); only flat (thick or thin VMFS) and sparse VMDKs can be streamed"
        )
    extent = descriptor.extents[0]
    return DiskSource(
        disk,
        datastore,
        sibling_path(path, extent.file_name),
        "raw",
        offset=extent.offset * 512,
        size=extent.size_bytes,
    )
