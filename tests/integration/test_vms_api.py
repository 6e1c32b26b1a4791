"""The VM Discovery API through the real daemon, against the vCenter simulator."""

import signal
import uuid
from urllib.parse import urlencode

import pytest
from pyVmomi import vim

from hypersdk.vsphere.connection import VCenterParams, thd_connect
from tests.integration.daemon import Daemon
from tests.integration.vcsim import Vcsim, create_vm, destroy_vm, wait_task

SECRET = "pa55-in-the-query"


@pytest.fixture(scope="module")
def sim():
    with Vcsim.start(password=SECRET) as s:
        yield s


@pytest.fixture(scope="module")
def si(sim):
    return thd_connect(VCenterParams.from_url(sim.info.url, "user", SECRET, insecure=True), 30)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, sim):
    password_file = tmp_path_factory.mktemp("secrets") / "vc.password"
    password_file.write_text(SECRET + "\n")
    config = {
        "pipeline": {"connect_timeout": 3},
        "vcenters": {"sim": {"url": sim.info.url, "username": "user", "password_file": str(password_file),
                             "insecure": True}},
    }
    d = Daemon(tmp_path_factory.mktemp("daemon"), config).start()
    yield d
    d.close()


def creds(sim, **changes):
    values = {"vcenter_url": sim.info.url, "username": "user", "password": SECRET, "insecure": "true"}
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def all_vms(si):
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return list(view.view)
    finally:
        view.Destroy()


def test_list_has_every_vm_with_the_documented_fields(daemon, sim, si):
    response = daemon.get("/vms/list?" + urlencode(creds(sim)))
    assert response.status_code == 200, response.text
    body = response.json()
    expected = {vm.name for vm in all_vms(si)}
    assert {vm["name"] for vm in body["vms"]} == expected and body["total"] == len(expected)
    vm = next(v for v in body["vms"] if v["name"] == "DC0_H0_VM0")
    for field in ("name", "path", "power_state", "num_cpu", "memory_mb", "storage", "guest_os", "ip_address", "uuid",
                  "storage_bytes", "template"):
        assert field in vm
    assert vm["path"] == "DC0/vm/DC0_H0_VM0" and vm["storage"] == vm["storage_bytes"]
    source = si.RetrieveContent().searchIndex.FindByInventoryPath("DC0/vm/DC0_H0_VM0")
    assert (vm["num_cpu"], vm["memory_mb"], vm["uuid"]) == (source.config.hardware.numCPU,
                                                             source.config.hardware.memoryMB, source.config.uuid)


def test_templates_are_marked(daemon, sim, si):
    name = f"template-{uuid.uuid4().hex[:6]}"
    vm = create_vm(si, name)
    vm.MarkAsTemplate()
    try:
        listed = {v["name"]: v for v in daemon.get("/vms/list?" + urlencode(creds(sim))).json()["vms"]}
        assert listed[name]["template"] is True and listed["DC0_H0_VM0"]["template"] is False
        info = daemon.get("/vms/info?" + urlencode(creds(sim, vm_path=f"DC0/vm/{name}"))).json()
        assert info["template"] is True
    finally:
        vm.MarkAsVirtualMachine(pool=si.RetrieveContent().searchIndex.FindByInventoryPath("DC0/host/DC0_C0/Resources"))
        destroy_vm(vm)


def test_list_by_folder_and_with_a_named_vcenter(daemon, sim, si):
    name = f"folder-vm-{uuid.uuid4().hex[:6]}"
    vm = create_vm(si, name, folder="migrate-me")
    try:
        body = daemon.get("/vms/list?" + urlencode({"vcenter": "sim", "folder": "migrate-me"})).json()
        assert [v["name"] for v in body["vms"]] == [name]
        assert body["vms"][0]["path"] == f"DC0/vm/migrate-me/{name}"
        older = daemon.get("/vms/list?" + urlencode(creds(sim, vcenter_url=None, server=sim.info.url, folder="migrate-me")))
        assert older.json()["total"] == 1
    finally:
        destroy_vm(vm)


def test_info_matches_what_vcenter_holds(daemon, sim, si):
    name = f"info-vm-{uuid.uuid4().hex[:6]}"
    vm = create_vm(si, name, num_cpu=4, cores_per_socket=2, memory_mb=512, firmware="efi",
                   networks=("VM Network", "DC0_DVPG0"))
    try:
        info = daemon.get("/vms/info?" + urlencode(creds(sim, vm_path=f"DC0/vm/{name}"))).json()
        assert info["uuid"] == vm.config.uuid and info["power_state"] == "poweredOff"
        assert info["hardware"] == {"num_cpu": 4, "cores_per_socket": 2, "memory_mb": 512, "num_virtual_disks": 1}
        assert info["firmware"] == "efi"
        disk = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))
        assert info["disks"][0]["file_path"] == disk.backing.fileName
        assert info["disks"][0]["capacity_kb"] == disk.capacityInKB
        nics = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]
        assert [n["mac"] for n in info["nics"]] == [n.macAddress for n in nics]
        assert [n["network"] for n in info["nics"]] == ["VM Network", "DC0_DVPG0"]
        posted = daemon.post("/vms/info", {**creds(sim, insecure=None), "insecure": True, "vm_path": f"DC0/vm/{name}"})
        assert posted.json() == info
    finally:
        destroy_vm(vm)


