"""A small, real Debian 12 guest that looks as if it was installed on VMware.

``guest_image()`` returns a raw BIOS disk image (MBR, one ext4 partition at 1 MiB) and builds it
only when the cache lacks it. The cache lives outside the checkout, one directory per recipe:

    /var/cache/hypersdk-tests/guests/debian12-vmware-<hash>/disk.raw

where <hash> covers this file and everything under ``recipe/`` (files copied into the guest), so
changing the recipe builds a new image. Never write to the cached image: boot a qcow2 overlay.

The guest, as VMware would leave it:
- its initramfs holds only VMware's and SATA storage drivers (pvscsi, mptsas, mptspi, ahci), no
  virtio; the virtio modules stay in the module tree on disk, where virt-v2v looks for them;
- fstab and the kernel command line name the root filesystem by UUID;
- serial console on ttyS0 (grub, kernel, a getty), root password ``hypersdk``;
- dbus, so that systemd-logind runs and powers the guest off on an ACPI power button press (a
  graceful shutdown from libvirt), as on a standard install;
- systemd-networkd gives 10.11.12.13/24 to ``ens192`` only (vmxnet3's name at PCI slot 192);
- ``hypersdk-marker.service`` prints ``HYPERSDK-MARKER <ifname> <address/prefix>`` on ttyS0 for
  each interface with an IPv4 address, or ``HYPERSDK-MARKER none <ifnames>`` after 90 s.

Run ``python -m tests.guest.build`` to build (if needed) and print the image's path.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator, Sequence

CACHE_ROOT = Path("/var/cache/hypersdk-tests")
GUESTS_DIR = CACHE_ROOT / "guests"
DEBS_DIR = CACHE_ROOT / "debootstrap" / "bookworm-amd64"  # downloaded .debs, reused by rebuilds
NAME = "debian12-vmware"
RECIPE_DIR = Path(__file__).resolve().with_name("recipe")

ROOT_PASSWORD = "hypersdk"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("linux-image-amd64", "systemd-sysv", "udev", "dbus", "initramfs-tools", "iproute2", "kmod",
            "grub-pc-bin", "grub2-common")

# Kernel module directories no test guest here needs (under lib/modules/<version>/kernel/).
# Storage, network (virtio_net, vmxnet3, e1000, e1000e), virtio and filesystems stay.
PRUNED_MODULE_DIRS = (
    "sound", "drivers/gpu", "drivers/media", "drivers/infiniband", "drivers/net/wireless",
    "net/wireless", "net/mac80211", "drivers/bluetooth", "net/bluetooth", "drivers/staging",
    "drivers/isdn", "drivers/iio", "drivers/net/can", "net/can", "drivers/usb", "drivers/net/usb",
    "drivers/input/touchscreen", "drivers/input/joystick", "drivers/hid", "drivers/thunderbolt",
    "drivers/nfc", "net/nfc", "drivers/net/ieee802154", "net/ieee802154", "drivers/net/hamradio",
    "drivers/net/wwan", "drivers/mmc", "drivers/mtd", "drivers/leds", "drivers/w1",
    "arch/x86/kvm",  # a guest hosts no guests
)
# Other vendors' Ethernet drivers go too; intel keeps e1000 and e1000e.
KEPT_ETHERNET_VENDORS = ("intel",)
# What virt-v2v needs in the module tree to convert the guest to virtio.
REQUIRED_ON_DISK = ("virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci", "vmxnet3", "e1000e",
                    "vmw_pvscsi", "ahci")
REQUIRED_IN_INITRAMFS = ("vmw_pvscsi", "mptsas", "mptspi", "ahci", "sd_mod", "ext4")

SMALL_DISK_MIB = 1024
LARGE_DISK_MIB = 2048
FREE_SPACE_MIB = 400  # left for virt-v2v (new initramfs, packages) on the 1 GiB disk
PARTITION_START_MIB = 1

# Without KVM, the libguestfs appliance boots under TCG only (see docs/test-infrastructure.md).
GUESTFS_ENV = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "DEBIAN_FRONTEND": "noninteractive"}
# Tools the build runs on the host, and the Debian package that has each.
HOST_TOOLS = {"debootstrap": "debootstrap", "guestfish": "libguestfs-tools", "sfdisk": "fdisk",
              "mkfs.ext4": "e2fsprogs", "dumpe2fs": "e2fsprogs"}


@functools.lru_cache(maxsize=None)
def recipe_hash() -> str:
    """Short hash of everything that decides the image's content: this file and recipe/."""
    files = [("build.py", Path(__file__).resolve())]
    files += [(str(p.relative_to(RECIPE_DIR)), p) for p in sorted(RECIPE_DIR.rglob("*")) if p.is_file()]
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(f"{name}\0{path.stat().st_mode & 0o111:o}\0".encode())
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def image_dir() -> Path:
    """The cache directory of the current recipe's image (it may not exist yet)."""
    return GUESTS_DIR / f"{NAME}-{recipe_hash()}"


