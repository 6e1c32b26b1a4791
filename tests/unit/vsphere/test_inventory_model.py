"""Turning vSphere device lists and parent chains into models: no vCenter involved."""

from __future__ import annotations

from pyVmomi import vim

from hypersdk.vsphere.collector import inventory_path, ref_key
from hypersdk.vsphere.inventory import _NetworkNames, disks_of, nics_of

dev = vim.vm.device


def _devices():
    pvscsi = dev.ParaVirtualSCSIController(key=1000, busNumber=1, deviceInfo=vim.Description(label="SCSI controller 1"))
    sata = dev.VirtualAHCIController(key=15000, busNumber=0)
    ide = dev.VirtualIDEController(key=200, busNumber=0)
    nvme = dev.VirtualNVMEController(key=31000, busNumber=2)
    thick = dev.VirtualDisk(
        key=2000, controllerKey=1000, unitNumber=3, capacityInKB=2 * 1024 * 1024, capacityInBytes=2 * 1024**3,
        deviceInfo=vim.Description(label="Hard disk 1"),
        backing=dev.VirtualDisk.FlatVer2BackingInfo(
            fileName="[datastore 1] web server/web server.vmdk", diskMode="persistent", thinProvisioned=False),
    )
    thin_kb_only = dev.VirtualDisk(
        key=2001, controllerKey=15000, unitNumber=1, capacityInKB=4096,
        deviceInfo=vim.Description(label="Hard disk 2"),
        backing=dev.VirtualDisk.FlatVer2BackingInfo(
            fileName="[LocalDS_0] web/web_1.vmdk", diskMode="independent_persistent", thinProvisioned=True),
    )
    sesparse = dev.VirtualDisk(
        key=2002, controllerKey=31000, unitNumber=0, capacityInKB=1024,
        deviceInfo=vim.Description(label="Hard disk 3"),
        backing=dev.VirtualDisk.SeSparseBackingInfo(fileName="[ds2] web/web-000001-sesparse.vmdk", diskMode="persistent"),
    )
    cdrom = dev.VirtualCdrom(key=3000, controllerKey=200, unitNumber=0, deviceInfo=vim.Description(label="CD/DVD drive 1"))
    std = dev.VirtualVmxnet3(
        key=4000, macAddress="00:50:56:AA:BB:01", deviceInfo=vim.Description(label="Network adapter 1"),
        backing=dev.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network", network=vim.Network("network-7")),
    )
    dvs = dev.VirtualE1000e(
        key=4001, macAddress="00:50:56:aa:bb:02", deviceInfo=vim.Description(label="Network adapter 2"),
        backing=dev.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(portgroupKey="dvportgroup-13", switchUuid="50 1a")),
    )
    vrdma = dev.VirtualVmxnet3Vrdma(
        key=4002, macAddress="00:50:56:aa:bb:03",
        backing=dev.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(portgroupKey="dvportgroup-99", switchUuid="50 1a")),
    )
    return [pvscsi, sata, ide, nvme, thick, thin_kb_only, sesparse, cdrom, std, dvs, vrdma]


def test_disks_carry_controller_bus_unit_datastore_and_provisioning():
    disks = disks_of(_devices())
    assert [(d.label, d.controller_type, d.controller_bus, d.unit_number) for d in disks] == [
        ("Hard disk 1", "scsi", 1, 3),
        ("Hard disk 2", "sata", 0, 1),
        ("Hard disk 3", "nvme", 2, 0),
    ]
    thick, thin, delta = disks
    assert thick.capacity_bytes == 2 * 1024**3
    assert thin.capacity_bytes == 4096 * 1024  # capacityInBytes unset: from capacityInKB
    assert (thick.datastore, thin.datastore, delta.datastore) == ("datastore 1", "LocalDS_0", "ds2")
    assert thick.file_name == "[datastore 1] web server/web server.vmdk"
    assert (thick.thin, thin.thin, delta.thin) == (False, True, True)
    assert thin.disk_mode == "independent_persistent"


def test_nics_resolve_standard_networks_and_distributed_portgroups():
    networks = _NetworkNames([
        (vim.Network("network-7"), {"name": "VM Network"}),
        (vim.dvs.DistributedVirtualPortgroup("dvportgroup-13"), {"name": "Prod VLAN 10", "key": "dvportgroup-13"}),
    ])
    nics = nics_of(_devices(), networks)
    assert [(n.label, n.network, n.mac, n.adapter_type) for n in nics] == [
        ("Network adapter 1", "VM Network", "00:50:56:aa:bb:01", "vmxnet3"),
        ("Network adapter 2", "Prod VLAN 10", "00:50:56:aa:bb:02", "e1000e"),
        ("", "dvportgroup-99", "00:50:56:aa:bb:03", "vmxnet3vrdma"),  # unknown portgroup: its key
    ]
    assert networks.missing(_devices())  # the caller fetches all portgroup names once then


def test_unresolved_standard_network_falls_back_to_the_backing_device_name():
    nics = nics_of(_devices(), _NetworkNames([]))
    assert nics[0].network == "VM Network"


def _objects(*entries):
    return {ref_key(ref): (ref, props) for ref, props in entries}


def test_inventory_path_walks_parents_up_to_the_root_folder():
    root, f0, dc, vmf, sub, vm = (
        vim.Folder("group-d1"), vim.Folder("group-f0"), vim.Datacenter("datacenter-2"),
        vim.Folder("folder-3"), vim.Folder("folder-9"), vim.VirtualMachine("vm-42"),
    )
    objects = _objects(
        (root, {"name": "Datacenters"}),
        (f0, {"name": "F0", "parent": root}),
        (dc, {"name": "DC0", "parent": f0}),
        (vmf, {"name": "vm", "parent": dc}),
        (sub, {"name": "prod", "parent": vmf}),
        (vm, {"name": "web-1", "parent": sub}),
    )
    assert inventory_path(ref_key(vm), objects) == ("F0/DC0/vm/prod/web-1", "F0/DC0")
    assert inventory_path(ref_key(dc), objects) == ("F0/DC0", "F0/DC0")


def test_inventory_path_of_a_vm_in_a_vapp_goes_through_the_vapps_folder():
    root, dc, vmf, pool, vapp, vm = (
        vim.Folder("group-d1"), vim.Datacenter("datacenter-2"), vim.Folder("folder-3"),
        vim.ResourcePool("resgroup-1"), vim.VirtualApp("resgroup-v5"), vim.VirtualMachine("vm-7"),
    )
    objects = _objects(
        (root, {"name": "Datacenters"}),
        (dc, {"name": "DC0", "parent": root}),
        (vmf, {"name": "vm", "parent": dc}),
        (pool, {"name": "Resources"}),
        (vapp, {"name": "app", "parent": pool, "parentFolder": vmf}),
        (vm, {"name": "db", "parentVApp": vapp}),
    )
    assert inventory_path(ref_key(vm), objects) == ("DC0/vm/app/db", "DC0")


def test_inventory_path_stops_at_missing_parents_and_cycles():
    a, b = vim.Folder("a"), vim.Folder("b")
    cycle = _objects((a, {"name": "A", "parent": b}), (b, {"name": "B", "parent": a}))
    assert inventory_path(ref_key(a), cycle) == ("B/A", None)  # terminates
    vm = vim.VirtualMachine("vm-1")
    assert inventory_path(ref_key(vm), _objects((vm, {"name": "orphan", "parent": vim.Folder("gone")}))) == (
        "orphan", None,
    )
