"""Interface names to pin, and the facts they depend on."""

from hypersdk.guest.facts import GuestFacts, facts_from_report, kernel_cmdline_of_grub_defaults, predictable_names
from hypersdk.guest.names import names_to_pin
from hypersdk.vsphere.model import NicInfo

LINUX = GuestFacts("linux", udev=True)


def nic(slot, mac="00:50:56:aa:bb:01", label="Network adapter 1"):
    return NicInfo(key=4000, label=label, network="VM Network", mac=mac, adapter_type="vmxnet3", pci_slot=slot)


def test_each_nic_keeps_the_name_its_vmware_slot_gave_it():
    plan = names_to_pin([nic(192), nic(224, "00:50:56:aa:bb:02", "Network adapter 2")], LINUX)
    assert [(p.mac, p.name) for p in plan.pinned] == [("00:50:56:aa:bb:01", "ens192"), ("00:50:56:aa:bb:02", "ens224")]
    link = plan.pinned[0].link_file()
    assert "[Match]\nMACAddress=00:50:56:aa:bb:01\n" in link and "[Link]\nName=ens192\n" in link
    assert plan.pinned[0].path == "/etc/systemd/network/10-hypersdk-ens192.link"


def test_nothing_is_pinned_where_a_link_file_would_not_apply():
    assert names_to_pin([nic(192)], GuestFacts("windows")).not_pinned[0][1].startswith("interface names are pinned")
    assert "systemd-udevd" in names_to_pin([nic(192)], GuestFacts("linux", udev=False)).not_pinned[0][1]
    eth = GuestFacts("linux", udev=True, predictable_names=False)
    assert "ethN" in names_to_pin([nic(192)], eth).not_pinned[0][1]
    assert "no PCI slot" in names_to_pin([nic(None)], LINUX).not_pinned[0][1]


def test_net_ifnames_0_or_biosdevname_turn_predictable_names_off():
    text = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="console=ttyS0 net.ifnames=0"\n'
    assert not predictable_names(kernel_cmdline_of_grub_defaults(text))
    assert not predictable_names("biosdevname=1")
    assert predictable_names(kernel_cmdline_of_grub_defaults('GRUB_CMDLINE_LINUX="console=ttyS0"'))


def test_facts_from_the_inspectors_report():
    report = {"os_type": "linux", "distro": "debian", "product": "Debian GNU/Linux 12", "kernel": "6.1.0-28-amd64",
              "modules_dep": ["kernel/drivers/net/vmxnet3/vmxnet3.ko: ", "kernel/drivers/block/virtio_blk.ko: a.ko"],
              "modules_builtin": ["kernel/drivers/virtio/virtio_pci.ko"], "udev": True,
              "grub_defaults": 'GRUB_CMDLINE_LINUX="console=ttyS0"\n'}
    facts = facts_from_report(report, ["usr/lib/modules/6.1.0-28-amd64/kernel/drivers/scsi/vmw_pvscsi.ko"])
    assert facts.boot_modules == {"vmw_pvscsi", "virtio_pci"}
    assert facts.modules == {"vmxnet3", "virtio_blk", "virtio_pci"}
    assert facts.linux and facts.udev and facts.predictable_names