def guest_image() -> Path:
    """The path of the cached guest image, built first if the cache lacks it."""
    final = image_dir()
    disk = final / "disk.raw"
    if disk.exists():  # the fast path: a finished image is only ever renamed into place
        return disk
    GUESTS_DIR.mkdir(parents=True, exist_ok=True)
    with _locked(GUESTS_DIR / f".{final.name}.lock"):
        if not disk.exists():  # another process may have built it while we waited
            _remove_stale_builds(final.name)
            _build_into(final)
    return disk


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path``: one builder per recipe at a time."""
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the holder's steps all have timeouts
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_into(final: Path) -> None:
    """Build in a temporary directory beside ``final``, then rename it: all or nothing."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=GUESTS_DIR))
    try:
        info = _build(tmp)
        (tmp / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
        _fsync(tmp / "disk.raw")
        (tmp / "disk.raw").chmod(0o444)  # a reminder: boot overlays, never this file
        tmp.chmod(0o755)  # libvirt's qemu user must reach the backing file
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "disk.raw").exists():
                raise
            _remove_tree(tmp)  # another builder won (its lock file was deleted under it)
        _fsync(GUESTS_DIR)
    except BaseException:
        _remove_tree(tmp)
        raise


def _remove_stale_builds(name: str) -> None:
    """Remove what killed builds of this recipe left behind (we hold its lock)."""
    for stale in GUESTS_DIR.glob(f".tmp-{name}-*"):
        _remove_tree(stale)


def _remove_tree(path: Path) -> None:
    """rmtree, after unmounting anything (debootstrap's /proc, ...) mounted below ``path``."""
    for mount in sorted(_mounts_below(path), reverse=True):
        run(["umount", "-l", mount], timeout=60)
    shutil.rmtree(path, ignore_errors=True)


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/mounts") as mounts:
        points = [line.split()[1].encode().decode("unicode_escape") for line in mounts]
    return [p for p in points if p.startswith(prefix)]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Timer:
    """Prints how long each build step took (on stderr: stdout is the image's path)."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.steps: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        _say(f"{name} ...")
        yield
        self.steps[name] = round(time.monotonic() - began, 1)
        _say(f"{name}: {self.steps[name]:.1f} s")

    def total(self) -> float:
        return round(time.monotonic() - self.start, 1)


def _say(message: str) -> None:
    print(f"[guest build] {message}", file=sys.stderr, flush=True)


def _build(tmp: Path) -> dict:
    """All build steps; returns what build-info.json records."""
    timer = _Timer()
    root, part, disk = tmp / "root", tmp / "part.img", tmp / "disk.raw"
    # Derived from the recipe, so one recipe always gives the same filesystem UUID.
    fs_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"hypersdk-tests/{NAME}/{recipe_hash()}"))
    with timer.step("host tools"):
        _ensure_host_tools()
    with timer.step("debootstrap"):
        _debootstrap(root)
    kernel = _kernel_version(root)
    with timer.step("configure"):
        _configure(root, fs_uuid)
    with timer.step("prune"):
        _prune(root, kernel)
    with timer.step("initramfs"):
        initramfs_modules = _rebuild_initramfs(root, kernel)
    tree_mib = _tree_mib(root)
    disk_mib = SMALL_DISK_MIB if tree_mib + FREE_SPACE_MIB <= SMALL_DISK_MIB else LARGE_DISK_MIB
    with timer.step("filesystem"):
        _make_filesystem(root, part, fs_uuid, disk_mib - PARTITION_START_MIB)
        _remove_tree(root)
    used_mib, free_mib = _filesystem_usage(part)
    with timer.step("disk"):
        _make_disk(part, disk, disk_mib)
        part.unlink()
    with timer.step("grub"):
        _install_grub(disk, tmp / "grub.cfg", fs_uuid)
    info = {"recipe": recipe_hash(), "kernel": kernel, "root_uuid": fs_uuid, "disk_mib": disk_mib,
            "tree_mib": tree_mib, "used_mib": used_mib, "free_mib": free_mib,
            "root_password": ROOT_PASSWORD, "initramfs_modules": initramfs_modules,
            "steps_s": timer.steps, "total_s": timer.total()}
    _say(f"root tree {tree_mib} MiB; filesystem {used_mib} MiB used, {free_mib} MiB free; "
         f"disk {disk_mib} MiB; total {info['total_s']:.1f} s")
    return info


class BuildError(RuntimeError):
    """A build step failed; the message ends with the command's output."""


