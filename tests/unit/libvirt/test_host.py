"""The blocking libvirt layer against libvirt's in-process ``test:///default``
driver, and the async facade with a hand-driven thread pool and a Clock.

test:///default keeps one shared state per process while at least one
connection is open, and resets it when the last one closes: the ``conn``
fixture holds a connection for the whole test. Its storage driver has no
virStorageVolUpload, so the upload loop is tested with a fake connection that
runs libvirt's own ``sendAll``/``sparseSendAll``.
"""

import os

import libvirt
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, ensureDeferred
from twisted.internet.task import Clock

from hypersdk import errors
from hypersdk.cancel import CancelToken
from hypersdk.libvirt import host
from hypersdk.libvirt.domain_xml import (
    DomainDisk,
    build_domain_xml,
    on_buses,
    map_network,
    parse_domain_summary,
    safe_domain_name,
)
from hypersdk.libvirt.host import LibvirtHost, PoolInfo
from tests.helpers import result_of
from tests.unit.libvirt.test_domain_xml import VM_UUID, make_vm, nic

URI = "test:///default"
POOL = "default-pool"  # the test driver's built-in pool


@pytest.fixture
def conn():
    c = host.thd_open(URI)
    yield c
    c.close()


def domain_xml(name="web-01", **vm_changes):
    return build_domain_xml(
        make_vm(**vm_changes),
        name=name,
        disks=[DomainDisk.file("/images/web-01.qcow2", "qcow2", "vda")],
        network_mapping={"*": "br0"},
    )


# -- opening ---------------------------------------------------------------------


def test_open_missing_socket_is_unreachable_naming_the_uri():
    uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    with pytest.raises(errors.UpstreamUnreachable) as info:
        host.thd_open(uri)
    assert uri in str(info.value)
    assert info.value.status == 504


def test_open_unknown_driver_is_an_error_naming_the_uri():
    # 502 when no driver answers; 504 when a stale libvirtd socket is found instead
    with pytest.raises((errors.UpstreamError, errors.UpstreamUnreachable), match="nosuchdriver:///x"):
        host.thd_open("nosuchdriver:///x")


# -- domains ---------------------------------------------------------------------


def test_define_reads_back_as_generated_then_undefine_removes_it(conn):
    xml = domain_xml()
    assert not host.thd_domain_exists(conn, "web-01")
    assert host.thd_define_domain(conn, xml) == "web-01"
    assert host.thd_domain_exists(conn, "web-01")
    back = parse_domain_summary(host.thd_domain_xml(conn, "web-01"))
    ours = parse_domain_summary(xml)
    for key in ("uuid", "vcpus", "topology", "memory_kib", "firmware", "interfaces", "disks", "source"):
        assert back[key] == ours[key], key
    assert host.thd_undefine_domain(conn, "web-01") is True
    assert not host.thd_domain_exists(conn, "web-01")


def test_define_validates_against_libvirt_schema(conn):
    bad = domain_xml().replace("<devices>", "<devices><bogus/>")
    with pytest.raises(errors.UpstreamError, match="test:///default.*web-01"):
        host.thd_define_domain(conn, bad)


printable = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(
    vm_name=st.text(max_size=60),
    path=st.text(max_size=60),
    network=st.text(min_size=1, max_size=20),
    firmware=st.sampled_from([("bios", False), ("efi", False), ("efi", True)]),
    domain_type=st.sampled_from(["kvm", "qemu"]),
    disk_path=printable.map(lambda s: "/images/" + s),
    volume=printable,
    target=st.one_of(
        st.from_regex(r"[A-Za-z0-9_.:-]{1,15}", fullmatch=True),
        printable.map(lambda s: "network:" + s),
    ),
    buses=st.lists(st.sampled_from([("virtio", None), ("scsi", "vmpvscsi"), ("sata", None), ("ide", None),
                                    ("scsi", "lsilogic"), ("scsi", "lsisas1068")]), min_size=2, max_size=2),
    machine=st.sampled_from(["q35", "pc"]),
    nic_model=st.sampled_from(["virtio", "vmxnet3", "e1000", "e1000e", "pcnet"]),
)
def test_any_generated_xml_passes_libvirt_schema_validation(
    vm_name, path, network, firmware, domain_type, disk_path, volume, target, buses, machine, nic_model
):
    """Whatever DomainDisk and map_network accept, libvirt's RNG schema accepts too
    (VIR_DOMAIN_DEFINE_VALIDATE validates in process)."""
    try:
        disks = on_buses([DomainDisk.file(disk_path, "qcow2", "vda"), DomainDisk.pool_volume("p", volume, "raw", "vdb")],
                         buses)
        map_network({"*": target}, network)
    except (ValueError, errors.InvalidField):
        assume(False)
    vm = make_vm(name=vm_name, path=path, firmware=firmware[0], secure_boot=firmware[1], nics=(nic(1, network),))
    xml = build_domain_xml(
        vm,
        name=safe_domain_name(vm_name),
        disks=disks,
        network_mapping={"*": target},
        domain_type=domain_type,
        machine=machine,
        nic_models=[nic_model],
    )
    c = host.thd_open(URI)
    try:
        name = host.thd_define_domain(c, xml)
        assert host.thd_undefine_domain(c, name)
    finally:
        c.close()


