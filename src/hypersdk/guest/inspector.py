"""The guest inspector: a child process that reads a copied guest with libguestfs.

Run by the pipeline as ``python3 inspector.py --drive PATH:FORMAT ... --initramfs FILE``
with the system's Python, which has libguestfs' bindings (Debian: python3-guestfs);
it imports nothing of hypersdk. It speaks JSON lines on stdout and stdin:

1. It inspects the disks with every file system mounted read-only and prints one
   report: the OS, the kernel the guest boots, that kernel's modules.dep and
   modules.builtin, whether systemd-udevd is there, /etc/default/grub; the
   kernel's initramfs is downloaded to ``--initramfs``.
2. It reads one line: ``{"write": [{"path", "content"}]}``. With ``--writable``
   it remounts read-write, writes those files (never anything else), and
   prints ``{"written": [paths]}``. Then it exits.

Failures print ``{"error": "..."}`` and exit 1 (2: no operating system found); when the
appliance did not start, with ``"launch_failed": true`` and the last lines libguestfs and qemu
wrote (``"log"``), which libguestfs keeps to itself unless asked.

``--probe`` starts the appliance on a scratch disk and prints ``{"started": true}``, or
``{"no_kvm": why}`` without starting it when /dev/kvm cannot be opened (libguestfs would run
under TCG anyway), or the launch failure above.
"""

import argparse
import collections
import json
import os
import re
import sys

import guestfs

KERNEL_DIRS = ("/lib/modules", "/usr/lib/modules")
UDEVD = ("/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd", "/sbin/udevd")
INITRAMFS_NAMES = ("/boot/initrd.img-{v}", "/boot/initramfs-{v}.img", "/boot/initrd-{v}", "/boot/initrd-{v}.img")
# The guest's own network configuration (names it expects): networkd, ifupdown, netplan, NetworkManager, ifcfg
NETWORK_FILES = ("/etc/systemd/network/*.network", "/etc/network/interfaces", "/etc/network/interfaces.d/*",
                 "/etc/netplan/*.yaml", "/etc/NetworkManager/system-connections/*",
                 "/etc/sysconfig/network-scripts/ifcfg-*", "/etc/sysconfig/network/ifcfg-*")
MAX_NETWORK_FILES = 200
MAX_NETWORK_FILE_BYTES = 256 * 1024
LOG_LINES = 20  # of libguestfs' and qemu's output, kept for a launch failure
KVM = "/dev/kvm"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--drive", action="append", default=[], help="PATH:FORMAT, the boot disk first")
    parser.add_argument("--initramfs", help="where to put the default kernel's initramfs")
    parser.add_argument("--writable", action="store_true", help="allow step 2 to write files")
    parser.add_argument("--probe", action="store_true", help="only start the appliance, on a scratch disk")
    args = parser.parse_args()
    if not args.probe and not (args.drive and args.initramfs):
        parser.error("--drive and --initramfs are required")
    if args.probe:
        why_not = kvm_unusable()
        if why_not:
            answer({"no_kvm": why_not})
            return 0
    g = guestfs.GuestFS(python_return_dict=True)
    log = keep_log(g)
    try:
        if args.probe:
            g.add_drive_scratch(1 << 20)
        for drive in args.drive:
            path, _, fmt = drive.rpartition(":")
            g.add_drive_opts(path, format=fmt, readonly=not args.writable)
        progress("starting the libguestfs appliance")
        try:
            g.launch()
        except RuntimeError as e:
            answer({"error": str(e).splitlines()[0], "launch_failed": True, "log": list(log)})
            return 1
        if args.probe:
            g.shutdown()
            answer({"started": True})
            return 0
        roots = g.inspect_os()
        if not roots:
            answer({"error": "no operating system was found on the guest's disks", "no_os": True})
            return 2
        root = roots[0]
        mount(g, root, read_only=True)
        answer(report(g, root, args.initramfs))
        request = json.loads(sys.stdin.readline() or "{}")
        files = request.get("write") or []
        if files:
            if not args.writable:
                raise RuntimeError("asked to write files into a disk opened read-only")
            g.umount_all()
            mount(g, root, read_only=False)
            answer({"written": [write(g, f["path"], f["content"]) for f in files]})
        g.shutdown()
        return 0
    except (RuntimeError, ValueError, OSError) as e:
        answer({"error": str(e)})
        return 1
    finally:
        g.close()


