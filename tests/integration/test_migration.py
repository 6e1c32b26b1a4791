"""Real migrations: vCenter simulator → the daemon (nbdkit, qemu-img) → a real libvirtd."""

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import xml.etree.ElementTree as ET

import libvirt
import pytest
from pyVmomi import vim

from hypersdk.libvirt.domain_xml import parse_domain_summary
from tests.integration import libvirtd
from tests.integration.daemon import Daemon, wait_for
from tests.integration.vcsim import MiB, Write, attach_vmdk, create_vm, destroy_vm, make_vmdk, wait_task

POOL = f"hypersdk-it-{os.getpid()}"  # concurrent runs must not share it


@pytest.fixture(scope="module")
def libvirt_host():
    uri = libvirtd.ensure_libvirtd()
    libvirtd.ensure_bridge()
    conn = libvirt.open(uri)
    pool_dir = libvirtd.scratch_dir("hypersdk-pool-")
    libvirtd.create_dir_pool(conn, POOL, pool_dir)
    yield conn
    libvirtd.remove_pool(conn, POOL)
    conn.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, libvirt_host):
    d = Daemon(tmp_path_factory.mktemp("daemon"), {"worker_count": 2}).start()
    yield d
    d.close()


@pytest.fixture(scope="module")
def slow_daemon(tmp_path_factory, libvirt_host):
    """Transfers capped at 16 MiB/s, so that a copy lasts long enough to be watched and cancelled."""
    d = Daemon(tmp_path_factory.mktemp("slow"), {"pipeline": {"max_bytes_per_second": 16 * MiB,
                                                            "work_dir": str(tmp_path_factory.mktemp("work"))}}).start()
    yield d
    d.close()


class SourceVM:
    """A simulator VM with real VMDK disks of known content."""

    def __init__(self, si, sim, tmp: Path, disks=(("monolithicFlat", 64 * MiB),), power_on=False, **vm_options):
        self.name = f"it-{uuid.uuid4().hex[:8]}"
        self.path = f"DC0/vm/{self.name}"
        self.vm = create_vm(si, self.name, power_on=power_on, **vm_options)
        self.vmdks = []
        for index, (subformat, size) in enumerate(disks):
            if index:
                _add_disk(si, self.vm, index)
            writes = (Write(0, MiB, 0x10 + index), Write(size // 2, 3 * MiB, 0xA0 + index), Write(size - 4096, 4096, 0xEE))
            vmdk = make_vmdk(tmp / f"disk{index}", f"d{index}", size, subformat, writes)
            attach_vmdk(si, self.vm, vmdk, sim.info.datastore_dir, disk_index=index)
            self.vmdks.append(vmdk)

    def definition(self, sim, destination, **options):
        return {
            "vm_path": self.path,
            "source": {"type": "vsphere", "vcenter_url": sim.info.url, "username": "user", "password": "pass",
                       "insecure": True},
            "destination": {"type": "kvm", "libvirt_uri": "qemu:///system", "domain_type": "qemu", **destination},
            # These disks hold no guest: nothing to inspect (the seed example's test keeps the default, auto)
            "options": {"network_mapping": {"VM Network": libvirtd.BRIDGE, "*": "network:default"},
                        "device_models": "source", **options},
        }

    def macs(self):
        return [d.macAddress for d in self.vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]


def _add_disk(si, vm, index):
    dev = vim.vm.device
    controller = next(d for d in vm.config.hardware.device if isinstance(d, dev.VirtualSCSIController))
    disk = dev.VirtualDisk(
        key=-(500 + index), controllerKey=controller.key, unitNumber=index, capacityInKB=4096,
        backing=dev.VirtualDisk.FlatVer2BackingInfo(fileName=f"[LocalDS_0] {vm.name}/{vm.name}_{index}.vmdk",
                                                    diskMode="persistent", thinProvisioned=True),
    )
    change = dev.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk)
    wait_task(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[change])))


