"""Pure argv builders for the conversion tools."""

from __future__ import annotations

from typing import Optional

from attrs import frozen


@frozen
class CurlSource:
    """A datastore file nbdkit's curl plugin serves over NBD."""

    url: str
    cookie_file: str  # holds "vmware_soap_session=..." (never on a command line)
    sslverify: bool = True
    cainfo: Optional[str] = None  # extra trust anchor: the vCenter CA or its pinned certificate
    offset: int = 0  # bytes into the file where the disk data starts (flat extents)
    size: Optional[int] = None  # bytes of disk data (flat extents)
    timeout: int = 60  # seconds per HTTP request
    max_bytes_per_second: Optional[int] = None  # spare a busy datastore


def nbdkit_curl(source: CurlSource, socket: str, pidfile: str) -> list[str]:
    """nbdkit serving ``source`` read-only on the unix ``socket``; ``pidfile`` appears once it listens.

    A server of its own rather than ``--run``: under ``--run`` nbdkit outlived a
    killed daemon (its command waits for the server, the server for the command).
    Alone, ``--exit-with-parent`` ends it with the daemon.
    """
    argv = ["nbdkit", "--exit-with-parent", "--foreground", "--readonly", "-U", socket, "-P", pidfile,
            "--filter=retry"]
    if source.offset or source.size is not None:
        argv.append("--filter=offset")
    if source.max_bytes_per_second:
        argv.append("--filter=rate")
    argv += ["curl", f"url={source.url}", f"cookie=+{source.cookie_file}", f"timeout={source.timeout}"]
    if not source.sslverify:
        argv.append("sslverify=false")
    if source.cainfo:
        argv.append(f"cainfo={source.cainfo}")
    if source.offset:
        argv.append(f"offset={source.offset}")
    if source.size is not None:
        argv.append(f"range={source.size}")
    if source.max_bytes_per_second:
        argv.append(f"rate={source.max_bytes_per_second * 8}")  # the filter counts bits
    return argv + ["retry-delay=1", "retries=5"]


@frozen
class VddkSource:
    """A disk nbdkit's vddk plugin reads through VMware's VDDK library."""

    libdir: str
    server: str
    port: int
    user: str
    password_file: str
    thumbprint: str  # SHA-1 of vCenter's certificate, "AA:BB:..."
    vm_moref: str  # "vm-123"
    file: str  # "[datastore1] web/web.vmdk"
    transports: str = "nbdssl:nbd"


def nbdkit_vddk(source: VddkSource, socket: str, pidfile: str) -> list[str]:
    """nbdkit's vddk plugin serving one disk (guest-visible data, read as raw)."""
    return [
        "nbdkit", "--exit-with-parent", "--foreground", "--readonly", "-U", socket, "-P", pidfile, "--filter=retry",
        "vddk", f"libdir={source.libdir}", f"server={source.server}", f"port={source.port}", f"user={source.user}",
        f"password=+{source.password_file}", f"thumbprint={source.thumbprint}", f"vm=moref={source.vm_moref}",
        f"file={source.file}", f"transports={source.transports}", "retry-delay=1", "retries=5",
    ]


def nbd_uri(socket: str) -> str:
    return f"nbd+unix:///?socket={socket}"


def qemu_img_convert(source: str, source_format: str, target: str, target_format: str, *,
                     target_exists: bool = False) -> list[str]:
    """qemu-img convert with progress, parallel out-of-order writes, into ``target``."""
    argv = ["qemu-img", "convert", "-p", "-W", "-m", "16", "-f", source_format, "-O", target_format]
    if target_exists:
        argv += ["-n", "--target-is-zero"]
    return argv + [source, target]


def qemu_img_compare(source: str, source_format: str, target: str, target_format: str) -> list[str]:
    """qemu-img compare: rc 0 identical, 1 different (names the offset), other errors."""
    return ["qemu-img", "compare", "-p", "-f", source_format, "-F", target_format, source, target]


def virt_v2v_in_place(source_xml: str) -> list[str]:
    """virt-v2v-in-place converting, where they are, the disks ``source_xml`` describes (its
    ``<disk>`` files, with their formats), with JSON messages on stdout. It writes no other file."""
    return ["virt-v2v-in-place", "--machine-readable", "-i", "libvirtxml", source_xml]


def libguestfs_env(*, cache_dir: str, scratch: str, home: str, force_tcg: bool,
                   virtio_win: Optional[str] = None) -> dict[str, str]:
    """The environment of a libguestfs tool (virt-v2v, the guest inspector).

    ``scratch`` holds the appliance's unix sockets: it must be a short path (107 bytes per socket
    path). The appliance is built once into ``cache_dir`` and kept.
    """
    env = {"LIBGUESTFS_BACKEND": "direct", "TMPDIR": scratch, "HOME": home, "LIBGUESTFS_CACHEDIR": cache_dir}
    if force_tcg:
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    if virtio_win:
        env["VIRTIO_WIN"] = virtio_win
    return env