def kvm_unusable():
    """Why libguestfs will not even try KVM here (it opens /dev/kvm read-write first), or None."""
    try:
        os.close(os.open(KVM, os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        return f"{KVM} cannot be opened ({e.strerror}), so libguestfs runs its appliance under TCG"
    return None


def keep_log(g):
    """The last lines of what libguestfs and the appliance's qemu say: not printed unless verbose."""
    lines = collections.deque(maxlen=LOG_LINES)

    def on_event(event, handle, buf, array):
        text = buf.decode("utf-8", "replace") if isinstance(buf, bytes) else str(buf)
        lines.extend(line for line in text.splitlines() if line.strip())

    g.set_event_callback(on_event, guestfs.EVENT_APPLIANCE | guestfs.EVENT_LIBRARY | guestfs.EVENT_WARNING)
    return lines


def progress(message):
    print(message, file=sys.stderr, flush=True)


def answer(obj):
    print(json.dumps(obj), flush=True)


def mount(g, root, read_only):
    mountpoints = g.inspect_get_mountpoints(root)
    for mountpoint in sorted(mountpoints, key=len):  # "/" before "/boot"
        try:
            if read_only:
                g.mount_ro(mountpoints[mountpoint], mountpoint)
            else:
                g.mount(mountpoints[mountpoint], mountpoint)
        except RuntimeError as e:  # a swap or broken file system listed in fstab: leave it
            progress(f"cannot mount {mountpoint}: {e}")


def report(g, root, initramfs_out):
    found = {
        "os_type": g.inspect_get_type(root),
        "distro": g.inspect_get_distro(root),
        "product": g.inspect_get_product_name(root),
        "major": g.inspect_get_major_version(root),
        "minor": g.inspect_get_minor_version(root),
    }
    if found["os_type"] != "linux":
        return found
    kernel, initramfs = default_kernel(g)
    found["kernel"] = kernel
    if initramfs is not None:
        g.download(initramfs, initramfs_out)
        found["initramfs"] = initramfs
    modules_dir = next((d + "/" + kernel for d in KERNEL_DIRS if kernel and g.is_dir(d + "/" + kernel)), None)
    for name in ("modules.dep", "modules.builtin"):
        path = f"{modules_dir}/{name}" if modules_dir else None
        found[name.replace(".", "_")] = g.read_lines(path) if path and g.is_file(path) else []
    found["udev"] = any(g.exists(path) for path in UDEVD)
    found["grub_defaults"] = g.cat("/etc/default/grub") if g.is_file("/etc/default/grub") else ""
    found["network_files"] = network_files(g)
    return found


def network_files(g):
    """{path: text} of the guest's network configuration files (parsed by the daemon)."""
    found = {}
    for pattern in NETWORK_FILES:
        for path in sorted(g.glob_expand(pattern)):
            if len(found) >= MAX_NETWORK_FILES:
                return found
            try:
                if g.is_file(path, followsymlinks=True) and g.filesize(path) <= MAX_NETWORK_FILE_BYTES:
                    found[path] = g.read_file(path).decode("utf-8", "replace")
            except RuntimeError as e:  # a dangling link, a file it may not read: the others still count
                progress(f"cannot read {path}: {e}")
    return found


def default_kernel(g):
    """(version, initramfs path) of the newest kernel in /boot that has an initramfs: what grub boots
    by default on the distributions that install kernels side by side."""
    versions = [path[len("/boot/vmlinuz-"):] for path in g.glob_expand("/boot/vmlinuz-*")]
    versions = [v for v in versions if "rescue" not in v]
    for version in sorted(versions, key=version_key, reverse=True):
        for pattern in INITRAMFS_NAMES:
            path = pattern.format(v=version)
            if g.is_file(path):
                return version, path
    return (max(versions, key=version_key) if versions else None), None


def version_key(version):
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[.\-+_~]", version)]


def write(g, path, content):
    directory = os.path.dirname(path)
    if not g.is_dir(directory):
        g.mkdir_p(directory)
    g.write(path, content.encode("utf-8"))
    g.chmod(0o644, path)
    return path


if __name__ == "__main__":
    sys.exit(main())
