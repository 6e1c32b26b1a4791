"""qemu-img, qemu-nbd and nbdkit failing for real, as the daemon runs them: each failure names the
condition, the file (or the source disk), and what to do, in the user's words."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from hypersdk.pipeline.conversion import Target, ToolFailed, convert, verify
from hypersdk.pipeline.disks import DiskSource
from hypersdk.pipeline.process import ProcessFailed, ProcessRunner
from hypersdk.pipeline.transfer.engine import TargetFile, target_spec
from hypersdk.vsphere.model import DiskInfo
from tests.integration.filesystems import fill, read_only, small_filesystem

MiB = 1 << 20
SIZE = 32 * MiB
DISK = DiskInfo(key=2000, label="Hard disk 1", capacity_bytes=SIZE, file_name="[LocalDS_0] web/web.vmdk",
                datastore="LocalDS_0", controller_type="scsi", controller_bus=0, unit_number=0, thin=True)
SOURCE = DiskSource(DISK, "LocalDS_0", "web/web-flat.vmdk", "raw", size=SIZE)


@pytest.fixture
def source_file(tmp_path) -> Path:
    """A raw disk with data all along it (nothing of it can be skipped as zeros)."""
    path = tmp_path / "source.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(path), str(SIZE)], check=True)
    subprocess.run(["qemu-io", "-f", "raw", "-c", f"write -q -P 0xab 0 {SIZE}", str(path)], check=True)
    return path


def nbdkit_file(path: Path, *, failing: bool = False):
    """Serves ``path`` as the daemon's nbdkit serves a datastore file (``failing``: every read fails)."""
    def argv(socket: str, pidfile: str) -> list[str]:
        filters = ["--filter=error"] if failing else []
        errors = ["error=EIO", "error-pread-rate=100%"] if failing else []
        return ["nbdkit", "--exit-with-parent", "--foreground", "--readonly", "-U", socket, "-P", pidfile, *filters,
                "file", str(path), *errors]
    return argv


@pytest_twisted.ensureDeferred
async def test_qemu_img_convert_into_a_full_file_system_names_it_and_says_to_submit_again(source_file):
    with small_filesystem(8 * MiB) as directory:
        target = Target(str(directory / "web-disk1.qcow2"), "qcow2")
        with pytest.raises(ToolFailed) as failed:
            await convert(ProcessRunner(reactor), nbdkit_file(source_file), SOURCE, target, lambda percent: None)
    assert failed.value.message == (f"no space left on the destination's file system (qemu-img writing {target.path}):"
                                    " free space there, then submit the job again")


@pytest_twisted.ensureDeferred
async def test_a_source_nbdkit_cannot_read_is_named_with_what_nbdkit_said(source_file, tmp_path):
    target = Target(str(tmp_path / "web-disk1.qcow2"), "qcow2")
    with pytest.raises(ToolFailed) as failed:
        await convert(ProcessRunner(reactor), nbdkit_file(source_file, failing=True), SOURCE, target,
                      lambda percent: None)
    assert re.fullmatch(r"qemu-img could not read Hard disk 1 \(LocalDS_0 web/web-flat.vmdk\) from the datastore:"
                        r" nbdkit: injecting EIO error into pread \(qemu-img: error while reading at byte \d+:"
                        r" Input/output error\)", failed.value.message), failed.value.message


@pytest_twisted.ensureDeferred
async def test_qemu_img_compare_of_an_unreadable_destination_names_it(source_file, tmp_path):
    target = Target(str(tmp_path / "missing.qcow2"), "qcow2")
    with pytest.raises(ToolFailed) as failed:
        await verify(ProcessRunner(reactor), nbdkit_file(source_file), SOURCE, target, lambda percent: None)
    assert failed.value.message == f"no such file or directory (qemu-img compare reading {target.path})"


@pytest_twisted.ensureDeferred
async def test_qemu_nbd_on_a_read_only_file_system_names_it_and_what_to_do(tmp_path):
    with small_filesystem(8 * MiB) as directory:
        image = directory / "web-disk1.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(SIZE)], check=True)
        read_only(directory)
        with pytest.raises(ProcessFailed) as failed:
            async with target_spec(ProcessRunner(reactor), TargetFile(str(image), "qcow2", True), SIZE):
                pass
    assert failed.value.message == (f"the destination's file system is read-only (qemu-nbd opening {image}): make it"
                                    " writable, or choose another output_dir or storage pool, then submit the job"
                                    " again")


@pytest_twisted.ensureDeferred
async def test_a_full_file_system_before_the_copy_is_named_by_qemu_img_too(source_file):
    with small_filesystem(8 * MiB) as directory:
        fill(directory)
        target = Target(str(directory / "web-disk1.qcow2"), "qcow2")
        with pytest.raises(ToolFailed) as failed:
            await convert(ProcessRunner(reactor), nbdkit_file(source_file), SOURCE, target, lambda percent: None)
    assert failed.value.message.startswith("no space left on the destination's file system (qemu-img writing"
                                           f" {target.path}): free space there"), failed.value.message
