"""Pure argv builders for the conversion tools."""

from __future__ import annotations

import shlex
from typing import Optional, Sequence

from attrs import frozen

# nbdkit's --run sets $uri to the private NBD socket's URI.
NBD_URI = '"$uri"'


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


def nbdkit_curl(source: CurlSource, run: Sequence[str]) -> list[str]:
    """nbdkit serving ``source`` read-only on a private socket while ``run`` runs.

    ``run`` is an argv in which NBD_URI stands for the socket's URI. nbdkit exits
    with the command's status, and with its parent (the daemon).
    """
    argv = ["nbdkit", "--exit-with-parent", "--readonly", "-U", "-", "--filter=retry"]
    if source.offset or source.size is not None:
        argv.append("--filter=offset")
    argv += ["curl", f"url={source.url}", f"cookie=+{source.cookie_file}", f"timeout={source.timeout}"]
    if not source.sslverify:
        argv.append("sslverify=false")
    if source.cainfo:
        argv.append(f"cainfo={source.cainfo}")
    if source.offset:
        argv.append(f"offset={source.offset}")
    if source.size is not None:
        argv.append(f"range={source.size}")
    argv += ["retry-delay=1", "retries=5", "--run", _shell(run)]
    return argv


def qemu_img_convert(source_format: str, target: str, target_format: str, *, target_exists: bool = False,
                     source: str = NBD_URI) -> list[str]:
    """qemu-img convert with progress, parallel out-of-order writes, into ``target``."""
    argv = ["qemu-img", "convert", "-p", "-W", "-m", "16", "-f", source_format, "-O", target_format]
    if target_exists:
        argv += ["-n", "--target-is-zero"]
    return argv + [source, target]


def qemu_img_compare(source_format: str, target: str, target_format: str, source: str = NBD_URI) -> list[str]:
    """qemu-img compare: rc 0 identical, 1 different (names the offset), other errors."""
    return ["qemu-img", "compare", "-p", "-f", source_format, "-F", target_format, source, target]


def qemu_img_create(target: str, target_format: str, size: int) -> list[str]:
    return ["qemu-img", "create", "-q", "-f", target_format, target, str(size)]


def _shell(argv: Sequence[str]) -> str:
    return " ".join(arg if arg == NBD_URI else shlex.quote(arg) for arg in argv)
