"""Warm migration with the real daemon against the simulator's Changed Block Tracking, snapshots and
locked running disks: passes while a guest writer changes the disk, a cutover by API, the copy equal to
the source as it was when it went off, and no snapshot left behind whatever ends the job."""

from __future__ import annotations

import subprocess
from pathlib import Path

import libvirt
import pytest

from hypersdk.vsphere import snapshots
from tests.integration import libvirtd
from tests.integration.test_transfer import Source, copying, output_file
from tests.integration.vcsim import MiB, wait_task

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


def remove_domain(uri: str, name: str) -> None:
    conn = libvirt.open(uri)
    try:
        domain = conn.lookupByName(name)
        if domain.isActive():
            domain.destroy()
        domain.undefine()
    except libvirt.libvirtError:
        pass
    finally:
        conn.close()


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
            remove_domain(libvirt_uri, result["domain_name"])
