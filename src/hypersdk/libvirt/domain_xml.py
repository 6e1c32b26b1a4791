"""Pure libvirt domain-XML generation for a migrated vSphere VM.

No libvirt import, no I/O: ``build_domain_xml`` turns a ``VmInfo`` plus the
destination choices (domain name, uploaded disks, network mapping) into the
XML given to ``virDomainDefineXML``; ``parse_domain_summary`` reads the
interesting parts back (from our XML or from what libvirt returns).

Everything is built with ElementTree, so user values (VM names, paths,
network names) are always escaped; characters XML 1.0 cannot carry are
dropped from free text.
"""

from __future__ import annotations

import re
import uuid as uuidlib
import xml.etree.ElementTree as ET
from typing import Optional

import attrs
from attrs import field, frozen
from attrs.validators import in_, matches_re

from hypersdk.errors import InvalidField
from hypersdk.vsphere.model import VmInfo

NAMESPACE = "https://hypersdk.io/xmlns/libvirt/1"
ET.register_namespace("hypersdk", NAMESPACE)

DISK_FORMATS = ("qcow2", "raw")
MAX_NAME_LENGTH = 200  # leaves room for ".xml" and "_VARS.fd" in file names

_TARGET_RE = r"^(vd|sd|hd)[a-z]{1,3}$"
DISK_BUSES = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}  # bus -> its target names' prefix
SCSI_MODELS = ("vmpvscsi", "lsilogic", "lsisas1068", "virtio-scsi")
NIC_MODELS = ("virtio", "vmxnet3", "e1000", "e1000e", "pcnet", "rtl8139")
MACHINES = ("q35", "pc")
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_BRIDGE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")  # a Linux interface name
_XML_INVALID_CHARS = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@frozen
class DomainDisk:
    """One disk of the new domain: a file path or a pool/volume pair."""

    target: str = field(validator=matches_re(_TARGET_RE))  # "vda", "vdb", ... ("sda" on scsi/sata, "hda" on ide)
    format: str = field(validator=in_(DISK_FORMATS))
    path: Optional[str] = None
    pool: Optional[str] = None
    volume: Optional[str] = None
    bus: str = field(default="virtio", validator=in_(tuple(DISK_BUSES)))
    controller: Optional[str] = field(default=None, validator=in_((None, *SCSI_MODELS)))  # the SCSI model

    def __attrs_post_init__(self) -> None:
        if not self.target.startswith(DISK_BUSES[self.bus]):
            raise ValueError(f"disk target {self.target!r} does not name a {self.bus} disk")
        if (self.controller is None) == (self.bus == "scsi"):
            raise ValueError("a SCSI disk names its controller model, and only a SCSI disk")
        if (self.path is None) == (self.pool is None or self.volume is None):
            raise ValueError("DomainDisk needs either a path or both pool and volume")
        # what libvirt's schema accepts (absFilePath, objectName, volName)
        if self.path is not None and not (self.path.startswith("/") and _plain(self.path)):
            raise ValueError(f"disk path {self.path!r} is not a plain absolute path")
        if self.pool is not None and not (_plain(self.pool) and "/" not in self.pool):
            raise ValueError(f"invalid storage pool name {self.pool!r}")
        if self.volume is not None and not (
            _plain(self.volume) and "/" not in self.volume and self.volume not in (".", "..")
        ):
            raise ValueError(f"invalid volume name {self.volume!r}")

    @classmethod
    def file(cls, path: str, format: str, target: str) -> "DomainDisk":
        return cls(target=target, format=format, path=path)

    @classmethod
    def pool_volume(cls, pool: str, volume: str, format: str, target: str) -> "DomainDisk":
        return cls(target=target, format=format, pool=pool, volume=volume)


@frozen
class NetworkTarget:
    kind: str  # "bridge" | "network"
    name: str


def _plain(text: str) -> bool:
    """Non-empty, one line, only characters XML can carry."""
    return bool(text) and not _XML_INVALID_CHARS.search(text) and "\n" not in text and "\r" not in text


def virtio_target(index: int, prefix: str = "vd") -> str:
    """0 -> vda, 25 -> vdz, 26 -> vdaa (libvirt's disk naming)."""
    if index < 0:
        raise ValueError("disk index must be >= 0")
    letters = ""
    n = index + 1
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return prefix + letters


def on_buses(disks: list[DomainDisk], buses: list[tuple[str, Optional[str]]]) -> list[DomainDisk]:
    """``disks`` moved to their (bus, SCSI model), with the target names each bus gives them in order
    (SCSI and SATA disks share the sdX names)."""
    used: dict[str, int] = {}
    moved = []
    for disk, (bus, controller) in zip(disks, buses, strict=True):
        prefix = DISK_BUSES[bus]
        index = used.get(prefix, 0)
        used[prefix] = index + 1
        moved.append(attrs.evolve(disk, bus=bus, controller=controller, target=virtio_target(index, prefix)))
    return moved