def test_define_refuses_to_replace_an_existing_domain(conn):
    host.thd_define_domain(conn, domain_xml())
    other = domain_xml(uuid="11111111-2222-3333-4444-555555555555", memory_mb=512)
    with pytest.raises(errors.Conflict, match="'web-01' already exists"):
        host.thd_define_domain(conn, other)
    # the first definition is untouched (libvirt alone would have replaced it)
    assert parse_domain_summary(host.thd_domain_xml(conn, "web-01"))["memory_kib"] == 4096 * 1024


def test_define_refuses_a_uuid_already_in_use(conn):
    host.thd_define_domain(conn, domain_xml())
    with pytest.raises(errors.Conflict, match=VM_UUID):
        host.thd_define_domain(conn, domain_xml(name="web-01-copy"))


def test_undefine_destroys_a_running_domain_first(conn):
    host.thd_define_domain(conn, domain_xml())
    host.thd_start_domain(conn, "web-01")
    assert conn.lookupByName("web-01").isActive()
    assert host.thd_undefine_domain(conn, "web-01") is True
    assert not host.thd_domain_exists(conn, "web-01")


def test_undefine_unknown_domain_is_not_an_error(conn):
    assert host.thd_undefine_domain(conn, "nope") is False


def test_start_unknown_domain_is_not_found(conn):
    with pytest.raises(errors.NotFound, match="test:///default.*'nope'"):
        host.thd_start_domain(conn, "nope")


# -- pools and volumes --------------------------------------------------------------


def test_pool_info(conn):
    info = host.thd_pool_info(conn, POOL)
    assert info == PoolInfo(
        name=POOL, path="/default-pool", capacity=info.capacity,
        allocation=info.allocation, available=info.available, active=True,
    )
    assert info.capacity >= info.available > 0


def test_unknown_pool_is_not_found_naming_it(conn):
    with pytest.raises(errors.NotFound) as e:
        host.thd_pool_info(conn, "no-such-pool")
    assert "no-such-pool" in str(e.value) and URI in str(e.value)


def test_create_and_delete_volume(conn):
    path = host.thd_create_volume(conn, POOL, "web-01-disk1.qcow2", 1 << 30, "qcow2")
    assert path == "/default-pool/web-01-disk1.qcow2"
    vol = conn.storagePoolLookupByName(POOL).storageVolLookupByName("web-01-disk1.qcow2")
    assert vol.info()[1] == 1 << 30
    with pytest.raises(errors.Conflict, match="web-01-disk1.qcow2"):
        host.thd_create_volume(conn, POOL, "web-01-disk1.qcow2", 1 << 30, "qcow2")
    assert host.thd_delete_volume(conn, POOL, "web-01-disk1.qcow2") is True
    assert host.thd_delete_volume(conn, POOL, "web-01-disk1.qcow2") is False


def test_test_driver_cannot_upload(conn, tmp_path):
    """A quirk worth knowing: uploads are only testable against a real libvirtd."""
    host.thd_create_volume(conn, POOL, "v", 1 << 20, "raw")
    (tmp_path / "f").write_bytes(b"x" * 1000)
    with pytest.raises(errors.UpstreamError, match="not supported"):
        host.thd_upload_volume(conn, POOL, "v", str(tmp_path / "f"), CancelToken())


# -- upload loop, with libvirt's own sendAll/sparseSendAll over a fake stream ----------------


class FakeStream:
    sendAll = libvirt.virStream.sendAll
    sparseSendAll = libvirt.virStream.sparseSendAll

    def __init__(self, on_send=None):
        self.image = bytearray()
        self.offset = 0
        self.data_bytes = 0
        self.hole_bytes = 0
        self.finished = self.aborted = False
        self.on_send = on_send

    def send(self, data):
        self.image[self.offset:self.offset + len(data)] = data
        self.offset += len(data)
        self.data_bytes += len(data)
        if self.on_send:
            self.on_send(self)
        return len(data)

    def sendHole(self, length, flags=0):
        self.offset += length
        self.hole_bytes += length
        if len(self.image) < self.offset:
            self.image.extend(bytes(self.offset - len(self.image)))
        return 0

    def finish(self):
        self.finished = True

    def abort(self):
        self.aborted = True


