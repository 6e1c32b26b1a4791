"""What a Linux initramfs holds: pure parsing of its cpio archives.

An initramfs is one or more cpio ("newc") archives one after the other, each
plain or compressed (early microcode comes first, uncompressed; the main
archive follows, compressed with zstd, gzip, xz, lz4, bzip2 or lzma), with
zero padding between them, as the kernel unpacks it. Only the names matter
here: which kernel modules the guest can load before its root file system
is mounted.
"""

from __future__ import annotations

import bz2
import lzma
import re
import struct
import zlib
from typing import Iterable

import lz4.block
import lz4.frame
import zstandard

from ..errors import HyperSDKError

_CPIO_MAGICS = (b"070701", b"070702")
_HEADER = 110  # newc header: magic + 13 fields of 8 hex digits
_TRAILER = "TRAILER!!!"
_LZ4_LEGACY = b"\x02\x21\x4c\x18"
_LZ4_LEGACY_BLOCK = 8 << 20  # bytes a legacy lz4 block decompresses to at most
_MODULE = re.compile(r"(?:^|/)lib/modules/[^/]+/.+/([^/]+)\.ko(?:\.(?:xz|zst|gz|bz2))?$")


class UnreadableInitramfs(HyperSDKError):
    code = "unreadable_initramfs"


def member_names(data: bytes) -> list[str]:
    """The path of every file in the initramfs ``data`` (without a leading /), in archive order."""
    names: list[str] = []
    _walk(memoryview(data), names, depth=0)
    return names


def module_name(path: str) -> str | None:
    """``usr/lib/modules/6.1.0-13-amd64/kernel/drivers/scsi/vmw_pvscsi.ko.xz`` → ``vmw_pvscsi``;
    None when ``path`` is not a kernel module. Dashes become underscores, as modprobe sees them."""
    match = _MODULE.search(path)
    return None if match is None else match.group(1).replace("-", "_")


def module_names(paths: Iterable[str]) -> frozenset[str]:
    return frozenset(name for name in map(module_name, paths) if name is not None)


def _walk(data: memoryview, names: list[str], depth: int) -> None:
    if depth > 4:
        raise UnreadableInitramfs("the initramfs nests compressed archives too deeply")
    pos = 0
    while pos < len(data):
        while pos < len(data) and data[pos] == 0:  # padding between archives
            pos += 1
        if pos >= len(data):
            return
        head = bytes(data[pos:pos + 6])
        if head in _CPIO_MAGICS:
            pos = _read_cpio(data, pos, names)
            continue
        unpacked, used = _decompress(data[pos:])
        _walk(memoryview(unpacked), names, depth + 1)
        pos += used


def _read_cpio(data: memoryview, pos: int, names: list[str]) -> int:
    """Read one archive starting at ``pos``; return where it ends."""
    while True:
        header = bytes(data[pos:pos + _HEADER])
        if len(header) < _HEADER or header[:6] not in _CPIO_MAGICS:
            raise UnreadableInitramfs(f"broken cpio header at byte {pos}")
        try:
            size = int(header[54:62], 16)
            name_size = int(header[94:102], 16)
        except ValueError:
            raise UnreadableInitramfs(f"broken cpio header at byte {pos}") from None
        name_start = pos + _HEADER
        name = bytes(data[name_start:name_start + name_size]).rstrip(b"\0").decode("utf-8", "replace")
        pos = _align4(name_start + name_size)
        pos = _align4(pos + size)
        if name == _TRAILER:
            return pos
        if pos > len(data):
            raise UnreadableInitramfs("the initramfs ends inside a cpio archive")
        names.append(name[2:] if name.startswith("./") else name.lstrip("/"))


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _decompress(data: memoryview) -> tuple[bytes, int]:
    """(what the compressed stream at the start of ``data`` unpacks to, bytes of ``data`` it used)."""
    head = bytes(data[:6])
    raw = bytes(data)
    try:
        if head.startswith(b"\x1f\x8b"):
            return _with(zlib.decompressobj(16 + zlib.MAX_WBITS), raw)
        if head.startswith(b"\xfd7zXZ\x00"):
            return _with(lzma.LZMADecompressor(lzma.FORMAT_XZ), raw)
        if head.startswith(b"\x28\xb5\x2f\xfd"):
            return _with(zstandard.ZstdDecompressor(max_window_size=1 << 31).decompressobj(), raw)
        if head.startswith(b"BZh"):
            return _with(bz2.BZ2Decompressor(), raw)
        if head.startswith(b"\x04\x22\x4d\x18"):
            return _with(lz4.frame.LZ4FrameDecompressor(), raw)
        if head.startswith(_LZ4_LEGACY):
            return _lz4_legacy(raw)
        if head.startswith(b"\x5d\x00\x00"):
            return _with(lzma.LZMADecompressor(lzma.FORMAT_ALONE), raw)
    except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error, zstandard.ZstdError, RuntimeError) as e:
        raise UnreadableInitramfs(f"cannot decompress the initramfs: {e}") from None
    raise UnreadableInitramfs(f"unknown initramfs format (starts with {head.hex()})")


def _with(decompressor, raw: bytes) -> tuple[bytes, int]:
    unpacked = decompressor.decompress(raw)
    return unpacked, len(raw) - len(decompressor.unused_data or b"")


def _lz4_legacy(raw: bytes) -> tuple[bytes, int]:
    """The lz4 "legacy" frame of ``lz4 -l`` (Ubuntu's initramfs): blocks of <size, data>, no end mark."""
    out, pos = [], 4
    while pos + 4 <= len(raw):
        (size,) = struct.unpack_from("<I", raw, pos)
        if size == 0x184C2102 or size == 0 or pos + 4 + size > len(raw):  # another frame, padding or the end
            break
        out.append(lz4.block.decompress(raw[pos + 4:pos + 4 + size], uncompressed_size=_LZ4_LEGACY_BLOCK))
        pos += 4 + size
    return b"".join(out), pos
