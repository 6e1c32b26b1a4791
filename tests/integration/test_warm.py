"""Warm migration with the real daemon against the simulator's Changed Block Tracking, snapshots and
locked running disks: passes while a guest writer changes the disk, a cutover by API, the copy equal to
the source as it was when it went off, and no snapshot left behind whatever ends the job."""

from __future__ import annotations

import subprocess
from pathlib import Path

import libvirt
import pytest
from pyVmomi import vim

from hypersdk.vsphere import snapshots
from tests.integration import libvirtd
from tests.integration.test_transfer import Source, copying, output_file
from tests.integration.polling import wait_for
from tests.integration.receiver import Receiver
from tests.integration.vcsim import MiB, destroy_vm, wait_task

SIZE = 160 * MiB


@pytest.fixture(scope="module")
def libvirt_uri():
    uri = libvirtd.ensure_libvirtd()
    libvirtd.ensure_bridge()
    return uri


def warm_definition(source: Source, sim, out: Path, uri: str, **warm) -> dict:
    definition = source.definition(sim, str(out), warm=warm or True)
    definition["destination"].update(libvirt_uri=uri, domain_type="qemu")
    definition["options"]["network_mapping"] = {"*": libvirtd.BRIDGE}
    return definition


def powered_on(source: Source) -> Source:
    wait_task(source.vm.PowerOnVM_Task())
    return source


def snapshots_of(si, source: Source) -> list[str]:
    # (by the property collector: the simulator's Fetch of an unset vm.snapshot breaks the connection)
    return [name for name, _ in snapshots.thd_snapshots(si, source.vm)]


def guest_disk(sim, source: Source, path: Path) -> Path:
    """The guest's whole disk as it sees it now, as a raw file."""
    path.write_bytes(sim.guest_read(source.name, 0, 0, source.size))
    return path


def same_disk(raw: Path, qcow2: str) -> bool:
    compared = subprocess.run(["qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2", str(raw), qcow2],
                              capture_output=True, text=True, timeout=120)  # (-U: the started target holds it)
    assert compared.returncode in (0, 1), compared.stderr
    return compared.returncode == 0


def passes(job: dict) -> list[dict]:
    return job["progress"]["passes"]


def test_a_warm_job_copies_while_the_guest_writes_cuts_over_by_api_and_leaves_no_snapshot(
        tmp_path, capped, capped_si, libvirt_uri):
    with copying(tmp_path, capped, capped_si, SIZE) as (d, source, out):
        powered_on(source)
        job_id = d.submit(warm_definition(source, capped, out, libvirt_uri, precopy_interval="1s"))
        job = d.wait_job(job_id, lambda j: len(passes(j)) >= 1, 60, "the first pass")
        assert job["progress"]["stage"] == "precopy" and passes(job)[0]["full"] is True
        assert "changed block tracking turned on" in " ".join(h["message"] for h in d.job(job_id)["history"])
        for number, (offset, seed) in enumerate(((3 * MiB, 1), (40 * MiB + 12345, 2)), start=2):
            capped.guest_write(source.name, 0, offset, MiB, seed)
            job = d.wait_job(job_id, lambda j, n=number: len(passes(j)) >= n, 60, f"pass {number}")
            assert passes(job)[number - 1]["changed_bytes"] >= MiB
        capped.guest_write(source.name, 0, SIZE - 2 * MiB, 128 * 1024, 3)  # written just before the cutover
        answer = d.post(f"/jobs/{job_id}/cutover")
        assert answer.status_code == 202, answer.text
        job = d.wait_finished(job_id, 120)
        assert job["status"] == "completed", job["error"]
        result = job["result"]
        assert result["downtime_seconds"] > 0 and len(result["passes"]) == len(passes(job)) >= 4
        final = result["passes"][-1]
        assert final["full"] is False and 128 * 1024 <= final["changed_bytes"] <= 2 * MiB
        assert source.vm.runtime.powerState == "poweredOff" and snapshots_of(capped_si, source) == []
        assert same_disk(guest_disk(capped, source, tmp_path / "guest.raw"), output_file(out, source.name))
        again = d.post(f"/jobs/{job_id}/cutover")
        assert again.status_code == 409 and "precopy" in again.json()["error"]
        conn = libvirt.open(libvirt_uri)
        try:
            assert conn.lookupByName(result["domain_name"]).isActive()  # the target is up
        finally:
            conn.close()
            libvirtd.remove_domain(libvirt_uri, result["domain_name"])


