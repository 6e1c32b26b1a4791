import re
import xml.etree.ElementTree as ET

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hypersdk.errors import InvalidField
from hypersdk.libvirt.domain_xml import (
    NAMESPACE,
    DomainDisk,
    build_domain_xml,
    NetworkTarget,
    check_network_mapping,
    map_network,
    parse_domain_summary,
    on_buses,
    safe_domain_name,
    virtio_target,
)
from hypersdk.vsphere.model import DiskInfo, NicInfo, VmInfo

VM_UUID = "4213a7c1-6f3e-2b8a-9d41-0c5e7f12ab34"


def nic(n, network, mac=None):
    return NicInfo(
        key=4000 + n,
        label=f"Network adapter {n}",
        network=network,
        mac=f"00:50:56:aa:bb:{n:02x}" if mac is None else mac,
        adapter_type="vmxnet3",
    )


def disk(n, gib=1):
    return DiskInfo(
        key=2000 + n,
        label=f"Hard disk {n}",
        capacity_bytes=gib << 30,
        file_name=f"[LocalDS_0] web/web_{n}.vmdk",
        datastore="LocalDS_0",
        controller_type="scsi",
        controller_bus=0,
        unit_number=n,
        thin=True,
    )


def make_vm(**changes):
    vm = VmInfo(
        name="web-01",
        path="DC0/vm/prod/web-01",
        datacenter="DC0",
        uuid=VM_UUID,
        instance_uuid="5013c2d4-0000-1111-2222-333344445555",
        num_cpu=4,
        cores_per_socket=2,
        memory_mb=4096,
        firmware="bios",
        secure_boot=False,
        guest_id="ubuntu64Guest",
        guest_full_name="Ubuntu Linux (64-bit)",
        power_state="poweredOff",
        disks=(disk(1), disk(2)),
        nics=(nic(1, "VM Network"), nic(2, "DC0_DVPG0")),
        cdroms=(),
        snapshot_count=0,
    )
    return attrs.evolve(vm, **changes)


DISKS = [
    DomainDisk.file("/var/lib/libvirt/images/web-01-disk1.qcow2", "qcow2", "vda"),
    DomainDisk.pool_volume("default", "web-01-disk2.raw", "raw", "vdb"),
]
MAPPING = {"VM Network": "br0", "DC0_DVPG0": "network:default"}


def build(vm=None, **kwargs):
    kwargs.setdefault("name", "web-01")
    kwargs.setdefault("disks", DISKS)
    kwargs.setdefault("network_mapping", MAPPING)
    return build_domain_xml(vm or make_vm(), **kwargs)


def summary(vm=None, **kwargs):
    return parse_domain_summary(build(vm, **kwargs))


# -- CPU, memory, identity ------------------------------------------------------


def test_memory_is_given_in_kib():
    xml = ET.fromstring(build(make_vm(memory_mb=4096)))
    assert xml.find("memory").get("unit") == "KiB"
    assert xml.findtext("memory") == str(4096 * 1024)
    assert xml.findtext("currentMemory") == str(4096 * 1024)


@pytest.mark.parametrize(
    "num_cpu, cores_per_socket, sockets, cores",
    [(4, 2, 2, 2), (4, 4, 1, 4), (4, 1, 4, 1), (1, 1, 1, 1), (4, 0, 4, 1), (6, 4, 6, 1), (16, 8, 2, 8)],
)
def test_vcpus_keep_the_source_topology(num_cpu, cores_per_socket, sockets, cores):
    s = summary(make_vm(num_cpu=num_cpu, cores_per_socket=cores_per_socket))
    assert s["vcpus"] == num_cpu
    assert s["topology"] == {"sockets": sockets, "cores": cores, "threads": 1}
    assert sockets * cores == num_cpu


def test_domain_uuid_is_the_vm_bios_uuid_and_name_is_the_given_one():
    s = summary(name="imported-web")
    assert s["uuid"] == VM_UUID
    assert s["name"] == "imported-web"


def test_machine_is_q35_x86_64_hvm():
    os_type = ET.fromstring(build()).find("os/type")
    assert (os_type.text, os_type.get("arch"), os_type.get("machine")) == ("hvm", "x86_64", "q35")


