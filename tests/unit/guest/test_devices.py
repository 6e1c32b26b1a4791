"""The device-model table, one row per test: source hardware + what the guest carries → the domain's models."""

import pytest

from hypersdk.guest.devices import NoUsableDevice, choose_devices
from hypersdk.guest.facts import GuestFacts
from hypersdk.vsphere.model import DiskInfo, NicInfo

# A Debian guest installed on VMware: VMware and SATA storage drivers in its initramfs, no virtio there.
VMWARE_INITRAMFS = frozenset({"vmw_pvscsi", "mptsas", "mptspi", "ahci", "sd_mod", "ext4"})
KERNEL = VMWARE_INITRAMFS | {"virtio_blk", "virtio_pci", "virtio_net", "vmxnet3", "e1000", "e1000e", "ata_piix",
                             "sym53c8xx", "pcnet32"}
VMWARE_GUEST = GuestFacts("linux", "debian", "Debian GNU/Linux 12", "6.1.0-28-amd64", VMWARE_INITRAMFS, KERNEL,
                          udev=True)


def disk(model, label="Hard disk 1"):
    return DiskInfo(key=2000, label=label, capacity_bytes=1 << 30, file_name="[ds] vm/vm.vmdk", datastore="ds",
                    controller_type="scsi", controller_bus=0, unit_number=0, thin=True, controller_model=model)


def nic(adapter, label="Network adapter 1"):
    return NicInfo(key=4000, label=label, network="VM Network", mac="00:50:56:aa:bb:01", adapter_type=adapter)


def chosen(plan):
    return [c.chosen for c in plan.choices]


def test_pvscsi_stays_pvscsi_when_the_initramfs_has_vmw_pvscsi():
    plan = choose_devices([disk("pvscsi")], [], "auto", VMWARE_GUEST)
    assert (plan.disks[0].bus, plan.disks[0].controller) == ("scsi", "vmpvscsi")
    assert plan.machine == "q35" and plan.choices[0].why == ""


def test_vmxnet3_e1000_and_e1000e_stay_as_they_are():
    plan = choose_devices([disk("pvscsi")], [nic("vmxnet3"), nic("e1000", "Network adapter 2"),
                                             nic("e1000e", "Network adapter 3")], "auto", VMWARE_GUEST)
    assert [n.model for n in plan.nics] == ["vmxnet3", "e1000", "e1000e"]


def test_sata_stays_sata():
    assert choose_devices([disk("ahci")], [], "auto", VMWARE_GUEST).disks[0].bus == "sata"


def test_ide_stays_ide_on_the_pc_machine_when_the_guest_has_ata_piix():
    guest = GuestFacts("linux", boot_modules=VMWARE_INITRAMFS | {"ata_piix"}, modules=KERNEL, udev=True)
    plan = choose_devices([disk("ide")], [], "auto", guest)
    assert plan.disks[0].bus == "ide" and plan.machine == "pc"  # q35 has no IDE


def test_ide_without_ata_piix_in_the_initramfs_goes_to_sata():
    plan = choose_devices([disk("ide")], [], "auto", VMWARE_GUEST)
    assert plan.disks[0].bus == "sata" and plan.machine == "q35" and "ata_piix" in plan.choices[0].why


def test_lsi_logic_sas_goes_to_sata_because_qemus_mptsas1068_boots_nothing():
    plan = choose_devices([disk("lsisas")], [], "auto", VMWARE_GUEST)
    assert plan.disks[0].bus == "sata"
    assert "mptsas1068" in plan.choices[0].why


def test_lsi_logic_parallel_goes_to_sata():
    assert choose_devices([disk("lsilogic")], [], "auto", VMWARE_GUEST).disks[0].bus == "sata"


def test_pvscsi_without_vmw_pvscsi_in_the_initramfs_goes_to_sata():
    guest = GuestFacts("linux", boot_modules=frozenset({"ahci", "sd_mod"}), modules=KERNEL, udev=True)
    plan = choose_devices([disk("pvscsi")], [], "auto", guest)
    assert plan.disks[0].bus == "sata" and "no vmw_pvscsi" in plan.choices[0].why


