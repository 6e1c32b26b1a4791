"""Initramfs member names from real cpio archives, plain and compressed, one after the other."""

import bz2
import gzip
import lzma

import lz4.block
import lz4.frame
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from hypersdk.guest.initramfs import UnreadableInitramfs, member_names, module_name, module_names


def cpio(*names: str) -> bytes:
    """A newc archive holding ``names`` (files with a little content each), as cpio -H newc writes it."""
    out = bytearray()
    for i, name in enumerate((*names, "TRAILER!!!")):
        data = b"" if name == "TRAILER!!!" else name.encode() * 3
        encoded = name.encode() + b"\0"
        fields = [i + 1, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += b"\0" * (-len(out) % 4)
        out += data + b"\0" * (-len(data) % 4)
    return bytes(out)


MODULES = ["usr/lib/modules/6.1.0-28-amd64/kernel/drivers/scsi/vmw_pvscsi.ko",
           "usr/lib/modules/6.1.0-28-amd64/kernel/drivers/ata/ahci.ko.xz",
           "lib/modules/6.1.0-28-amd64/kernel/drivers/message/fusion/mptsas.ko.zst"]


def lz4_legacy(data: bytes) -> bytes:
    block = lz4.block.compress(data, store_size=False)
    return b"\x02\x21\x4c\x18" + len(block).to_bytes(4, "little") + block


@pytest.mark.parametrize("compress", [lambda d: d, gzip.compress, lzma.compress, bz2.compress,
                                      zstandard.ZstdCompressor().compress, lz4.frame.compress, lz4_legacy,
                                      lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE)],
                         ids=["plain", "gzip", "xz", "bzip2", "zstd", "lz4", "lz4-legacy", "lzma"])
def test_early_microcode_then_a_compressed_main_archive(compress):
    early = cpio("kernel/x86/microcode/GenuineIntel.bin")
    main = cpio("init", "bin/sh", *MODULES)
    names = member_names(early + b"\0" * 512 + compress(main))
    assert names == ["kernel/x86/microcode/GenuineIntel.bin", "init", "bin/sh", *MODULES]
    assert module_names(names) == {"vmw_pvscsi", "ahci", "mptsas"}


def test_module_names_are_what_modprobe_calls_them():
    assert module_name("lib/modules/5.14.0/kernel/drivers/net/vmxnet3/vmxnet3.ko.xz") == "vmxnet3"
    assert module_name("lib/modules/5.14.0/kernel/drivers/scsi/sym53c8xx_2/sym53c8xx.ko") == "sym53c8xx"
    assert module_name("lib/modules/5.14.0/extra/virtio-blk.ko") == "virtio_blk"
    assert module_name("lib/modules/5.14.0/modules.dep") is None
    assert module_name("usr/share/doc/x.ko.txt") is None


def test_damaged_or_foreign_data_is_a_clear_error():
    with pytest.raises(UnreadableInitramfs, match="unknown initramfs format"):
        member_names(b"MZ\x90\x00 not an initramfs")
    with pytest.raises(UnreadableInitramfs, match="cannot decompress"):
        member_names(b"\x28\xb5\x2f\xfd" + b"\xff" * 40)
    with pytest.raises(UnreadableInitramfs):
        member_names(cpio("a", "b")[:150])


@given(st.lists(st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/"), min_size=1,
                        max_size=30), min_size=0, max_size=20))
def test_any_names_survive_a_round_trip(names):
    names = [n for n in names if n != "TRAILER!!!"]
    assert member_names(gzip.compress(cpio(*names))) == names
