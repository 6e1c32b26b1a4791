"""Failures of the destination in the user's words: the condition, the file, what to do, and what
follows for the job; never an errno alone."""

import errno
from collections import deque

import pytest

from hypersdk.pipeline import conditions
from hypersdk.pipeline.conversion import Target, tool_failure
from hypersdk.pipeline.disks import DiskSource
from hypersdk.pipeline.process import ProcessResult
from hypersdk.pipeline.transfer.nbd import NbdError
from hypersdk.pipeline.transfer.plan import Chunk
from hypersdk.pipeline.transfer.worker import _doing, target_failure
from hypersdk.vsphere.model import DiskInfo

MiB = 1 << 20
QCOW2 = "/var/lib/vms/web-disk1.qcow2"
DISK = DiskInfo(key=2000, label="Hard disk 1", capacity_bytes=256 * MiB, file_name="[LocalDS_0] web/web.vmdk",
                datastore="LocalDS_0", controller_type="scsi", controller_bus=0, unit_number=0, thin=True)
SOURCE = DiskSource(DISK, "LocalDS_0", "web/web.vmdk", "vmdk", size=256 * MiB)


def failed(*stderr: str, code: int = 1) -> ProcessResult:
    return ProcessResult(exit_code=code, signal=None, stderr_tail=stderr)


@pytest.mark.parametrize("error", [
    NbdError(errno.ENOSPC, "nbd_pwrite: write: command failed: No space left on device"),  # libnbd, qcow2
    OSError(errno.ENOSPC, "No space left on device"),  # pwrite into a raw file
    NbdError(errno.EIO, "nbd_pwrite: write: command failed: No space left on device"),  # no errno: EIO, its text
])
def test_a_full_destination_is_named_with_its_file_its_range_and_that_the_copy_resumes(error):
    said = target_failure(error, _doing("writing", QCOW2, Chunk(16, 128 * MiB, 8 * MiB)), conditions.RESUME)
    expected = ("no space left on the destination's file system (writing /var/lib/vms/web-disk1.qcow2, bytes"
                " 134217728-142606335): free space there, then resume the job: the chunks copied so far are kept")
    assert said == expected


def test_each_condition_has_its_words_and_remedy():
    read_only = target_failure(OSError(errno.EROFS, "Read-only file system"), f"opening {QCOW2}")
    assert read_only == ("the destination's file system is read-only (opening /var/lib/vms/web-disk1.qcow2): make it"
                         " writable, or choose another output_dir or storage pool")
    denied = target_failure(PermissionError(errno.EACCES, "Permission denied"), f"opening {QCOW2}", "then resume")
    assert denied == ("permission denied (opening /var/lib/vms/web-disk1.qcow2): give the daemon's user access to"
                      " it, then resume")
    quota = target_failure(OSError(errno.EDQUOT, "Disk quota exceeded"), f"syncing {QCOW2}")
    assert quota.startswith("the disk quota on the destination's file system is used up (syncing ")


def test_a_failure_of_no_known_condition_keeps_what_libnbd_said_with_the_file():
    gone = NbdError(errno.ECONNRESET, "nbd_pwrite: recv: Connection reset by peer")
    assert target_failure(gone, _doing("writing", QCOW2, Chunk(0, 0, 8 * MiB)), conditions.RESUME) == (
        "writing /var/lib/vms/web-disk1.qcow2, bytes 0-8388607: nbd_pwrite: recv: Connection reset by peer")


def test_qemu_img_writing_into_a_full_file_system_names_the_destination_and_says_to_submit_again():
    result = failed("    (50.00/100%)", "qemu-img: error while writing at byte 6291456: No space left on device")
    assert tool_failure(result, "qemu-img", "writing", SOURCE, Target(QCOW2, "qcow2"), deque()) == (
        "no space left on the destination's file system (qemu-img writing /var/lib/vms/web-disk1.qcow2): free"
        " space there, then submit the job again")


def test_qemu_img_that_cannot_create_the_destination_names_the_condition():
    result = failed(f"qemu-img: {QCOW2}: Could not create '{QCOW2}': Read-only file system")
    assert tool_failure(result, "qemu-img", "writing", SOURCE, Target(QCOW2, "qcow2"), deque()).startswith(
        "the destination's file system is read-only (qemu-img writing /var/lib/vms/web-disk1.qcow2): ")


def test_a_read_failure_is_the_sources_with_what_nbdkit_said_not_the_destinations():
    result = failed("qemu-img: error while reading at byte 0: Input/output error")
    nbdkit = deque(["pread: curl_easy_perform: Timeout was reached: Operation timed out after 60000 ms"])
    assert tool_failure(result, "qemu-img", "writing", SOURCE, Target(QCOW2, "qcow2"), nbdkit) == (
        "qemu-img could not read Hard disk 1 (LocalDS_0 web/web.vmdk) from the datastore: nbdkit: pread:"
        " curl_easy_perform: Timeout was reached: Operation timed out after 60000 ms (qemu-img: error while reading"
        " at byte 0: Input/output error)")


def test_a_failure_naming_no_condition_is_said_as_the_tool_said_it():
    result = failed("qemu-img: Unknown protocol 'nbd+tls'")
    assert tool_failure(result, "qemu-img", "writing", SOURCE, Target(QCOW2, "qcow2"), deque()) == (
        "qemu-img exited 1: qemu-img: Unknown protocol 'nbd+tls'")
    assert conditions.in_tool_output("qemu-img: Unknown protocol 'nbd+tls'", "qemu-img writing x") is None


def test_the_last_line_naming_a_condition_decides():
    assert conditions.found_in(["Permission denied", "No space left on device"]).code == errno.ENOSPC
    assert conditions.found_in(["all fine"]) is None
    assert conditions.of_errno(None) is None and conditions.of_errno(errno.ENOSPC).code == errno.ENOSPC