def same_content(raw: Path, image: str, fmt: str) -> bool:
    out = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", fmt, str(raw), image], capture_output=True, text=True,
                         timeout=120)
    return out.returncode == 0


def tool_processes(marker: str):
    """Live copy processes (transfer worker, qemu-nbd, nbdkit, qemu-img) whose command line mentions ``marker``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        tools = ("nbdkit", "qemu-img", "qemu-nbd", "hypersdk.pipeline.transfer.worker")
        if state != "Z" and marker in cmdline and any(tool in cmdline for tool in tools):
            found.append(cmdline)
    return found


def domain_names(conn):
    return {d.name() for d in conn.listAllDomains()}


def test_vm_becomes_a_libvirt_domain_with_identical_disks(daemon, sim, si, libvirt_host, tmp_path):
    source = SourceVM(si, sim, tmp_path, disks=(("monolithicFlat", 64 * MiB), ("monolithicSparse", 32 * MiB)),
                      num_cpu=4, cores_per_socket=2, memory_mb=256, firmware="efi")
    job_id = daemon.submit(source.definition(sim, {"storage_pool": POOL}))
    job = daemon.wait_finished(job_id)
    assert job["status"] == "completed", job["error"]
    assert job["error"] is None and job["progress"]["percent_complete"] == 100

    stages = [h["stage"] for h in job["history"] if h["status"] == "running"]
    expected = ["connecting", "discovery", "preparation", "conversion", "verification", "import", "done"]
    assert [s for s in dict.fromkeys(stages) if s != "queued"] == expected

    result = job["result"]
    assert result["domain_name"] == source.name and result["verified"] is True
    assert result["bytes_copied"] == 96 * MiB
    # vCenter gives these NICs no PCI slot, and source models do not read the guest: the job says so
    assert len(result["warnings"]) == 2 and all("has no PCI slot in vCenter" in w for w in result["warnings"])
    assert [h["message"] for h in job["history"] if h["message"].startswith("warning: ")] == [
        f"warning: {w}" for w in result["warnings"]]
    volumes = [d["volume"] for d in result["disks"]]
    assert volumes == [f"{source.name}-disk1.qcow2", f"{source.name}-disk2.qcow2"]

    pool = libvirt_host.storagePoolLookupByName(POOL)
    pool.refresh()
    for vmdk, volume in zip(source.vmdks, volumes):
        assert same_content(vmdk.raw, pool.storageVolLookupByName(volume).path(), "qcow2")

    domain = libvirt_host.lookupByName(source.name)
    summary = parse_domain_summary(domain.XMLDesc(0))
    assert summary["vcpus"] == 4 and summary["topology"] == {"sockets": 2, "cores": 2, "threads": 1}
    assert summary["memory_kib"] == 256 * 1024
    assert summary["firmware"] == "efi"
    assert [i["mac"] for i in summary["interfaces"]] == source.macs()
    assert [(i["type"], i["source"]) for i in summary["interfaces"]] == [("bridge", libvirtd.BRIDGE), ("network", "default")]
    # device_models: source: the VM's LSI Logic SAS disks and its vmxnet3 and e1000e NICs, as QEMU has them
    assert [(d["target"], d["bus"]) for d in summary["disks"]] == [("sda", "scsi"), ("sdb", "scsi")]
    controllers = ET.fromstring(domain.XMLDesc(0)).findall("devices/controller[@type='scsi']")
    assert [c.get("model") for c in controllers] == ["lsisas1068"]
    assert [i["model"] for i in summary["interfaces"]] == ["vmxnet3", "e1000e"]
    assert summary["uuid"] == source.vm.config.uuid and summary["type"] == "qemu"
    domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    for volume in volumes:
        pool.storageVolLookupByName(volume).delete(0)
    destroy_vm(source.vm)


def test_stream_optimized_disk_into_a_directory_as_raw_and_started(daemon, sim, si, libvirt_host, tmp_path):
    out = Path(libvirtd.scratch_dir("hypersdk-out-"))
    source = SourceVM(si, sim, tmp_path, disks=(("streamOptimized", 48 * MiB),), firmware="bios", networks=("VM Network",))
    job_id = daemon.submit(source.definition(sim, {"output_dir": str(out), "disk_format": "raw", "start": True}))
    job = daemon.wait_finished(job_id)
    assert job["status"] == "completed", job["error"]
    path = job["result"]["disks"][0]["path"]
    assert path == str(out / f"{source.name}-disk1.img")
    assert same_content(source.vmdks[0].raw, path, "raw")
    domain = libvirt_host.lookupByName(source.name)
    assert domain.isActive()
    assert parse_domain_summary(domain.XMLDesc(0))["firmware"] == "bios"
    domain.destroy()
    domain.undefine()
    destroy_vm(source.vm)


def test_progress_grows_and_cancel_mid_copy_leaves_nothing_behind(slow_daemon, sim, si, libvirt_host, tmp_path):
    out = Path(libvirtd.scratch_dir("hypersdk-out-"))
    source = SourceVM(si, sim, tmp_path, disks=(("monolithicFlat", 256 * MiB),))
    job_id = slow_daemon.submit(source.definition(sim, {"output_dir": str(out)}))
    seen = []

    def copying():
        job = slow_daemon.job(job_id)
        assert job["status"] == "running", job
        if job["progress"]["stage"] == "conversion" and job["progress"]["current_bytes"] > 0:
            seen.append(job["progress"])
        return len(seen) >= 3 and seen[-1]["current_bytes"] > seen[0]["current_bytes"]

    wait_for(copying, 60, "the copy to make progress")
    progress = seen[-1]
    assert progress["total_bytes"] == 256 * MiB and progress["disk_count"] == 1
    assert progress["rate_bytes_per_second"] > 0 and progress["eta_seconds"] is not None
    assert 2 <= progress["percent_complete"] < 80
    assert tool_processes(job_id)

    started = time.monotonic()
    answer = slow_daemon.post("/jobs/cancel", {"job_ids": [job_id]}).json()
    assert answer["cancelled"] == [job_id]
    assert time.monotonic() - started < 2
    assert slow_daemon.job(job_id)["status"] == "cancelled"
    assert tool_processes(job_id) == [] and tool_processes(str(out)) == []
    assert list(out.iterdir()) == []
    assert source.name not in domain_names(libvirt_host)
    assert list((slow_daemon.dir / "work").iterdir()) == [] if (slow_daemon.dir / "work").exists() else True
    destroy_vm(source.vm)


def test_children_die_with_a_killed_daemon(tmp_path, sim, si, libvirt_host):
    out = Path(libvirtd.scratch_dir("hypersdk-out-"))
    d = Daemon(tmp_path / "d", {"pipeline": {"max_bytes_per_second": 16 * MiB}})
    (tmp_path / "d").mkdir()
    d.start()
    source = SourceVM(si, sim, tmp_path, disks=(("monolithicFlat", 256 * MiB),))
    try:
        job_id = d.submit(source.definition(sim, {"output_dir": str(out)}))
        d.wait_job(job_id, lambda j: j["progress"]["stage"] == "conversion" and tool_processes(job_id), 60)
        d.kill()
        wait_for(lambda: not tool_processes(job_id) and not tool_processes(str(out)), 5,
                 "the transfer worker and qemu-nbd to die with the daemon")
    finally:
        d.close()
        destroy_vm(source.vm)


@pytest.mark.parametrize(
    "change, error",
    [
        (lambda d: d["source"].update(password="wrong"), "connecting: vCenter login failed"),
        (lambda d: d.update(vm_path="DC0/vm/no-such-vm"), "discovery: "),
        (lambda d: d["options"].update(network_mapping={"VM Network": "br0"}),
         "discovery: options.network_mapping: no mapping for vSphere network 'DC0_DVPG0'"),
    ],
)
def test_failures_name_stage_and_cause(daemon, sim, si, libvirt_host, tmp_path, change, error):
    out = Path(libvirtd.scratch_dir("hypersdk-out-"))
    source = SourceVM(si, sim, tmp_path)
    definition = source.definition(sim, {"output_dir": str(out)})
    change(definition)
    job = daemon.wait_finished(daemon.submit(definition))
    assert job["status"] == "failed"
    assert job["error"].startswith(error), job["error"]
    if "no-such-vm" in definition["vm_path"]:
        assert "DC0/vm/no-such-vm" in job["error"]
    assert list(out.iterdir()) == [] and source.name not in domain_names(libvirt_host)
    destroy_vm(source.vm)


def test_powered_on_source_is_refused_or_shut_down_on_request(daemon, sim, si, libvirt_host, tmp_path):
    out = Path(libvirtd.scratch_dir("hypersdk-out-"))
    source = SourceVM(si, sim, tmp_path, power_on=True)
    refused = daemon.wait_finished(daemon.submit(source.definition(sim, {"output_dir": str(out)})))
    assert refused["status"] == "failed"
    assert refused["error"].startswith(f"preparation: the source VM {source.name} is powered on")
    assert source.vm.runtime.powerState == "poweredOn"  # untouched

    job = daemon.wait_finished(daemon.submit(source.definition(sim, {"output_dir": str(out)}, shutdown_source=True,
                                                                remove_cdrom=True)))
    assert job["status"] == "completed", job["error"]
    assert job["result"]["source_shut_down"] is True and job["result"]["cdroms_removed"] == 1
    assert source.vm.runtime.powerState == "poweredOff"
    assert not [d for d in source.vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualCdrom)]
    libvirt_host.lookupByName(source.name).undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    destroy_vm(source.vm)


def test_thumbprint_pin_instead_of_insecure(daemon, sim, si, libvirt_host, tmp_path):
    out = Path(libvirtd.scratch_dir("hypersdk-out-"))
    source = SourceVM(si, sim, tmp_path)
    definition = source.definition(sim, {"output_dir": str(out)})
    definition["source"].update(insecure=False, thumbprint=sim.info.thumbprint_sha256)
    job = daemon.wait_finished(daemon.submit(definition))
    assert job["status"] == "completed", job["error"]
    libvirt_host.lookupByName(source.name).undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    untrusted = source.definition(sim, {"output_dir": str(out)})
    untrusted["source"]["insecure"] = False
    job = daemon.wait_finished(daemon.submit(untrusted))
    assert job["status"] == "failed" and job["error"].startswith("connecting: TLS certificate of")
    destroy_vm(source.vm)


SEED_EXAMPLE = '''
import requests

# Submit job
response = requests.post('http://localhost:8080/jobs/submit', json={
    'vm_path': 'Datacenter/vm/test-vm',
    'source': {'type': 'vsphere', ...},
    'destination': {'type': 'kvm', ...}
})

job_id = response.json()['job_id']
print(f"Job submitted: {job_id}")

# Monitor job
while True:
    job = requests.get(f'http://localhost:8080/jobs/{job_id}').json()
    if job['status'] in ['completed', 'failed']:
        break
    print(f"Progress: {job['progress']['percent_complete']}%")
    time.sleep(5)
'''


def test_seed_python_example_sees_its_job_complete(daemon, sim, si, libvirt_host, tmp_path):
    out = Path(libvirtd.scratch_dir("hypersdk-out-"))
    source = SourceVM(si, sim, tmp_path)
    definition = source.definition(sim, {"output_dir": str(out)})
    del definition["options"]["device_models"]  # the defaults, as the document's user has them
    # The document's code with its "..." filled in; it uses time.sleep without importing time.
    script = SEED_EXAMPLE.replace("http://localhost:8080", daemon.url)
    script = script.replace("'Datacenter/vm/test-vm'", repr(definition["vm_path"]))
    script = script.replace("{'type': 'vsphere', ...}", repr(definition["source"]))
    script = script.replace("{'type': 'kvm', ...}", repr(definition["destination"]) + ",\n    'options': " + repr(definition["options"]))
    script = "import time\n" + textwrap.dedent(script) + "print('Final status:', job['status'])\n"
    out_text = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120).stdout
    assert "Job submitted: " in out_text
    job = daemon.job(out_text.split("Job submitted: ", 1)[1].split()[0])
    assert out_text.strip().endswith("Final status: completed"), job["error"]
    assert job["definition"]["options"]["device_models"] == "auto"
    assert "no operating system was found" in job["result"]["guest_note"]  # so the VM's own models are kept
    # without libguestfs_force_tcg: the daemon found out at start how the appliance runs here, and says so
    assert daemon.get("/status").json()["libguestfs"]["backend"] in ("kvm", "tcg")
    assert daemon.output().count("libguestfs appliance: ") == 1
    libvirt_host.lookupByName(source.name).undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    destroy_vm(source.vm)


def test_a_job_with_the_default_options_completes_on_the_shipped_configuration(sim, si, libvirt_host, tmp_path):
    """`make run`: etc/hypersdk.yaml as it is, on this host (KVM there, but not for the libguestfs appliance)."""
    out = Path(libvirtd.scratch_dir("hypersdk-out-"))
    (tmp_path / "d").mkdir()
    d = Daemon(tmp_path / "d", as_shipped=True).start()
    source = SourceVM(si, sim, tmp_path, disks=(("monolithicFlat", 16 * MiB),))
    definition = source.definition(sim, {"output_dir": str(out)})
    del definition["options"]["device_models"]  # auto: the copied disks are inspected
    try:
        job = d.wait_finished(d.submit(definition), timeout=240)
        assert job["status"] == "completed", job["error"]
        assert "no operating system was found" in job["result"]["guest_note"]
    finally:
        d.close()
        if source.name in domain_names(libvirt_host):
            libvirt_host.lookupByName(source.name).undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        destroy_vm(source.vm)


def test_remote_style_uri_uploads_through_libvirt(daemon, sim, si, libvirt_host, tmp_path):
    """qemu+unix:// goes through libvirt's stream upload, as a qemu+ssh:// host would."""
    source = SourceVM(si, sim, tmp_path, disks=(("monolithicFlat", 40 * MiB),))
    definition = source.definition(sim, {"storage_pool": POOL, "libvirt_uri": "qemu+unix:///system"})
    job = daemon.wait_finished(daemon.submit(definition))
    assert job["status"] == "completed", job["error"]
    pool = libvirt_host.storagePoolLookupByName(POOL)
    pool.refresh()
    volume = pool.storageVolLookupByName(f"{source.name}-disk1.qcow2")
    assert same_content(source.vmdks[0].raw, volume.path(), "qcow2")
    assert [p.name for p in (daemon.dir / "var" / "work").iterdir()] in ([], [".libguestfs-cache"])  # no copy left
    libvirt_host.lookupByName(source.name).undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    volume.delete(0)
    destroy_vm(source.vm)