def test_domain_type_defaults_to_kvm_and_can_be_qemu_for_tcg():
    assert summary()["type"] == "kvm"
    assert summary(domain_type="qemu")["type"] == "qemu"
    # host-model needs KVM; a TCG domain keeps the topology but no CPU mode
    assert ET.fromstring(build(domain_type="kvm")).find("cpu").get("mode") == "host-model"
    assert ET.fromstring(build(domain_type="qemu")).find("cpu").get("mode") is None


def test_unknown_domain_type_is_rejected():
    with pytest.raises(InvalidField, match="domain_type"):
        build(domain_type="xen")


# -- firmware ------------------------------------------------------------------


def test_bios_guest_gets_default_firmware():
    xml = ET.fromstring(build(make_vm(firmware="bios")))
    assert xml.find("os").get("firmware") is None
    assert xml.find("os/loader") is None
    assert summary()["firmware"] == "bios"


def test_efi_guest_gets_ovmf_without_secure_boot():
    xml = ET.fromstring(build(make_vm(firmware="efi", secure_boot=False)))
    assert xml.find("os").get("firmware") == "efi"
    features = {f.get("name"): f.get("enabled") for f in xml.iterfind("os/firmware/feature")}
    assert features == {"secure-boot": "no"}
    assert xml.find("features/smm") is None
    s = parse_domain_summary(ET.tostring(xml, encoding="unicode"))
    assert (s["firmware"], s["secure_boot"]) == ("efi", False)


def test_efi_secure_boot_guest_gets_secure_boot_firmware_and_smm():
    xml = ET.fromstring(build(make_vm(firmware="efi", secure_boot=True)))
    features = {f.get("name"): f.get("enabled") for f in xml.iterfind("os/firmware/feature")}
    assert features == {"secure-boot": "yes", "enrolled-keys": "yes"}
    assert xml.find("os/loader").get("secure") == "yes"
    assert xml.find("features/smm").get("state") == "on"
    s = parse_domain_summary(ET.tostring(xml, encoding="unicode"))
    assert (s["firmware"], s["secure_boot"]) == ("efi", True)


# -- disks ---------------------------------------------------------------------


def test_disks_are_virtio_in_the_given_order_with_their_sources():
    assert summary()["disks"] == [
        {
            "type": "file", "target": "vda", "bus": "virtio", "format": "qcow2",
            "path": "/var/lib/libvirt/images/web-01-disk1.qcow2", "pool": None, "volume": None,
        },
        {
            "type": "volume", "target": "vdb", "bus": "virtio", "format": "raw",
            "path": None, "pool": "default", "volume": "web-01-disk2.raw",
        },
    ]


def test_list_order_is_kept_even_when_targets_are_not_sorted():
    disks = [DomainDisk.file(f"/d/{dev}.qcow2", "qcow2", dev) for dev in ("vdc", "vda", "vdb")]
    assert [d["target"] for d in summary(disks=disks)["disks"]] == ["vdc", "vda", "vdb"]


def test_first_disk_is_the_boot_disk():
    disks = ET.fromstring(build()).findall("devices/disk")
    assert disks[0].find("boot").get("order") == "1"
    assert disks[1].find("boot") is None


def test_domain_without_disks_is_allowed():
    assert summary(disks=[])["disks"] == []


def test_duplicate_disk_targets_are_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        build(disks=[DomainDisk.file("/a", "raw", "vda"), DomainDisk.file("/b", "raw", "vda")])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target": "vda", "format": "vmdk", "path": "/a"},
        {"target": "sda", "format": "raw", "path": "/a"},
        {"target": "vda", "format": "raw"},
        {"target": "vda", "format": "raw", "pool": "default"},
        {"target": "vda", "format": "raw", "path": "/a", "pool": "p", "volume": "v"},
        {"target": "vda", "format": "raw", "path": "relative/path"},
        {"target": "vda", "format": "raw", "path": "/two\nlines"},
        {"target": "vda", "format": "raw", "path": "/ctl\x1f"},
        {"target": "vda", "format": "raw", "pool": "a/b", "volume": "v"},
        {"target": "vda", "format": "raw", "pool": "p", "volume": ".."},
    ],
)
def test_domain_disk_rejects_bad_values(kwargs):
    with pytest.raises((ValueError, TypeError)):
        DomainDisk(**kwargs)


