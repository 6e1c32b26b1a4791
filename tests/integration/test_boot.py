"""A real guest migrated by the daemon boots on KVM with its network: both methods, and a boot check.

The guest (tests/guest) is a Debian 12 installed as on VMware: only VMware and SATA storage drivers in
its initramfs, a static address on ens192. Each case migrates it from the vCenter simulator into the
libvirtd the tests start, and the daemon's boot check starts it under TCG with its NICs on an isolated
network and reads its serial console until the guest's marker line
``HYPERSDK-MARKER <interface> <address>``. All cases run at once (the boots share the two cores).
The daemon runs as shipped: it finds out itself whether KVM can run the libguestfs appliance.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import datetime

import libvirt
import pytest

from hypersdk.libvirt.domain_xml import parse_domain_summary
from tests.guest.build import guest_image
from tests.integration import libvirtd
from tests.integration.daemon import Daemon
from tests.integration.guest_vms import SLOT, create_guest_vm, free_areas
from tests.integration.test_live import start_ws_client
from tests.integration.vcsim import MiB, wait_task
from hypersdk.vsphere import snapshots

MARKER = r"HYPERSDK-MARKER \S+ \S+"
ADDRESS = "10.11.12.13/24"
CASES = {  # name -> (method, device_models, controller, nic, start, the NIC's PCI slot in vCenter)
    "pvscsi": ("https", "auto", "pvscsi", "vmxnet3", False, SLOT),
    "lsisas": ("https", "auto", "lsisas", "e1000e", True, None),  # no slot: the guest's own configuration names it
    "v2v": ("virt-v2v", None, "pvscsi", "vmxnet3", False, SLOT),
    "virtio": ("https", "virtio", "pvscsi", "vmxnet3", False, SLOT),
    "warm": ("https", "auto", "pvscsi", "vmxnet3", False, SLOT),
}
# Cases migrated warm, from a running source with a copy of the guest of its own: "warm" is cut over by
# the API after three passes while the guest writer changes its free blocks; "v2v" cuts over after its
# first pass and is converted by virt-v2v-in-place; "virtio" cuts over at once and fails its boot check,
# so it is rolled back.
AT_ONCE = {"cutover_at": "2000-01-01T00:00:00Z"}
WARM = {"warm": {"precopy_interval": "2s"}, "v2v": AT_ONCE, "virtio": AT_ONCE}
GUEST_WRITES = 3  # MiB the guest writer changes, one after each of the warm case's first three passes

@pytest.fixture(scope="module")
def boots(tmp_path_factory, sim, si):
    """Every case submitted at once to one daemon; the finished jobs by case, and the run's facts."""
    image = guest_image()
    uri = libvirtd.ensure_libvirtd()
    bridge = libvirtd.ensure_bridge()
    output = libvirtd.scratch_dir("hypersdk-boot-")
    conn = libvirt.open(uri)
    daemon = Daemon(tmp_path_factory.mktemp("boot"), {
        "worker_count": len(CASES),
        "pipeline": {"connect_timeout": 30},
        "boot_check": {"timeout": 600, "shutdown_timeout": 30},
    }).start()
    run = uuid.uuid4().hex[:6]
    jobs, domains = {}, []
    watcher = start_ws_client(daemon.url, "--until-status", "none", "--seconds", "1500")
    updates: list[dict] = []
    threading.Thread(target=lambda: updates.extend(json.loads(line) for line in watcher.stdout), daemon=True).start()
    try:
        for n, (case, (method, models, controller, nic, start, slot)) in enumerate(CASES.items()):
            name = f"boot-{case}-{run}"
            domains.append(name)
            path = create_guest_vm(si, sim, name, image, controller=controller, nic=nic,
                                   mac=f"00:50:56:3a:{n:02x}:01", slot=slot, writable=case in WARM)
            options = {"conversion_method": method, "network_mapping": {"*": bridge},
                       "boot_check": {"ready_pattern": MARKER, **({"timeout": 400} if case == "virtio" else {})}}
            if models:
                options["device_models"] = models
            if case in WARM:
                options["warm"] = WARM[case]
                wait_task(si.RetrieveContent().searchIndex.FindByInventoryPath(path).PowerOnVM_Task())
            jobs[case] = daemon.submit({
                "vm_path": path,
                "source": {"type": "vsphere", "vcenter_url": sim.info.url, "username": "user", "password": "pass",
                           "insecure": True},
                "destination": {"type": "kvm", "libvirt_uri": uri, "output_dir": output, "domain_type": "qemu",
                                "start": start},
                "options": options,
            })
        started = time.monotonic()
        written = drive_warm_case(daemon, sim, jobs["warm"], f"boot-warm-{run}", image)
        finished = {case: daemon.wait_finished(job_id, timeout=1500) for case, job_id in jobs.items()}
        yield {"jobs": finished, "conn": conn, "daemon": daemon, "seconds": time.monotonic() - started,
               "updates": updates,
               "paths": {case: f"DC0/vm/boot-{case}-{run}" for case in CASES}, "output": output, "uri": uri,
               "bridge": bridge, "sim": sim, "si": si, "written": written}
    finally:
        watcher.kill()
        daemon.close()
        for name in domains:
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError:
                continue
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        conn.close()


