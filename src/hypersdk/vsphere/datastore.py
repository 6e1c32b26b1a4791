"""Datastore paths, datastore file URLs and VMDK descriptors: pure functions.

Disks are read over HTTPS from ``/folder/<path>?dcPath=<dc>&dsName=<ds>`` with
the vCenter session cookie (what virt-v2v does without VDDK). A disk's
``.vmdk`` is either a text descriptor naming its extents (``-flat.vmdk`` for
a thick or thin disk on VMFS) or a hosted sparse/streamOptimized file that
starts with the ``KDMV`` magic and embeds its descriptor.
"""

from __future__ import annotations

import re
import shlex
import struct
import urllib.parse
from http.cookies import CookieError, SimpleCookie
from typing import Optional

from attrs import frozen

SESSION_COOKIE = "vmware_soap_session"
SECTOR = 512
SPARSE_MAGIC = b"KDMV"

_DS_PATH_RE = re.compile(r"^\[([^\]]+)\]\s*(.*)$", re.S)
_EXTENT_ACCESS = ("RW", "RDONLY", "NOACCESS")


def parse_datastore_path(text: str) -> tuple[str, str]:
    """``"[LocalDS_0] vm1/vm1.vmdk"`` → ``("LocalDS_0", "vm1/vm1.vmdk")``; ValueError if malformed."""
    match = _DS_PATH_RE.match(text.strip()) if isinstance(text, str) else None
    if not match or not match.group(1).strip():
        raise ValueError(f"not a datastore path: {text!r}")
    return match.group(1), match.group(2).strip()


def format_datastore_path(datastore: str, path: str) -> str:
    return f"[{datastore}] {path}" if path else f"[{datastore}]"


def datastore_file_url(scheme: str, host: str, port: int, datacenter: str, datastore: str, path: str) -> str:
    """URL of a datastore file on vCenter's ``/folder`` interface.

    ``datacenter`` is the datacenter's inventory path (``"DC0"`` or ``"folder/DC0"``).
    """
    if scheme not in ("http", "https"):
        raise ValueError(f"scheme must be http or https, not {scheme!r}")
    netloc = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    if port != default:
        netloc = f"{netloc}:{port}"
    quoted = urllib.parse.quote(path.lstrip("/"), safe="/")
    query = "dcPath=" + urllib.parse.quote(datacenter, safe="") + "&dsName=" + urllib.parse.quote(datastore, safe="")
    return f"{scheme}://{netloc}/folder/{quoted}?{query}"


def file_url(endpoint: object, datacenter: str, datastore_path: str) -> str:
    """URL of ``"[ds] dir/file.vmdk"`` on the vCenter ``endpoint`` (a VCenterParams: scheme, host, port)."""
    datastore, path = parse_datastore_path(datastore_path)
    return datastore_file_url(
        endpoint.scheme, endpoint.host, endpoint.port, datacenter, datastore, path,  # type: ignore[attr-defined]
    )


def sibling_path(path: str, file_name: str) -> str:
    """The datastore path of ``file_name`` (an extent named by a descriptor) next to ``path``."""
    if file_name.startswith("/"):
        raise ValueError(f"absolute extent paths are not supported: {file_name!r}")
    head, _, _ = path.rpartition("/")
    return f"{head}/{file_name}" if head else file_name


@frozen
class VmdkExtent:
    access: str  # "RW" | "RDONLY" | "NOACCESS"
    sectors: int  # size in 512-byte sectors
    type: str  # "FLAT" | "SPARSE" | "ZERO" | "VMFS" | "VMFSSPARSE" | "SESPARSE" | ...
    file_name: Optional[str]  # relative to the descriptor; None for ZERO extents
    offset: int = 0  # in sectors, into file_name (FLAT/VMFS extents)

    @property
    def size_bytes(self) -> int:
        return self.sectors * SECTOR