@pytest.mark.parametrize("index, dev", [(0, "vda"), (1, "vdb"), (25, "vdz"), (26, "vdaa"), (27, "vdab"), (701, "vdzz"), (702, "vdaaa")])
def test_virtio_target_names_follow_libvirt(index, dev):
    assert virtio_target(index) == dev


# -- network interfaces ----------------------------------------------------------


def test_one_virtio_interface_per_nic_with_source_mac_on_mapped_target():
    assert summary()["interfaces"] == [
        {"type": "bridge", "mac": "00:50:56:aa:bb:01", "source": "br0", "model": "virtio"},
        {"type": "network", "mac": "00:50:56:aa:bb:02", "source": "default", "model": "virtio"},
    ]


def test_star_entry_is_the_default_for_unmapped_networks():
    s = summary(network_mapping={"VM Network": "br0", "*": "br-default"})
    assert [(i["type"], i["source"]) for i in s["interfaces"]] == [("bridge", "br0"), ("bridge", "br-default")]


def test_unmapped_network_is_an_error_naming_it():
    with pytest.raises(InvalidField) as info:
        build(network_mapping={"VM Network": "br0"})
    assert "DC0_DVPG0" in str(info.value)
    assert info.value.field == "options.network_mapping"


def test_check_network_mapping_validates_without_building():
    check_network_mapping(make_vm(), MAPPING)
    with pytest.raises(InvalidField, match="VM Network"):
        check_network_mapping(make_vm(), {"DC0_DVPG0": "br0"})


@pytest.mark.parametrize(
    "target",
    ["", "network:", "br 0", "a/b", "network:x y", "network:a/b", "bridge-name-too-long", "br<0>", "br0\n", 7],
)
def test_malformed_mapping_targets_are_errors(target):
    with pytest.raises(InvalidField, match="VM Network"):
        map_network({"VM Network": target}, "VM Network")


def test_map_network_kinds():
    assert map_network({"n": "br0"}, "n") == NetworkTarget("bridge", "br0")
    assert map_network({"*": "network:default"}, "n") == NetworkTarget("network", "default")


def test_vm_without_nics_needs_no_mapping():
    assert summary(make_vm(nics=()), network_mapping={})["interfaces"] == []


def test_macs_are_written_lower_case():
    vm = make_vm(nics=(nic(1, "VM Network", mac="00:50:56:AB:CD:EF"),))
    assert summary(vm)["interfaces"][0]["mac"] == "00:50:56:ab:cd:ef"


@pytest.mark.parametrize(
    "mac", ["00:50:56:aa:bb", "zz:50:56:aa:bb:cc", "01:00:5e:00:00:01", "", "00:50:56:aa:bb:cc\n"]
)
def test_invalid_or_multicast_mac_is_rejected(mac):
    with pytest.raises(InvalidField, match="MAC"):
        build(make_vm(nics=(nic(1, "VM Network", mac=mac),)))


# -- devices, lifecycle, metadata --------------------------------------------------


def test_serial_console_vnc_on_loopback_and_video():
    devices = ET.fromstring(build()).find("devices")
    assert devices.find("serial").get("type") == "pty"
    console = devices.find("console")
    assert (console.get("type"), console.find("target").get("type")) == ("pty", "serial")
    graphics = devices.find("graphics")
    assert (graphics.get("type"), graphics.get("autoport"), graphics.get("listen")) == ("vnc", "yes", "127.0.0.1")
    assert graphics.find("listen").get("address") == "127.0.0.1"
    assert devices.find("video/model") is not None


def test_lifecycle_actions():
    xml = ET.fromstring(build())
    assert xml.findtext("on_poweroff") == "destroy"
    assert xml.findtext("on_reboot") == "restart"
    assert xml.findtext("on_crash") == "destroy"