class FakeVolume:
    def __init__(self):
        self.uploads = []

    def upload(self, stream, offset, length, flags=0):
        self.uploads.append((offset, length, flags))
        return 0


class FakeConn:
    """The slice of virConnect that thd_upload_volume uses."""

    def __init__(self, stream=None):
        self.stream = stream or FakeStream()
        self.volume = FakeVolume()
        self.closed = False

    def getURI(self):
        return "qemu+ssh://kvm1/system"

    def storagePoolLookupByName(self, name):
        return self

    def storageVolLookupByName(self, name):
        return self.volume

    def newStream(self, flags=0):
        return self.stream

    def close(self):
        self.closed = True


def sparse_file(path, size, extents):
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in extents:
            f.seek(offset)
            f.write(data)
    return str(path)


def fs_reports_holes(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_HOLE) < os.fstat(fd).st_size
    finally:
        os.close(fd)


MiB = 1 << 20


def test_sparse_upload_sends_holes_as_holes(tmp_path):
    path = sparse_file(tmp_path / "disk.raw", 8 * MiB, [(4 * MiB, b"\xab" * MiB)])
    conn = FakeConn()
    progress = []
    size = host.thd_upload_volume(conn, "p", "v", path, CancelToken(), lambda d, t: progress.append((d, t)))
    assert size == 8 * MiB
    assert conn.stream.image == open(path, "rb").read()
    assert conn.stream.finished and not conn.stream.aborted
    assert conn.volume.uploads == [(0, 8 * MiB, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)]
    assert progress[-1] == (8 * MiB, 8 * MiB)
    if fs_reports_holes(path):
        assert conn.stream.data_bytes < 2 * MiB
        assert conn.stream.hole_bytes >= 6 * MiB


def test_dense_upload_sends_every_byte(tmp_path):
    path = sparse_file(tmp_path / "disk.raw", 3 * MiB, [(MiB, b"\x01" * 10)])
    conn = FakeConn()
    host.thd_upload_volume(conn, "p", "v", path, CancelToken(), sparse=False)
    assert conn.stream.image == open(path, "rb").read()
    assert conn.stream.data_bytes == 3 * MiB and conn.stream.hole_bytes == 0
    assert conn.volume.uploads == [(0, 3 * MiB, 0)]


@pytest.mark.parametrize("sparse", [True, False])
def test_cancel_between_chunks_aborts_the_stream(tmp_path, sparse):
    path = sparse_file(tmp_path / "disk.raw", 4 * MiB, [(0, os.urandom(4 * MiB))])
    token = CancelToken()
    conn = FakeConn(FakeStream(on_send=lambda s: token.cancel()))
    with pytest.raises(CancelledError):
        host.thd_upload_volume(conn, "p", "v", path, token, sparse=sparse)
    assert conn.stream.aborted and not conn.stream.finished
    assert conn.stream.data_bytes < 4 * MiB


def test_upload_of_empty_file_finishes(tmp_path):
    path = sparse_file(tmp_path / "empty", 0, [])
    conn = FakeConn()
    assert host.thd_upload_volume(conn, "p", "v", path, CancelToken()) == 0
    assert conn.stream.finished and conn.stream.image == b""


@pytest.mark.parametrize(
    "size, extents, expected",
    [
        (2 * MiB, [(0, b"x" * (2 * MiB))], (True, 2 * MiB)),
        (0, [], (True, 0)),
    ],
)
def test_section_of_dense_and_empty_files(tmp_path, size, extents, expected):
    fd = os.open(sparse_file(tmp_path / "f", size, extents), os.O_RDONLY)
    try:
        assert host._section(None, fd) == expected
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # offset untouched
    finally:
        os.close(fd)


def test_section_of_leading_and_trailing_holes(tmp_path):
    path = sparse_file(tmp_path / "f", 8 * MiB, [(4 * MiB, b"y" * MiB)])
    if not fs_reports_holes(path):
        pytest.skip("this filesystem does not report holes")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert host._section(None, fd) == (False, 4 * MiB)
        os.lseek(fd, 4 * MiB, os.SEEK_SET)
        assert host._section(None, fd) == (True, MiB)
        os.lseek(fd, 5 * MiB, os.SEEK_SET)
        assert host._section(None, fd) == (False, 3 * MiB)
    finally:
        os.close(fd)


