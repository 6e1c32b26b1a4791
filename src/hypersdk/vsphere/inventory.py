"""Finding and describing VMs: blocking pyvmomi calls returning frozen models.

``thd_read_vm`` reads a VM, its ancestors (for its inventory path and
datacenter) and its networks in one RetrievePropertiesEx; ``thd_list_vms``
reads every VM under a container through a ContainerView in one paged
retrieval. No per-VM or per-NIC round trips.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

from pyVmomi import vim, vmodl

from hypersdk import errors
from hypersdk.vsphere.collector import (
    PC,
    ancestors_select,
    ancestors_specs,
    by_ref,
    inventory_path,
    prop,
    ref_key,
    thd_retrieve,
    traversal,
)
from hypersdk.vsphere.connection import service_content, upstream_errors, where
from hypersdk.vsphere.datastore import parse_datastore_path
from hypersdk.vsphere.model import CdromInfo, DiskInfo, NicInfo, VmInfo, VmSummary

VM_PROPERTIES = (
    "name", "parent", "parentVApp",
    "config.hardware.device", "config.hardware.numCPU", "config.hardware.numCoresPerSocket",
    "config.hardware.memoryMB", "config.firmware", "config.bootOptions.efiSecureBootEnabled",
    "config.guestId", "config.guestFullName", "config.uuid", "config.instanceUuid", "config.template",
    "runtime.powerState", "snapshot", "guest.toolsRunningStatus", "guest.ipAddress", "config.changeTrackingEnabled",
)
SUMMARY_PROPERTIES = (
    "name", "parent", "parentVApp",
    "config.hardware.device", "config.hardware.numCPU", "config.hardware.memoryMB",
    "config.guestId", "config.guestFullName", "config.uuid", "config.instanceUuid", "config.template",
    "runtime.powerState", "guest.ipAddress",
)

# Most specific first: VirtualVmxnet3Vrdma is a VirtualVmxnet3 is a VirtualVmxnet.
_NIC_TYPES = (
    (vim.vm.device.VirtualE1000e, "e1000e"),
    (vim.vm.device.VirtualE1000, "e1000"),
    (vim.vm.device.VirtualVmxnet3Vrdma, "vmxnet3vrdma"),
    (vim.vm.device.VirtualVmxnet3, "vmxnet3"),
    (vim.vm.device.VirtualVmxnet2, "vmxnet2"),
    (vim.vm.device.VirtualVmxnet, "vmxnet"),
    (vim.vm.device.VirtualPCNet32, "pcnet32"),
    (vim.vm.device.VirtualSriovEthernetCard, "sriov"),
)
# (class, bus, model), most specific first: the SCSI models are VirtualSCSIControllers, AHCI a SATA one.
_CONTROLLERS = (
    (vim.vm.device.ParaVirtualSCSIController, "scsi", "pvscsi"),
    (vim.vm.device.VirtualLsiLogicSASController, "scsi", "lsisas"),
    (vim.vm.device.VirtualLsiLogicController, "scsi", "lsilogic"),
    (vim.vm.device.VirtualBusLogicController, "scsi", "buslogic"),
    (vim.vm.device.VirtualSCSIController, "scsi", "unknown"),
    (vim.vm.device.VirtualAHCIController, "sata", "ahci"),
    (vim.vm.device.VirtualSATAController, "sata", "unknown"),
    (vim.vm.device.VirtualIDEController, "ide", "ide"),
    (vim.vm.device.VirtualNVMEController, "nvme", "nvme"),
)
_THIN_BACKINGS = (
    vim.vm.device.VirtualDisk.SparseVer2BackingInfo,
    vim.vm.device.VirtualDisk.SeSparseBackingInfo,
)


def thd_find_vm(si: vim.ServiceInstance, vm_path: str) -> vim.VirtualMachine:
    """The VM at inventory path ``"DC0/vm/folder/name"``; VMNotFound otherwise."""
    path = "/".join(p for p in vm_path.strip().split("/") if p)
    if not path:
        raise errors.VMNotFound("VM path is empty")
    with upstream_errors(where(si)):
        found = service_content(si).searchIndex.FindByInventoryPath(path)
    if found is None:
        raise errors.VMNotFound(f"VM {vm_path} not found")
    if not isinstance(found, vim.VirtualMachine):
        kind = type(found).__name__.rsplit(".", 1)[-1]
        raise errors.VMNotFound(f"{vm_path} is a {kind}, not a VM")
    return found


def _network_specs() -> tuple[list[PC.TraversalSpec], list[PC.PropertySpec]]:
    return (
        [traversal("networks", vim.VirtualMachine, "network")],
        [
            prop(vim.Network, "name"),
            prop(vim.dvs.DistributedVirtualPortgroup, "key"),
            prop(vim.OpaqueNetwork, "summary"),
        ],
    )


def _entity_props() -> list[PC.PropertySpec]:
    return [prop(vim.ManagedEntity, "name", "parent"), prop(vim.VirtualApp, "parentFolder")]


def thd_read_vm(si: vim.ServiceInstance, vm_ref: vim.VirtualMachine, path: Optional[str] = None) -> VmInfo:
    """Everything the migration needs to know about one VM, in one collector call."""
    net_traversals, net_props = _network_specs()
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=vm_ref, skip=False, selectSet=ancestors_specs() + net_traversals)],
        propSet=[prop(vim.VirtualMachine, *VM_PROPERTIES)] + _entity_props() + net_props,
    )
    with upstream_errors(where(si)):
        try:
            objects = by_ref(thd_retrieve(si, [spec]))
        except vmodl.fault.ManagedObjectNotFound:
            raise errors.VMNotFound(f"VM {path or vm_ref._moId} no longer exists") from None
        key = ref_key(vm_ref)
        if key not in objects:
            raise errors.VMNotFound(f"VM {path or vm_ref._moId} no longer exists")
        props = objects[key][1]
        networks = _NetworkNames(objects.values())
        devices = props.get("config.hardware.device") or []
        if networks.missing(devices):
            networks.add(thd_portgroup_names(si))
    computed_path, datacenter = inventory_path(key, objects)
    return _vm_info(props, computed_path or path or "", datacenter or "", devices, networks, vm_ref._moId)


def _vm_info(props: dict[str, Any], path: str, datacenter: str, devices: list, networks: "_NetworkNames",
             moref: str = "") -> VmInfo:
    boot_secure = props.get("config.bootOptions.efiSecureBootEnabled")
    snapshot = props.get("snapshot")
    snapshot_names = tuple(_snapshot_names(snapshot.rootSnapshotList if snapshot else []))
    return VmInfo(
        moref=moref,
        name=props.get("name", ""),
        path=path,
        datacenter=datacenter,
        uuid=props.get("config.uuid") or "",
        instance_uuid=props.get("config.instanceUuid") or "",
        num_cpu=int(props.get("config.hardware.numCPU") or 0),
        cores_per_socket=int(props.get("config.hardware.numCoresPerSocket") or 1),
        memory_mb=int(props.get("config.hardware.memoryMB") or 0),
        firmware=props.get("config.firmware") or "bios",
        secure_boot=bool(boot_secure),
        guest_id=props.get("config.guestId") or "",
        guest_full_name=props.get("config.guestFullName") or "",
        power_state=str(props.get("runtime.powerState") or ""),
        disks=disks_of(devices),
        nics=nics_of(devices, networks),
        cdroms=tuple(
            CdromInfo(key=d.key, label=_label(d)) for d in devices if isinstance(d, vim.vm.device.VirtualCdrom)
        ),
        snapshot_names=snapshot_names,
        snapshot_count=len(snapshot_names),
        change_tracking=bool(props.get("config.changeTrackingEnabled")),
        tools_status=props.get("guest.toolsRunningStatus") or None,
        ip_address=props.get("guest.ipAddress") or None,
        template=bool(props.get("config.template")),
    )


def _label(device: vim.vm.device.VirtualDevice) -> str:
    return device.deviceInfo.label if device.deviceInfo else ""


def _snapshot_names(trees: Iterable) -> Iterable[str]:
    for tree in trees or []:
        yield tree.name
        yield from _snapshot_names(tree.childSnapshotList or [])


def disk_capacity_bytes(disk: vim.vm.device.VirtualDisk) -> int:
    return int(disk.capacityInBytes or 0) or int(disk.capacityInKB or 0) * 1024


def disks_of(devices: list) -> tuple[DiskInfo, ...]:
    by_key = {d.key: d for d in devices}
    disks = []
    for d in devices:
        if not isinstance(d, vim.vm.device.VirtualDisk):
            continue
        controller = by_key.get(d.controllerKey)
        controller_type, controller_model = next(
            ((bus, model) for t, bus, model in _CONTROLLERS if isinstance(controller, t)), ("unknown", "unknown"))
        backing = d.backing
        file_name = getattr(backing, "fileName", "") or ""
        try:
            datastore = parse_datastore_path(file_name)[0]
        except ValueError:
            datastore = ""
        thin = bool(getattr(backing, "thinProvisioned", False)) or isinstance(backing, _THIN_BACKINGS)
        disks.append(DiskInfo(
            key=d.key,
            label=_label(d),
            capacity_bytes=disk_capacity_bytes(d),
            file_name=file_name,
            datastore=datastore,
            controller_type=controller_type,
            controller_bus=int(getattr(controller, "busNumber", 0) or 0),
            unit_number=int(d.unitNumber or 0),
            thin=thin,
            disk_mode=getattr(backing, "diskMode", None) or "persistent",
            controller_model=controller_model,
            change_id=getattr(backing, "changeId", None) or None,
            raw_mapping=isinstance(backing, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo),
        ))
    return tuple(disks)


class _NetworkNames:
    """Network names by moid, DVS portgroup key and opaque network id."""

    def __init__(self, entries: Iterable[tuple[Any, dict[str, Any]]]) -> None:
        self.by_moid: dict[str, str] = {}
        self.by_portgroup_key: dict[str, str] = {}
        self.by_opaque_id: dict[str, str] = {}
        self.add(entries)

    def add(self, entries: Iterable[tuple[Any, dict[str, Any]]]) -> None:
        for ref, props in entries:
            if not isinstance(ref, vim.Network) or "name" not in props:
                continue
            self.by_moid[ref._moId] = props["name"]
            if isinstance(ref, vim.dvs.DistributedVirtualPortgroup):
                self.by_portgroup_key[props.get("key") or ref._moId] = props["name"]
            summary = props.get("summary")
            opaque_id = getattr(summary, "opaqueNetworkId", None)
            if opaque_id:
                self.by_opaque_id[opaque_id] = props["name"]

    def name(self, backing: Any) -> Optional[str]:
        if isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
            return self.by_portgroup_key.get(backing.port.portgroupKey)
        if isinstance(backing, vim.vm.device.VirtualEthernetCard.OpaqueNetworkBackingInfo):
            return self.by_opaque_id.get(backing.opaqueNetworkId)
        network = getattr(backing, "network", None)
        if network is not None and network._moId in self.by_moid:
            return self.by_moid[network._moId]
        return getattr(backing, "deviceName", None)

    def missing(self, devices: list) -> bool:
        return any(
            isinstance(d, vim.vm.device.VirtualEthernetCard) and self.name(d.backing) is None
            and isinstance(d.backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo)
            for d in devices
        )


def nics_of(devices: list, networks: _NetworkNames) -> tuple[NicInfo, ...]:
    nics = []
    for d in devices:
        if not isinstance(d, vim.vm.device.VirtualEthernetCard):
            continue
        backing = d.backing
        name = networks.name(backing)
        if name is None:  # unresolvable: show what the backing says rather than nothing
            name = (
                getattr(getattr(backing, "port", None), "portgroupKey", None)
                or getattr(backing, "opaqueNetworkId", None)
                or ""
            )
        adapter = next((n for t, n in _NIC_TYPES if isinstance(d, t)), type(d).__name__.rsplit(".", 1)[-1].lower())
        nics.append(NicInfo(
            key=d.key, label=_label(d), network=name, mac=(d.macAddress or "").lower(), adapter_type=adapter,
            pci_slot=getattr(d.slotInfo, "pciSlotNumber", None) if d.slotInfo is not None else None,
        ))
    return tuple(nics)


def thd_portgroup_names(si: vim.ServiceInstance) -> list[tuple[Any, dict[str, Any]]]:
    """Every distributed portgroup's name and key (one ContainerView retrieval)."""
    objects = _thd_view_objects(
        si, service_content(si).rootFolder, vim.dvs.DistributedVirtualPortgroup,
        [prop(vim.dvs.DistributedVirtualPortgroup, "name", "key")],
    )
    return list(objects.values())


