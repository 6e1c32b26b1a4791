"""What an inspection found in a copied guest: its OS, and the drivers it can load when.

Built from the report of the guest inspector (``inspector.py``, run by the
pipeline) by pure functions, so every decision made from it can be tested
with plain values.
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Optional

from attrs import frozen

from .initramfs import module_name, module_names
from .netconfig import ConfiguredName, configured_names


@frozen
class GuestFacts:
    os_type: str  # "linux", "windows", ... (libguestfs' inspect_get_type), "unknown"
    distro: str = ""  # "debian", "rhel", ...
    product: str = ""  # "Debian GNU/Linux 12 (bookworm)"
    kernel: Optional[str] = None  # the kernel the guest boots by default
    boot_modules: frozenset[str] = frozenset()  # loadable before the root file system: initramfs + built in
    modules: frozenset[str] = frozenset()  # loadable once booted: the module tree + built in
    udev: bool = False  # systemd-udevd names interfaces (.link files apply)
    predictable_names: bool = True  # not net.ifnames=0 / biosdevname=1
    configured: tuple[ConfiguredName, ...] = ()  # interface names its own network configuration expects

    @property
    def linux(self) -> bool:
        return self.os_type == "linux"

    def describe(self) -> dict[str, Any]:
        return {"os": self.os_type, "distro": self.distro, "product": self.product, "kernel": self.kernel}


def facts_from_report(report: dict[str, Any], initramfs_paths: Optional[list[str]]) -> GuestFacts:
    """The inspector's JSON report, plus the member names of the default kernel's initramfs."""
    builtin = frozenset(_names(report.get("modules_builtin", [])))
    tree = frozenset(_names(report.get("modules_dep", [])))
    return GuestFacts(
        os_type=report.get("os_type") or "unknown",
        distro=report.get("distro") or "",
        product=report.get("product") or "",
        kernel=report.get("kernel"),
        boot_modules=builtin | module_names(initramfs_paths or []),
        modules=builtin | tree,
        udev=bool(report.get("udev")),
        predictable_names=predictable_names(kernel_cmdline_of_grub_defaults(report.get("grub_defaults") or "")),
        configured=configured_names(report.get("network_files") or {}),
    )


def _names(paths: list[str]) -> list[str]:
    """Module names from modules.dep / modules.builtin lines (``kernel/drivers/x/y.ko.xz: deps``)."""
    found = []
    for line in paths:
        path = line.split(":", 1)[0].strip()
        name = module_name("lib/modules/v/" + path)
        if name is not None:
            found.append(name)
    return found


_GRUB_CMDLINE = re.compile(r"^\s*GRUB_CMDLINE_LINUX(?:_DEFAULT)?\s*=\s*(.*)$", re.M)


def kernel_cmdline_of_grub_defaults(text: str) -> str:
    """The kernel arguments /etc/default/grub adds (both GRUB_CMDLINE_LINUX variables)."""
    parts = []
    for value in _GRUB_CMDLINE.findall(text):
        try:
            parts.extend(shlex.split(value))
        except ValueError:
            continue
    return " ".join(parts)


def predictable_names(cmdline: str) -> bool:
    """Whether udev names interfaces by slot or path (``ens192``) rather than ``eth0``."""
    args = cmdline.split()
    return "net.ifnames=0" not in args and "biosdevname=1" not in args
