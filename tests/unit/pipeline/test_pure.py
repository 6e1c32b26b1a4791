import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from hypersdk.jobs.model import Progress
from hypersdk.jobs.progress import ProgressReporter
from hypersdk.pipeline import commands
from hypersdk.pipeline.conversion import TransferProgress, transfer_range
from hypersdk.pipeline.destination import disk_name, is_local_uri
from hypersdk.pipeline.disks import UnsupportedDisk, resolve_source
from hypersdk.pipeline.progress import RateMeter, qemu_img_percent, virt_v2v_event
from hypersdk.vsphere.model import DiskInfo

DISK = DiskInfo(key=2000, label="Hard disk 1", capacity_bytes=256 * 2**20, file_name="[LocalDS_0] web/web.vmdk",
                datastore="LocalDS_0", controller_type="scsi", controller_bus=0, unit_number=0, thin=True)

FLAT_DESCRIPTOR = b"""# Disk DescriptorFile
version=1
CID=f996a4b8
parentCID=ffffffff
createType="vmfs"

# Extent description
RW 524288 VMFS "web-flat.vmdk" 0
"""


def test_qemu_img_progress_lines():
    assert qemu_img_percent("    (45.12/100%)") == 45.12
    assert qemu_img_percent("    (100.00/100%)") == 100.0
    assert qemu_img_percent("qemu-img: error") is None
    assert virt_v2v_event('{"message": "Opening the source", "type": "message"}')["type"] == "message"
    assert virt_v2v_event("[   1.0] Opening the source") is None


def test_rate_and_eta_follow_a_steady_transfer():
    meter = RateMeter(window_seconds=5)
    for second in range(10):
        meter.add(float(second), second * 100)
    assert meter.rate() == pytest.approx(100)
    assert meter.eta(1000) == pytest.approx(10)
    assert RateMeter().eta(100) is None
    assert meter.eta(0) == 0


def test_flat_descriptor_streams_its_extent_as_raw():
    source = resolve_source(DISK, FLAT_DESCRIPTOR)
    assert (source.datastore, source.path, source.format, source.size) == ("LocalDS_0", "web/web-flat.vmdk", "raw", 256 * 2**20)


def test_sparse_vmdk_is_read_as_vmdk():
    source = resolve_source(DISK, b"KDMV" + b"\0" * 508)
    assert (source.path, source.format) == ("web/web.vmdk", "vmdk")


@pytest.mark.parametrize(
    "head, message",
    [
        (FLAT_DESCRIPTOR.replace(b"ffffffff", b"1234abcd"), "snapshot delta disk"),
        (FLAT_DESCRIPTOR + b'RW 10 VMFS "web-2-flat.vmdk" 0\n', r"only flat \(thick or thin VMFS\) and sparse VMDKs"),
        (b"\x00\x01garbage", "neither a VMDK descriptor nor a sparse VMDK"),
    ],
)
def test_unsupported_layouts_are_refused_clearly(head, message):
    with pytest.raises(UnsupportedDisk, match=message):
        resolve_source(DISK, head)


def test_nbdkit_argv_keeps_the_cookie_off_the_command_line():
    source = commands.CurlSource(url="https://vc/folder/a%20b/x-flat.vmdk?dcPath=DC0&dsName=ds", cookie_file="/w/cookie",
                                 sslverify=False, offset=512, size=1024)
    argv = commands.nbdkit_curl(source, "/tmp/s/nbd.sock", "/tmp/s/pid")
    assert argv[:4] == ["nbdkit", "--exit-with-parent", "--foreground", "--readonly"]
    assert argv[argv.index("-U") + 1] == "/tmp/s/nbd.sock" and argv[argv.index("-P") + 1] == "/tmp/s/pid"
    assert "cookie=+/w/cookie" in argv and "sslverify=false" in argv
    assert "--filter=retry" in argv and "--filter=offset" in argv and "offset=512" in argv and "range=1024" in argv
    assert not any("Cookie" in arg or "vmware_soap_session" in arg for arg in argv)


def test_vddk_argv_takes_the_password_from_a_file():
    source = commands.VddkSource(libdir="/opt/vddk", server="vc.example.com", port=443, user="admin@vsphere.local",
                                 password_file="/w/password", thumbprint="AA:BB", vm_moref="vm-42",
                                 file="[datastore1] web/web.vmdk")
    argv = commands.nbdkit_vddk(source, "/s/nbd.sock", "/s/pid")
    assert argv[argv.index("--filter=retry") + 1] == "vddk"
    for expected in ("libdir=/opt/vddk", "server=vc.example.com", "password=+/w/password", "thumbprint=AA:BB",
                     "vm=moref=vm-42", "file=[datastore1] web/web.vmdk", "transports=nbdssl:nbd"):
        assert expected in argv


def test_sha1_fingerprint_is_vddk_form():
    from hypersdk.pipeline.readers import sha1_fingerprint

    assert sha1_fingerprint(b"abc") == "A9:99:3E:36:47:06:81:6A:BA:3E:25:71:78:50:C2:6C:9C:D0:D8:9D"  # FIPS 180 vector


