"""Frozen values describing what vCenter told us about a VM.

Produced by the blocking inventory functions, consumed by the pipeline, the
domain-XML builder and the /vms API. Plain data: no pyvmomi objects leak out.
"""

from __future__ import annotations

from typing import Optional

from attrs import frozen


@frozen
class DiskInfo:
    key: int  # vSphere device key
    label: str  # "Hard disk 1"
    capacity_bytes: int
    file_name: str  # datastore path: "[LocalDS_0] vm1/vm1.vmdk"
    datastore: str  # "LocalDS_0"
    controller_type: str  # "scsi" | "sata" | "ide" | "nvme"
    controller_bus: int  # bus number of the controller
    unit_number: int  # unit on that controller
    thin: bool
    disk_mode: str = "persistent"
    # "pvscsi" | "lsisas" | "lsilogic" | "buslogic" | "ahci" | "ide" | "nvme" | "unknown"
    controller_model: str = "unknown"
    change_id: Optional[str] = None  # the disk's changeId when changed block tracking is on
    raw_mapping: bool = False  # a raw device mapping (RDM): a LUN, not a file


@frozen
class NicInfo:
    key: int
    label: str  # "Network adapter 1"
    network: str  # portgroup / network name as vSphere shows it
    mac: str  # lower-case "00:50:56:aa:bb:cc"
    adapter_type: str  # "e1000" | "e1000e" | "vmxnet3" | "vmxnet2" | "pcnet32" | "sriov"
    pci_slot: Optional[int] = None  # the guest's PCI slot number (192: the guest calls it ens192)


@frozen
class CdromInfo:
    key: int
    label: str


@frozen
class VmInfo:
    name: str
    path: str  # inventory path "DC0/vm/folder/name"
    datacenter: str
    uuid: str  # BIOS uuid (config.uuid)
    instance_uuid: str
    num_cpu: int
    cores_per_socket: int
    memory_mb: int
    firmware: str  # "bios" | "efi"
    secure_boot: bool
    guest_id: str  # "otherGuest64", "ubuntu64Guest", ...
    guest_full_name: str
    power_state: str  # "poweredOn" | "poweredOff" | "suspended"
    disks: tuple[DiskInfo, ...]
    nics: tuple[NicInfo, ...]
    cdroms: tuple[CdromInfo, ...]
    snapshot_count: int
    tools_status: Optional[str] = None
    ip_address: Optional[str] = None
    template: bool = False
    moref: str = ""  # managed object id ("vm-123"), what VDDK opens a VM by
    snapshot_names: tuple[str, ...] = ()  # every snapshot in the tree
    change_tracking: bool = False  # config.changeTrackingEnabled (Changed Block Tracking)

    @property
    def storage_bytes(self) -> int:
        return sum(d.capacity_bytes for d in self.disks)


@frozen
class VmSummary:
    """One VM of a listing (GET /vms/list): cheaper than VmInfo, no devices."""

    name: str
    path: str  # inventory path "DC0/vm/folder/name"
    datacenter: str
    uuid: str
    instance_uuid: str
    power_state: str
    num_cpu: int
    memory_mb: int
    storage_bytes: int  # sum of the virtual disks' capacities
    num_disks: int
    guest_id: str
    guest_full_name: str
    ip_address: Optional[str] = None
    template: bool = False