def run(cmd: Sequence[str], timeout: float, env: dict | None = None, input: str | None = None,
         clean_env: bool = False) -> str:
    """Run ``cmd`` with a timeout (seconds); its stdout, or BuildError carrying its output's tail.

    ``env`` adds to the environment, or replaces it with ``clean_env``."""
    full_env = dict(env or {}) if clean_env else {**os.environ, **(env or {})}
    proc = subprocess.run(list(cmd), input=input, capture_output=True, text=True, timeout=timeout,
                          env=full_env)
    if proc.returncode != 0:
        tail = (proc.stdout[-2000:] + "\n" + proc.stderr[-4000:]).strip()
        raise BuildError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
    return proc.stdout


def guestfs_env() -> dict[str, str]:
    """libguestfs' backend settings for this machine, unless the caller's environment sets them."""
    return {name: os.environ.get(name, value) for name, value in GUESTFS_ENV.items()}


def _chroot(root: Path, *cmd: str, timeout: float = 300, input: str | None = None) -> str:
    # A clean environment: the host's locale and PATH mean nothing inside the guest.
    return run(["chroot", str(root), *cmd], timeout, env=CHROOT_ENV, input=input, clean_env=True)


def _ensure_host_tools() -> None:
    """apt-get install the Debian packages of missing host tools (a fresh machine)."""
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if not _which(tool)})
    if not missing:
        return
    _say(f"installing {' '.join(missing)}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(["apt-get", "install", "-y", *missing], timeout=1200, env=env)
    except BuildError:  # stale or empty package lists
        run(["apt-get", "update"], timeout=600, env=env)
        run(["apt-get", "install", "-y", *missing], timeout=1200, env=env)


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def debian_mirror() -> str:
    """The Debian mirror apt uses here for bookworm, else deb.debian.org."""
    sources = Path("/etc/apt")
    for path in sorted(sources.glob("sources.list.d/*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.MULTILINE))
            if "deb" in fields.get("Types", "").split() and SUITE in fields.get("Suites", "").split():
                return fields["URIs"].split()[0]
    for path in [sources / "sources.list", *sorted(sources.glob("sources.list.d/*.list"))]:
        if path.exists():
            for line in path.read_text().splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1]
    return DEFAULT_MIRROR


def _debootstrap(root: Path) -> None:
    DEBS_DIR.mkdir(parents=True, exist_ok=True)
    with _locked(DEBS_DIR.parent / ".bookworm-amd64.lock"):  # one writer of the .deb cache
        run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
              f"--cache-dir={DEBS_DIR}", SUITE, str(root), debian_mirror()], timeout=1800)


def _kernel_version(root: Path) -> str:
    versions = sorted(p.name for p in (root / "lib/modules").iterdir())
    if len(versions) != 1:
        raise BuildError(f"expected one kernel in the guest, found {versions}")
    return versions[0]


def _configure(root: Path, fs_uuid: str) -> None:
    """The recipe's files, fstab by UUID, the root password and the enabled units."""
    shutil.copytree(RECIPE_DIR, root, dirs_exist_ok=True)
    (root / "usr/local/sbin/hypersdk-marker").chmod(0o755)
    (root / "etc/fstab").write_text(f"UUID={fs_uuid} / ext4 errors=remount-ro 0 1\n")
    _chroot(root, "chpasswd", input=f"root:{ROOT_PASSWORD}\n")
    _chroot(root, "systemctl", "enable", "systemd-networkd.service", "hypersdk-marker.service",
            "serial-getty@ttyS0.service")


