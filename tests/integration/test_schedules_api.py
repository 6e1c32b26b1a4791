"""The Schedules API through the real daemon process, with glob runs against the vCenter simulator."""

import copy
from datetime import datetime, timezone

import pytest
import requests

from tests.integration.daemon import Daemon, wait_for
from tests.integration.vcsim import Vcsim

SECRET = "sch3dule-pa55"


@pytest.fixture(scope="module")
def sim():
    with Vcsim.start(password=SECRET) as s:
        yield s


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("daemon"), {"pipeline": {"connect_timeout": 3}}).start()
    yield d
    d.close()


def template(sim, vm_path="DC0/vm/*"):
    return {
        "vm_path": vm_path,
        "source": {"type": "vsphere", "vcenter_url": sim.info.url, "username": "user", "password": SECRET,
                   "insecure": True},
        "destination": {"type": "kvm", "libvirt_uri": "test:///default", "output_dir": "/tmp"},
        "options": {"network_mapping": {"*": "br0"}},
    }


def put(daemon, path, body):
    return requests.put(daemon.url + path, json=body, timeout=30)


def delete(daemon, path):
    return requests.delete(daemon.url + path, timeout=30)


def test_seed_create_list_get_update_enable_disable_delete(daemon, sim):
    created = daemon.post("/schedules", {
        "id": "daily-backup", "name": "Daily VM Backup", "description": "Backup production VMs every night",
        "schedule": "0 2 * * *", "enabled": True, "job_template": template(sim),
    })
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["message"] == "schedule created successfully"
    s = body["schedule"]
    assert (s["id"], s["name"], s["schedule"], s["timezone"], s["enabled"], s["run_count"]) == \
        ("daily-backup", "Daily VM Backup", "0 2 * * *", "UTC", True, 0)
    next_run = datetime.fromisoformat(s["next_run"].replace("Z", "+00:00"))
    assert (next_run.hour, next_run.minute) == (2, 0) and next_run > datetime.now(timezone.utc)
    assert s["job_template"]["source"]["password"] == "***"

    listed = daemon.get("/schedules").json()
    assert listed["total"] == 1 and listed["schedules"][0]["id"] == "daily-backup" and "timestamp" in listed
    got = daemon.get("/schedules/daily-backup").json()
    assert got["description"] == "Backup production VMs every night" and got["runs"] == []

    updated = put(daemon, "/schedules/daily-backup", {"name": "Updated Name", "schedule": "0 3 * * *"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["message"] == "schedule updated successfully"
    got = daemon.get("/schedules/daily-backup").json()
    assert (got["name"], got["schedule"], got["enabled"], got["description"]) == \
        ("Updated Name", "0 3 * * *", True, "Backup production VMs every night")  # partial: enabled kept
    assert got["next_run"].endswith("T03:00:00.000Z")

    assert daemon.post("/schedules/daily-backup/disable").json()["message"] == "schedule disabled successfully"
    got = daemon.get("/schedules/daily-backup").json()
    assert got["enabled"] is False and got["next_run"] is None
    assert daemon.post("/schedules/daily-backup/enable").json()["message"] == "schedule enabled successfully"
    assert daemon.get("/schedules/daily-backup").json()["next_run"] is not None

    stats = daemon.get("/schedules/stats").json()
    assert (stats["total_schedules"], stats["enabled_schedules"], stats["disabled_schedules"]) == (1, 1, 0)

    assert delete(daemon, "/schedules/daily-backup").json() == {"message": "schedule deleted successfully"}
    assert daemon.get("/schedules/daily-backup").status_code == 404
    assert daemon.get("/schedules").json()["total"] == 0


def test_errors_name_the_problem(daemon, sim):
    assert daemon.post("/schedules", {"id": "dup", "schedule": "@daily", "job_template": template(sim)}).status_code == 201
    again = daemon.post("/schedules", {"id": "dup", "schedule": "@hourly", "job_template": template(sim)})
    assert again.status_code == 409 and "already exists" in again.json()["error"]
    assert daemon.get("/schedules/dup").json()["schedule"] == "@daily"  # the first one stays

    bad_cron = daemon.post("/schedules", {"id": "x", "schedule": "0 25 * * *", "job_template": template(sim)})
    assert bad_cron.status_code == 400 and bad_cron.json()["error"].startswith("schedule: ")
    bad_zone = daemon.post("/schedules", {"id": "x", "schedule": "@daily", "timezone": "Mars/Base",
                                          "job_template": template(sim)})
    assert bad_zone.status_code == 400 and "unknown time zone" in bad_zone.json()["error"]
    bad_template = daemon.post("/schedules", {"id": "x", "schedule": "@daily", "job_template": {"vm_path": "a/b/c"}})
    assert bad_template.status_code == 400 and bad_template.json()["error"] == "job_template.source: is required"
    assert put(daemon, "/schedules/dup", {"schedule": "every day"}).status_code == 400
    assert put(daemon, "/schedules/dup", {"enabled": "yes"}).status_code == 400

    for method, path in (("GET", "/schedules/nope"), ("PUT", "/schedules/nope"), ("DELETE", "/schedules/nope"),
                         ("POST", "/schedules/nope/enable"), ("POST", "/schedules/nope/disable"),
                         ("POST", "/schedules/nope/trigger")):
        r = requests.request(method, daemon.url + path, json={} if method == "PUT" else None, timeout=30)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"] == "schedule nope not found"
    assert delete(daemon, "/schedules/dup").status_code == 200


def test_trigger_expands_the_glob_through_vsphere_and_the_run_records_its_outcome(daemon, sim):
    assert daemon.post("/schedules", {"id": "all-dc0", "schedule": "0 2 1 1 *", "enabled": False,
                                      "job_template": template(sim)}).status_code == 201
    triggered = daemon.post("/schedules/all-dc0/trigger")
    assert triggered.status_code == 200, triggered.text
    body = triggered.json()
    assert body["message"] == "schedule triggered successfully"
    paths = sorted(daemon.job(j)["definition"]["vm_path"] for j in body["job_ids"])
    assert paths == ["DC0/vm/DC0_C0_RP0_VM0", "DC0/vm/DC0_C0_RP0_VM1", "DC0/vm/DC0_H0_VM0", "DC0/vm/DC0_H0_VM1"]

    # The simulator's own VMs have no readable disks: every job fails after logging in, so the run fails.
    for job_id in body["job_ids"]:
        job = daemon.wait_finished(job_id)
        assert job["status"] == "failed" and job["error"].startswith("discovery: "), job["error"]
    runs = wait_for(lambda: (lambda r: r if r[0]["outcome"] != "running" else None)(
        daemon.get("/schedules/all-dc0").json()["runs"]), 30, "the run to end")
    assert (runs[0]["trigger"], runs[0]["outcome"], sorted(runs[0]["job_ids"])) == \
        ("trigger", "failed", sorted(body["job_ids"]))
    assert "4 of 4 job(s) did not complete" in runs[0]["reason"]
    s = daemon.get("/schedules/all-dc0").json()
    assert (s["run_count"], s["failed_runs"], s["enabled"], sorted(s["last_job_ids"])) == \
        (1, 1, False, sorted(body["job_ids"]))
    stats = daemon.get("/schedules/stats").json()
    assert (stats["total_runs"], stats["failed_runs"], stats["successful_runs"]) == (1, 1, 0)

    nothing = daemon.post("/schedules", {"id": "none", "schedule": "@daily",
                                         "job_template": template(sim, "DC0/vm/no-such-*")})
    assert nothing.status_code == 201
    r = daemon.post("/schedules/none/trigger")
    assert r.status_code == 404 and r.json()["error"] == "no VM in DC0/vm matches 'no-such-*'"
    assert daemon.get("/schedules/none").json()["runs"][0]["outcome"] == "failed"


@pytest.mark.sqlite_only  # not collected on PostgreSQL (tests/conftest.py)
def test_schedules_and_their_runs_survive_a_restart_and_secrets_stay_encrypted(tmp_path, sim):
    d = Daemon(tmp_path, {"pipeline": {"connect_timeout": 3}}).start()
    try:
        t = template(sim, "DC0/vm/DC0_H0_VM0")
        assert d.post("/schedules", {"id": "keep", "schedule": "30 4 * * mon-fri", "timezone": "Europe/Paris",
                                     "job_template": t}).status_code == 201
        job_ids = d.post("/schedules/keep/trigger").json()["job_ids"]
        d.wait_finished(job_ids[0])
        before = d.get("/schedules/keep").json()
        d.stop()
        assert d.log_contains("hypersdk stopped")
        d.start()
        after = d.get("/schedules/keep").json()
        for key in ("name", "schedule", "timezone", "enabled", "job_template", "created_at", "last_run", "next_run",
                    "run_count", "last_job_ids"):
            assert after[key] == before[key], key
        assert after["runs"][0]["job_ids"] == job_ids
        wait_for(lambda: d.get("/schedules/keep").json()["runs"][0]["outcome"] == "failed", 30, "the run's outcome")
        assert d.get("/schedules/stats").json()["failed_runs"] == 1
        assert SECRET not in d.get("/schedules").text + d.get("/schedules/keep").text
    finally:
        d.close()
    database = b"".join(p.read_bytes() for p in (tmp_path / "var").glob("jobs.db*"))
    assert b"keep" in database and SECRET.encode() not in database
    assert SECRET not in (tmp_path / "daemon.log").read_text()


def test_changing_a_template_keeps_its_password_when_sent_back_redacted(daemon, sim):
    assert daemon.post("/schedules", {"id": "pw", "schedule": "@daily",
                                      "job_template": template(sim, "DC0/vm/DC0_H0_VM1")}).status_code == 201
    t = copy.deepcopy(daemon.get("/schedules/pw").json()["job_template"])
    t["options"]["verify"] = False
    assert put(daemon, "/schedules/pw", {"job_template": t}).status_code == 200
    job_id = daemon.post("/schedules/pw/trigger").json()["job_ids"][0]
    job = daemon.wait_finished(job_id)
    assert job["error"].startswith("discovery: "), job["error"]  # it logged in: the stored password was used