def drive_warm_case(daemon: Daemon, sim, job_id: str, vm_name: str, image) -> list[int]:
    """After each of the first passes the running guest writes 1 MiB into free blocks of its file
    system; then the cutover is asked by the API. The offsets written."""
    offsets = free_areas(image, MiB, GUEST_WRITES)
    for number, offset in enumerate(offsets, start=1):
        daemon.wait_job(job_id, lambda j, n=number: len(j["progress"]["passes"]) >= n, 900, f"warm pass {number}")
        sim.guest_write(vm_name, 0, offset, MiB, number)
    daemon.wait_job(job_id, lambda j: len(j["progress"]["passes"]) > GUEST_WRITES, 900, "the pass after the writes")
    answer = daemon.post(f"/jobs/{job_id}/cutover")
    assert answer.status_code == 202, answer.text
    return offsets


def passed(job: dict) -> dict:
    assert (job["status"], job["error"]) == ("completed", None), job["error"]
    check = job["result"]["boot_check"]
    assert check["passed"] and check["matched"].strip() == f"HYPERSDK-MARKER ens192 {ADDRESS}", check
    return job["result"]


def models(result: dict) -> list[str]:
    """The chosen models: the disk's, then the NIC's."""
    return [d["model"] for d in result["devices"]["devices"]]


def test_https_keeps_pvscsi_and_vmxnet3_and_the_guest_comes_up_on_ens192(boots):
    result = passed(boots["jobs"]["pvscsi"])
    assert models(result) == ["vmpvscsi", "vmxnet3"]
    assert [(p["mac"], p["name"]) for p in result["pinned_interfaces"]] == [("00:50:56:3a:00:01", "ens192")]
    assert result["guest"]["distro"] == "debian" and result["verified"] is True
    summary = parse_domain_summary(boots["conn"].lookupByName(result["domain_name"]).XMLDesc(0))
    assert [(d["bus"], d["target"]) for d in summary["disks"]] == [("scsi", "sda")]
    assert summary["interfaces"][0]["model"] == "vmxnet3"
    assert summary["interfaces"][0]["source"] == boots["bridge"]  # the real network again, after the check
    assert not boots["conn"].lookupByName(result["domain_name"]).isActive()  # start was not asked for
    # the guest booted a throw-away overlay: the disk that was verified is as it was (its first boot
    # mounts and writes the file systems of whatever disk it runs on)
    job = boots["jobs"]["pvscsi"]
    checked_at = next(h["at"] for h in job["history"] if h["stage"] == "boot_check")
    disk = result["disks"][0]["path"]
    assert os.stat(disk).st_mtime < datetime.fromisoformat(checked_at.replace("Z", "+00:00")).timestamp()
    assert not [name for name in os.listdir(boots["output"]) if ".TRANSIENT-" in name]


def test_the_boot_check_shows_live_on_the_websocket(boots):
    job_id = boots["jobs"]["pvscsi"]["id"]
    seen = [m["data"]["progress"] for m in boots["updates"] if m["type"] == "job_update" and m["data"]["id"] == job_id]
    stages = list(dict.fromkeys(p["stage"] for p in seen))
    assert stages[-4:] == ["inspection", "import", "boot_check", "done"], stages
    assert any(p["stage"] == "boot_check" and p["message"].startswith("booting ") for p in seen)


def test_https_moves_lsi_logic_sas_to_sata_and_leaves_a_started_domain_on_its_real_network(boots):
    result = passed(boots["jobs"]["lsisas"])
    assert models(result) == ["sata", "e1000e"]
    assert "LSI Logic SAS" in result["devices"]["devices"][0]["why"]
    dom = boots["conn"].lookupByName(result["domain_name"])
    assert dom.isActive() and result["boot_check"]["left_running"] is True
    live = parse_domain_summary(dom.XMLDesc(0))
    assert live["interfaces"][0]["type"] == "bridge" and live["interfaces"][0]["source"] == boots["bridge"]


