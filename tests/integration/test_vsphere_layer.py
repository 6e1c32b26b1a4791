"""The blocking pyvmomi layer against govmomi's vCenter simulator.

Every test gets its own simulator (it starts in well under a second), so tests
that power VMs off or reconfigure them cannot affect each other. What the
layer reports is checked against what the simulator holds, read back with
plain pyvmomi property access.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import urllib.parse

import pytest
from pyVmomi import vim
from twisted.internet.defer import CancelledError

from hypersdk import errors
from hypersdk.cancel import CancelToken
from hypersdk.vsphere import inventory, power
from hypersdk.vsphere.connection import VCenterParams, thd_connect
from hypersdk.vsphere.datastore import (
    datastore_file_url,
    embedded_descriptor,
    parse_datastore_path,
    parse_vmdk_descriptor,
    session_cookie,
    sibling_path,
    vmdk_kind,
)
from hypersdk.vsphere.sessions import SessionCache
from tests.integration.vcsim import (
    MiB,
    Vcsim,
    attach_vmdk,
    create_vm,
    destroy_vm,
    expected_bytes,
    make_vmdk,
    wait_for,
)

pytestmark = pytest.mark.integration

VM0 = "DC0/vm/DC0_H0_VM0"
VM1 = "DC0/vm/DC0_H0_VM1"
TIMEOUT = 10.0


@pytest.fixture
def sim(tmp_path):
    with Vcsim.start(tmpdir=tmp_path / "vcsim") as s:
        yield s


def params_for(sim: Vcsim, **changes) -> VCenterParams:
    i = sim.info
    base = dict(host=i.host, port=i.port, username=i.username, password=i.password, thumbprint=i.thumbprint_sha256)
    base.update(changes)
    return VCenterParams(**base)


@pytest.fixture
def si(sim):
    return thd_connect(params_for(sim), TIMEOUT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- connecting ----------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_login_with_a_pinned_thumbprint(sim, algorithm):
    pin = getattr(sim.info, f"thumbprint_{algorithm}")
    si = thd_connect(params_for(sim, thumbprint=pin.lower().replace(":", "")), TIMEOUT)
    session = si.RetrieveContent().sessionManager.currentSession
    assert session is not None and session.userName == sim.info.username


def test_login_verifies_the_certificate_against_trusted_cas(sim):
    si = thd_connect(params_for(sim, thumbprint=None, ca_file=str(sim.ca_file())), TIMEOUT)
    assert si.RetrieveContent().sessionManager.currentSession is not None


def test_untrusted_certificate_is_a_tls_error_unless_insecure(sim):
    with pytest.raises(errors.VCenterTLSError) as e:
        thd_connect(params_for(sim, thumbprint=None), TIMEOUT)
    assert f"{sim.info.host}:{sim.info.port}" in e.value.message
    si = thd_connect(params_for(sim, thumbprint=None, insecure=True), TIMEOUT)
    assert si.RetrieveContent().sessionManager.currentSession is not None


def test_thumbprint_mismatch_is_a_tls_error_even_with_insecure(sim):
    wrong = "00" * 32
    with pytest.raises(errors.VCenterTLSError) as e:
        thd_connect(params_for(sim, thumbprint=wrong, insecure=True), TIMEOUT)
    assert "thumbprint" in e.value.message


def test_wrong_password_is_login_failed_and_never_echoed(sim):
    with pytest.raises(errors.VCenterLoginFailed) as e:
        thd_connect(params_for(sim, password="Wr0ng-Secret"), TIMEOUT)
    assert e.value.message.startswith("vCenter login failed")
    assert e.value.status == 502
    assert "Wr0ng-Secret" not in e.value.message and "Wr0ng-Secret" not in repr(e.value.args)


def test_refused_port_is_unreachable_naming_host_and_port(sim):
    port = free_port()
    with pytest.raises(errors.UpstreamUnreachable) as e:
        thd_connect(params_for(sim, port=port), TIMEOUT)
    assert f"127.0.0.1:{port}" in e.value.message
    assert e.value.status == 504


def test_unresolvable_host_is_unreachable(sim):
    with pytest.raises(errors.UpstreamUnreachable) as e:
        thd_connect(params_for(sim, host="vcenter.does-not-exist.invalid"), TIMEOUT)
    assert "vcenter.does-not-exist.invalid" in e.value.message


def test_server_that_never_answers_times_out():
    with socket.socket() as listener:  # accepts TCP connections (backlog) but never speaks
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        with pytest.raises(errors.UpstreamTimeout) as e:
            thd_connect(VCenterParams("127.0.0.1", port, "user", "pass", insecure=True), 0.5)
    assert f"127.0.0.1:{port}" in e.value.message


def test_plain_http_simulator(tmp_path):
    with Vcsim.start(http=True, tmpdir=tmp_path / "vcsim") as plain:
        i = plain.info
        params = VCenterParams.from_url(i.url, i.username, i.password, allow_http=True)
        si = thd_connect(params, TIMEOUT)
        assert inventory.thd_find_vm(si, VM0).name == "DC0_H0_VM0"


# ---- sessions ------------------------------------------------------------------------------------

def logged_in(si) -> bool:
    try:
        return si.RetrieveContent().sessionManager.currentSession is not None
    except vim.fault.NotAuthenticated:  # the simulator's answer; a real vCenter returns None
        return False


def test_session_cache_reuses_one_login_and_logs_in_again_after_logout(sim):
    cache = SessionCache(timeout=TIMEOUT)
    params = params_for(sim)
    first = cache.thd_session(params)
    assert cache.thd_session(params) is first
    first.RetrieveContent().sessionManager.Logout()
    assert not logged_in(first)

    second = cache.thd_session(params)
    assert second is not first
    assert logged_in(second)
    assert inventory.thd_find_vm(second, VM0).name == "DC0_H0_VM0"


def test_session_cache_call_survives_a_logout_between_check_and_use(sim):
    cache = SessionCache(timeout=TIMEOUT, check_interval=3600)  # no liveness check before use
    params = params_for(sim)
    cache.thd_session(params).RetrieveContent().sessionManager.Logout()
    vms = cache.thd_call(params, inventory.thd_list_vms)
    assert len(vms) == 4


def test_session_cache_keeps_accounts_apart(sim):
    cache = SessionCache(timeout=TIMEOUT)
    good = cache.thd_session(params_for(sim))
    with pytest.raises(errors.VCenterLoginFailed):
        cache.thd_session(params_for(sim, password="nope"))
    assert cache.thd_session(params_for(sim)) is good


# ---- inventory -----------------------------------------------------------------------------------

def test_find_vm_names_the_missing_path(si):
    with pytest.raises(errors.VMNotFound) as e:
        inventory.thd_find_vm(si, "DC0/vm/no-such-vm")
    assert "DC0/vm/no-such-vm" in e.value.message
    assert e.value.status == 404
    with pytest.raises(errors.VMNotFound):
        inventory.thd_find_vm(si, "DC0/vm")  # a folder, not a VM


def test_a_vm_destroyed_after_it_was_found_is_not_found(si):
    vm = create_vm(si, "short-lived")
    found = inventory.thd_find_vm(si, "DC0/vm/short-lived")
    destroy_vm(vm)
    with pytest.raises(errors.VMNotFound):
        inventory.thd_read_vm(si, found, "DC0/vm/short-lived")
    with pytest.raises(errors.VMNotFound):
        power.thd_power_off(si, found)
    with pytest.raises(errors.VMNotFound):
        power.thd_remove_cdroms(si, found)


def _expected_network(si, nic) -> str:
    backing = nic.backing
    if isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
        dc = si.RetrieveContent().rootFolder.childEntity[0]
        # (the simulator lists some portgroups twice in Datacenter.network)
        [name] = {n.name for n in dc.network if isinstance(n, vim.dvs.DistributedVirtualPortgroup)
                  and n.key == backing.port.portgroupKey}
        return name
    return backing.network.name


def test_read_vm_reports_what_the_simulator_holds(si):
    vm = inventory.thd_find_vm(si, VM0)
    info = inventory.thd_read_vm(si, vm, VM0)

    config = vm.config
    assert (info.name, info.path, info.datacenter) == ("DC0_H0_VM0", VM0, "DC0")
    assert (info.uuid, info.instance_uuid) == (config.uuid, config.instanceUuid)
    assert (info.num_cpu, info.memory_mb) == (config.hardware.numCPU, config.hardware.memoryMB)
    assert info.cores_per_socket == config.hardware.numCoresPerSocket
    assert (info.firmware, info.guest_id) == (config.firmware, config.guestId)
    assert info.power_state == vm.runtime.powerState == "poweredOn"
    assert info.tools_status == vm.guest.toolsRunningStatus
    assert info.snapshot_count == 0 and info.template is False

    devices = config.hardware.device
    real_disks = [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
    assert [(d.key, d.file_name, d.capacity_bytes) for d in info.disks] == [
        (d.key, d.backing.fileName, d.capacityInKB * 1024) for d in real_disks
    ]
    assert info.disks[0].datastore == "LocalDS_0"
    assert info.disks[0].controller_type == "scsi"  # the simulator's VMs use a pvscsi controller
    assert info.disks[0].unit_number == real_disks[0].unitNumber
    assert info.disks[0].thin == real_disks[0].backing.thinProvisioned

    real_nics = [d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    assert [(n.key, n.mac, n.network) for n in info.nics] == [
        (n.key, n.macAddress.lower(), _expected_network(si, n)) for n in real_nics
    ]
    assert info.nics[0].network == "DC0_DVPG0"  # DVS port backing resolved to the portgroup name
    assert info.nics[0].adapter_type == "e1000"
    assert [c.key for c in info.cdroms] == [d.key for d in devices if isinstance(d, vim.vm.device.VirtualCdrom)]
    assert info.storage_bytes == sum(d.capacity_bytes for d in info.disks)


def test_read_vm_of_an_efi_vm_with_two_networks_in_a_folder(si):
    vm = create_vm(si, "efi-two-nics", folder="migrate", num_cpu=2, cores_per_socket=2, memory_mb=128,
                   firmware="efi", secure_boot=True, networks=("VM Network", "DC0_DVPG0"))
    info = inventory.thd_read_vm(si, inventory.thd_find_vm(si, "DC0/vm/migrate/efi-two-nics"))
    assert info.path == "DC0/vm/migrate/efi-two-nics"
    assert (info.num_cpu, info.cores_per_socket, info.memory_mb) == (2, 2, 128)
    assert (info.firmware, info.secure_boot) == ("efi", True)
    assert info.power_state == "poweredOff"
    assert [(n.network, n.adapter_type) for n in info.nics] == [("VM Network", "vmxnet3"), ("DC0_DVPG0", "e1000e")]
    assert [n.mac for n in info.nics] == [n.macAddress.lower() for n in vm.config.hardware.device
                                          if isinstance(n, vim.vm.device.VirtualEthernetCard)]
    assert len(info.cdroms) == 1
    [disk] = info.disks
    assert (disk.controller_type, disk.controller_bus, disk.unit_number) == ("scsi", 0, 0)
    assert disk.file_name == "[LocalDS_0] efi-two-nics/efi-two-nics.vmdk"
    assert info.guest_id == "ubuntu64Guest"


def test_list_vms_returns_every_vm_with_a_findable_path(si):
    vms = inventory.thd_list_vms(si)
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    real = {vm.name: vm for vm in view.view}
    assert sorted(v.name for v in vms) == sorted(real)
    assert [v.path for v in vms] == sorted(v.path for v in vms)
    for v in vms:
        found = content.searchIndex.FindByInventoryPath(v.path)
        assert found is not None and found._moId == real[v.name]._moId
        vm = real[v.name]
        assert (v.power_state, v.num_cpu, v.memory_mb) == (
            vm.runtime.powerState, vm.config.hardware.numCPU, vm.config.hardware.memoryMB)
        assert v.uuid == vm.config.uuid
        assert v.datacenter == "DC0"
        assert v.storage_bytes == sum(d.capacityInKB * 1024 for d in vm.config.hardware.device
                                      if isinstance(d, vim.vm.device.VirtualDisk))


def test_list_vms_filters_by_folder_and_datacenter(si):
    create_vm(si, "in-folder-a", folder="prod")
    create_vm(si, "in-folder-b", folder="prod", networks=("DC0_DVPG0",))
    expected = ["DC0/vm/prod/in-folder-a", "DC0/vm/prod/in-folder-b"]
    assert [v.path for v in inventory.thd_list_vms(si, folder="DC0/vm/prod")] == expected
    assert [v.path for v in inventory.thd_list_vms(si, datacenter="DC0", folder="prod")] == expected
    assert len(inventory.thd_list_vms(si, datacenter="DC0")) == 6
    with pytest.raises(errors.NotFound):
        inventory.thd_list_vms(si, folder="DC0/vm/nothing-here")
    with pytest.raises(errors.NotFound):
        inventory.thd_list_vms(si, datacenter="DC9")


# ---- power and devices ---------------------------------------------------------------------------

def test_power_off_waits_for_the_task_and_then_conflicts(si):
    vm = inventory.thd_find_vm(si, VM0)
    power.thd_power_off(si, vm, timeout=TIMEOUT)
    assert vm.runtime.powerState == "poweredOff"
    with pytest.raises(errors.Conflict) as e:
        power.thd_power_off(si, vm, timeout=TIMEOUT)
    assert "DC0_H0_VM0" in e.value.message and e.value.status == 409


def test_shutdown_guest_powers_the_vm_off_and_conflicts_when_off(si):
    vm = inventory.thd_find_vm(si, VM1)
    power.thd_shutdown_guest(si, vm)
    power.thd_wait_powered_off(si, vm, timeout=TIMEOUT, token=CancelToken())
    assert vm.runtime.powerState == "poweredOff"
    with pytest.raises(errors.Conflict):
        power.thd_shutdown_guest(si, vm)


def test_wait_powered_off_gives_up_after_its_timeout(si):
    vm = inventory.thd_find_vm(si, VM0)
    with pytest.raises(errors.UpstreamTimeout) as e:
        power.thd_wait_powered_off(si, vm, timeout=0.3)
    assert "DC0_H0_VM0" in e.value.message


def test_wait_powered_off_stops_when_cancelled(si):
    vm = inventory.thd_find_vm(si, VM0)
    token = CancelToken()
    outcome = []

    def waiter():
        try:
            power.thd_wait_powered_off(si, vm, timeout=60, token=token)
        except BaseException as e:  # noqa: B902 - recorded for the assertion
            outcome.append(e)

    thread = threading.Thread(target=waiter)
    thread.start()
    token.cancel()
    thread.join(5)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], CancelledError)


def test_remove_cdroms_removes_them_all_and_reports_the_count(si):
    vm = create_vm(si, "with-cdrom", cdrom=True)
    assert power.thd_remove_cdroms(si, vm) == 1
    assert not [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualCdrom)]
    assert power.thd_remove_cdroms(si, vm) == 0
    vm0 = inventory.thd_find_vm(si, VM0)
    assert power.thd_remove_cdroms(si, vm0) == 1
    assert inventory.thd_read_vm(si, vm0).cdroms == ()


# ---- disks over the datastore's /folder interface ------------------------------------------------

def _get(sim: Vcsim, url: str, cookie: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=TIMEOUT, context=sim.ssl_context())
    try:
        conn.request("GET", f"{parts.path}?{parts.query}", headers={"Cookie": cookie, **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_flat_vmdk_is_downloadable_with_the_session_cookie(sim, si, tmp_path):
    size = 8 * MiB
    vmdk = make_vmdk(tmp_path / "disks", "disk1", size, "monolithicFlat")
    vm = inventory.thd_find_vm(si, VM0)
    attach_vmdk(si, vm, vmdk, sim.info.datastore_dir)

    info = inventory.thd_read_vm(si, vm)
    [disk] = info.disks
    assert disk.capacity_bytes == size
    cookie = session_cookie(si)
    assert cookie.split("=", 1)[1].strip('"') == si.RetrieveContent().sessionManager.currentSession.key

    datastore, descriptor_path = parse_datastore_path(disk.file_name)
    url = datastore_file_url("https", sim.info.host, sim.info.port, info.datacenter, datastore, descriptor_path)
    status, _headers, body = _get(sim, url, cookie)
    assert status == 200
    assert vmdk_kind(body) == "descriptor"
    descriptor = parse_vmdk_descriptor(body.decode())
    assert descriptor.is_flat and descriptor.capacity_bytes == size

    extent_path = sibling_path(descriptor_path, descriptor.extents[0].file_name)
    extent_url = datastore_file_url("https", sim.info.host, sim.info.port, info.datacenter, datastore, extent_path)
    start, length = size // 2 - 4096, 8192  # across the edge of the pattern written in the middle
    status, headers, body = _get(sim, extent_url, cookie, {"Range": f"bytes={start}-{start + length - 1}"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {start}-{start + length - 1}/{size}"
    assert body == expected_bytes(size, vmdk.writes, start, length)
    status, _headers, tail = _get(sim, extent_url, cookie, {"Range": f"bytes={size - 4096}-"})
    assert (status, tail) == (206, b"\xef" * 4096)


@pytest.mark.parametrize("subformat", ["monolithicSparse", "streamOptimized"])
def test_sparse_vmdks_are_single_files_with_an_embedded_descriptor(sim, si, tmp_path, subformat):
    size = 4 * MiB
    vmdk = make_vmdk(tmp_path / "disks", "disk1", size, subformat)
    vm = inventory.thd_find_vm(si, VM1)
    attach_vmdk(si, vm, vmdk, sim.info.datastore_dir)
    [disk] = inventory.thd_read_vm(si, vm).disks
    assert disk.capacity_bytes == size
    datastore, path = parse_datastore_path(disk.file_name)
    url = datastore_file_url("https", sim.info.host, sim.info.port, "DC0", datastore, path)
    status, _headers, head = _get(sim, url, session_cookie(si), {"Range": "bytes=0-65535"})
    assert status == 206
    assert vmdk_kind(head) == "sparse"
    descriptor = embedded_descriptor(head)
    assert descriptor.create_type == subformat
    assert descriptor.capacity_bytes == size
    assert not (sim.info.datastore_dir / path.replace(".vmdk", "-flat.vmdk")).exists()


def test_missing_datastore_file_is_404(sim, si):
    url = datastore_file_url("https", sim.info.host, sim.info.port, "DC0", "LocalDS_0", "DC0_H0_VM0/nope.vmdk")
    assert _get(sim, url, session_cookie(si))[0] == 404


# ---- the simulator process itself ----------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_simulator_stops_when_its_stdin_closes(tmp_path):
    s = Vcsim.start(tmpdir=tmp_path / "vcsim")
    s.process.stdin.close()
    assert s.process.wait(TIMEOUT) == 0
    assert not s.info.datastore_dir.exists()  # it removed its datastore directory
    s.stop()


def test_simulator_dies_with_its_parent(tmp_path):
    script = (
        "import os, sys\n"
        "from tests.integration.vcsim import Vcsim\n"
        f"s = Vcsim.start(tmpdir={str(tmp_path / 'vcsim')!r})\n"
        "print(s.info.pid, flush=True)\n"
        "os._exit(0)\n"  # no cleanup: only PDEATHSIG can stop the simulator now
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env=env, check=True).stdout
    pid = int(out.split()[0])
    wait_for(lambda: not _alive(pid), TIMEOUT, f"simulator {pid} exiting after its parent died")