def test_metadata_records_the_source_vm():
    s = summary(vcenter="vcenter.example.com")
    assert s["source"]["vcenter"] == "vcenter.example.com"
    assert s["source"]["vm-path"] == "DC0/vm/prod/web-01"
    assert s["source"]["uuid"] == VM_UUID
    assert s["source"]["instance-uuid"] == "5013c2d4-0000-1111-2222-333344445555"
    metadata = ET.fromstring(build()).find("metadata")
    assert [child.tag for child in metadata] == [f"{{{NAMESPACE}}}source"]  # one element per namespace


def test_windows_guests_keep_local_time():
    assert ET.fromstring(build(make_vm(guest_id="windows2019srv_64Guest"))).find("clock").get("offset") == "localtime"
    assert ET.fromstring(build()).find("clock").get("offset") == "utc"


def test_user_values_are_escaped_not_interpreted():
    vm = make_vm(name="a<b>&'\"c", path="DC0/vm/<evil>/x&y")
    disks = [DomainDisk.file("/images/it's <here> & \"there\".qcow2", "qcow2", "vda")]
    s = summary(vm, disks=disks, network_mapping={"*": "network:n&<>'\""})
    assert s["source"]["vm-name"] == "a<b>&'\"c"
    assert s["source"]["vm-path"] == "DC0/vm/<evil>/x&y"
    assert s["disks"][0]["path"] == "/images/it's <here> & \"there\".qcow2"
    assert {i["source"] for i in s["interfaces"]} == {"n&<>'\""}


def test_metadata_omits_values_that_are_empty_once_cleaned():
    assert "vm-path" not in summary(make_vm(path="\x00\x01"))["source"]


def test_characters_xml_cannot_carry_are_dropped_from_free_text():
    xml = build(make_vm(name="web\x00\x01-01\ufffe", path="DC0/vm/\x1bweb"))
    root = ET.fromstring(xml)
    assert root.findtext("title") == "web-01"
    assert parse_domain_summary(xml)["source"]["vm-path"] == "DC0/vm/web"


@pytest.mark.parametrize("name", ["", "a/b", ".hidden", "x" * 201, "tab\x01", "two\nlines"])
def test_invalid_domain_names_are_rejected(name):
    with pytest.raises(InvalidField, match="domain_name"):
        build(name=name)


@pytest.mark.parametrize(
    "changes, field",
    [({"uuid": "not-a-uuid"}, "uuid"), ({"num_cpu": 0}, "hardware"), ({"firmware": "uefi"}, "firmware")],
)
def test_unusable_vm_facts_are_rejected(changes, field):
    with pytest.raises(InvalidField) as info:
        build(make_vm(**changes))
    assert info.value.field == field


# -- safe_domain_name --------------------------------------------------------------


@pytest.mark.parametrize(
    "vm_name, expected",
    [
        ("web-01", "web-01"),
        ("Web Server (prod)", "Web_Server__prod_"),
        ("db.example.com", "db.example.com"),
        ("naïve/ünïcode", "na_ve__n_code"),
        ("..", "_."),
        ("-rf", "_rf"),
        ("", "vm"),
    ],
)
def test_safe_domain_name_examples(vm_name, expected):
    assert safe_domain_name(vm_name) == expected


@given(st.text())
def test_safe_domain_name_is_always_valid_and_idempotent(vm_name):
    name = safe_domain_name(vm_name)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}", name)
    assert safe_domain_name(name) == name


@given(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,50}", fullmatch=True))
def test_safe_names_are_kept(vm_name):
    assert safe_domain_name(vm_name) == vm_name


# -- properties over many VMs ---------------------------------------------------------

macs = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(
    lambda b: ":".join(f"{x:02x}" for x in [b[0] & 0xFE] + b[1:])
)
network_names = st.text(min_size=1, max_size=40)
bridge_names = st.from_regex(r"[a-z][a-z0-9_-]{0,14}", fullmatch=True)


