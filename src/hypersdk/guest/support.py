"""What virt-v2v can convert, from what vCenter says the guest is. Pure."""

from __future__ import annotations

from typing import Optional

# guest id prefixes (vSphere's GuestOsDescriptor ids, lower case) of systems virt-v2v cannot convert
UNCONVERTIBLE = (
    ("freebsd", "FreeBSD"), ("solaris", "Solaris"), ("darwin", "macOS"), ("netware", "NetWare"), ("os2", "OS/2"),
    ("ecomstation", "eComStation"), ("dos", "DOS"), ("vmkernel", "ESXi"), ("win31", "Windows 3.1"),
    ("win95", "Windows 95"), ("win98", "Windows 98"), ("winme", "Windows Me"), ("winnt", "Windows NT"),
    ("win2000", "Windows 2000"),
)


def is_windows(guest_id: str) -> bool:
    gid = guest_id.lower()
    return gid.startswith("win") or "windows" in gid


def v2v_problem(vm_name: str, guest_id: str, guest_full_name: str, virtio_win: Optional[str]) -> Optional[str]:
    """Why virt-v2v cannot convert this guest here, or None."""
    gid = guest_id.lower()
    described = f"{guest_full_name or guest_id} (guest id {guest_id})"
    for prefix, name in UNCONVERTIBLE:
        if gid.startswith(prefix):
            return (f"virt-v2v cannot convert {name} guests: {vm_name} runs {described}; use conversion_method"
                    " https (device_models auto or source) instead")
    if is_windows(gid) and not virtio_win:
        return (f"{vm_name} runs {described}: virt-v2v installs virtio drivers into Windows guests from virtio-win,"
                " which this host lacks; install the virtio-win drivers (the virtio-win package or virtio-win.iso)"
                " and set pipeline.virtio_win to their path in the daemon's configuration")
    return None
