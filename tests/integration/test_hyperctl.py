"""hyperctl against the real daemon (with a token) and the vCenter simulator."""

import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.integration.daemon import REPO, Daemon
from tests.integration.jobs import job_for_vcenter
from tests.integration.receiver import Receiver
from tests.integration.vcsim import MiB, Write, create_vm_with_disk

TOKEN = "cli-t0ken"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    config = {"auth": {"tokens": [{"name": "ops", "token": TOKEN, "role": "admin"}]},
              "pipeline": {"max_bytes_per_second": 32 * MiB}}
    d = Daemon(tmp_path_factory.mktemp("daemon"), config).start()
    yield d
    d.close()


def hyperctl(*args, url=None, token=TOKEN, stdin=None, timeout=120):
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "src"), "HOME": "/tmp"}
    if url:
        env["HYPERSDK_URL"] = url
    if token:
        env["HYPERSDK_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "hypersdk.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, input=stdin)


def test_status_errors_and_exit_codes(daemon):
    ok = hyperctl("status", url=daemon.url)
    assert ok.returncode == 0 and "workers 0/4" in ok.stdout
    assert json.loads(hyperctl("status", "--json", url=daemon.url).stdout)["worker_count"] == 4
    unreachable = hyperctl("--url", "http://127.0.0.1:9", "status")
    assert unreachable.returncode == 3 and "cannot reach the daemon at http://127.0.0.1:9" in unreachable.stderr
    assert hyperctl("frobnicate", url=daemon.url).returncode == 2
    assert hyperctl("submit", url=daemon.url).returncode == 2  # neither a file nor --vm-path
    denied = hyperctl("status", url=daemon.url, token=None)
    assert denied.returncode == 1 and "401" in denied.stderr and "HYPERSDK_TOKEN" in denied.stderr
    missing = hyperctl("job", "no-such-job", url=daemon.url)
    assert missing.returncode == 1 and "job no-such-job not found" in missing.stderr


def test_submit_from_flags_and_watch_a_real_migration(daemon, sim, si, tmp_path):
    name = f"cli-{uuid.uuid4().hex[:6]}"
    create_vm_with_disk(si, sim, tmp_path, name, 96 * MiB, [Write(0, MiB, 0x33)])
    (tmp_path / "pw").write_text("pass\n")
    (tmp_path / "out").mkdir()
    run = hyperctl("submit", "--vm-path", f"DC0/vm/{name}", "--vcenter-url", sim.info.url, "--username", "user",
                   "--password-file", str(tmp_path / "pw"), "--insecure", "--libvirt-uri", "test:///default",
                   "--output-dir", str(tmp_path / "out"), "--map", "*=br0", "--device-models", "source", "--watch",
                   url=daemon.url)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    job_id = lines[0]
    percents = [float(line.split("%")[0].split()[-1]) for line in lines if line.startswith(job_id[:8] + "  ")]
    assert len(percents) >= 3 and percents == sorted(percents)
    assert any("disk 1/1 [" in line and "of 96.0 MiB" in line for line in lines)
    assert any("/s  ETA" in line for line in lines)
    assert lines[-1].startswith(f"{job_id}: completed: domain {name} on test:///default, disks ")
    table = hyperctl("jobs", url=daemon.url).stdout
    assert job_id in table and "completed" in table and f"DC0/vm/{name}" in table
    listed = json.loads(hyperctl("jobs", "--status", "completed", "--json", url=daemon.url).stdout)
    assert job_id in [j["id"] for j in listed["jobs"]]
    detail = hyperctl("job", job_id, url=daemon.url)
    assert detail.returncode == 0 and "conversion" in detail.stdout and "completed" in detail.stdout


def test_a_failing_job_from_a_yaml_file_exits_1_with_its_error(daemon, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("vm_path: DC0/vm/x\nsource: {type: vsphere, vcenter_url: 'https://127.0.0.1:9', username: u,"
                   " password: p}\ndestination: {type: kvm, libvirt_uri: 'test:///default', output_dir: /tmp}\n"
                   "options: {network_mapping: {'*': br0}, device_models: source}\n")
    run = hyperctl("submit", str(job), "--watch", url=daemon.url)
    assert run.returncode == 1
    assert "failed: connecting: vCenter 127.0.0.1:9 refused the connection" in run.stdout
    from_stdin = hyperctl("submit", "-", url=daemon.url, stdin=job.read_text())
    assert from_stdin.returncode == 0 and len(from_stdin.stdout.split()) == 1


def test_cancel_vms_schedules_webhooks_and_completion(daemon, sim, black_hole, tmp_path):
    stuck = job_for_vcenter(black_hole)
    job_id = hyperctl("submit", "-", url=daemon.url, stdin=json.dumps(stuck)).stdout.strip()
    cancelled = hyperctl("cancel", job_id, url=daemon.url)
    assert cancelled.returncode == 0 and f"{job_id}: cancelled" in cancelled.stdout

    (tmp_path / "pw").write_text("pass")
    vms = hyperctl("vms", "list", "--vcenter-url", sim.info.url, "--username", "user", "--password-file",
                   str(tmp_path / "pw"), "--insecure", url=daemon.url)
    assert vms.returncode == 0 and "DC0/vm/DC0_H0_VM0" in vms.stdout and "poweredOn" in vms.stdout

    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(f"id: nightly\nschedule: '0 2 * * *'\ntimezone: Europe/Paris\njob_template: {json.dumps(stuck)}\n")
    assert hyperctl("schedules", "create", str(schedule), url=daemon.url).returncode == 0
    listing = hyperctl("schedules", "list", url=daemon.url).stdout
    assert "nightly" in listing and "Europe/Paris" in listing
    assert "disabled" in hyperctl("schedules", "disable", "nightly", url=daemon.url).stdout
    assert hyperctl("schedules", "delete", "nightly", url=daemon.url).returncode == 0

    with Receiver() as receiver:
        assert hyperctl("webhooks", "add", receiver.url, "--event", "job.failed", url=daemon.url).returncode == 0
        assert receiver.url in hyperctl("webhooks", "list", url=daemon.url).stdout
        tested = hyperctl("webhooks", "test", receiver.url, url=daemon.url)
        assert tested.returncode == 0 and "delivered: True" in tested.stdout
        assert hyperctl("webhooks", "delete", "0", url=daemon.url).returncode == 0

    script = hyperctl("completion", "bash").stdout
    completed = subprocess.run(["bash", "-c", script + '\nCOMP_WORDS=(hyperctl sched); COMP_CWORD=1; _hyperctl;'
                                ' echo "${COMPREPLY[@]}"; COMP_WORDS=(hyperctl schedules en); COMP_CWORD=2;'
                                ' _hyperctl; echo "${COMPREPLY[@]}"'], capture_output=True, text=True, timeout=30)
    assert completed.stdout.split("\n")[:2] == ["schedules", "enable"]