@given(
    name=st.text(max_size=80),
    path=st.text(max_size=120),
    nics=st.lists(st.tuples(network_names, macs), max_size=6),
    bridge=bridge_names,
    num_cpu=st.integers(1, 256),
    cores=st.integers(0, 64),
    memory_mb=st.integers(1, 4 * 1024 * 1024),
)
def test_any_vm_round_trips_through_the_xml(name, path, nics, bridge, num_cpu, cores, memory_mb):
    vm = make_vm(
        name=name,
        path=path,
        num_cpu=num_cpu,
        cores_per_socket=cores,
        memory_mb=memory_mb,
        nics=tuple(nic(i + 1, net, mac) for i, (net, mac) in enumerate(nics)),
    )
    s = summary(vm, name=safe_domain_name(name), network_mapping={"*": bridge})
    assert s["name"] == safe_domain_name(name)
    assert s["vcpus"] == num_cpu
    assert s["topology"]["sockets"] * s["topology"]["cores"] == num_cpu
    assert s["memory_kib"] == memory_mb * 1024
    assert [(i["mac"], i["source"]) for i in s["interfaces"]] == [(mac, bridge) for _, mac in nics]
    xml_path = re.sub(r"[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]", "", path)
    assert s["source"].get("vm-path", "") == xml_path.replace("\r\n", "\n").replace("\r", "\n")


# -- parse_domain_summary on what libvirt returns ---------------------------------------


def test_summary_reads_libvirt_normalized_xml():
    xml = """<domain type='kvm' id='3'>
      <name>x</name><uuid>4213a7c1-6f3e-2b8a-9d41-0c5e7f12ab34</uuid>
      <memory unit='GiB'>2</memory><vcpu placement='static'>2</vcpu>
      <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
        <loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader>
        <nvram>/var/lib/libvirt/qemu/nvram/x_VARS.fd</nvram></os>
      <cpu><topology sockets='1' dies='1' cores='2' threads='1'/></cpu>
      <devices>
        <disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>
        <disk type='block' device='disk'><driver name='qemu' type='raw'/>
          <source dev='/dev/vg/x'/><target dev='vda' bus='virtio'/></disk>
        <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/>
          <target dev='vnet0'/><model type='virtio'/></interface>
      </devices></domain>"""
    s = parse_domain_summary(xml)
    assert s["memory_kib"] == 2 * 1024 * 1024
    assert (s["firmware"], s["secure_boot"]) == ("efi", True)
    assert s["machine"] == "pc-q35-7.2"
    assert s["disks"] == [
        {"type": "block", "target": "vda", "bus": "virtio", "format": "raw",
         "path": "/dev/vg/x", "pool": None, "volume": None}
    ]
    assert s["interfaces"][0]["source"] == "br0"
    assert s["source"] is None


# -- device models ---------------------------------------------------------------


def test_disks_move_to_their_buses_with_the_names_each_bus_gives():
    disks = [DomainDisk.file(f"/d/{n}.qcow2", "qcow2", f"vd{n}") for n in "abcd"]
    moved = on_buses(disks, [("scsi", "vmpvscsi"), ("sata", None), ("virtio", None), ("ide", None)])
    assert [(d.target, d.bus, d.controller) for d in moved] == [
        ("sda", "scsi", "vmpvscsi"), ("sdb", "sata", None), ("vda", "virtio", None), ("hda", "ide", None)]


def test_scsi_disks_sit_on_a_controller_of_their_model():
    disks = on_buses(DISKS, [("scsi", "vmpvscsi"), ("scsi", "vmpvscsi")])
    dom = ET.fromstring(build(disks=disks, machine="pc", nic_models=["vmxnet3", "e1000e"]))
    assert [(c.get("type"), c.get("index"), c.get("model")) for c in dom.findall("devices/controller")] == [
        ("scsi", "0", "vmpvscsi")]
    assert [(t.get("dev"), t.get("bus")) for t in dom.findall("devices/disk/target")] == [("sda", "scsi"), ("sdb", "scsi")]
    assert [a.get("unit") for a in dom.findall("devices/disk/address")] == ["0", "1"]
    assert dom.find("os/type").get("machine") == "pc"
    assert [m.get("type") for m in dom.findall("devices/interface/model")] == ["vmxnet3", "e1000e"]


def test_a_target_must_match_its_bus():
    with pytest.raises(ValueError, match="does not name a sata disk"):
        DomainDisk(target="vda", format="raw", path="/a", bus="sata")
    with pytest.raises(ValueError, match="names its controller model"):
        DomainDisk(target="sda", format="raw", path="/a", bus="scsi")
