"""The interface names a guest's own network configuration expects, from each kind of file."""

from hypersdk.guest.netconfig import ConfiguredName, configured_names, normal_mac


def names(files):
    return [(c.name, c.mac) for c in configured_names(files)]


def test_systemd_networkd_match_names_with_the_mac_they_match_on():
    assert names({"/etc/systemd/network/10-ens192.network": "[Match]\nName=ens192\n\n[Network]\nDHCP=no\n"}) == [
        ("ens192", None)]
    assert names({"/etc/systemd/network/20-lan.network":
                  "# lan\n[Match]\nMACAddress=00:50:56:AA:BB:01\nName=ens224\n[Network]\nAddress=10.0.0.2/24\n"}) == [
        ("ens224", "00:50:56:aa:bb:01")]
    # a wildcard or a negation names no interface; a MAC alone needs no name
    assert names({"/etc/systemd/network/a.network": "[Match]\nName=en* !ens3\n",
                  "/etc/systemd/network/b.network": "[Match]\nMACAddress=00:50:56:aa:bb:02\n",
                  "/etc/systemd/network/c.network": "[Network]\nName=ens9\n"}) == []


def test_ifupdown_iface_auto_and_allow_hotplug():
    text = ("auto lo\niface lo inet loopback\n\nallow-hotplug ens192\niface ens192 inet static\n"
            "  address 10.11.12.13/24\n# iface ens999 inet dhcp\nauto ens224:1\n")
    assert names({"/etc/network/interfaces": text}) == [("ens192", None), ("ens224", None)]
    assert names({"/etc/network/interfaces.d/ens256": "iface ens256 inet dhcp\n"}) == [("ens256", None)]


def test_netplan_ethernets_by_id_by_match_and_by_set_name():
    text = """
network:
  version: 2
  ethernets:
    ens192:
      addresses: [10.11.12.13/24]
    lan:
      match: {macaddress: "00:50:56:AA:BB:02"}
      set-name: ens224
    other:
      match: {name: ens256}
"""
    assert names({"/etc/netplan/50-cloud-init.yaml": text}) == [
        ("ens192", None), ("ens224", "00:50:56:aa:bb:02"), ("ens256", None)]
    assert names({"/etc/netplan/broken.yaml": "network: [unclosed"}) == []


def test_networkmanager_keyfiles_interface_name_and_mac_address():
    text = ("[connection]\nid=Wired\ntype=ethernet\ninterface-name=ens192\n\n"
            "[ethernet]\nmac-address=00:50:56:AA:BB:01\n\n[ipv4]\nmethod=manual\n")
    assert names({"/etc/NetworkManager/system-connections/Wired.nmconnection": text}) == [
        ("ens192", "00:50:56:aa:bb:01")]
    old = "[connection]\ninterface-name=ens224\n[802-3-ethernet]\nmac-address=0;80;86;170;187;2;\n"
    assert names({"/etc/NetworkManager/system-connections/old": old}) == [("ens224", "00:50:56:aa:bb:02")]


def test_ifcfg_device_and_hwaddr_or_the_files_own_name():
    files = {"/etc/sysconfig/network-scripts/ifcfg-eth0": 'DEVICE="ens192"\nHWADDR=00:50:56:AA:BB:01 # nic 1\n',
             "/etc/sysconfig/network-scripts/ifcfg-ens224": "BOOTPROTO=dhcp\n",
             "/etc/sysconfig/network-scripts/ifcfg-lo": "DEVICE=lo\n"}
    assert sorted(names(files)) == [("ens192", "00:50:56:aa:bb:01"), ("ens224", None)]


def test_one_entry_per_name_keeping_the_mac_any_file_gives():
    found = configured_names({
        "/etc/network/interfaces": "iface ens192 inet dhcp\n",
        "/etc/systemd/network/x.network": "[Match]\nName=ens192\nMACAddress=00:50:56:aa:bb:01\n",
    })
    assert found == (ConfiguredName("ens192", "00:50:56:aa:bb:01", "/etc/systemd/network/x.network"),)


def test_mac_spellings():
    assert normal_mac("00-50-56-AA-BB-01") == "00:50:56:aa:bb:01"
    assert normal_mac("not a mac") is None and normal_mac(None) is None