def _thd_view_objects(
    si: vim.ServiceInstance,
    container: Any,
    type_: type,
    props: list[PC.PropertySpec],
    follow: Sequence[PC.TraversalSpec] = (),
    follow_from_view: Sequence[str] = (),
) -> dict[tuple[str, str], tuple[Any, dict[str, Any]]]:
    """Properties of every ``type_`` object under ``container`` (and of what ``follow`` reaches)."""
    view = service_content(si).viewManager.CreateContainerView(container, [type_], True)
    try:
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(
                obj=view, skip=True,
                selectSet=[traversal("view", vim.view.ContainerView, "view", *follow_from_view), *follow],
            )],
            propSet=props,
        )
        return by_ref(thd_retrieve(si, [spec]))
    finally:
        try:
            view.DestroyView()
        except Exception:  # the view dies with the session anyway
            pass


def _thd_find_container(si: vim.ServiceInstance, datacenter: Optional[str], folder: Optional[str]) -> Any:
    content = service_content(si)
    index = content.searchIndex
    if folder:
        folder_path = "/".join(p for p in folder.split("/") if p)
        candidates = [folder_path]
        # Relative to a datacenter's VM folder: the one named, else any at the top level.
        datacenters = [datacenter] if datacenter else [
            child.name for child in content.rootFolder.childEntity if isinstance(child, vim.Datacenter)
        ]
        for dc in datacenters:
            candidates.append("/".join(p for p in f"{dc}/vm/{folder_path}".split("/") if p))
        for candidate in candidates:
            found = index.FindByInventoryPath(candidate)
            if isinstance(found, (vim.Folder, vim.Datacenter, vim.VirtualApp)):
                return found
        raise errors.NotFound(f"folder {folder} not found")
    if datacenter:
        found = index.FindByInventoryPath("/".join(p for p in datacenter.split("/") if p))
        if not isinstance(found, vim.Datacenter):
            raise errors.NotFound(f"datacenter {datacenter} not found")
        return found
    return content.rootFolder


