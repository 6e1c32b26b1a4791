"""Which conversion methods this host can run, and why not when it cannot.

Checked at submit time (a job that cannot run is refused with 400 saying what
is missing), so the checks are cheap file-system lookups, cached.
"""

from __future__ import annotations

import glob
import os
import shutil
from functools import lru_cache
from typing import Optional

NBDKIT_PLUGIN_DIRS = ("/usr/lib/x86_64-linux-gnu/nbdkit/plugins", "/usr/lib64/nbdkit/plugins", "/usr/lib/nbdkit/plugins")
BASE_TOOLS = ("nbdkit", "qemu-img", "setsid", "setpriv")


@lru_cache(maxsize=None)
def _which(name: str) -> Optional[str]:
    return shutil.which(name, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


@lru_cache(maxsize=None)
def nbdkit_plugin(name: str) -> Optional[str]:
    for directory in NBDKIT_PLUGIN_DIRS:
        path = os.path.join(directory, f"nbdkit-{name}-plugin.so")
        if os.path.exists(path):
            return path
    return None


@lru_cache(maxsize=None)
def guestfs_module() -> Optional[str]:
    """libguestfs' Python bindings for the system's Python (what the guest inspector imports)."""
    found = glob.glob("/usr/lib/python3/dist-packages/guestfs.py") + glob.glob("/usr/lib*/python3*/site-packages/guestfs.py")
    return found[0] if found else None


class Tools:
    def __init__(self, vddk_libdir: Optional[str], which=_which, plugin=nbdkit_plugin, guestfs=guestfs_module):
        self._vddk_libdir = vddk_libdir
        self._which = which  # tool name -> path or None
        self._plugin = plugin  # nbdkit plugin name -> path or None
        self._guestfs = guestfs  # () -> libguestfs' Python module or None

    def inspection_problem(self) -> Optional[str]:
        """None when copied guests can be inspected here (device_models auto, interface names), else why not."""
        if self._guestfs() is None:
            return ("guest inspection needs libguestfs and its Python module on the conversion host"
                    " (apt-get install libguestfs-tools python3-guestfs)")
        return None

    def method_problem(self, method: str) -> Optional[str]:
        """None when ``method`` can run here, else what is missing (for a 400 at submit)."""
        missing = [tool for tool in BASE_TOOLS if self._which(tool) is None]
        if missing:
            return f"{', '.join(missing)} not installed on the conversion host"
        if method in ("https", "virt-v2v") and self._plugin("curl") is None:
            return "nbdkit's curl plugin is not installed on the conversion host"
        if method == "vddk":
            if self._plugin("vddk") is None:
                return "nbdkit's vddk plugin is not installed on the conversion host (nbdkit-vddk-plugin.so)"
            if not self._vddk_libdir:
                return "vddk.libdir is not set in the daemon's configuration"
            if not glob.glob(os.path.join(self._vddk_libdir, "lib64", "libvixDiskLib.so*")):
                return f"VMware's VDDK library is not in {self._vddk_libdir} (lib64/libvixDiskLib.so missing)"
        if method == "virt-v2v" and self._which("virt-v2v-in-place") is None:
            return ("virt-v2v-in-place is not installed on the conversion host: it converts the copied disks"
                    " (apt-get install virt-v2v)")
        return None
