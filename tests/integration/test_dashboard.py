"""The dashboard in headless Chromium against the real daemon (auth on) while a real migration runs."""

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from tests.integration.daemon import REPO, Daemon, wait_for
from tests.integration.vcsim import MiB, Write, create_vm_with_disk

TOKEN = "dash-t0ken"
ARTIFACTS = REPO / "var" / "test-artifacts"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (make test installs it)")
def test_progress_moves_details_show_and_cancel_works(tmp_path, sim, si):
    name = f"dash-{uuid.uuid4().hex[:6]}"
    create_vm_with_disk(si, sim, tmp_path, name, 1024 * MiB, [Write(0, MiB, 0x44)])
    (tmp_path / "d").mkdir()
    (tmp_path / "out").mkdir()
    config = {"auth": {"tokens": [{"name": "ops", "token": TOKEN, "role": "admin"}]},
              "pipeline": {"max_bytes_per_second": 64 * MiB}}  # progress in 8 MiB chunks, several a second
    d = Daemon(tmp_path / "d", config).start()
    try:
        page = requests.get(d.url + "/", timeout=10)  # the page itself needs no token
        assert page.status_code == 200 and "<title>hypersdk</title>" in page.text
        assert requests.get(d.url + "/static/app.js", timeout=10).headers["Content-Type"].startswith("text/javascript")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        job_id = requests.post(d.url + "/jobs/submit", headers=headers, timeout=30, json={
            "vm_path": f"DC0/vm/{name}",
            "source": {"type": "vsphere", "vcenter_url": sim.info.url, "username": "user", "password": "pass",
                       "insecure": True},
            "destination": {"type": "kvm", "libvirt_uri": "test:///default", "output_dir": str(tmp_path / "out")},
            "options": {"network_mapping": {"*": "br0"}, "device_models": "source"},  # no guest on these disks
        }).json()["job_id"]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        screenshot = ARTIFACTS / "dashboard.png"
        run = subprocess.run(["node", str(REPO / "tests" / "js" / "dashboard.js")], capture_output=True, text=True,
                             timeout=180, cwd=REPO / "tests" / "js",
                             env={**os.environ, "HYPERSDK_URL": d.url, "HYPERSDK_TOKEN": TOKEN,
                                  "HYPERSDK_JOB": job_id, "SCREENSHOT": str(screenshot)})
        assert run.returncode == 0, run.stderr + run.stdout
        seen = json.loads(run.stdout.strip().splitlines()[-1])
        assert seen["second"] > seen["first"], seen  # the progress bar moved
        assert seen["chartPixels"] > 50, seen  # the throughput chart has a line
        assert seen["diskBars"] == 1, seen  # the disk in flight has a bar of its own
        assert seen["errors"] == [], seen
        assert screenshot.stat().st_size > 10_000
        job = wait_for(lambda: (lambda j: j if j["status"] == "cancelled" else None)(
            requests.get(d.url + f"/jobs/{job_id}", headers=headers, timeout=10).json()), 10, "the cancel")
        assert job["status"] == "cancelled" and list((tmp_path / "out").iterdir()) == []
    finally:
        d.close()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (make test installs it)")
def test_the_discard_button_removes_what_a_failed_job_kept(tmp_path, capped, capped_si):
    from tests.integration.test_leftovers import stalled
    from tests.integration.test_transfer import copying, output_file

    with copying(tmp_path, capped, capped_si, 256 * MiB, {"pipeline": {"stall_timeout": 3}}) as (d, source, out):
        job = stalled(d, source, capped, out)
        target = output_file(out, source.name)
        assert Path(target).exists()
        run = subprocess.run(["node", str(REPO / "tests" / "js" / "dashboard_discard.js")], capture_output=True,
                             text=True, timeout=120, cwd=REPO / "tests" / "js",
                             env={**os.environ, "HYPERSDK_URL": d.url, "HYPERSDK_JOB": job["id"]})
        assert run.returncode == 0, run.stderr + run.stdout
        seen = json.loads(run.stdout.strip().splitlines()[-1])
        assert f"file {target}" in seen["keptBefore"], seen  # the details list the kept copy
        assert seen["dialogs"] == ["Remove what this job kept? It can no longer be resumed."], seen
        assert "Kept" not in seen["fieldsAfter"] and seen["errors"] == [], seen
        assert not Path(target).exists()
        assert d.job(job["id"])["history"][-1]["message"] == f"discarded: removed file {target}"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (make test installs it)")
def test_the_cut_over_button_of_a_warm_job_in_precopy_cuts_it_over(tmp_path, capped, capped_si):
    from tests.integration.test_transfer import copying
    from tests.integration.test_warm import libvirtd, powered_on, warm_definition

    uri = libvirtd.ensure_libvirtd()
    libvirtd.ensure_bridge()
    with copying(tmp_path, capped, capped_si, 160 * MiB) as (d, source, out):
        powered_on(source)
        job_id = d.submit(warm_definition(source, capped, out, uri, precopy_interval="1h"))
        d.wait_job(job_id, lambda j: len(j["progress"]["passes"]) >= 1, 60, "the first pass")
        run = subprocess.run(["node", str(REPO / "tests" / "js" / "dashboard_cutover.js")], capture_output=True,
                             text=True, timeout=240, cwd=REPO / "tests" / "js",
                             env={**os.environ, "HYPERSDK_URL": d.url, "HYPERSDK_JOB": job_id})
        try:
            assert run.returncode == 0, run.stderr + run.stdout
            seen = json.loads(run.stdout.strip().splitlines()[-1])
            assert "1 (full)" in seen["passes"] and "next pass at" in seen["passes"], seen
            assert seen["dialogs"] == ["Shut the source down now, copy its last changes and start the target?"]
            assert seen["status"] == "completed" and seen["errors"] == [], seen
            assert d.job(job_id)["result"]["downtime_seconds"] > 0
        finally:
            libvirtd.remove_domain(uri, source.name)