def test_a_guest_with_only_virtio_boots_on_virtio():
    guest = GuestFacts("linux", boot_modules=frozenset({"virtio_blk", "virtio_pci"}), modules=KERNEL, udev=True)
    assert choose_devices([disk("pvscsi")], [], "auto", guest).disks[0].bus == "virtio"


def test_data_disks_need_the_driver_in_the_kernel_only():
    guest = GuestFacts("linux", boot_modules=frozenset({"ahci", "sd_mod"}), modules=KERNEL, udev=True)
    plan = choose_devices([disk("ahci"), disk("pvscsi", "Hard disk 2")], [], "auto", guest)
    assert [d.name for d in plan.disks] == ["sata", "vmpvscsi"]


def test_no_usable_storage_driver_fails_naming_the_choices():
    guest = GuestFacts("linux", "debian", "Debian", "6.1", frozenset({"nvme"}), frozenset({"nvme"}), udev=True)
    with pytest.raises(NoUsableDevice) as e:
        choose_devices([disk("pvscsi")], [], "auto", guest)
    assert "Hard disk 1" in e.value.message and "virt-v2v" in e.value.message
    assert "device_models: virtio" in e.value.message


def test_a_nic_the_guest_has_no_driver_for_goes_to_one_it_has():
    guest = GuestFacts("linux", boot_modules=VMWARE_INITRAMFS, modules=frozenset({"e1000"}) | VMWARE_INITRAMFS)
    plan = choose_devices([disk("pvscsi")], [nic("vmxnet3")], "auto", guest)
    assert plan.nics[0].model == "e1000" and "vmxnet3" in plan.choices[1].why


def test_firmware_stays_and_the_machine_follows_the_disks():
    plan = choose_devices([disk("pvscsi"), disk("ide", "Hard disk 2")], [], "source")
    assert plan.machine == "pc"


def test_source_mode_takes_the_source_models_without_looking_at_the_guest():
    plan = choose_devices([disk("lsisas")], [nic("e1000e")], "source", VMWARE_GUEST)
    assert chosen(plan) == ["lsisas1068", "e1000e"]


def test_source_mode_refuses_what_qemu_cannot_emulate():
    with pytest.raises(NoUsableDevice, match="BusLogic controller, which QEMU cannot emulate"):
        choose_devices([disk("buslogic")], [], "source")


def test_virtio_mode_puts_everything_on_virtio():
    plan = choose_devices([disk("pvscsi"), disk("lsisas", "Hard disk 2")], [nic("vmxnet3")], "virtio", VMWARE_GUEST)
    assert chosen(plan) == ["virtio", "virtio", "virtio"]


def test_a_guest_whose_drivers_cannot_be_read_keeps_its_source_models():
    windows = GuestFacts("windows", "windows", "Windows Server 2019")
    assert chosen(choose_devices([disk("pvscsi")], [nic("vmxnet3")], "auto", windows)) == ["vmpvscsi", "vmxnet3"]


def test_virt_v2v_preflight_names_what_a_windows_guest_needs_and_what_it_cannot_convert():
    from hypersdk.guest.support import v2v_problem

    windows = v2v_problem("dc-1", "windows2019srv_64Guest", "Microsoft Windows Server 2019 (64-bit)", None)
    assert "virtio-win" in windows and "pipeline.virtio_win" in windows and "dc-1" in windows
    assert v2v_problem("dc-1", "windows2019srv_64Guest", "", "/usr/share/virtio-win") is None
    assert "cannot convert FreeBSD" in v2v_problem("fw", "freebsd12_64Guest", "FreeBSD 12", None)
    assert "cannot convert Windows 2000" in v2v_problem("old", "win2000ServGuest", "", "/x")
    assert v2v_problem("web", "debian12_64Guest", "Debian GNU/Linux 12", None) is None
    assert v2v_problem("x", "otherGuest64", "Other (64-bit)", None) is None  # virt-v2v's own inspection decides