def definition_with(source: Source, sim, out: Path, uri: str, options: dict, **warm) -> dict:
    definition = warm_definition(source, sim, out, uri, **warm)
    definition["options"].update(options)
    return definition


def in_the_boot_check_after_the_cutover(submitter, watcher, source: Source, sim, out: Path, uri: str) -> str:
    """A warm job cut over at once whose boot check never passes, in that boot check (the source off,
    the target running): its id. ``watcher`` (a daemon of the same cluster) waits for it."""
    job_id = submitter.submit(definition_with(source, sim, out, uri,
                                              {"boot_check": {"timeout": 600, "ready_pattern": "never printed"}},
                                              cutover_at="2000-01-01T00:00:00Z"))
    watcher.wait_job(job_id, lambda j: j["progress"]["stage"] == "boot_check", 120, "the boot check after the cutover")
    assert source.vm.runtime.powerState == "poweredOff"
    return job_id


def history(d, job_id: str) -> list[str]:
    return [h["message"] for h in d.job(job_id)["history"]]


def test_a_cancel_during_a_pass_leaves_the_source_running_with_no_snapshot_and_nothing_copied(
        tmp_path, capped, capped_si, libvirt_uri):
    with copying(tmp_path, capped, capped_si, SIZE, {"pipeline": {"max_bytes_per_second": 8 * MiB}}) as (d, source, out):
        powered_on(source)
        job_id = d.submit(warm_definition(source, capped, out, libvirt_uri))
        d.wait_job(job_id, lambda j: j["progress"]["current_bytes"] >= 8 * MiB, 60, "the first pass under way")
        assert snapshots_of(capped_si, source) == [f"hypersdk-{job_id}"]  # the base is read frozen
        d.post("/jobs/cancel", {"job_ids": [job_id]})
        job = d.wait_finished(job_id, 60)
        assert job["status"] == "cancelled"
        assert snapshots_of(capped_si, source) == [] and source.vm.runtime.powerState == "poweredOn"
        assert list(out.iterdir()) == []


def test_a_daemon_killed_during_a_pass_resumes_from_the_stored_change_id_and_leaves_no_snapshot(
        tmp_path, capped, capped_si, libvirt_uri):
    with copying(tmp_path, capped, capped_si, SIZE, {"pipeline": {"max_bytes_per_second": 8 * MiB}}) as (d, source, out):
        powered_on(source)
        job_id = d.submit(warm_definition(source, capped, out, libvirt_uri, precopy_interval="3s"))
        d.wait_job(job_id, lambda j: len(passes(j)) >= 1, 120, "the first pass")
        capped.guest_write(source.name, 0, 20 * MiB, 48 * MiB, 7)  # the second pass copies 48 MiB: 6 s
        wait_for(lambda: snapshots_of(capped_si, source) and len(passes(d.job(job_id))) == 1, 30,
                 "the second pass under way")
        d.kill()
        assert snapshots_of(capped_si, source) == [f"hypersdk-{job_id}"]  # what the kill left
        d.start()
        job = d.wait_job(job_id, lambda j: len(passes(j)) >= 2, 60, "the resumed pass")
        resumed = passes(job)[1]
        assert resumed["full"] is False and resumed["changed_bytes"] >= 48 * MiB, passes(job)
        assert snapshots_of(capped_si, source) in ([], [f"hypersdk-{job_id}"])  # (at most the pass's own)
        assert d.post(f"/jobs/{job_id}/cutover").status_code == 202
        job = d.wait_finished(job_id, 120)
        assert job["status"] == "completed", job["error"]
        assert snapshots_of(capped_si, source) == []
        assert same_disk(guest_disk(capped, source, tmp_path / "guest.raw"), output_file(out, source.name))
        libvirtd.remove_domain(libvirt_uri, job["result"]["domain_name"])