def test_a_nic_without_a_pci_slot_in_vcenter_gets_the_name_the_guests_configuration_expects(boots):
    job = boots["jobs"]["lsisas"]
    result = passed(job)  # the marker line: ens192 came up with its static address
    assert [(p["mac"], p["name"], p["by"]) for p in result["pinned_interfaces"]] == [
        ("00:50:56:3a:01:01", "ens192", "pci_order")]
    assert result["warnings"] == [] and not any("warning" in h["message"] for h in job["history"])


def test_virt_v2v_converts_the_guest_to_virtio_and_it_keeps_ens192(boots):
    result = passed(boots["jobs"]["v2v"])  # (warm: one pass, then the cutover)
    assert [p["full"] for p in result["passes"]] == [True, False] and result["downtime_seconds"] > 0
    assert models(result) == ["virtio", "virtio"]
    assert [p["name"] for p in result["pinned_interfaces"]] == ["ens192"]
    summary = parse_domain_summary(boots["conn"].lookupByName(result["domain_name"]).XMLDesc(0))
    assert [d["bus"] for d in summary["disks"]] == ["virtio"]


def test_virtio_on_a_guest_without_virtio_fails_its_boot_check_showing_the_missing_root_and_is_rolled_back(boots):
    job = boots["jobs"]["virtio"]  # (warm, cut over at once)
    name = f"boot-virtio-{boots['paths']['virtio'].rsplit('-', 1)[1]}"
    assert job["status"] == "failed"
    assert job["error"].startswith("boot_check: rolled back: the guest failed to boot"), job["error"]
    assert job["error"].endswith(f"; source {name} powered on again"), job["error"]
    tail = "\n".join(job["result"]["boot_check"]["console_tail"])
    assert "Gave up waiting for root file system device" in tail or "does not exist" in tail, tail
    dom = boots["conn"].lookupByName(name)
    assert not dom.isActive()  # kept for inspection (boot_check.on_failure: keep), stopped
    source = boots["si"].RetrieveContent().searchIndex.FindByInventoryPath(boots["paths"]["virtio"])
    assert source.runtime.powerState == "poweredOn"  # the source runs again
    assert snapshots.thd_snapshots(boots["si"], source) == []


def test_a_guest_migrated_warm_boots_with_its_address_after_its_passes_carried_the_guests_writes(boots):
    result = passed(boots["jobs"]["warm"])
    assert models(result) == ["vmpvscsi", "vmxnet3"] and result["verified"] is True
    passes = result["passes"]
    assert passes[0]["full"] is True and len(passes) >= GUEST_WRITES + 2  # the final pass at the cutover
    assert all(p["changed_bytes"] >= MiB for p in passes[1:GUEST_WRITES + 1]), passes
    assert 0 < result["downtime_seconds"] < boots["seconds"]
    source = boots["si"].RetrieveContent().searchIndex.FindByInventoryPath(boots["paths"]["warm"])
    assert source.runtime.powerState == "poweredOff" and snapshots.thd_snapshots(boots["si"], source) == []
    # what the guest wrote while it ran (into free blocks of its file system) is on the target; its boot
    # on KVM, which writes the disk itself, may have taken a few of those blocks (3 of 4 KiB in a run here)
    dom = boots["conn"].lookupByName(result["domain_name"])
    assert dom.isActive()  # a cutover leaves the target running
    disk = result["disks"][0]["path"]
    sim = boots["sim"]
    name = boots["paths"]["warm"].rsplit("/", 1)[1]
    block = 64 * 1024  # what a pass copies at least
    for offset in boots["written"]:
        target, guest = read_qcow2(disk, offset, MiB), sim.guest_read(name, 0, offset, MiB)
        same = sum(target[i:i + block] == guest[i:i + block] for i in range(0, MiB, block))
        assert same >= MiB // block - 2, (offset, same)


def read_qcow2(path: str, offset: int, length: int) -> bytes:
    with tempfile.NamedTemporaryFile() as raw:  # (-U: the target runs)
        subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", "--image-opts",
                        f"driver=raw,offset={offset},size={length},file.driver=qcow2,file.file.driver=file,"
                        f"file.file.filename={path}", raw.name], check=True, timeout=120)
        return open(raw.name, "rb").read()


def test_a_second_migration_of_the_same_vm_is_refused_at_discovery_naming_the_first(boots):
    daemon, first = boots["daemon"], boots["jobs"]["pvscsi"]
    again = dict(first["definition"])
    again.pop("id")
    again.pop("created_at", None)
    again["destination"] = {**again["destination"], "domain_name": "another-name"}
    again["source"] = {**again["source"], "password": "pass"}
    job = daemon.wait_finished(daemon.submit(again), timeout=120)
    assert job["status"] == "failed" and job["error"].startswith("discovery: ")
    assert first["result"]["domain_name"] in job["error"] and "uuid" in job["error"]
    assert job["progress"]["current_bytes"] == 0  # nothing was copied
