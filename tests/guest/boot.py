"""Boot the test guest with plain qemu under TCG and watch its serial console.

    with overlay(guest_image()) as disk:
        result = boot(disk, storage="pvscsi", nic="vmxnet3", until=("login", "marker"))
    result.seconds["marker"], result.markers

Boots always run on a qcow2 overlay (``overlay()``), so the cached image is never written.
``guestfish()`` edits an overlay (add a file, run a command in the guest) before booting it.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tests.guest.build import guestfs_env, run

VMWARE_MAC = "00:50:56:00:00:01"  # VMware's OUI, in its range for manually set MACs

# What a boot test waits for on the serial console, by name.
PATTERNS = {
    "kernel": re.compile(rb"Linux version "),
    "login": re.compile(rb"\blogin: "),
    "marker": re.compile(rb"HYPERSDK-MARKER [^\r\n]*\r?\n"),
    "gave_up": re.compile(rb"Gave up waiting for root file system device"),
    "initramfs_shell": re.compile(rb"\(initramfs\) "),
}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\x1bc")


@dataclass
class BootResult:
    """What the serial port printed, and when (seconds after qemu started) each pattern appeared."""

    seconds: dict[str, float]
    raw: bytes = field(repr=False)
    exit_code: int | None = None  # None: still running when we stopped it

    @property
    def console(self) -> str:
        """The console text, without terminal escapes and carriage returns."""
        text = self.raw.decode("utf-8", "replace")
        return _ANSI.sub("", text).replace("\r", "")

    @property
    def markers(self) -> list[str]:
        """The HYPERSDK-MARKER lines, without the prefix: ``["ens192 10.11.12.13/24"]``."""
        return re.findall(r"HYPERSDK-MARKER ([^\n]*)", self.console)

    def tail(self, lines: int = 10) -> list[str]:
        return [line for line in self.console.splitlines() if line.strip()][-lines:]


@contextlib.contextmanager
def overlay(image: Path, directory: Path | None = None) -> Iterator[Path]:
    """A qcow2 overlay on ``image`` in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="hypersdk-guest-", dir=directory) as tmp:
        path = Path(tmp) / "overlay.qcow2"
        fmt = "qcow2" if image.suffix == ".qcow2" else "raw"
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(image.resolve()),
              str(path)], timeout=60)
        yield path


def guestfish(disk: Path, script: str, timeout: float = 600, readonly: bool = False) -> str:
    """Run a guestfish script on ``disk`` with the guest's filesystems mounted (-i)."""
    env = guestfs_env()
    mode = "--ro" if readonly else "--rw"
    return run(["guestfish", mode, "-a", str(disk), "-i"], timeout=timeout, env=env, input=script)


def qemu_command(disk: Path, storage: str = "pvscsi", nic: str | None = "vmxnet3",
                 machine: str = "pc", mac: str = VMWARE_MAC, memory_mib: int = 1024) -> list[str]:
    """qemu-system-x86_64 under TCG, serial port on stdout, no monitor, no display."""
    fmt = "qcow2" if disk.suffix == ".qcow2" else "raw"
    return ["qemu-system-x86_64", "-accel", "tcg", "-machine", machine, "-m", str(memory_mib),
            "-smp", "1", "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
            "-drive", f"file={disk},format={fmt},if=none,id=disk0",
            *_storage_args(storage, machine), *_nic_args(nic, mac)]


def _storage_args(storage: str, machine: str) -> list[str]:
    if storage == "pvscsi":
        return ["-device", "pvscsi,id=scsi0", "-device", "scsi-hd,drive=disk0,bus=scsi0.0"]
    if storage == "sata":
        if machine.startswith("q35"):  # q35 has its AHCI controller built in
            return ["-device", "ide-hd,drive=disk0,bus=ide.0"]
        return ["-device", "ahci,id=ahci0", "-device", "ide-hd,drive=disk0,bus=ahci0.0"]
    if storage == "virtio":
        return ["-device", "virtio-blk-pci,drive=disk0"]
    raise ValueError(f"unknown storage {storage!r}")


def _nic_args(nic: str | None, mac: str) -> list[str]:
    if nic is None:
        return ["-nic", "none"]
    # The NIC only has to exist; restrict=on keeps the guest off the host's network.
    return ["-netdev", "user,id=net0,restrict=on", "-device", f"{nic},netdev=net0,mac={mac}"]


def boot(disk: Path, until: Iterable[str] = ("login", "marker"), timeout: float = 300,
         **qemu_options) -> BootResult:
    """Boot ``disk`` until every pattern named in ``until`` appeared (or ``timeout``), then stop."""
    return watch(qemu_command(disk, **qemu_options), until, timeout)


def watch(cmd: Sequence[str], until: Iterable[str], timeout: float) -> BootResult:
    """Run ``cmd``, timing PATTERNS on its stdout until all of ``until`` matched or the deadline."""
    wanted = set(until)
    proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    start = time.monotonic()
    deadline = start + timeout
    raw, seconds = bytearray(), {}
    try:
        fd = proc.stdout.fileno()
        while not wanted <= seconds.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                break  # deadline
            chunk = os.read(fd, 65536)
            if not chunk:
                break  # qemu exited
            raw += chunk
            now = round(time.monotonic() - start, 1)
            for name, pattern in PATTERNS.items():
                if name not in seconds and pattern.search(raw):
                    seconds[name] = now
    finally:
        exit_code = _stop(proc)
    return BootResult(seconds=seconds, raw=bytes(raw), exit_code=exit_code)


def _stop(proc: subprocess.Popen) -> int | None:
    """Stop qemu (the guest is throw-away); its exit code if it had exited by itself."""
    code = proc.poll()
    if code is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    proc.stdout.close()
    return code