def safe_domain_name(vm_name: str) -> str:
    """A libvirt-safe domain name: ASCII letters, digits and ``-_.`` only.

    Other characters become ``_``; a leading ``.`` or ``-`` too (no hidden
    files, no option-like names); empty names become ``vm``.
    """
    name = _UNSAFE_NAME_CHARS.sub("_", vm_name)[:MAX_NAME_LENGTH]
    if name[:1] in (".", "-"):
        name = "_" + name[1:]
    return name or "vm"


def map_network(network_mapping: dict[str, str], network: str) -> NetworkTarget:
    """Where a NIC on vSphere ``network`` goes; ``"*"`` is the default entry."""
    target = network_mapping.get(network, network_mapping.get("*"))
    if target is None:
        raise InvalidField(
            "options.network_mapping",
            f"no mapping for vSphere network {network!r} and no \"*\" default",
        )
    if not isinstance(target, str):
        raise InvalidField("options.network_mapping", f"target for {network!r} must be a string")
    if target.startswith("network:"):
        kind, name = "network", target[len("network:"):]
        valid = _plain(name) and not any(c.isspace() or c == "/" for c in name)
    else:
        kind, name = "bridge", target
        valid = bool(_BRIDGE_RE.fullmatch(name))
    if not valid:
        raise InvalidField(
            "options.network_mapping",
            f"invalid target {target!r} for vSphere network {network!r}",
        )
    return NetworkTarget(kind, name)


def check_network_mapping(vm: VmInfo, network_mapping: dict[str, str]) -> None:
    """Raise InvalidField naming the first NIC network that has no target."""
    for nic in vm.nics:
        map_network(network_mapping, nic.network)


def cpu_topology(num_cpu: int, cores_per_socket: int) -> tuple[int, int]:
    """(sockets, cores) with sockets * cores == num_cpu."""
    cores = cores_per_socket if cores_per_socket > 0 and num_cpu % cores_per_socket == 0 else 1
    return num_cpu // cores, cores


def build_domain_xml(
    vm: VmInfo,
    *,
    name: str,
    disks: list[DomainDisk],
    network_mapping: dict[str, str],
    domain_type: str = "kvm",
    vcenter: Optional[str] = None,
    machine: str = "q35",
    nic_models: Optional[list[str]] = None,
) -> str:
    """``nic_models``: one libvirt model per NIC of ``vm`` (virtio for all when None)."""
    _check_inputs(vm, name, disks, domain_type)
    if machine not in MACHINES:
        raise ValueError(f"machine {machine!r}")
    models = list(nic_models) if nic_models is not None else ["virtio"] * len(vm.nics)
    if len(models) != len(vm.nics) or any(m not in NIC_MODELS for m in models):
        raise ValueError(f"NIC models {models!r} for {len(vm.nics)} NIC(s)")
    interfaces = [(nic, map_network(network_mapping, nic.network), model) for nic, model in zip(vm.nics, models)]

    dom = ET.Element("domain", type=domain_type)
    _text(dom, "name", name)
    _text(dom, "uuid", str(uuidlib.UUID(vm.uuid)))
    title = " ".join(_clean(vm.name).split())
    if title:
        _text(dom, "title", title)
    _text(dom, "description", f"Migrated from vSphere: {_clean(vm.path)}")
    _metadata(ET.SubElement(dom, "metadata"), vm, vcenter)

    kib = str(vm.memory_mb * 1024)
    _text(dom, "memory", kib, unit="KiB")
    _text(dom, "currentMemory", kib, unit="KiB")
    _text(dom, "vcpu", str(vm.num_cpu), placement="static")
    _os(dom, vm, machine)

    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    if vm.firmware == "efi" and vm.secure_boot:
        ET.SubElement(features, "smm", state="on")

    sockets, cores = cpu_topology(vm.num_cpu, vm.cores_per_socket)
    cpu = ET.SubElement(dom, "cpu", mode="host-model") if domain_type == "kvm" else ET.SubElement(dom, "cpu")
    ET.SubElement(cpu, "topology", sockets=str(sockets), cores=str(cores), threads="1")

    windows = "windows" in vm.guest_id.lower()
    ET.SubElement(dom, "clock", offset="localtime" if windows else "utc")
    _text(dom, "on_poweroff", "destroy")
    _text(dom, "on_reboot", "restart")
    _text(dom, "on_crash", "destroy")

    devices = ET.SubElement(dom, "devices")
    scsi_models = list(dict.fromkeys(d.controller for d in disks if d.controller is not None))
    units: dict[str, int] = {}
    for index, disk in enumerate(disks):
        _disk(devices, disk, boot=index == 0, scsi_models=scsi_models, units=units)
    for index, model in enumerate(scsi_models):
        ET.SubElement(devices, "controller", type="scsi", index=str(index), model=model)
    for nic, target, model in interfaces:
        iface = ET.SubElement(devices, "interface", type=target.kind)
        ET.SubElement(iface, "mac", address=nic.mac.lower())
        ET.SubElement(iface, "source", {target.kind: target.name})
        ET.SubElement(iface, "model", type=model)
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    channel = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
    ET.SubElement(devices, "input", type="tablet", bus="usb")
    graphics = ET.SubElement(devices, "graphics", type="vnc", port="-1", autoport="yes", listen="127.0.0.1")
    ET.SubElement(graphics, "listen", type="address", address="127.0.0.1")
    video = ET.SubElement(devices, "video")
    ET.SubElement(video, "model", type="vga", vram="16384", heads="1", primary="yes")
    ET.SubElement(devices, "memballoon", model="virtio")

    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


