"""Which virtual devices the KVM domain gets, so that the guest boots and finds its network.

Pure. ``options.device_models`` chooses how:
- ``source``: the source's own models, as QEMU emulates them (pvscsi, SATA, IDE,
  vmxnet3, e1000, e1000e), without looking at the guest.
- ``virtio``: virtio for every disk and NIC, for a guest known to carry virtio.
- ``auto`` (the default of ``https``): per device, the first model of its row in
  ``DISK_CHOICES`` / ``NIC_CHOICES`` that the copied guest really has a driver
  for (the boot disk's driver in its initramfs, the others in its kernel's
  modules). The source's own model comes first where QEMU has it; where QEMU's
  model cannot boot the guest (LSI Logic SAS: QEMU's mptsas1068 is not found by
  the guest's mptsas), the next row entry is used. A guest whose drivers cannot
  be read (not Linux) keeps the source's models.
No usable model fails before the import with an error that names the ways out.
"""

from __future__ import annotations

from typing import Optional, Sequence

from attrs import frozen

from ..errors import HyperSDKError
from ..vsphere.model import DiskInfo, NicInfo
from .facts import GuestFacts

MODES = ("auto", "source", "virtio")


@frozen
class DiskModel:
    bus: str  # libvirt <target bus>: "virtio" | "scsi" | "sata" | "ide"
    controller: Optional[str] = None  # libvirt SCSI controller model: "vmpvscsi", "lsilogic", "lsisas1068"
    drivers: tuple[str, ...] = ()  # Linux modules that drive it (all needed)

    @property
    def name(self) -> str:
        return self.controller or self.bus


@frozen
class NicModel:
    model: str  # libvirt <model type>
    drivers: tuple[str, ...] = ()


VIRTIO_DISK = DiskModel("virtio", drivers=("virtio_blk", "virtio_pci"))
PVSCSI = DiskModel("scsi", "vmpvscsi", drivers=("vmw_pvscsi", "sd_mod"))
SATA = DiskModel("sata", drivers=("ahci", "sd_mod"))
IDE = DiskModel("ide", drivers=("ata_piix", "sd_mod"))  # on QEMU's pc machine (q35 has no IDE)
SYM53C8XX = DiskModel("scsi", "lsilogic", drivers=("sym53c8xx", "sd_mod"))  # QEMU's "lsilogic" is an LSI 53C895A
LSISAS1068 = DiskModel("scsi", "lsisas1068", drivers=("mptsas", "sd_mod"))

# source controller -> models to try in order ("auto"); the first is the source's own where QEMU has it
DISK_CHOICES = {
    "pvscsi": (PVSCSI, SATA, IDE, VIRTIO_DISK),
    "ahci": (SATA, IDE, VIRTIO_DISK),
    "ide": (IDE, SATA, VIRTIO_DISK),
    "lsisas": (SATA, IDE, SYM53C8XX, VIRTIO_DISK),  # QEMU's LSI SAS boots nothing the guest's mptsas sees
    "lsilogic": (SATA, SYM53C8XX, IDE, VIRTIO_DISK),  # QEMU has no LSI 53C1030 (mptspi)
    "buslogic": (SATA, IDE, VIRTIO_DISK),
    "nvme": (SATA, IDE, VIRTIO_DISK),
}
# source controller -> what "source" uses (QEMU's nearest model; None: QEMU has none)
SOURCE_DISK = {"pvscsi": PVSCSI, "ahci": SATA, "ide": IDE, "lsisas": LSISAS1068, "lsilogic": SYM53C8XX}

VIRTIO_NIC = NicModel("virtio", ("virtio_net", "virtio_pci"))
SOURCE_NIC = {
    "vmxnet3": NicModel("vmxnet3", ("vmxnet3",)),
    "e1000": NicModel("e1000", ("e1000",)),
    "e1000e": NicModel("e1000e", ("e1000e",)),
    "pcnet32": NicModel("pcnet", ("pcnet32",)),
}
NIC_FALLBACKS = (SOURCE_NIC["e1000e"], SOURCE_NIC["e1000"], VIRTIO_NIC)


class NoUsableDevice(HyperSDKError):
    code = "no_usable_device"


@frozen
class DeviceChoice:
    label: str  # "Hard disk 1", "Network adapter 1"
    source: str  # the source's model: "pvscsi", "lsisas", "vmxnet3", ...
    chosen: str  # "vmpvscsi", "sata", "vmxnet3", "virtio", ...
    why: str = ""  # when it is not the source's own


@frozen
class DevicePlan:
    machine: str  # "q35" | "pc"
    disks: tuple[DiskModel, ...]
    nics: tuple[NicModel, ...]
    choices: tuple[DeviceChoice, ...]

    def describe(self) -> dict:
        return {"machine": self.machine,
                "devices": [{"label": c.label, "source": c.source, "model": c.chosen, **({"why": c.why} if c.why else {})}
                            for c in self.choices]}