def test_a_failure_after_the_switch_off_powers_the_source_on_again_and_says_rolled_back(
        tmp_path, capped, capped_si):
    with Receiver() as receiver, copying(tmp_path, capped, capped_si, SIZE,
                                         {"webhooks": [{"url": receiver.url}]}) as (d, source, out):
        powered_on(source)
        # test:///default defines the domain but cannot start it: the cutover's last step fails
        job_id = d.submit(warm_definition(source, capped, out, "test:///default", cutover_at="2000-01-01T00:00:00Z"))
        job = d.wait_finished(job_id, 120)
        assert job["status"] == "failed"
        assert job["error"].startswith("import: rolled back: ") and \
            job["error"].endswith(f"; source {source.name} powered on again"), job["error"]
        assert source.vm.runtime.powerState == "poweredOn" and snapshots_of(capped_si, source) == []
        assert len(job["progress"]["passes"]) == 2  # cutover_at in the past: one pass, then the final one
        wait_for(lambda: "job.failed" in receiver.events(), 30, "the webhooks")
        assert receiver.events().count("job.cutover_started") == 1  # (at cutover_at: nobody asked)


def test_a_daemon_killed_after_the_switch_off_powers_the_source_on_at_its_next_start(
        tmp_path, capped, capped_si, libvirt_uri):
    with copying(tmp_path, capped, capped_si, SIZE) as (d, source, out):
        powered_on(source)
        job_id = in_the_boot_check_after_the_cutover(d, d, source, capped, out, libvirt_uri)
        d.kill()
        d.start()
        job = d.wait_finished(job_id, 60)
        assert job["status"] == "failed" and "daemon restarted during boot_check" in job["error"], job["error"]
        assert source.vm.runtime.powerState == "poweredOn"
        cleaned = [m for m in history(d, job_id) if m.startswith("cleaned up after the daemon restarted")]
        assert cleaned and f"source VM {source.path} switched off" in cleaned[0], history(d, job_id)
        libvirtd.remove_domain(libvirt_uri, source.name)


def test_a_cancel_during_the_cutover_powers_the_source_on_again_and_leaves_no_target(
        tmp_path, capped, capped_si, libvirt_uri):
    with copying(tmp_path, capped, capped_si, SIZE) as (d, source, out):
        powered_on(source)
        job_id = in_the_boot_check_after_the_cutover(d, d, source, capped, out, libvirt_uri)
        assert d.post("/jobs/cancel", {"job_ids": [job_id]}).status_code == 200
        job = d.wait_finished(job_id, 60)
        assert job["status"] == "cancelled", job
        assert source.vm.runtime.powerState == "poweredOn" and snapshots_of(capped_si, source) == []
        assert f"source {source.name} powered on again" in " ".join(history(d, job_id)), history(d, job_id)
        conn = libvirt.open(libvirt_uri)
        try:
            assert source.name not in [dom.name() for dom in conn.listAllDomains()]
        finally:
            conn.close()
        assert list(out.iterdir()) == []


def test_a_warm_job_between_passes_leaves_its_worker_slot_to_a_cold_job(tmp_path, capped, capped_si, libvirt_uri):
    with copying(tmp_path, capped, capped_si, SIZE, {"worker_count": 1}) as (d, source, out):
        powered_on(source)
        warm_id = d.submit(warm_definition(source, capped, out, libvirt_uri, precopy_interval="1h"))
        d.wait_job(warm_id, lambda j: len(passes(j)) == 1 and j["progress"]["next_pass_at"], 60, "the first pass")
        assert d.get("/status").json()["active_workers"] == 0  # the warm job waits an hour: its slot is free
        cold = Source(capped_si, capped, tmp_path, SIZE)
        try:
            cold_job = d.wait_finished(d.submit(cold.definition(capped, str(out))), 120)
            assert cold_job["status"] == "completed", cold_job["error"]
            assert d.job(warm_id)["progress"]["stage"] == "precopy"
        finally:
            destroy_vm(cold.vm)
        assert d.post(f"/jobs/{warm_id}/cutover").status_code == 202  # it takes a slot again for the cutover
        job = d.wait_finished(warm_id, 120)
        assert job["status"] == "completed", job["error"]
        libvirtd.remove_domain(libvirt_uri, job["result"]["domain_name"])