def _check_inputs(vm: VmInfo, name: str, disks: list[DomainDisk], domain_type: str) -> None:
    if domain_type not in ("kvm", "qemu"):
        raise InvalidField("destination.domain_type", f"must be 'kvm' or 'qemu', not {domain_type!r}")
    if (
        not name
        or len(name) > MAX_NAME_LENGTH
        or any(c in name for c in "/\n")
        or _clean(name) != name
        or name.startswith(".")
    ):
        raise InvalidField("destination.domain_name", f"{name!r} is not a valid libvirt domain name")
    try:
        uuidlib.UUID(vm.uuid)
    except ValueError:
        raise InvalidField("uuid", f"VM {vm.name!r} has an invalid BIOS uuid {vm.uuid!r}") from None
    if vm.num_cpu < 1 or vm.memory_mb < 1:
        raise InvalidField("hardware", f"VM {vm.name!r} has {vm.num_cpu} vCPUs and {vm.memory_mb} MiB")
    if vm.firmware not in ("bios", "efi"):
        raise InvalidField("firmware", f"VM {vm.name!r} has unknown firmware {vm.firmware!r}")
    targets = [d.target for d in disks]
    if len(set(targets)) != len(targets):
        raise ValueError(f"duplicate disk targets in {targets}")
    for nic in vm.nics:
        mac = nic.mac.lower()
        if not _MAC_RE.fullmatch(mac) or int(mac[:2], 16) & 1:
            raise InvalidField("nics", f"{nic.label} has an invalid unicast MAC address {nic.mac!r}")


def _os(dom: ET.Element, vm: VmInfo, machine: str) -> None:
    if vm.firmware == "efi":
        os_el = ET.SubElement(dom, "os", firmware="efi")
    else:
        os_el = ET.SubElement(dom, "os")
    _text(os_el, "type", "hvm", arch="x86_64", machine=machine)
    if vm.firmware == "efi":
        fw = ET.SubElement(os_el, "firmware")
        ET.SubElement(fw, "feature", enabled="yes" if vm.secure_boot else "no", name="secure-boot")
        if vm.secure_boot:
            ET.SubElement(fw, "feature", enabled="yes", name="enrolled-keys")
            ET.SubElement(os_el, "loader", secure="yes")


def _disk(devices: ET.Element, disk: DomainDisk, boot: bool, scsi_models: list[str], units: dict[str, int]) -> None:
    if disk.path is not None:
        el = ET.SubElement(devices, "disk", type="file", device="disk")
        source = {"file": disk.path}
    else:
        el = ET.SubElement(devices, "disk", type="volume", device="disk")
        source = {"pool": disk.pool, "volume": disk.volume}
    ET.SubElement(el, "driver", name="qemu", type=disk.format, discard="unmap")
    ET.SubElement(el, "source", source)
    ET.SubElement(el, "target", dev=disk.target, bus=disk.bus)
    if boot:
        ET.SubElement(el, "boot", order="1")
    if disk.controller is not None:  # on the controller of its model, units in disk order
        unit = units.get(disk.controller, 0)
        units[disk.controller] = unit + 1
        ET.SubElement(el, "address", type="drive", controller=str(scsi_models.index(disk.controller)), bus="0",
                      target="0", unit=str(unit))


def _metadata(parent: ET.Element, vm: VmInfo, vcenter: Optional[str]) -> None:
    src = ET.SubElement(parent, f"{{{NAMESPACE}}}source")
    values = [
        ("vcenter", vcenter),
        ("datacenter", vm.datacenter),
        ("vm-path", vm.path),
        ("vm-name", vm.name),
        ("uuid", vm.uuid),
        ("instance-uuid", vm.instance_uuid),
        ("guest-id", vm.guest_id),
    ]
    for tag, value in values:
        value = _clean(value or "")
        if value:
            ET.SubElement(src, f"{{{NAMESPACE}}}{tag}").text = value