def thd_list_vms(
    si: vim.ServiceInstance, datacenter: Optional[str] = None, folder: Optional[str] = None,
) -> list[VmSummary]:
    """Every VM (and template) under ``folder`` / ``datacenter`` / the root, sorted by path.

    ``folder`` is an inventory path (``"DC0/vm/prod"``) or, with ``datacenter``,
    a path under its VM folder (``"prod"``).
    """
    with upstream_errors(where(si)):
        container = _thd_find_container(si, datacenter, folder)
        objects = _thd_view_objects(
            si, container, vim.VirtualMachine,
            [prop(vim.VirtualMachine, *SUMMARY_PROPERTIES)] + _entity_props(),
            follow=ancestors_specs(), follow_from_view=[s.name for s in ancestors_select()],
        )
    summaries = []
    for key, (ref, props) in objects.items():
        if not isinstance(ref, vim.VirtualMachine):
            continue
        path, dc = inventory_path(key, objects)
        devices = props.get("config.hardware.device") or []
        disks = [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
        summaries.append(VmSummary(
            name=props.get("name", ""),
            path=path,
            datacenter=dc or "",
            uuid=props.get("config.uuid") or "",
            instance_uuid=props.get("config.instanceUuid") or "",
            power_state=str(props.get("runtime.powerState") or ""),
            num_cpu=int(props.get("config.hardware.numCPU") or 0),
            memory_mb=int(props.get("config.hardware.memoryMB") or 0),
            storage_bytes=sum(disk_capacity_bytes(d) for d in disks),
            num_disks=len(disks),
            guest_id=props.get("config.guestId") or "",
            guest_full_name=props.get("config.guestFullName") or "",
            ip_address=props.get("guest.ipAddress") or None,
            template=bool(props.get("config.template")),
        ))
    summaries.sort(key=lambda s: s.path)
    return summaries

