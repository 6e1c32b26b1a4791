"""The measurements recorded in NOTES.md: boots of the test guest on several controllers and NICs.

    python -m tests.guest.measure [a b c d e f]    (all when none is named)

Each case prints one JSON line; the serial console of each boot is kept in $MEASURE_LOGS
(default /tmp/hypersdk-guest-measure/<case>.log). Under TCG a case takes 30 s to 3 min.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.guest.boot import VMWARE_MAC, BootResult, boot, guestfish, overlay
from tests.guest.build import guest_image, guestfs_env, run

LOGS = Path(os.environ.get("MEASURE_LOGS", "/tmp/hypersdk-guest-measure"))
LINK_PATH = "/etc/systemd/network/10-ens192.link"
LINK_FILE = f"[Match]\nMACAddress={VMWARE_MAC}\n\n[Link]\nName=ens192\n"


def report(case: str, result: BootResult, **extra) -> dict:
    LOGS.mkdir(parents=True, exist_ok=True)
    (LOGS / f"{case}.log").write_text(result.console)
    renames = [line.split("] ", 1)[-1] for line in result.console.splitlines() if "renamed from" in line]
    row = {"case": case, "seconds": result.seconds, "markers": result.markers, "renames": renames,
           **extra}
    print(json.dumps(row), flush=True)
    return row


def case_a(image: Path) -> None:
    """pvscsi disk, vmxnet3 NIC, pc machine: boots, but the NIC is not ens192."""
    with overlay(image) as disk:
        report("a", boot(disk, storage="pvscsi", nic="vmxnet3", machine="pc", timeout=300))


def case_b(image: Path) -> None:
    """SATA (q35's AHCI) disk, e1000e NIC."""
    with overlay(image) as disk:
        report("b", boot(disk, storage="sata", nic="e1000e", machine="q35", timeout=300))


def case_c(image: Path) -> None:
    """virtio-blk disk: the initramfs has no virtio_blk, so it cannot find the root filesystem."""
    with overlay(image) as disk:
        result = boot(disk, storage="virtio", nic="vmxnet3", until=("gave_up", "initramfs_shell"),
                      timeout=300)
        report("c", result, tail=result.tail(12))


def case_d(image: Path) -> None:
    """a) plus a .link file naming the NIC ens192, in the root filesystem only."""
    with overlay(image) as disk, tempfile.TemporaryDirectory() as tmp:
        _add_link_file(disk, Path(tmp))
        report("d", boot(disk, storage="pvscsi", nic="vmxnet3", machine="pc", timeout=300))


def case_e(image: Path) -> None:
    """vmxnet3 in the initramfs: does the root filesystem's .link still rename the NIC?"""
    kernel = json.loads((image.parent / "build-info.json").read_text())["kernel"]
    initrd = f"/boot/initrd.img-{kernel}"
    with overlay(image) as disk, tempfile.TemporaryDirectory() as tmp:
        began = time.monotonic()
        guestfish(disk, 'command "sh -c \'echo vmxnet3 >>/etc/initramfs-tools/modules; '
                        'update-initramfs -u -k all\'"\n', timeout=900)
        rebuild_s = round(time.monotonic() - began, 1)
        listing = _lsinitramfs(disk, initrd)
        _add_link_file(disk, Path(tmp))  # after update-initramfs: the initramfs lacks it
        report("e-rootfs-link", boot(disk, storage="pvscsi", nic="vmxnet3", machine="pc", timeout=300),
               initramfs_rebuild_s=rebuild_s,
               vmxnet3_in_initramfs=any("vmxnet3" in line for line in listing),
               link_files_in_initramfs=[line for line in listing if line.endswith(".link")])
        _append_link_to_initrd(disk, Path(tmp), initrd, listing)
        report("e-initrd-cpio", boot(disk, storage="pvscsi", nic="vmxnet3", machine="pc", timeout=300),
               lsinitramfs_after_append=_try_lsinitramfs(disk, initrd))
        guestfish(disk, f"rm {LINK_PATH}\n")  # now only the initramfs names the NIC ens192
        report("e-initrd-only", boot(disk, storage="pvscsi", nic="vmxnet3", machine="pc", timeout=300))


def case_f(image: Path) -> None:
    """How long libguestfs takes to start here (TCG): guestfish -i listing /boot, virt-inspector."""
    env = guestfs_env()
    LOGS.mkdir(parents=True, exist_ok=True)
    times = {}
    for name, cmd, script in [
        ("guestfish_ls_boot", ["guestfish", "--ro", "-a", str(image), "-i"], "ls /boot\n"),
        ("virt_inspector", ["virt-inspector", "-a", str(image)], None),
    ]:
        runs = []
        for _ in range(2):
            began = time.monotonic()
            out = run(cmd, timeout=600, env=env, input=script)
            runs.append(round(time.monotonic() - began, 1))
        times[name] = runs
        (LOGS / f"f-{name}.out").write_text(out)
    print(json.dumps({"case": "f", "seconds": times}), flush=True)


def _add_link_file(disk: Path, tmp: Path) -> None:
    """Write the .link with guestfish (no update-initramfs: the initramfs does not change)."""
    (tmp / "10-ens192.link").write_text(LINK_FILE)
    guestfish(disk, f"upload {tmp / '10-ens192.link'} {LINK_PATH}\n")


def _lsinitramfs(disk: Path, initrd: str) -> list[str]:
    return guestfish(disk, f'command "lsinitramfs {initrd}"\n', readonly=True).splitlines()


def _try_lsinitramfs(disk: Path, initrd: str) -> str:
    try:
        return f"{len(_lsinitramfs(disk, initrd))} entries"
    except Exception as error:  # what a tool reading the initrd would see
        return str(error).splitlines()[-1]


def _append_link_to_initrd(disk: Path, tmp: Path, initrd: str, listing: list[str]) -> None:
    """Append an uncompressed newc cpio holding the .link where the initramfs' udev reads it.

    initramfs-tools' udev hook copies /etc/systemd/network/*.link to lib/systemd/network/ in
    the initramfs; the kernel unpacks concatenated archives in order, the later file winning."""
    directory = "usr/lib/systemd/network" if "usr/lib/systemd/network" in listing else "lib/systemd/network"
    staging = tmp / "cpio"
    (staging / directory).mkdir(parents=True)
    (staging / directory / "10-ens192.link").write_text(LINK_FILE)
    archive = subprocess.run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"], cwd=staging,
                             input=f"{directory}/10-ens192.link\n".encode(), capture_output=True,
                             timeout=60, check=True).stdout
    local = tmp / "initrd.img"
    guestfish(disk, f"download {initrd} {local}\n", readonly=True)
    with open(local, "ab") as f:
        # The kernel takes an uncompressed archive only at a 4-byte aligned offset; elsewhere it
        # says "Initramfs unpacking failed: invalid magic" and boots without it. Zeros are skipped.
        f.write(b"\0" * (-f.tell() % 4) + archive)
    guestfish(disk, f"upload {local} {initrd}\n")


CASES = {"a": case_a, "b": case_b, "c": case_c, "d": case_d, "e": case_e, "f": case_f}


def main(names: list[str]) -> None:
    image = guest_image()
    for name in names or list(CASES):
        CASES[name](image)


if __name__ == "__main__":
    main(sys.argv[1:])