def test_convert_into_an_existing_volume_skips_creation():
    argv = commands.qemu_img_convert("nbd+unix:///?socket=/s", "vmdk", "/pool/v.qcow2", "qcow2", target_exists=True)
    assert "-n" in argv and "--target-is-zero" in argv and argv[-2:] == ["nbd+unix:///?socket=/s", "/pool/v.qcow2"]


def test_local_and_remote_libvirt_uris():
    assert is_local_uri("qemu:///system")
    assert not is_local_uri("qemu+ssh://root@kvm1/system")
    assert not is_local_uri("test:///default")
    assert not is_local_uri("qemu+unix:///system")
    assert disk_name("web", 1, "raw") == "web-disk2.img"


def test_transfer_progress_spans_disks_by_size():
    clock = Clock()
    updates = []
    reporter = ProgressReporter(Progress(stage="conversion"), clock.seconds, lambda p, note: updates.append(p))
    progress = TransferProgress(reporter, [100, 300], clock.seconds, (0.0, 100.0))
    progress.start_disk(0)
    clock.advance(1)
    progress.disk_percent(50)
    assert (updates[-1].disk_current_bytes, updates[-1].disk_total_bytes) == (50, 100)
    clock.advance(1)
    progress.start_disk(1)
    clock.advance(1)
    progress.disk_percent(100)
    last = updates[-1]
    assert (last.current_bytes, last.total_bytes, last.disk_index, last.disk_count) == (400, 400, 1, 2)
    assert (last.disk_current_bytes, last.disk_total_bytes) == (300, 300)
    assert last.percent_complete == 100.0 and last.eta_seconds == 0
    assert [u.current_bytes for u in updates] == sorted(u.current_bytes for u in updates)


@given(st.booleans())
def test_copy_and_verification_shares_never_overlap(verify):
    copy, check = transfer_range(verify)
    assert 0 < copy[0] < copy[1] <= 98
    if check:
        assert copy[1] <= check[0] < check[1] <= 98


def test_tools_name_what_is_missing(tmp_path):
    from hypersdk.pipeline.tools import Tools

    everything = Tools(None, which=lambda name: f"/usr/bin/{name}", plugin=lambda name: f"/p/{name}.so")
    assert everything.method_problem("https") is None
    assert everything.method_problem("virt-v2v") is None
    assert everything.method_problem("vddk") == "vddk.libdir is not set in the daemon's configuration"
    assert Tools(str(tmp_path), which=lambda n: "/x", plugin=lambda n: "/p").method_problem("vddk") == (
        f"VMware's VDDK library is not in {tmp_path} (lib64/libvixDiskLib.so missing)")
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64" / "libvixDiskLib.so.8").touch()
    assert Tools(str(tmp_path), which=lambda n: "/x", plugin=lambda n: "/p").method_problem("vddk") is None
    no_v2v = Tools(None, which=lambda name: None if name == "virt-v2v-in-place" else "/x", plugin=lambda n: "/p")
    assert no_v2v.method_problem("virt-v2v").startswith("virt-v2v-in-place is not installed on the conversion host")
    assert no_v2v.method_problem("https") is None
    no_qemu = Tools(None, which=lambda name: None if name == "qemu-img" else "/x", plugin=lambda n: "/p")
    assert no_qemu.method_problem("https") == "qemu-img not installed on the conversion host"
    no_vddk = Tools("/opt/vddk", which=lambda n: "/x", plugin=lambda name: None if name == "vddk" else "/p")
    assert no_vddk.method_problem("vddk").startswith("nbdkit's vddk plugin is not installed")


def test_virt_v2v_messages_become_progress_and_the_error_is_kept():
    from hypersdk.pipeline.guest import V2vMessages

    clock = Clock()
    updates = []
    reporter = ProgressReporter(Progress(stage="conversion"), clock.seconds, lambda p, note: updates.append(p))
    messages = V2vMessages(reporter)
    messages.line("stdout", '{ "message": "Inspecting the source", "timestamp": "2026-11-30T11:32:56Z", "type": "message" }')
    messages.line("stdout", "[  29.9] Inspecting the source")
    messages.line("stdout", '{ "message": "inspection could not detect the source guest.\\n\\nNo root device found.", '
                            '"timestamp": "2026-11-30T11:32:57Z", "type": "error" }')
    assert updates[-1].message == "virt-v2v: Inspecting the source"
    assert messages.error == "inspection could not detect the source guest. No root device found."


def test_virt_v2v_in_place_argv_converts_the_disks_the_xml_names_with_machine_readable_messages():
    argv = commands.virt_v2v_in_place("/w/source.xml")
    assert argv[:2] == ["virt-v2v-in-place", "--machine-readable"]
    assert argv[argv.index("-i") + 1:argv.index("-i") + 3] == ["libvirtxml", "/w/source.xml"]
    assert "-o" not in argv and "-os" not in argv  # no output: the disks are changed where they are