def _prune(root: Path, kernel: str) -> None:
    """Drop documentation, translations, apt's caches and unneeded kernel modules."""
    for sub in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
                "var/lib/apt/lists", "var/cache/apt", "var/cache/debconf"):
        _empty_dir(root / sub)
    modules = root / "lib/modules" / kernel / "kernel"
    for sub in PRUNED_MODULE_DIRS:
        shutil.rmtree(modules / sub, ignore_errors=True)
    for vendor in (modules / "drivers/net/ethernet").iterdir():
        if vendor.name not in KEPT_ETHERNET_VENDORS:
            _remove_path(vendor)
    _chroot(root, "depmod", "-a", kernel)
    on_disk = {p.name.split(".ko")[0] for p in modules.rglob("*.ko*")}
    missing = [m for m in REQUIRED_ON_DISK if m not in on_disk]
    if missing:
        raise BuildError(f"pruning removed modules the guest needs: {missing}")


def _empty_dir(path: Path) -> None:
    """Remove a directory's content but keep the directory (packages expect it)."""
    if path.is_dir():
        for child in path.iterdir():
            _remove_path(child)


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _rebuild_initramfs(root: Path, kernel: str) -> list[str]:
    """Regenerate the initramfs with MODULES=list, check it holds no virtio driver; its modules."""
    _chroot(root, "update-initramfs", "-u", "-k", kernel)
    listing = _chroot(root, "lsinitramfs", f"/boot/initrd.img-{kernel}")
    modules = {Path(line).name.split(".ko")[0] for line in listing.splitlines() if ".ko" in line}
    virtio = sorted(m for m in modules if "virtio" in m)
    missing = [m for m in REQUIRED_IN_INITRAMFS if m not in modules]
    if virtio or missing:
        raise BuildError(f"initramfs: unexpected virtio modules {virtio}, missing {missing}")
    return sorted(modules)


def _tree_mib(root: Path) -> int:
    out = run(["du", "-sx", "--block-size=1M", str(root)], timeout=300)
    return int(out.split()[0])


def _make_filesystem(root: Path, part: Path, fs_uuid: str, size_mib: int) -> None:
    # mkfs -d copies the tree: no loop device, mount or partition nodes needed.
    run(["mkfs.ext4", "-q", "-F", "-L", "root", "-U", fs_uuid, "-d", str(root), str(part),
          f"{size_mib}M"], timeout=600)


def _filesystem_usage(part: Path) -> tuple[int, int]:
    """(used, free) MiB of an ext4 image, from its superblock."""
    header = run(["dumpe2fs", "-h", str(part)], timeout=60)
    fields = dict(re.findall(r"^([^:\n]+):\s+(\S+)", header, re.MULTILINE))
    block = int(fields["Block size"])
    total, free = int(fields["Block count"]), int(fields["Free blocks"])
    return (total - free) * block // 2**20, free * block // 2**20


def _make_disk(part: Path, disk: Path, disk_mib: int) -> None:
    """An MBR disk with one bootable Linux partition at 1 MiB holding ``part``."""
    with open(disk, "wb") as f:
        f.truncate(disk_mib * 2**20)
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(disk)], timeout=60,
         input=f"label: dos\nstart={PARTITION_START_MIB * 2048}, type=83, bootable\n")
    run(["dd", f"if={part}", f"of={disk}", "bs=4M", f"seek={PARTITION_START_MIB}M",
          "oflag=seek_bytes", "conv=notrunc,sparse", "status=none"], timeout=600)


def _install_grub(disk: Path, grub_cfg: Path, fs_uuid: str) -> None:
    """grub-install and update-grub run by the guest's own grub, inside libguestfs' appliance."""
    script = "\n".join([
        'command "grub-install --target=i386-pc /dev/sda"',
        'command "update-grub"',
        f"download /boot/grub/grub.cfg {grub_cfg}",
    ]) + "\n"
    env = guestfs_env()
    run(["guestfish", "--rw", "--format=raw", "-a", str(disk), "-m", "/dev/sda1"], timeout=900,
         env=env, input=script)
    _check_grub_cfg(grub_cfg.read_text(), fs_uuid)
    grub_cfg.unlink()


def _check_grub_cfg(cfg: str, fs_uuid: str) -> None:
    linux = [line.split() for line in cfg.splitlines() if line.strip().startswith("linux")]
    if not linux:
        raise BuildError("grub.cfg has no linux entry")
    args = linux[0]
    wanted = [f"root=UUID={fs_uuid}", "console=tty0", "console=ttyS0,115200"]
    if any(w not in args for w in wanted) or args.index("console=ttyS0,115200") < args.index("console=tty0"):
        raise BuildError(f"grub.cfg's kernel line is not what the recipe wants: {' '.join(args)}")


def main() -> None:
    print(guest_image())


if __name__ == "__main__":
    main()
