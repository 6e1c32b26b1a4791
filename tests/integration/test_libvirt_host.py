"""hypersdk.libvirt against a real libvirtd (qemu:///system) and real qemu-img.

Domains that start use type 'qemu' (TCG): nested KVM cannot run guests on
these machines. The disks are tiny and hold no OS; a started domain only has
to be running.
"""

import os
import shutil
import uuid

import attrs
import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError
from twisted.python.threadpool import ThreadPool

from hypersdk import errors
from hypersdk.cancel import CancelToken
from hypersdk.libvirt import host
from hypersdk.libvirt.domain_xml import DomainDisk, build_domain_xml, parse_domain_summary
from hypersdk.libvirt.host import LibvirtHost
from tests.integration import libvirtd
from tests.unit.libvirt.test_domain_xml import make_vm, nic

MiB = 1 << 20
PREFIX = f"hypersdk-test-{os.getpid()}"


@pytest.fixture(scope="module")
def env():
    """libvirtd running, a scratch dir pool and the br-test bridge; all removed after."""
    uri = libvirtd.ensure_libvirtd()
    bridge = libvirtd.ensure_bridge()
    conn = host.thd_open(uri)
    directory = libvirtd.scratch_dir()
    pool_name = f"{PREFIX}-pool"
    libvirtd.create_dir_pool(conn, pool_name, directory)
    yield {"uri": uri, "conn": conn, "pool": pool_name, "dir": directory, "bridge": bridge}
    for dom in conn.listAllDomains():
        if dom.name().startswith(PREFIX):
            host.thd_undefine_domain(conn, dom.name())
    pool = conn.storagePoolLookupByName(pool_name)
    for vol in pool.listAllVolumes():
        vol.delete(0)
    libvirtd.remove_pool(conn, pool_name)
    conn.close()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def libvirt_host(env):
    from twisted.internet import reactor

    threads = ThreadPool(minthreads=1, maxthreads=4, name="libvirt")
    threads.start()
    yield LibvirtHost(env["uri"], reactor, threads, timeout=60)
    threads.stop()


def source_vm(**changes):
    vm = make_vm(
        name="web 01",
        uuid=str(uuid.uuid4()),
        num_cpu=4,
        cores_per_socket=2,
        memory_mb=64,
        nics=(nic(1, "VM Network"), nic(2, "DC0_DVPG0")),
    )
    return attrs.evolve(vm, **changes)


@pytest.mark.parametrize(
    "firmware, secure_boot, domain_type",
    [("bios", False, "kvm"), ("efi", False, "kvm"), ("efi", True, "kvm"), ("bios", False, "qemu")],
)
def test_generated_xml_passes_virt_xml_validate(firmware, secure_boot, domain_type):
    if shutil.which("virt-xml-validate") is None:
        pytest.skip("virt-xml-validate missing: apt-get install libvirt-clients libxml2-utils")
    xml = build_domain_xml(
        source_vm(firmware=firmware, secure_boot=secure_boot),
        name="web_01",
        disks=[
            DomainDisk.file("/var/lib/libvirt/images/a b.qcow2", "qcow2", "vda"),
            DomainDisk.pool_volume("default", "b.raw", "raw", "vdb"),
        ],
        network_mapping={"VM Network": "br0", "*": "network:default"},
        domain_type=domain_type,
        vcenter="vcenter.example.com",
    )
    result = libvirtd.virt_xml_validate(xml)
    assert result.returncode == 0, result.stderr


@pytest_twisted.ensureDeferred
async def test_define_read_back_start_and_undefine(env, libvirt_host):
    name = f"{PREFIX}-web-01"
    path = await libvirt_host.create_volume(env["pool"], f"{name}-disk1.raw", 4 * MiB, "raw")
    vm = source_vm()
    xml = build_domain_xml(
        vm,
        name=name,
        disks=[DomainDisk.pool_volume(env["pool"], f"{name}-disk1.raw", "raw", "vda")],
        network_mapping={"VM Network": env["bridge"], "*": env["bridge"]},
        domain_type="qemu",
    )
    assert await libvirt_host.define_domain(xml) == name
    assert await libvirt_host.domain_exists(name)

    back = parse_domain_summary(await libvirt_host.domain_xml(name))
    assert back["type"] == "qemu"
    assert back["uuid"] == vm.uuid
    assert back["vcpus"] == 4
    assert back["topology"] == {"sockets": 2, "cores": 2, "threads": 1}
    assert back["memory_kib"] == 64 * 1024
    assert back["machine"].startswith("pc-q35")
    assert [(i["mac"], i["type"], i["source"], i["model"]) for i in back["interfaces"]] == [
        ("00:50:56:aa:bb:01", "bridge", env["bridge"], "virtio"),
        ("00:50:56:aa:bb:02", "bridge", env["bridge"], "virtio"),
    ]
    assert [(d["target"], d["pool"], d["volume"], d["format"]) for d in back["disks"]] == [
        ("vda", env["pool"], f"{name}-disk1.raw", "raw")
    ]
    assert back["source"]["vm-path"] == vm.path

    with pytest.raises(errors.Conflict):
        await libvirt_host.define_domain(xml)

    await libvirt_host.start_domain(name)
    dom = env["conn"].lookupByName(name)
    assert dom.isActive()
    # the running domain really is on the bridge with the source MAC
    running = parse_domain_summary(dom.XMLDesc(0))
    assert [i["mac"] for i in running["interfaces"]] == ["00:50:56:aa:bb:01", "00:50:56:aa:bb:02"]

    assert await libvirt_host.undefine_domain(name) is True
    assert not await libvirt_host.domain_exists(name)
    assert await libvirt_host.undefine_domain(name) is False
    assert os.path.exists(path)  # disks are the caller's to delete
    assert await libvirt_host.delete_volume(env["pool"], f"{name}-disk1.raw") is True