@frozen
class VmdkDescriptor:
    create_type: str  # "monolithicFlat" | "vmfs" | "monolithicSparse" | "streamOptimized" | ...
    extents: tuple[VmdkExtent, ...]
    cid: Optional[str] = None
    parent_cid: Optional[str] = None
    parent_file_name_hint: Optional[str] = None

    @property
    def capacity_bytes(self) -> int:
        return sum(e.size_bytes for e in self.extents)

    @property
    def is_flat(self) -> bool:
        """One raw extent readable as-is (a monolithicFlat or VMFS thick/thin disk)."""
        return (
            len(self.extents) == 1
            and self.extents[0].type in ("FLAT", "VMFS")
            and self.extents[0].file_name is not None
        )


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse_vmdk_descriptor(text: str) -> VmdkDescriptor:
    """Parse a VMDK text descriptor; ValueError when it is not one."""
    settings: dict[str, str] = {}
    extents: list[VmdkExtent] = []
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        line = raw.split("\x00", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        first = line.split(None, 1)[0]
        if first in _EXTENT_ACCESS:
            extents.append(_parse_extent(line, number))
        elif "=" in line:
            key, _, value = line.partition("=")
            settings[key.strip()] = _unquote(value)
        else:
            raise ValueError(f"line {number} of the VMDK descriptor is neither a setting nor an extent")
    if "createType" not in settings:
        raise ValueError("not a VMDK descriptor: no createType")
    return VmdkDescriptor(
        create_type=settings["createType"],
        extents=tuple(extents),
        cid=settings.get("CID"),
        parent_cid=settings.get("parentCID"),
        parent_file_name_hint=settings.get("parentFileNameHint"),
    )


def _parse_extent(line: str, number: int) -> VmdkExtent:
    try:
        fields = shlex.split(line, posix=True)
    except ValueError:
        raise ValueError(f"line {number}: malformed extent: unbalanced quotes") from None
    if len(fields) < 3:
        raise ValueError(f"line {number}: extent needs access, size and type")
    access, sectors, kind = fields[0], fields[1], fields[2].upper()
    if not sectors.isdigit():
        raise ValueError(f"line {number}: extent size must be a number of sectors")
    if kind == "ZERO":
        return VmdkExtent(access, int(sectors), kind, None, 0)
    if len(fields) < 4:
        raise ValueError(f"line {number}: {kind} extent needs a file name")
    offset = fields[4] if len(fields) > 4 else "0"
    if not offset.isdigit():
        raise ValueError(f"line {number}: extent offset must be a number of sectors")
    return VmdkExtent(access, int(sectors), kind, fields[3], int(offset))


@frozen
class SparseHeader:
    """Header of a hosted sparse VMDK (monolithicSparse, streamOptimized)."""

    version: int
    flags: int
    capacity_sectors: int
    grain_sectors: int
    descriptor_offset: int  # sectors
    descriptor_size: int  # sectors
    compression: int  # 0 none, 1 deflate (streamOptimized)

    @property
    def capacity_bytes(self) -> int:
        return self.capacity_sectors * SECTOR


_SPARSE_HEADER = struct.Struct("<4sIIQQQQIQQQ?4sH")


def parse_sparse_header(head: bytes) -> SparseHeader:
    """Parse the first 512 bytes of a ``KDMV`` sparse extent; ValueError otherwise."""
    if len(head) < _SPARSE_HEADER.size or head[:4] != SPARSE_MAGIC:
        raise ValueError("not a hosted sparse VMDK (no KDMV magic)")
    (_magic, version, flags, capacity, grain, desc_offset, desc_size,
     _gtes, _rgd, _gd, _overhead, _unclean, _chars, compression) = _SPARSE_HEADER.unpack_from(head)
    return SparseHeader(version, flags, capacity, grain, desc_offset, desc_size, compression)


def embedded_descriptor(data: bytes) -> Optional[VmdkDescriptor]:
    """The descriptor embedded in a sparse VMDK whose first bytes are ``data``, if ``data`` holds it."""
    header = parse_sparse_header(data)
    if not header.descriptor_offset or not header.descriptor_size:
        return None
    start = header.descriptor_offset * SECTOR
    chunk = data[start:start + header.descriptor_size * SECTOR]
    if len(chunk) < header.descriptor_size * SECTOR:
        raise ValueError(f"need the first {start + header.descriptor_size * SECTOR} bytes to read the descriptor")
    return parse_vmdk_descriptor(chunk.split(b"\x00", 1)[0].decode("utf-8", "replace"))


def vmdk_kind(head: bytes) -> str:
    """``"sparse"`` (KDMV magic), ``"descriptor"`` (text descriptor) or ``"unknown"``."""
    if head[:4] == SPARSE_MAGIC:
        return "sparse"
    text = head[:4096].decode("utf-8", "replace")
    if "createType" in text or text.lstrip().startswith("# Disk DescriptorFile"):
        return "descriptor"
    return "unknown"


def cookie_header(set_cookie: str) -> Optional[str]:
    """``vmware_soap_session=...`` from a Set-Cookie (or Cookie) value; None if absent."""
    if not set_cookie:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(set_cookie)
    except CookieError:
        jar = SimpleCookie()
    morsel = jar.get(SESSION_COOKIE)
    if morsel is not None:
        return f"{SESSION_COOKIE}={morsel.coded_value}"
    match = re.search(SESSION_COOKIE + r'=("[^"]*"|[^;,\s]*)', set_cookie)
    return f"{SESSION_COOKIE}={match.group(1)}" if match else None


def session_cookie(si: object) -> str:
    """The ``Cookie`` header value carrying the session of ``si`` (for /folder downloads)."""
    stub = getattr(si, "_stub", None)
    value = cookie_header(getattr(stub, "cookie", "") or "")
    if value is None:
        raise ValueError("this ServiceInstance holds no vCenter session cookie: is it logged in?")
    return value
