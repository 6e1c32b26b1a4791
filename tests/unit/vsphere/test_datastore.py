"""Datastore paths, /folder URLs, VMDK descriptors and session cookies."""

from __future__ import annotations

import struct
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hypersdk.vsphere.datastore import (
    SESSION_COOKIE,
    cookie_header,
    datastore_file_url,
    embedded_descriptor,
    format_datastore_path,
    parse_datastore_path,
    parse_sparse_header,
    parse_vmdk_descriptor,
    session_cookie,
    sibling_path,
    vmdk_kind,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[LocalDS_0] DC0_H0_VM0/disk1.vmdk", ("LocalDS_0", "DC0_H0_VM0/disk1.vmdk")),
        ("[datastore 1] my vm/my vm.vmdk", ("datastore 1", "my vm/my vm.vmdk")),
        ("[LocalDS_0]", ("LocalDS_0", "")),
        ("[ds]vm/vm.vmx", ("ds", "vm/vm.vmx")),
    ],
)
def test_parse_datastore_path(text, expected):
    assert parse_datastore_path(text) == expected


@pytest.mark.parametrize("text", ["", "LocalDS_0/vm.vmdk", "[] vm.vmdk", "[unclosed vm.vmdk"])
def test_parse_datastore_path_rejects_non_paths(text):
    with pytest.raises(ValueError):
        parse_datastore_path(text)


