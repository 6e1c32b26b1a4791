"""The daemon on PostgreSQL (database.url): the same API and the same outcomes as on SQLite, with a
real migration, schedules, webhooks, a restart, and secrets sealed with the shared key file."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.integration.daemon import Daemon
from tests.integration.jobs import UNREACHABLE_JOB
from tests.integration.vcsim import MiB, Write, create_vm_with_disk
from tests.postgres import PostgresServer

PASSWORD = "vc-pa55-word"


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer.start()
    yield server
    server.stop()


def pg_daemon(tmp_path, postgres, url=None, **config) -> Daemon:
    directory = tmp_path / f"node-{uuid.uuid4().hex[:6]}"
    directory.mkdir()
    key = tmp_path / "shared.key"  # every node reads the same key file
    return Daemon(directory, {"database": {"url": url or postgres.new_database(), "key_file": str(key)},
                              **config})


def test_a_migration_schedules_and_webhooks_on_postgresql_survive_a_restart(tmp_path, postgres, sim, si):
    name = f"pg-{uuid.uuid4().hex[:6]}"
    create_vm_with_disk(si, sim, tmp_path, name, 64 * MiB, [Write(0, MiB, 0x5A)])
    url = postgres.new_database()
    d = pg_daemon(tmp_path, postgres, url).start()
    try:
        job_id = d.submit({
            "vm_path": f"DC0/vm/{name}",
            "source": {"type": "vsphere", "vcenter_url": sim.info.url, "username": "user", "password": "pass",
                       "insecure": True},
            "destination": {"type": "kvm", "libvirt_uri": "test:///default", "output_dir": str(tmp_path)},
            "options": {"network_mapping": {"*": "br0"}, "device_models": "source"},
        })
        job = d.wait_finished(job_id, 120)
        assert job["status"] == "completed" and job["result"]["verified"] is True, job["error"]
        template = {**UNREACHABLE_JOB, "source": {**UNREACHABLE_JOB["source"], "password": PASSWORD}}
        assert d.post("/schedules", {"id": "nightly", "schedule": "0 2 * * *", "job_template": template}).status_code == 201
        triggered = d.post("/schedules/nightly/trigger").json()["job_ids"]
        hook = {"url": "https://hooks.example.com/x", "secret": "hmac-k3y", "headers": {"Authorization": "Bearer t0k"}}
        assert d.post("/webhooks", hook).status_code == 201
        d.wait_finished(triggered[0], 60)
        assert d.stop() in (0, -15)
        d.start()  # everything comes back from PostgreSQL
        assert d.job(job_id)["status"] == "completed"
        assert [h["message"] for h in d.job(job_id)["history"]][:2] == ["submitted", "started"]
        assert d.get("/schedules/nightly").json()["run_count"] == 1
        assert d.get("/webhooks").json()["webhooks"][-1]["headers"] == {"Authorization": "***"}
        assert d.post("/jobs/query", {"status": "completed"}).json()["total"] == 1
    finally:
        d.close()
    with psycopg.connect(url) as conn:  # sealed, never plaintext
        dump = b"".join(bytes(v) for row in conn.execute(
            "SELECT secrets FROM jobs UNION ALL SELECT secrets FROM schedules UNION ALL SELECT secrets FROM webhooks")
            for v in row if v is not None)
        text = str(conn.execute("SELECT definition FROM jobs").fetchall())
    assert dump and b"pass" not in dump and PASSWORD.encode() not in dump and b"hmac-k3y" not in dump
    assert PASSWORD not in text and "***" in text


def test_a_daemon_without_the_shared_key_or_with_a_password_in_the_url_is_refused_at_start(tmp_path, postgres):
    from tests.integration.test_exposure import start_twistd

    no_key = start_twistd(tmp_path, f"database: {{url: '{postgres.url}'}}\n", "tcp:0:interface=127.0.0.1")
    assert no_key.returncode == 1 and "database.key_file: is required with database.url" in no_key.stderr
    with_password = postgres.url.replace("test@", "test:secret@")
    refused = start_twistd(tmp_path, f"database: {{url: '{with_password}', key_file: k}}\n",
                           "tcp:0:interface=127.0.0.1")
    assert refused.returncode == 1 and "must not hold a password" in refused.stderr
    assert "secret" not in refused.stderr