def test_efi_secure_boot_domain_defines_and_undefines_with_its_nvram(env):
    conn, name = env["conn"], f"{PREFIX}-efi"
    xml = build_domain_xml(
        source_vm(firmware="efi", secure_boot=True),
        name=name,
        disks=[],
        network_mapping={"*": "br-test"},
    )
    host.thd_define_domain(conn, xml)
    back = parse_domain_summary(host.thd_domain_xml(conn, name))
    assert (back["firmware"], back["secure_boot"]) == ("efi", True)
    assert host.thd_undefine_domain(conn, name) is True
    assert not host.thd_domain_exists(conn, name)


def test_pool_info_reports_the_pool_directory_and_space(env):
    info = host.thd_pool_info(env["conn"], env["pool"])
    assert info.path == env["dir"] and info.active
    assert info.capacity >= info.available > 0
    with pytest.raises(errors.NotFound, match="no-such-pool"):
        host.thd_pool_info(env["conn"], "no-such-pool")


@pytest_twisted.ensureDeferred
async def test_uploaded_qcow2_is_identical_to_the_source(env, libvirt_host, tmp_path):
    src = str(tmp_path / "src.qcow2")
    assert libvirtd.qemu_img("create", "-q", "-f", "qcow2", src, "32M").returncode == 0
    libvirtd.qemu_io("qcow2", src, "write -P 0xab 1M 2M", "write -P 0xcd 20M 512k")
    vol = f"{PREFIX}-upload.qcow2"
    path = await libvirt_host.create_volume(env["pool"], vol, 32 * MiB, "qcow2")
    progress = []
    size = await libvirt_host.upload_volume(env["pool"], vol, src, lambda d, t: progress.append((d, t)))
    assert size == os.path.getsize(src)
    assert progress[-1] == (size, size)
    compare = libvirtd.qemu_img("compare", "-f", "qcow2", "-F", "qcow2", src, path)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    assert "Images are identical" in compare.stdout
    # and libvirt sees a qcow2 of the right virtual size
    info = env["conn"].storagePoolLookupByName(env["pool"]).storageVolLookupByName(vol).info()
    assert info[1] == 32 * MiB
    assert await libvirt_host.delete_volume(env["pool"], vol) is True
    assert not os.path.exists(path)


def test_sparse_raw_upload_keeps_holes(env, tmp_path):
    src = str(tmp_path / "src.raw")
    assert libvirtd.qemu_img("create", "-q", "-f", "raw", src, "64M").returncode == 0
    libvirtd.qemu_io("raw", src, "write -P 0x11 8M 1M")
    conn, vol = env["conn"], f"{PREFIX}-sparse.raw"
    path = host.thd_create_volume(conn, env["pool"], vol, 64 * MiB, "raw")
    host.thd_upload_volume(conn, env["pool"], vol, src, CancelToken())
    assert libvirtd.qemu_img("compare", "-f", "raw", "-F", "raw", src, path).returncode == 0
    assert os.stat(path).st_blocks * 512 < 8 * MiB  # not 64 MiB of written zeros
    host.thd_delete_volume(conn, env["pool"], vol)


def test_cancelled_upload_aborts_and_leaves_the_volume_usable(env, tmp_path):
    src = str(tmp_path / "src.raw")
    with open(src, "wb") as f:
        f.write(os.urandom(8 * MiB))
    conn, vol = env["conn"], f"{PREFIX}-cancel.raw"
    host.thd_create_volume(conn, env["pool"], vol, 8 * MiB, "raw")
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        host.thd_upload_volume(conn, env["pool"], vol, src, token)
    assert host.thd_delete_volume(conn, env["pool"], vol) is True


def test_open_after_libvirtd_is_running_answers_quickly(env):
    conn = host.thd_open(env["uri"])
    try:
        assert conn.getURI() == env["uri"]
        assert conn.isAlive()
    finally:
        conn.close()