def test_every_vms_endpoint_takes_the_same_credentials_datacenter_included(daemon, sim, si):
    name = f"dc-vm-{uuid.uuid4().hex[:6]}"
    vm = create_vm(si, name, power_on=True)
    try:
        with_dc = creds(sim, datacenter="DC0")
        listed = daemon.get("/vms/list?" + urlencode(with_dc))
        assert listed.status_code == 200, listed.text
        info = daemon.get("/vms/info?" + urlencode({**with_dc, "vm_path": f"DC0/vm/{name}"}))
        assert info.status_code == 200, info.text
        assert info.json()["name"] == name
        body = {**creds(sim, insecure=None), "insecure": True, "datacenter": "DC0", "vm_path": f"DC0/vm/{name}"}
        for path in ("/vms/info", "/vms/remove-cdrom", "/vms/poweroff"):
            response = daemon.post(path, body)
            assert response.status_code == 200, (path, response.text)
        elsewhere = daemon.get("/vms/info?" + urlencode({**creds(sim, datacenter="DC9"), "vm_path": f"DC0/vm/{name}"}))
        assert elsewhere.status_code == 400 and "DC9" in elsewhere.json()["error"]
    finally:
        destroy_vm(vm)


def test_power_operations_change_the_vm(daemon, sim, si):
    name = f"power-vm-{uuid.uuid4().hex[:6]}"
    vm = create_vm(si, name, power_on=True, cdrom=True)
    body = {**creds(sim, insecure=None), "insecure": True, "vm_path": f"DC0/vm/{name}"}
    try:
        cdroms = daemon.post("/vms/remove-cdrom", body)
        assert cdroms.status_code == 200 and cdroms.json() == {"message": "CD-ROM devices removed", "count": 1}
        assert not [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualCdrom)]

        shutdown = daemon.post("/vms/shutdown", body)
        assert shutdown.status_code == 202 and shutdown.json() == {"message": "VM shutdown initiated"}
        assert vm.runtime.powerState == "poweredOff"  # the simulator powers off at once
        again = daemon.post("/vms/shutdown", body)
        assert again.status_code == 409

        wait_task(vm.PowerOnVM_Task())
        off = daemon.post("/vms/poweroff", body)
        assert off.status_code == 200 and off.json() == {"message": "VM powered off"}
        assert vm.runtime.powerState == "poweredOff"
        assert daemon.post("/vms/poweroff", body).status_code == 409
        assert daemon.log_contains(f"power off of DC0/vm/{name} on 127.0.0.1:{sim.info.port} asked by 127.0.0.1: done")
    finally:
        destroy_vm(vm)


def test_errors_have_their_documented_status(daemon, sim, black_hole):
    missing = daemon.get("/vms/info?" + urlencode(creds(sim, vm_path="DC0/vm/nope")))
    assert missing.status_code == 404 and "DC0/vm/nope" in missing.json()["error"]
    wrong = daemon.get("/vms/list?" + urlencode(creds(sim, password="wrong")))
    assert wrong.status_code == 502 and wrong.json()["error"].startswith("vCenter login failed")
    refused = daemon.get("/vms/list?" + urlencode(creds(sim, vcenter_url="127.0.0.1:1")))
    assert refused.status_code == 504
    silent = daemon.get("/vms/list?" + urlencode(creds(sim, vcenter_url=black_hole)))
    assert silent.status_code == 504 and "did not answer" in silent.json()["error"]
    untrusted = daemon.get("/vms/list?" + urlencode(creds(sim, insecure=None)))
    assert untrusted.status_code == 502 and "TLS certificate" in untrusted.json()["error"]
    no_path = daemon.post("/vms/poweroff", creds(sim))
    assert no_path.status_code == 400 and no_path.json()["error"].startswith("vm_path: is required")
    typo = daemon.get("/vms/list?" + urlencode(creds(sim, usrname="x")))
    assert typo.status_code == 400 and typo.json()["error"] == "usrname: unknown field"
    assert daemon.post("/vms/list", {}).status_code == 405


def test_passwords_in_query_strings_reach_no_log(daemon, sim):
    daemon.get("/vms/list?" + urlencode(creds(sim)))
    daemon.get("/vms/list?" + urlencode(creds(sim, password=SECRET + "-wrong")))
    assert SECRET not in daemon.output()
    assert "/vms/list" in daemon.output()


def sessions_of(si, user="user"):
    return [s for s in si.content.sessionManager.sessionList if s.userName == user]


def test_restarts_leave_no_vcenter_session_behind(tmp_path, sim, si):
    """A vCenter that limits sessions per user must not fill up with a restarted daemon's sessions."""
    before = len(sessions_of(si))
    for round_ in range(3):
        (tmp_path / f"run{round_}").mkdir()
        d = Daemon(tmp_path / f"run{round_}", {"pipeline": {"connect_timeout": 3}}).start()
        try:
            for password in (SECRET, SECRET):  # the same account twice: one pooled session
                assert d.get("/vms/list?" + urlencode(creds(sim, password=password))).status_code == 200
            assert len(sessions_of(si)) == before + 1
            assert d.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
        finally:
            d.close()
        assert len(sessions_of(si)) == before, f"round {round_}: the stopped daemon's session is still open"