def test_vddk_is_refused_at_submit_without_its_plugin(daemon, sim):
    definition = {
        "vm_path": "DC0/vm/DC0_H0_VM0",
        "source": {"type": "vsphere", "vcenter_url": sim.info.url, "username": "user", "password": "pass"},
        "destination": {"type": "kvm"},
        "options": {"conversion_method": "vddk"},
    }
    response = daemon.post("/jobs/submit", definition)
    assert response.status_code == 400
    assert response.json()["error"] == (
        "options.conversion_method: nbdkit's vddk plugin is not installed on the conversion host (nbdkit-vddk-plugin.so)")


def test_virt_v2v_runs_on_the_copied_disks_and_its_failure_is_clear(tmp_path, sim, si, libvirt_host):
    """The simulator's VMs hold no operating system: virt-v2v-in-place's inspection refuses them, after
    booting its appliance for real, on the disks copied into output_dir and verified first. The job
    fails naming virt-v2v's own reason, leaving nothing."""
    out = Path(libvirtd.scratch_dir("hypersdk-out-"))
    (tmp_path / "d").mkdir()
    d = Daemon(tmp_path / "d").start()
    source = SourceVM(si, sim, tmp_path, disks=(("monolithicFlat", 32 * MiB),))
    try:
        job = d.wait_finished(d.submit(source.definition(sim, {"output_dir": str(out)}, conversion_method="virt-v2v", device_models="virtio")),
                              timeout=300)
        assert job["status"] == "failed"
        assert job["error"].startswith("conversion: virt-v2v-in-place exited 1: inspection could not detect the"
                                       " source guest")
        stages = [(h["stage"], h["message"]) for h in job["history"] if h["status"] == "running"]
        assert [stage for stage, _ in stages][-3:] == ["conversion", "verification", "conversion"], stages
        assert stages[-1][1] == "converting the guest in place with virt-v2v-in-place"
        assert list(out.iterdir()) == [] and source.name not in domain_names(libvirt_host)
        assert [p.name for p in (tmp_path / "d" / "var" / "work").iterdir()] == [".libguestfs-cache"]  # no job left
    finally:
        d.close()
        destroy_vm(source.vm)


