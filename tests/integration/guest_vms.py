"""VMs in the vCenter simulator that carry the real test guest (tests/guest), as VMware would hold them.

Each VM has BIOS firmware, 1 GiB of memory (grub runs out of memory in the simulator's default 32 MiB),
a Debian guest id, its boot disk on a pvscsi or LSI Logic SAS controller, and one vmxnet3 or e1000e
NIC at PCI slot 192 (the guest calls it ens192), or with no slot, as vCenter shows a VM that never ran. The disk is a monolithicFlat VMDK in the datastore:
a descriptor and a flat extent that links to the cached guest image (read only; the migration only
reads it).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Optional

from pyVmomi import vim

from tests.integration.vcsim import Vcsim, wait_task

CONTROLLERS = {
    "pvscsi": vim.vm.device.ParaVirtualSCSIController,
    "lsisas": vim.vm.device.VirtualLsiLogicSASController,
}
NICS = {"vmxnet3": vim.vm.device.VirtualVmxnet3, "e1000e": vim.vm.device.VirtualE1000e}
SLOT = 192


def flat_vmdk(directory: Path, name: str, image: Path, writable: bool = False) -> None:
    """``name.vmdk`` (a monolithicFlat descriptor) and ``name-flat.vmdk`` (the image, linked; a sparse
    copy when ``writable``: a running VM's guest writer and snapshot merges write into it)."""
    size = image.stat().st_size
    directory.mkdir(parents=True, exist_ok=True)
    extent = directory / f"{name}-flat.vmdk"
    extent.unlink(missing_ok=True)
    if writable:
        subprocess.run(["cp", "--sparse=always", str(image), str(extent)], check=True, timeout=300)
    else:
        extent.symlink_to(image)
    (directory / f"{name}.vmdk").write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n"
        f"RW {size // 512} FLAT \"{name}-flat.vmdk\" 0\n\n"
        "ddb.adapterType = \"lsilogic\"\nddb.virtualHWVersion = \"14\"\n")


def create_guest_vm(si: vim.ServiceInstance, sim: Vcsim, name: str, image: Path, *, controller: str = "pvscsi",
                    nic: str = "vmxnet3", mac: str = "00:50:56:01:02:03", network: str = "VM Network",
                    slot: Optional[int] = SLOT, timeout: float = 30.0, writable: bool = False) -> str:
    """A powered-off VM holding the guest (its own copy of it when ``writable``); returns its inventory path."""
    content = si.RetrieveContent()
    dc = content.searchIndex.FindByInventoryPath("DC0")
    host = content.searchIndex.FindByInventoryPath("DC0/host/DC0_H0")
    flat_vmdk(sim.info.datastore_dir / name, name, image, writable)
    dev = vim.vm.device
    disk = dev.VirtualDisk(
        key=-101, controllerKey=-100, unitNumber=0, capacityInKB=image.stat().st_size // 1024,
        capacityInBytes=image.stat().st_size,
        backing=dev.VirtualDisk.FlatVer2BackingInfo(fileName=f"[LocalDS_0] {name}/{name}.vmdk",
                                                    diskMode="persistent", thinProvisioned=False))
    card = NICS[nic](key=-300, addressType="manual", macAddress=mac,
                     slotInfo=None if slot is None else dev.VirtualDevice.PciBusSlotInfo(pciSlotNumber=slot),
                     backing=dev.VirtualEthernetCard.NetworkBackingInfo(deviceName=network))
    changes = [
        dev.VirtualDeviceSpec(operation="add", device=CONTROLLERS[controller](key=-100, busNumber=0,
                                                                              sharedBus="noSharing")),
        dev.VirtualDeviceSpec(operation="add", device=disk),  # the file exists: no fileOperation
        dev.VirtualDeviceSpec(operation="add", device=card),
    ]
    spec = vim.vm.ConfigSpec(name=name, guestId="debian12_64Guest", numCPUs=1, numCoresPerSocket=1, memoryMB=1024,
                             firmware="bios", files=vim.vm.FileInfo(vmPathName="[LocalDS_0]"), deviceChange=changes)
    if isinstance(host, vim.HostSystem):
        pool, on = host.parent.resourcePool, host
    else:  # the standalone host's compute resource
        pool, on = host.resourcePool, None
    wait_task(dc.vmFolder.CreateVM_Task(config=spec, pool=pool, host=on), timeout)
    return f"DC0/vm/{name}"


PARTITION_OFFSET = 1 << 20  # the guest's one ext4 partition starts at 1 MiB (tests/guest/build.py)


def free_areas(image: Path, length: int, count: int) -> list[int]:
    """Offsets in the guest's disk of ``count`` areas of ``length`` bytes inside its file system's free
    blocks: what a running guest may write there (a warm pass must carry it) without harming its files."""
    part = image.with_name(image.name + ".partition")
    try:
        subprocess.run(["dd", f"if={image}", f"of={part}", "bs=1M", f"skip={PARTITION_OFFSET >> 20}", "conv=sparse",
                        "status=none"], check=True, timeout=300)
        listing = subprocess.run(["dumpe2fs", str(part)], capture_output=True, text=True, check=True, timeout=120).stdout
    finally:
        part.unlink(missing_ok=True)
    block = int(re.search(r"^Block size:\s+(\d+)", listing, re.M).group(1))
    offsets = []
    for first, last in re.findall(r"^\s+Free blocks: (\d+)-(\d+)", listing, re.M):
        start, end = int(first) * block, (int(last) + 1) * block
        if end - start >= 4 * length:  # well inside a large free run
            offsets.append(PARTITION_OFFSET + start + length)
    if len(offsets) < count:
        raise RuntimeError(f"the guest's file system has {len(offsets)} free runs of {4 * length} bytes, not {count}")
    step = len(offsets) // count  # spread over the disk
    return [offsets[i * step] for i in range(count)]
