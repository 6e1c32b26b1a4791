"""Interface names to keep: a guest configured for ``ens192`` must find ``ens192`` on KVM.

On VMware a NIC's predictable name comes from its PCI slot number, which
vCenter reports (``ens192`` for slot 192, the first vmxnet3). On KVM the same
NIC sits elsewhere (``ens4``, ``enp1s0``) and the guest's network
configuration no longer applies. A systemd ``.link`` file that matches the
NIC's MAC address and names it gives the old name back. Pure: the pipeline
writes the files into the destination image (never the source).

vCenter may report no slot (before the VM first ran, for one). Then the names the
guest's own configuration expects (netconfig.py) decide: a name configured for a
MAC goes to the NIC with that MAC, the other names, in their natural order
(ens192 before ens224, as VMware numbers its slots), to the remaining NICs in
their PCI order (the order of ``nics``, which is also their order on KVM). A
configured name no NIC ends up with is a warning: that configuration will not
apply.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from attrs import frozen

from ..vsphere.model import NicInfo
from .facts import GuestFacts
from .netconfig import ConfiguredName

LINK_DIR = "/etc/systemd/network"
NIC_NAME = re.compile(r"^(en[a-z0-9_]+|eth[0-9]+)$")  # names udev or the kernel give Ethernet NICs
KERNEL_NAME = re.compile(r"^eth[0-9]+$")  # the kernel's own: a .link file cannot safely take it


@frozen
class PinnedName:
    mac: str
    name: str
    label: str  # "Network adapter 1"
    by: str = "pci_slot"  # where the name comes from: "pci_slot" (vCenter), or the guest's "mac" / "pci_order"

    @property
    def path(self) -> str:
        """10-: before the distribution's 99-default.link, which would name it by its new slot."""
        return f"{LINK_DIR}/10-hypersdk-{self.name}.link"

    def link_file(self) -> str:
        return (f"# Written by hypersdk when this VM moved off VMware: keeps the name {self.name}\n"
                f"# that the interface with this MAC address had there.\n"
                f"[Match]\nMACAddress={self.mac}\n\n[Link]\nName={self.name}\n")


@frozen
class NamePlan:
    pinned: tuple[PinnedName, ...]
    not_pinned: tuple[tuple[str, str], ...]  # (NIC label, why)
    warnings: tuple[str, ...] = ()  # configured names that will not apply

    def describe(self) -> dict:
        return {"pinned_interfaces": [{"label": p.label, "mac": p.mac, "name": p.name, "by": p.by}
                                      for p in self.pinned],
                **({"unpinned_interfaces": [{"label": label, "why": why} for label, why in self.not_pinned]}
                   if self.not_pinned else {})}


def vmware_name(nic: NicInfo) -> Optional[str]:
    """The name systemd's slot naming gives this NIC on VMware (``ens192``), if vCenter told its slot."""
    return None if nic.pci_slot is None else f"ens{nic.pci_slot}"


def names_to_pin(nics: Sequence[NicInfo], facts: Optional[GuestFacts]) -> NamePlan:
    why_not = _why_no_link_file(facts)
    if why_not is not None:
        return NamePlan((), tuple((nic.label, why_not) for nic in nics))
    configured = [c for c in facts.configured if NIC_NAME.match(c.name)]
    names: dict[int, tuple[str, str]] = {i: (vmware_name(nic), "pci_slot") for i, nic in enumerate(nics)
                                         if nic.pci_slot is not None}
    taken = {name for name, _ in names.values()}
    usable = [c for c in configured if not KERNEL_NAME.match(c.name)]
    for i, nic in enumerate(nics):  # no slot: the name configured for its MAC
        match = next((c for c in usable if c.mac == nic.mac and c.name not in taken), None)
        if i not in names and match is not None:
            names[i] = (match.name, "mac")
            taken.add(match.name)
    left = sorted({c.name for c in usable if c.mac is None and c.name not in taken}, key=_natural)
    slotless = [i for i, nic in enumerate(nics) if i not in names]
    for i, name in zip(slotless, left):  # no slot, no MAC: configured names in order, NICs in PCI order
        names[i] = (name, "pci_order")
        taken.add(name)
    pinned = tuple(PinnedName(nics[i].mac, names[i][0], nics[i].label, names[i][1]) for i in sorted(names))
    skipped = tuple((nic.label, "vCenter reported no PCI slot for it, and the guest's network configuration"
                                " names no interface left for it") for i, nic in enumerate(nics) if i not in names)
    return NamePlan(pinned, skipped, tuple(_warning(c, nics) for c in configured if c.name not in taken))


def not_read_warnings(nics: Sequence[NicInfo], why: str) -> tuple[str, ...]:
    """For a guest that is not read (``why``): the NICs whose names only its configuration could tell."""
    return tuple(f"{nic.label} ({nic.mac}) has no PCI slot in vCenter and the guest was not read ({why}): its"
                 " interface name was not pinned, so a network configuration that names it will not apply on KVM"
                 for nic in nics if nic.pci_slot is None)


def _why_no_link_file(facts: Optional[GuestFacts]) -> Optional[str]:
    if facts is None or not facts.linux:
        return "interface names are pinned on Linux guests only"
    if not facts.udev:
        return "the guest has no systemd-udevd to apply a .link file"
    if not facts.predictable_names:
        return "the guest names interfaces ethN (net.ifnames=0 or biosdevname)"
    return None


def _warning(name: ConfiguredName, nics: Sequence[NicInfo]) -> str:
    said = f"the guest's network configuration ({name.source}) expects an interface named {name.name}"
    if KERNEL_NAME.match(name.name):
        return f"{said}, a name the kernel gives itself: it was not pinned, and that configuration may not apply"
    if name.mac is not None and all(nic.mac != name.mac for nic in nics):
        return f"{said} with MAC address {name.mac}, which no NIC of the VM has: that configuration will not apply"
    return f"{said}, which no NIC of the VM gets: that configuration will not apply"


def _natural(name: str) -> list:
    """ens192 before ens224 before ens1024."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