names = st.text(st.characters(blacklist_characters="]", blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30).filter(
    lambda s: s.strip() == s and s.strip()
)
paths = st.lists(
    st.text(st.characters(blacklist_characters="/", blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20).filter(
        lambda s: s.strip() == s and s.strip()
    ),
    min_size=1, max_size=4,
).map("/".join)


@given(ds=names, path=paths)
def test_datastore_paths_round_trip(ds, path):
    assert parse_datastore_path(format_datastore_path(ds, path)) == (ds, path)


def test_datastore_file_url_for_the_simulator():
    url = datastore_file_url("https", "127.0.0.1", 8989, "DC0", "LocalDS_0", "DC0_H0_VM0/disk1-flat.vmdk")
    assert url == "https://127.0.0.1:8989/folder/DC0_H0_VM0/disk1-flat.vmdk?dcPath=DC0&dsName=LocalDS_0"


def test_datastore_file_url_omits_default_port_and_brackets_ipv6():
    assert datastore_file_url("https", "vc.example.com", 443, "DC", "ds", "a.vmdk").startswith(
        "https://vc.example.com/folder/a.vmdk?"
    )
    assert datastore_file_url("https", "fd00::1", 8443, "DC", "ds", "a.vmdk").startswith("https://[fd00::1]:8443/")


def test_datastore_file_url_quotes_special_characters():
    url = datastore_file_url("https", "vc", 443, "Data center #1", "ds&1=x", "my vm?/disk 1%.vmdk")
    parts = urllib.parse.urlsplit(url)
    assert parts.path == "/folder/my%20vm%3F/disk%201%25.vmdk"
    assert urllib.parse.parse_qs(parts.query) == {"dcPath": ["Data center #1"], "dsName": ["ds&1=x"]}
    assert parts.fragment == ""


@given(dc=st.lists(names, min_size=1, max_size=3).map("/".join), ds=names, path=paths)
def test_datastore_file_url_round_trips_through_a_url_parser(dc, ds, path):
    parts = urllib.parse.urlsplit(datastore_file_url("https", "vc.example.com", 443, dc, ds, path))
    assert urllib.parse.unquote(parts.path) == "/folder/" + path
    assert urllib.parse.parse_qs(parts.query, keep_blank_values=True) == {"dcPath": [dc], "dsName": [ds]}


def test_sibling_path_puts_the_extent_next_to_its_descriptor():
    assert sibling_path("vm/disk1.vmdk", "disk1-flat.vmdk") == "vm/disk1-flat.vmdk"
    assert sibling_path("disk1.vmdk", "disk1-flat.vmdk") == "disk1-flat.vmdk"
    with pytest.raises(ValueError):
        sibling_path("vm/disk1.vmdk", "/vmfs/volumes/x/disk1-flat.vmdk")


QEMU_FLAT = """# Disk DescriptorFile
version=1
CID=ee9fc626
parentCID=ffffffff
createType="monolithicFlat"

# Extent description
RW 16384 FLAT "disk1-flat.vmdk" 0

# The Disk Data Base
#DDB

ddb.virtualHWVersion = "4"
ddb.geometry.cylinders = "16"
ddb.adapterType = "ide"
""" + " " * 200

ESXI_VMFS = """# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=fffffffe
parentCID=ffffffff
isNativeSnapshot="no"
createType="vmfs"

# Extent description
RW 41943040 VMFS "web server 1-flat.vmdk"

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.thinProvisioned = "1"
ddb.uuid = "60 00 C2 9a 4e 1b 4b 3f-2f 0c 34 a3 0b 62 2e 57"
"""

SNAPSHOT_DELTA = """# Disk DescriptorFile
version=1
CID=2a4b7c11
parentCID=fffffffe
createType="seSparse"
parentFileNameHint="web-server-1.vmdk"
# Extent description
RW 41943040 SESPARSE "web-server-1-000001-sesparse.vmdk"
"""


def test_monolithic_flat_descriptor_names_its_flat_extent():
    d = parse_vmdk_descriptor(QEMU_FLAT)
    assert d.create_type == "monolithicFlat"
    assert len(d.extents) == 1
    e = d.extents[0]
    assert (e.access, e.sectors, e.type, e.file_name, e.offset) == ("RW", 16384, "FLAT", "disk1-flat.vmdk", 0)
    assert d.capacity_bytes == 8 * 1024 * 1024
    assert d.is_flat
    assert d.cid == "ee9fc626" and d.parent_cid == "ffffffff"


def test_vmfs_descriptor_with_spaces_in_the_extent_name():
    d = parse_vmdk_descriptor(ESXI_VMFS)
    assert d.create_type == "vmfs"
    assert d.extents[0].file_name == "web server 1-flat.vmdk"
    assert d.extents[0].offset == 0
    assert d.capacity_bytes == 20 * 1024**3
    assert d.is_flat


def test_snapshot_delta_is_not_flat_and_names_its_parent():
    d = parse_vmdk_descriptor(SNAPSHOT_DELTA)
    assert not d.is_flat
    assert d.parent_file_name_hint == "web-server-1.vmdk"
    assert d.extents[0].type == "SESPARSE"


def test_zero_and_multiple_extents():
    d = parse_vmdk_descriptor(
        'createType="twoGbMaxExtentFlat"\r\n'
        'RW 4192256 FLAT "d-f001.vmdk" 0\r\n'
        'RW 4192256 FLAT "d-f002.vmdk" 0\r\n'
        "RDONLY 2048 ZERO\r\n"
    )
    assert [e.file_name for e in d.extents] == ["d-f001.vmdk", "d-f002.vmdk", None]
    assert d.extents[2].access == "RDONLY"
    assert not d.is_flat


@pytest.mark.parametrize(
    "text",
    [
        "",
        "just some text",
        "version=1\nCID=1\n",  # no createType
        'createType="vmfs"\nRW many VMFS "x.vmdk"\n',
        'createType="vmfs"\nRW 10 VMFS\n',
        'createType="vmfs"\nRW 10 VMFS "x.vmdk\n',
        'createType="vmfs"\nRW 10 FLAT "x.vmdk" off\n',
    ],
)
def test_malformed_descriptors_raise_value_error(text):
    with pytest.raises(ValueError):
        parse_vmdk_descriptor(text)


def _sparse_image(capacity_sectors: int, descriptor: str, compression: int = 0) -> bytes:
    header = struct.pack(
        "<4sIIQQQQIQQQ?4sH", b"KDMV", 3 if compression else 1, 0x30001 if compression else 3,
        capacity_sectors, 128, 1, 20, 512, 0, 21, 128, False, b"\n \r\n", compression,
    ).ljust(512, b"\0")
    return header + descriptor.encode().ljust(20 * 512, b"\0")


def test_sparse_header_and_embedded_descriptor():
    data = _sparse_image(16384, 'createType="streamOptimized"\nRW 16384 SPARSE "disk.vmdk"\n', compression=1)
    header = parse_sparse_header(data)
    assert header.capacity_bytes == 8 * 1024 * 1024
    assert header.compression == 1
    assert (header.descriptor_offset, header.descriptor_size) == (1, 20)
    assert embedded_descriptor(data).create_type == "streamOptimized"
    with pytest.raises(ValueError):
        embedded_descriptor(data[:1024])  # too short to hold the descriptor


def test_vmdk_kind_tells_descriptors_from_sparse_files():
    assert vmdk_kind(QEMU_FLAT.encode()) == "descriptor"
    assert vmdk_kind(_sparse_image(8, 'createType="monolithicSparse"\n')) == "sparse"
    assert vmdk_kind(b"\0" * 512) == "unknown"
    with pytest.raises(ValueError):
        parse_sparse_header(b"\0" * 512)


@pytest.mark.parametrize(
    "set_cookie, expected",
    [
        ("vmware_soap_session=abc-123; HttpOnly", "vmware_soap_session=abc-123"),
        ('vmware_soap_session="52d1e4f2"; Path=/; HttpOnly; Secure;', 'vmware_soap_session="52d1e4f2"'),
        ('vmware_soap_session="52d1e4f2"', 'vmware_soap_session="52d1e4f2"'),
        ("other=1; vmware_soap_session=xyz", "vmware_soap_session=xyz"),
        ("other=1", None),
        ("", None),
    ],
)
def test_cookie_header_extracts_the_session_cookie(set_cookie, expected):
    assert cookie_header(set_cookie) == expected


def test_session_cookie_reads_the_stub_and_refuses_a_logged_out_one():
    class Stub:
        cookie = f"{SESSION_COOKIE}=k1; HttpOnly"

    class Si:
        _stub = Stub()

    assert session_cookie(Si()) == f"{SESSION_COOKIE}=k1"
    Stub.cookie = ""
    with pytest.raises(ValueError):
        session_cookie(Si())


def test_file_url_of_a_disk_backing_on_a_vcenter():
    from hypersdk.vsphere.connection import VCenterParams
    from hypersdk.vsphere.datastore import file_url

    params = VCenterParams.from_url("https://vc.example.com/sdk", "u", "p")
    assert file_url(params, "Site A/DC1", "[ssd 01] web 1/web 1-flat.vmdk") == (
        "https://vc.example.com/folder/web%201/web%201-flat.vmdk?dcPath=Site%20A%2FDC1&dsName=ssd%2001"
    )