# -- the async facade ------------------------------------------------------------------


class ManualPool:
    """A ThreadPool stand-in: queued work runs when the test says so."""

    def __init__(self):
        self.queue = []

    def callInThreadWithCallback(self, on_result, func, *args, **kwargs):
        self.queue.append((on_result, func, args, kwargs))

    def run_all(self):
        while self.queue:
            on_result, func, args, kwargs = self.queue.pop(0)
            try:
                result = func(*args, **kwargs)
            except BaseException:
                from twisted.python.failure import Failure

                on_result(False, Failure())
            else:
                on_result(True, result)


class ThreadlessReactor(Clock):
    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


def make_host(uri=URI, opener=host.thd_open, timeout=30.0):
    reactor, pool = ThreadlessReactor(), ManualPool()
    return LibvirtHost(uri, reactor, pool, timeout=timeout, opener=opener), reactor, pool


def test_facade_runs_calls_in_the_pool(conn):
    h, reactor, pool = make_host()
    d = ensureDeferred(h.define_domain(domain_xml()))
    assert not d.called and len(pool.queue) == 1  # nothing ran on the "reactor"
    pool.run_all()
    assert result_of(d) == "web-01"
    d = ensureDeferred(h.domain_exists("web-01"))
    pool.run_all()
    assert result_of(d) is True
    d = ensureDeferred(h.undefine_domain("web-01"))
    pool.run_all()
    assert result_of(d) is True


def test_facade_maps_errors(conn):
    h, reactor, pool = make_host()
    d = ensureDeferred(h.pool_info("no-such-pool"))
    pool.run_all()
    with pytest.raises(errors.NotFound, match="no-such-pool"):
        result_of(d)


def test_facade_call_that_does_not_finish_times_out_naming_the_uri(conn):
    h, reactor, pool = make_host(timeout=30)
    d = ensureDeferred(h.domain_exists("web-01"))
    reactor.advance(29)
    assert not d.called
    reactor.advance(1)
    with pytest.raises(errors.UpstreamTimeout, match="test:///default.*30 s"):
        result_of(d)
    pool.run_all()  # the late thread result is dropped quietly


def test_facade_upload_reports_progress_and_size(tmp_path):
    path = sparse_file(tmp_path / "d", 2 * MiB, [(0, b"z" * MiB)])
    fake = FakeConn()
    h, reactor, pool = make_host(uri="qemu+ssh://kvm1/system", opener=lambda uri: fake)
    progress = []
    d = ensureDeferred(h.upload_volume("p", "v", path, lambda done, total: progress.append((done, total))))
    pool.run_all()
    assert result_of(d) == 2 * MiB
    assert progress[-1] == (2 * MiB, 2 * MiB)
    assert fake.closed and fake.stream.image == open(path, "rb").read()
    assert not reactor.getDelayedCalls()  # the stall timer is gone


def test_cancelling_an_upload_stops_the_thread_before_it_returns(tmp_path):
    path = sparse_file(tmp_path / "d", 2 * MiB, [(0, b"z" * (2 * MiB))])
    fake = FakeConn()
    h, reactor, pool = make_host(opener=lambda uri: fake)
    d = ensureDeferred(h.upload_volume("p", "v", path))
    outcome = []
    d.cancel()
    d.addBoth(lambda r: outcome.append(r) or r)
    assert outcome == []  # waits for the thread to stop
    pool.run_all()  # the thread sees the token at its first chunk
    with pytest.raises(CancelledError):
        result_of(d)
    assert fake.stream.aborted and fake.stream.data_bytes == 0
    assert not reactor.getDelayedCalls()


def test_upload_without_progress_for_the_timeout_fails_with_upstream_timeout(tmp_path):
    path = sparse_file(tmp_path / "d", MiB, [(0, b"z" * MiB)])
    fake = FakeConn()
    h, reactor, pool = make_host(uri="qemu+ssh://kvm1/system", opener=lambda uri: fake, timeout=60)
    d = ensureDeferred(h.upload_volume("p", "v", path))
    reactor.advance(60)
    pool.run_all()
    with pytest.raises(errors.UpstreamTimeout, match="qemu\\+ssh://kvm1/system.*'v'"):
        result_of(d)
    assert fake.stream.aborted


def test_upload_errors_reach_the_caller(tmp_path, conn):
    h, reactor, pool = make_host()
    d = ensureDeferred(h.upload_volume("no-such-pool", "v", str(tmp_path)))
    pool.run_all()
    with pytest.raises(errors.NotFound, match="no-such-pool"):
        result_of(d)
