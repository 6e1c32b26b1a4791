"""Interface names to pin, and the facts they depend on."""

from hypersdk.guest.facts import GuestFacts, facts_from_report, kernel_cmdline_of_grub_defaults, predictable_names
from hypersdk.guest.names import names_to_pin, not_read_warnings
from hypersdk.guest.netconfig import ConfiguredName
from hypersdk.vsphere.model import NicInfo

LINUX = GuestFacts("linux", udev=True)
NETWORKD = "/etc/systemd/network/10-lan.network"


def nic(slot, mac="00:50:56:aa:bb:01", label="Network adapter 1"):
    return NicInfo(key=4000, label=label, network="VM Network", mac=mac, adapter_type="vmxnet3", pci_slot=slot)


def guest(*configured):
    """A Linux guest whose network configuration expects these (name, mac) interfaces."""
    return GuestFacts("linux", udev=True, configured=tuple(ConfiguredName(n, m, NETWORKD) for n, m in configured))


def pins(plan):
    return [(p.mac, p.name, p.by) for p in plan.pinned]


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


def test_without_a_slot_the_name_the_guest_configures_is_pinned():
    plan = names_to_pin([nic(None)], guest(("ens192", None)))
    assert pins(plan) == [("00:50:56:aa:bb:01", "ens192", "pci_order")] and plan.warnings == ()
    assert "[Link]\nName=ens192\n" in plan.pinned[0].link_file()


def test_without_slots_a_name_configured_for_a_mac_goes_to_that_nic_and_the_others_go_in_pci_order():
    nics = [nic(None, "00:50:56:aa:bb:01"), nic(None, "00:50:56:aa:bb:02", "Network adapter 2"),
            nic(None, "00:50:56:aa:bb:03", "Network adapter 3")]
    facts = guest(("ens256", None), ("ens192", "00:50:56:aa:bb:03"), ("ens224", None), ("br0", None), ("lo", None))
    assert pins(names_to_pin(nics, facts)) == [
        ("00:50:56:aa:bb:01", "ens224", "pci_order"), ("00:50:56:aa:bb:02", "ens256", "pci_order"),
        ("00:50:56:aa:bb:03", "ens192", "mac")]


def test_a_slot_from_vcenter_wins_and_the_guests_other_names_fill_the_slotless_nics():
    nics = [nic(None, "00:50:56:aa:bb:01"), nic(192, "00:50:56:aa:bb:02", "Network adapter 2")]
    plan = names_to_pin(nics, guest(("ens192", None), ("ens224", None)))
    assert pins(plan) == [("00:50:56:aa:bb:01", "ens224", "pci_order"), ("00:50:56:aa:bb:02", "ens192", "pci_slot")]
    assert plan.warnings == () and plan.not_pinned == ()


def test_a_configured_name_that_cannot_be_pinned_is_a_warning():
    plan = names_to_pin([nic(None)], guest(("ens192", None), ("ens224", None)))
    assert pins(plan) == [("00:50:56:aa:bb:01", "ens192", "pci_order")]
    assert plan.warnings == (f"the guest's network configuration ({NETWORKD}) expects an interface named ens224,"
                             " which no NIC of the VM gets: that configuration will not apply",)
    for_another_mac = names_to_pin([nic(None)], guest(("ens192", "00:50:56:00:00:99")))
    assert for_another_mac.pinned == ()
    assert "00:50:56:00:00:99, which no NIC of the VM has" in for_another_mac.warnings[0]
    assert "vCenter reported no PCI slot" in for_another_mac.not_pinned[0][1]
    kernel_name = names_to_pin([nic(None)], guest(("eth0", None)))
    assert kernel_name.pinned == () and "a name the kernel gives itself" in kernel_name.warnings[0]


def test_net_ifnames_0_or_biosdevname_turn_predictable_names_off():
    text = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="console=ttyS0 net.ifnames=0"\n'
    assert not predictable_names(kernel_cmdline_of_grub_defaults(text))
    assert not predictable_names("biosdevname=1")
    assert predictable_names(kernel_cmdline_of_grub_defaults('GRUB_CMDLINE_LINUX="console=ttyS0"'))


def test_facts_from_the_inspectors_report():
    report = {"os_type": "linux", "distro": "debian", "product": "Debian GNU/Linux 12", "kernel": "6.1.0-28-amd64",
              "modules_dep": ["kernel/drivers/net/vmxnet3/vmxnet3.ko: ", "kernel/drivers/block/virtio_blk.ko: a.ko"],
              "modules_builtin": ["kernel/drivers/virtio/virtio_pci.ko"], "udev": True,
              "grub_defaults": 'GRUB_CMDLINE_LINUX="console=ttyS0"\n',
              "network_files": {"/etc/systemd/network/10-ens192.network": "[Match]\nName=ens192\n"}}
    facts = facts_from_report(report, ["usr/lib/modules/6.1.0-28-amd64/kernel/drivers/scsi/vmw_pvscsi.ko"])
    assert facts.boot_modules == {"vmw_pvscsi", "virtio_pci"}
    assert facts.modules == {"vmxnet3", "virtio_blk", "virtio_pci"}
    assert facts.linux and facts.udev and facts.predictable_names
    assert [(c.name, c.mac) for c in facts.configured] == [("ens192", None)]


def test_a_slotless_nic_of_a_guest_that_is_not_read_is_a_warning():
    nics = [nic(None), nic(192, "00:50:56:aa:bb:02", "Network adapter 2")]
    warnings = not_read_warnings(nics, "device_models: source")
    assert warnings == ("Network adapter 1 (00:50:56:aa:bb:01) has no PCI slot in vCenter and the guest was not read"
                        " (device_models: source): its interface name was not pinned, so a network configuration that"
                        " names it will not apply on KVM",)