def _text(parent: ET.Element, tag: str, text: str, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    el.text = text
    return el


def _clean(text: str) -> str:
    """Drop what XML 1.0 cannot carry; CR becomes LF as any XML parser would make it."""
    return _XML_INVALID_CHARS.sub("", text).replace("\r\n", "\n").replace("\r", "\n")


# -- reading back ----------------------------------------------------------

_UNIT_KIB = {
    "b": 1 / 1024, "bytes": 1 / 1024, "kb": 1000 / 1024, "k": 1, "kib": 1,
    "mb": 1000**2 / 1024, "m": 1024, "mib": 1024, "gb": 1000**3 / 1024, "g": 1024**2, "gib": 1024**2,
}


def parse_domain_summary(xml: str) -> dict:
    """The fields a migration cares about, from any libvirt domain XML."""
    dom = ET.fromstring(xml)
    os_el = dom.find("os")
    loader = os_el.find("loader") if os_el is not None else None
    efi = os_el is not None and (
        os_el.get("firmware") == "efi"
        or (loader is not None and loader.get("type") == "pflash")
    )
    secure = loader is not None and loader.get("secure") == "yes"
    if os_el is not None:
        for feature in os_el.iterfind("firmware/feature"):
            if feature.get("name") == "secure-boot":
                secure = feature.get("enabled") == "yes"
    topology = dom.find("cpu/topology")
    memory = dom.find("memory")
    type_el = os_el.find("type") if os_el is not None else None
    source = dom.find(f"metadata/{{{NAMESPACE}}}source")
    return {
        "type": dom.get("type"),
        "name": dom.findtext("name"),
        "uuid": dom.findtext("uuid"),
        "vcpus": int(dom.findtext("vcpu", "0")),
        "topology": None if topology is None else {
            k: int(topology.get(k, "1")) for k in ("sockets", "cores", "threads")
        },
        "memory_kib": int(int(memory.text) * _UNIT_KIB[memory.get("unit", "KiB").lower()]),
        "machine": None if type_el is None else type_el.get("machine"),
        "firmware": "efi" if efi else "bios",
        "secure_boot": bool(efi and secure),
        "interfaces": [_iface_summary(i) for i in dom.iterfind("devices/interface")],
        "disks": [_disk_summary(d) for d in dom.iterfind("devices/disk") if d.get("device", "disk") == "disk"],
        "source": None if source is None else {
            child.tag.split("}", 1)[1]: child.text for child in source
        },
        "on_poweroff": dom.findtext("on_poweroff"),
        "graphics": [g.get("type") for g in dom.iterfind("devices/graphics")],
    }


def _iface_summary(iface: ET.Element) -> dict:
    kind = iface.get("type")
    source = iface.find("source")
    mac = iface.find("mac")
    model = iface.find("model")
    return {
        "type": kind,
        "mac": None if mac is None else mac.get("address"),
        "source": None if source is None else source.get(kind),
        "model": None if model is None else model.get("type"),
    }


def _disk_summary(disk: ET.Element) -> dict:
    source = disk.find("source")
    driver = disk.find("driver")
    target = disk.find("target")
    summary = {
        "type": disk.get("type"),
        "target": None if target is None else target.get("dev"),
        "bus": None if target is None else target.get("bus"),
        "format": None if driver is None else driver.get("type"),
        "path": None, "pool": None, "volume": None,
    }
    if source is not None:
        summary["path"] = source.get("file") or source.get("dev")
        summary["pool"] = source.get("pool")
        summary["volume"] = source.get("volume")
    return summary


def volumes_of(domain_xml: str) -> list[tuple[str, str]]:
    """(pool, volume) of each disk of the domain that is a storage pool volume."""
    dom = ET.fromstring(domain_xml)
    return [(source.get("pool"), source.get("volume")) for disk in dom.iterfind("devices/disk[@device='disk']")
            if disk.get("type") == "volume" and (source := disk.find("source")) is not None]


def throwaway_disks(domain_xml: str, volume_paths: dict[tuple[str, str], str]) -> str:
    """The domain with each disk *transient*: libvirt boots an overlay of it and drops the overlay when
    the domain stops, so the disks stay as they were. libvirt takes it for file disks only: a pool
    volume is given as its file (``volume_paths``: {(pool, volume): path on its host})."""
    dom = ET.fromstring(domain_xml)
    for disk in dom.iterfind("devices/disk[@device='disk']"):
        source = disk.find("source")
        if disk.get("type") == "volume" and source is not None:
            disk.set("type", "file")
            path = volume_paths[(source.get("pool"), source.get("volume"))]
            source.attrib.clear()
            source.set("file", path)
        if disk.find("transient") is None:
            ET.SubElement(disk, "transient")
    return ET.tostring(dom, encoding="unicode")