def test_destination_is_checked_before_anything_is_copied(daemon, sim, si, libvirt_host, tmp_path):
    source = SourceVM(si, sim, tmp_path)
    missing_pool = daemon.wait_finished(daemon.submit(source.definition(sim, {"storage_pool": "no-such-pool"})))
    assert missing_pool["status"] == "failed"
    assert missing_pool["error"].startswith("discovery: ") and "no-such-pool" in missing_pool["error"]

    out = Path(libvirtd.scratch_dir("hypersdk-out-"))
    taken = source.definition(sim, {"output_dir": str(out), "domain_name": "taken-name"})
    libvirt_host.defineXML("<domain type='qemu'><name>taken-name</name><memory>65536</memory>"
                           "<os><type arch='x86_64'>hvm</type></os></domain>")
    try:
        job = daemon.wait_finished(daemon.submit(taken))
        assert job["error"] == "discovery: a domain named taken-name already exists on qemu:///system"
        assert list(out.iterdir()) == []
        assert job["history"][-1]["stage"] == "discovery"
    finally:
        libvirt_host.lookupByName("taken-name").undefine()
        destroy_vm(source.vm)


@pytest.mark.parametrize("guest_id, expected", [
    ("windows2019srv_64Guest", "virt-v2v installs virtio drivers into Windows guests from virtio-win"),
    ("freebsd13_64Guest", "virt-v2v cannot convert FreeBSD guests"),
])
def test_virt_v2v_refuses_at_submit_a_guest_it_cannot_convert_here(daemon, sim, si, tmp_path, guest_id, expected):
    name = f"os-{uuid.uuid4().hex[:6]}"
    vm = create_vm(si, name, guest_id=guest_id, cdrom=False, networks=("VM Network",))
    try:
        definition = {
            "vm_path": f"DC0/vm/{name}",
            "source": {"type": "vsphere", "vcenter_url": sim.info.url, "username": "user", "password": "pass",
                       "insecure": True},
            "destination": {"type": "kvm", "libvirt_uri": "test:///default", "output_dir": str(tmp_path)},
            "options": {"conversion_method": "virt-v2v", "network_mapping": {"*": "br0"}},
        }
        before = daemon.get("/status").json()["total_jobs"]
        response = daemon.post("/jobs/submit", definition)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error.startswith("options.conversion_method: ") and expected in error and name in error
        assert daemon.get("/status").json()["total_jobs"] == before  # nothing was queued
    finally:
        destroy_vm(vm)