def test_quiesce_needs_vmware_tools_in_the_guest_and_then_every_pass_s_snapshot_is_quiesced(
        tmp_path, capped, capped_si, libvirt_uri):
    with copying(tmp_path, capped, capped_si, SIZE) as (d, source, out):
        powered_on(source)  # (the simulator's VMs run no VMware Tools)
        refused = d.wait_finished(d.submit(warm_definition(source, capped, out, libvirt_uri, quiesce=True)), 60)
        assert refused["status"] == "failed", refused
        assert refused["error"] == (f"precopy: cannot take a quiesced snapshot of VM {source.name}: VMware Tools are"
                                    " not running in the guest (start them, or set options.warm.quiesce to false)")
        assert source.vm.runtime.powerState == "poweredOn" and snapshots_of(capped_si, source) == []
        capped.guest_tools(source.name, True)
        job_id = d.submit(warm_definition(source, capped, out, libvirt_uri, quiesce=True, precopy_interval="1s"))
        d.wait_job(job_id, lambda j: len(passes(j)) >= 2, 60, "two passes")
        assert d.post(f"/jobs/{job_id}/cutover").status_code == 202
        job = d.wait_finished(job_id, 120)
        assert job["status"] == "completed", job["error"]
        made = capped.snapshots_created(source.name)
        assert len(made) == len(job["result"]["passes"]) - 1  # one per pass but the final one (the source is off)
        assert made == [{"name": f"hypersdk-{job_id}", "quiesced": True}] * len(made)
        libvirtd.remove_domain(libvirt_uri, job["result"]["domain_name"])


def test_warm_is_refused_at_submit_for_a_powered_off_source_and_one_with_snapshots_of_its_own(
        tmp_path, capped, capped_si):
    with copying(tmp_path, capped, capped_si, SIZE) as (d, source, out):
        answer = d.post("/jobs/submit", warm_definition(source, capped, out, "test:///default"))
        assert answer.status_code == 409 and "warm migration copies a running VM" in answer.json()["error"], answer.text
        powered_on(source)
        wait_task(source.vm.CreateSnapshot_Task(name="before-upgrade", memory=False, quiesce=False))
        answer = d.post("/jobs/submit", warm_definition(source, capped, out, "test:///default"))
        assert answer.status_code == 409 and "(before-upgrade)" in answer.json()["error"], answer.text
        assert snapshots_of(capped_si, source) == ["before-upgrade"]
        assert d.get("/jobs/query").json()["total"] == 0  # nothing was queued


def test_a_cold_copy_of_a_vm_with_change_tracking_reads_only_the_areas_holding_data(tmp_path, capped, capped_si):
    with copying(tmp_path, capped, capped_si, SIZE) as (d, source, out):
        wait_task(source.vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=True)))
        powered_on(source)  # (tracking takes effect at a stun: this power on)
        wait_task(source.vm.PowerOffVM_Task())
        job = d.wait_finished(d.submit(source.definition(capped, str(out))), 120)
        assert job["status"] == "completed", job["error"]
        data = 2 * MiB + 5 * MiB + 64 * MiB + 4096  # what Source wrote
        served = capped.served_bytes(source.name, source.flat.name)
        assert data <= served <= data + 2 * MiB, served  # (64 KiB blocks), not the disk's 160 MiB
        assert f"reading the {served} bytes that hold data, of {SIZE}" in " ".join(history(d, job["id"]))
        assert source.copied_to(output_file(out, source.name))


def test_a_warm_job_whose_source_refuses_change_tracking_fails_saying_why_and_leaves_the_source_as_it_was(
        tmp_path, capped, capped_si):
    with copying(tmp_path, capped, capped_si, SIZE) as (d, source, out):
        wait_task(source.vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(version="vmx-04")))  # too old for CBT
        powered_on(source)
        job = d.wait_finished(d.submit(warm_definition(source, capped, out, "test:///default")), 60)
        assert job["status"] == "failed"
        assert job["error"] == (f"preparation: cannot turn changed block tracking on for VM {source.name}: vCenter"
                                " does not support it (changed block tracking needs virtual hardware version 7 or"
                                " later)"), job["error"]
        assert source.vm.runtime.powerState == "poweredOn" and snapshots_of(capped_si, source) == []
        assert source.vm.config.changeTrackingEnabled is not True and list(out.iterdir()) == []
