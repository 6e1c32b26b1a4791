"""Nothing a job made is left behind, whatever ends it: the daemon killed while a job has a domain
booting on its isolated network, a failure that keeps a copy on purpose (listed in the job's result,
removed by POST /jobs/{id}/discard or after pipeline.keep_resumable_for), and secrets in work
directories. Real libvirtd, the vCenter simulator and the daemon as a process."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import libvirt
import pytest

from tests.integration import libvirtd
from tests.integration.daemon import Daemon, wait_for
from tests.integration.test_hyperctl import hyperctl
from tests.integration.test_migration import SourceVM, domain_names
from tests.integration.test_transfer import copying, output_file
from tests.integration.vcsim import MiB, destroy_vm


@pytest.fixture(scope="module")
def libvirt_host():
    uri = libvirtd.ensure_libvirtd()
    libvirtd.ensure_bridge()
    conn = libvirt.open(uri)
    yield conn
    conn.close()


def networks(conn) -> set[str]:
    return {n.name() for n in conn.listAllNetworks()}


def test_a_daemon_killed_during_a_boot_check_cleans_the_domain_network_and_disks_up_at_its_next_start(
        tmp_path, sim, si, libvirt_host):
    out = Path(libvirtd.scratch_dir("hypersdk-out-"))
    daemon = Daemon(tmp_path / "d", {})
    (tmp_path / "d").mkdir()
    daemon.start()
    source = SourceVM(si, sim, tmp_path, disks=(("monolithicFlat", 16 * MiB),))
    try:
        job_id = daemon.submit(source.definition(sim, {"output_dir": str(out)},
                                                 boot_check={"timeout": 300, "ready_pattern": "never printed"}))
        network = f"hypersdk-check-{job_id[:8]}"

        def booting():
            job = daemon.job(job_id)
            assert job["status"] == "running", job["error"]
            return job["progress"]["stage"] == "boot_check" and network in networks(libvirt_host) and \
                source.name in {d.name() for d in libvirt_host.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}
        wait_for(booting, 180, "the boot check to start the domain")
        # the guest boots a throw-away overlay: the delivered disk stays as it was verified
        live = libvirt_host.lookupByName(source.name).XMLDesc(0)
        assert "<transient" in live, live
        disk = out / f"{source.name}-disk1.qcow2"
        overlay = out / f"{disk.name}.TRANSIENT-{source.name}"
        wait_for(overlay.exists, 10, "libvirt's overlay beside the disk")
        daemon.kill()
        assert network in networks(libvirt_host) and source.name in domain_names(libvirt_host)
        assert sorted(p.name for p in out.iterdir()) == sorted([disk.name, overlay.name])

        daemon.start()
        job = daemon.wait_finished(job_id, 60)
        assert job["status"] == "failed" and "daemon restarted during boot_check" in job["error"], job["error"]
        wait_for(lambda: source.name not in domain_names(libvirt_host), 30, "the domain to be removed")
        assert network not in networks(libvirt_host)
        assert list(out.iterdir()) == []  # the disk, and the overlay libvirt made beside it
        messages = [h["message"] for h in daemon.job(job_id)["history"]]
        cleaned = [m for m in messages if m.startswith("cleaned up after the daemon restarted: removed ")]
        assert cleaned and f"domain {source.name}" in cleaned[0] and f"network {network}" in cleaned[0], messages
        assert not (daemon.dir / "var" / "work" / job_id).exists()
    finally:
        daemon.close()
        destroy_vm(source.vm)
        libvirtd.remove_domain(libvirt_host, source.name)


def stalled(d: Daemon, source, capped, out: Path) -> dict:
    """A job whose source stops answering mid-copy: it fails resumably, its copy kept."""
    job_id = d.submit(source.definition(capped, str(out)))
    d.wait_job(job_id, lambda j: j["progress"]["current_bytes"] >= 32 * MiB, 180, "32 MiB copied")
    os.kill(capped.process.pid, signal.SIGSTOP)
    try:
        job = d.wait_finished(job_id, 60)
    finally:
        os.kill(capped.process.pid, signal.SIGCONT)
    assert job["status"] == "failed" and job["result"]["resumable"] is True, job["error"]
    return job


def test_a_kept_copy_is_listed_in_the_result_without_its_secrets_and_discard_removes_it(tmp_path, capped, capped_si):
    with copying(tmp_path, capped, capped_si, 256 * MiB, {"pipeline": {"stall_timeout": 3}}) as (d, source, out):
        job = stalled(d, source, capped, out)
        target = output_file(out, source.name)
        assert job["result"]["kept"] == [{"kind": "file", "path": target}]
        work = d.dir / "var" / "work" / job["id"]
        assert not any((work / name).exists() for name in ("cookie", "password"))  # secrets go on every outcome

        done = hyperctl("discard", job["id"], url=d.url, token=None)
        assert done.returncode == 0, done.stderr
        assert f"removed file {target}" in done.stdout
        assert not Path(target).exists() and not work.exists()
        resume = d.post(f"/jobs/{job['id']}/resume")
        assert resume.status_code == 409 and "can be resumed" in resume.json()["error"]
        messages = [h["message"] for h in d.job(job["id"])["history"]]
        assert messages[-1] == f"discarded: removed file {target}"
        again = d.post(f"/jobs/{job['id']}/discard").json()
        assert again["removed"] == []

        running = d.submit(source.definition(capped, str(out)))
        d.wait_job(running, lambda j: j["status"] == "running", 30)
        answer = d.post(f"/jobs/{running}/discard")
        assert answer.status_code == 409 and "cancel it first" in answer.json()["error"]
        assert d.post("/jobs/no-such-job/discard").status_code == 404
        d.post("/jobs/cancel", {"job_ids": [running]})


def test_a_kept_copy_is_removed_after_keep_resumable_for_and_old_work_directories_at_start(tmp_path, capped, capped_si):
    config = {"pipeline": {"stall_timeout": 3, "keep_resumable_for": "2s"}}
    with copying(tmp_path, capped, capped_si, 256 * MiB, config) as (d, source, out):
        job = stalled(d, source, capped, out)
        target = output_file(out, source.name)
        said = f"what it kept was removed 2 s after it failed (pipeline.keep_resumable_for): removed file {target}"
        # (the history line is stored a moment after the file is gone)
        wait_for(lambda: said in [h["message"] for h in d.job(job["id"])["history"]], 10, "the kept copy to be swept")
        assert not Path(target).exists()
        assert d.post(f"/jobs/{job['id']}/resume").status_code == 409

        d.stop()
        stale = d.dir / "var" / "work" / "0123-no-such-job"
        stale.mkdir(parents=True)
        (stale / "cookie").write_text("vmware_soap_session=secret")
        d.start()
        assert not stale.exists()


def test_four_boot_checks_waiting_hold_no_libvirt_thread_and_a_fifth_job_imports_meanwhile(
        tmp_path, sim, si, libvirt_host):
    """A boot check waits for its guest without holding a thread of the daemon's libvirt pool (libvirt's
    event loop reads the console): while four wait, a fifth job defines its domain at once."""
    out = Path(libvirtd.scratch_dir("hypersdk-out-"))
    (tmp_path / "d").mkdir()
    daemon = Daemon(tmp_path / "d", {"worker_count": 5, "pipeline": {"connect_timeout": 5}}).start()
    sources = [SourceVM(si, sim, tmp_path / str(i), disks=(("monolithicFlat", 8 * MiB),)) for i in range(5)]
    try:
        checks = [daemon.submit(s.definition(sim, {"output_dir": str(out)},
                                             boot_check={"timeout": 900, "ready_pattern": "never printed"}))
                  for s in sources[:4]]
        wait_for(lambda: all(daemon.job(j)["progress"]["stage"] == "boot_check" for j in checks), 120,
                 "four boot checks to wait for their guests")
        fifth = daemon.submit(sources[4].definition(sim, {"output_dir": str(out)}))
        job = daemon.wait_finished(fifth, 60)
        assert job["status"] == "completed", job["error"]
        assert all(daemon.job(j)["status"] == "running" for j in checks)  # still waiting meanwhile
        answer = daemon.post("/jobs/cancel", {"job_ids": checks}).json()
        assert sorted(answer["cancelled"]) == sorted(checks), answer
        assert not {s.name for s in sources[:4]} & domain_names(libvirt_host)
        assert not {f"hypersdk-check-{j[:8]}" for j in checks} & networks(libvirt_host)
    finally:
        daemon.close()
        for source in sources:
            destroy_vm(source.vm)
            try:
                dom = libvirt_host.lookupByName(source.name)
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError:
                pass
