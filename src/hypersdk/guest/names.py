"""Interface names to keep: a guest configured for ``ens192`` must find ``ens192`` on KVM.

On VMware a NIC's predictable name comes from its PCI slot number, which
vCenter reports (``ens192`` for slot 192, the first vmxnet3). On KVM the same
NIC sits elsewhere (``ens4``, ``enp1s0``) and the guest's network
configuration no longer applies. A systemd ``.link`` file that matches the
NIC's MAC address and names it gives the old name back. Pure: the pipeline
writes the files into the destination image (never the source).
"""

from __future__ import annotations

from typing import Optional, Sequence

from attrs import frozen

from ..vsphere.model import NicInfo
from .facts import GuestFacts

LINK_DIR = "/etc/systemd/network"


@frozen
class PinnedName:
    mac: str
    name: str
    label: str  # "Network adapter 1"

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

    def describe(self) -> dict:
        return {"pinned_interfaces": [{"label": p.label, "mac": p.mac, "name": p.name} for p in self.pinned],
                **({"unpinned_interfaces": [{"label": label, "why": why} for label, why in self.not_pinned]}
                   if self.not_pinned else {})}


def vmware_name(nic: NicInfo) -> Optional[str]:
    """The name systemd's slot naming gives this NIC on VMware (``ens192``), if vCenter told its slot."""
    return None if nic.pci_slot is None else f"ens{nic.pci_slot}"


def names_to_pin(nics: Sequence[NicInfo], facts: Optional[GuestFacts]) -> NamePlan:
    pinned, skipped = [], []
    for nic in nics:
        name = vmware_name(nic)
        if facts is None or not facts.linux:
            skipped.append((nic.label, "interface names are pinned on Linux guests only"))
        elif not facts.udev:
            skipped.append((nic.label, "the guest has no systemd-udevd to apply a .link file"))
        elif not facts.predictable_names:
            skipped.append((nic.label, "the guest names interfaces ethN (net.ifnames=0 or biosdevname)"))
        elif name is None:
            skipped.append((nic.label, "vCenter reported no PCI slot for it"))
        else:
            pinned.append(PinnedName(nic.mac, name, nic.label))
    return NamePlan(tuple(pinned), tuple(skipped))