def choose_devices(disks: Sequence[DiskInfo], nics: Sequence[NicInfo], mode: str,
                   facts: Optional[GuestFacts] = None) -> DevicePlan:
    """The models for ``disks`` (the first is the boot disk) and ``nics``; NoUsableDevice names the way out."""
    if mode not in MODES:
        raise ValueError(mode)
    reads_drivers = mode == "auto" and facts is not None and facts.linux
    disk_models, choices = [], []
    for index, disk in enumerate(disks):
        model, why = _disk_model(disk, mode, facts if reads_drivers else None, boot=index == 0)
        disk_models.append(model)
        choices.append(DeviceChoice(disk.label, disk.controller_model, model.name, why))
    nic_models = []
    for nic in nics:
        model, why = _nic_model(nic, mode, facts if reads_drivers else None)
        nic_models.append(model)
        choices.append(DeviceChoice(nic.label, nic.adapter_type, model.model, why))
    machine = "pc" if any(m.bus == "ide" for m in disk_models) else "q35"
    return DevicePlan(machine, tuple(disk_models), tuple(nic_models), tuple(choices))


def _disk_model(disk: DiskInfo, mode: str, facts: Optional[GuestFacts], boot: bool) -> tuple[DiskModel, str]:
    if mode == "virtio":
        return VIRTIO_DISK, "device_models: virtio"
    own = SOURCE_DISK.get(disk.controller_model)
    if facts is None:  # source models, as they are
        if own is None:
            raise NoUsableDevice(
                f"{disk.label} is on a {_CONTROLLER_NAMES.get(disk.controller_model, disk.controller_model)}"
                " controller, which QEMU cannot emulate: use conversion_method virt-v2v, or"
                " device_models: virtio for a guest known to have virtio drivers")
        return own, ""
    loaded = facts.boot_modules if boot else facts.modules
    where = "initramfs" if boot else "kernel"
    for model in DISK_CHOICES.get(disk.controller_model, (SATA, IDE, VIRTIO_DISK)):
        if all(driver in loaded for driver in model.drivers):
            return model, "" if model == own else _why_not_own(disk.controller_model, own, loaded, where)
    tried = ", ".join(m.name for m in DISK_CHOICES.get(disk.controller_model, ()))
    raise NoUsableDevice(
        f"{disk.label}: the guest's {where} ({facts.product or facts.distro}, kernel {facts.kernel}) has no driver for"
        f" any disk controller QEMU offers ({tried}): use conversion_method virt-v2v, which installs virtio"
        " drivers, or device_models: virtio for a guest known to have them")


def _why_not_own(source: str, own: Optional[DiskModel], loaded: frozenset[str], where: str) -> str:
    name = _CONTROLLER_NAMES.get(source, source)
    if own is None:
        return f"QEMU has no {name} controller"
    if source == "lsisas":
        return "QEMU's LSI Logic SAS (mptsas1068) is not usable by the guest's mptsas driver"
    missing = ", ".join(d for d in own.drivers if d not in loaded)
    return f"the guest's {where} has no {missing} for {name}"


def _nic_model(nic: NicInfo, mode: str, facts: Optional[GuestFacts]) -> tuple[NicModel, str]:
    if mode == "virtio":
        return VIRTIO_NIC, "device_models: virtio"
    own = SOURCE_NIC.get(nic.adapter_type)
    if facts is None:
        if own is None:
            raise NoUsableDevice(
                f"{nic.label} is a {nic.adapter_type} adapter, which QEMU cannot emulate: use conversion_method"
                " virt-v2v, or device_models: virtio for a guest known to have virtio drivers")
        return own, ""
    candidates = ((own,) if own is not None else ()) + tuple(m for m in NIC_FALLBACKS if m != own)
    for model in candidates:
        if all(driver in facts.modules for driver in model.drivers):
            why = "" if model == own else (f"QEMU has no {nic.adapter_type}" if own is None else
                                           f"the guest's kernel has no {', '.join(own.drivers)}")
            return model, why
    raise NoUsableDevice(
        f"{nic.label}: the guest's kernel ({facts.kernel}) has no driver for any network adapter QEMU offers"
        f" ({', '.join(m.model for m in candidates)}): use conversion_method virt-v2v, or device_models: virtio")


_CONTROLLER_NAMES = {
    "pvscsi": "VMware Paravirtual SCSI", "lsisas": "LSI Logic SAS", "lsilogic": "LSI Logic Parallel",
    "buslogic": "BusLogic", "ahci": "SATA (AHCI)", "ide": "IDE", "nvme": "NVMe",
}
