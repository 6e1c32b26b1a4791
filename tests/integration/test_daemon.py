"""The daemon as a user meets it: twistd, HTTP, restarts, signals, bad input."""

import json
import signal
import sqlite3
import subprocess
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import definition
from tests.integration.daemon import TWISTD, Daemon, daemon_env, wait_for

PASSWORD = "s3cret-Pa55"


def stuck_job(vcenter, **changes):
    d = definition(**changes)
    d["source"]["vcenter_url"] = vcenter
    d["source"]["insecure"] = True
    return d


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, {"worker_count": 1}).start()
    yield d
    d.close()


def test_health_status_and_json_errors(daemon):
    assert daemon.get("/health").json()["status"] == "ok"
    status = daemon.get("/status").json()
    assert status["worker_count"] == 1 and status["total_jobs"] == 0
    missing = daemon.get("/no/such/thing")
    assert missing.status_code == 404 and missing.headers["Content-Type"] == "application/json"
    wrong = daemon.get("/jobs/cancel")
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"


def test_submit_query_get_and_cancel_a_running_job(daemon, black_hole):
    first = daemon.submit(stuck_job(black_hole))
    second = daemon.submit(stuck_job(black_hole))
    daemon.wait_job(first, lambda j: j["status"] == "running" and j["progress"]["stage"] == "connecting")
    body = daemon.post("/jobs/query", {"all": True, "status": ["running", "pending"]}).json()
    assert [j["id"] for j in body["jobs"]] == [second, first] and body["total"] == 2
    assert daemon.get("/status").json()["active_workers"] == 1

    started = time.monotonic()
    response = daemon.post("/jobs/cancel", {"job_ids": [first]}).json()
    assert response["cancelled"] == [first] and response["count"] == 1
    assert time.monotonic() - started < 2
    assert daemon.job(first)["status"] == "cancelled"
    # the queue moves on: the second job starts in the freed slot
    daemon.wait_job(second, lambda j: j["status"] == "running")
    daemon.post("/jobs/cancel", {"status": "running"})
    assert daemon.job(second)["status"] == "cancelled"
    history = [h["message"] for h in daemon.job(first)["history"]]
    assert history[0] == "submitted" and history[-1] == "cancelled"


def test_jobs_survive_a_crash_and_the_queue_resumes(tmp_path, black_hole):
    d = Daemon(tmp_path, {"worker_count": 1}).start()
    try:
        running = d.submit(stuck_job(black_hole))
        pending = d.submit(stuck_job(black_hole))
        failed = d.submit(stuck_job("127.0.0.1:1"))  # refused: fails once it runs
        d.wait_job(running, lambda j: j["status"] == "running")
        d.kill()  # SIGKILL: no clean-up at all
        d.start()
        job = d.job(running)
        assert job["status"] == "failed"
        assert job["error"] == "interrupted: daemon restarted during connecting"
        d.wait_job(pending, lambda j: j["status"] == "running")
        assert d.job(failed)["status"] == "pending"
        assert d.job(pending)["definition"]["source"]["password"] == "***"
        assert d.get("/status").json()["total_jobs"] == 3
    finally:
        d.close()


def test_sigterm_interrupts_running_jobs_and_exits_cleanly(tmp_path, black_hole):
    d = Daemon(tmp_path, {"worker_count": 2}).start()
    try:
        job_id = d.submit(stuck_job(black_hole))
        d.wait_job(job_id, lambda j: j["progress"]["stage"] == "connecting")
        started = time.monotonic()
        # twistd ends by re-raising the signal once it has shut down cleanly
        assert d.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 30
        assert d.log_contains("hypersdk stopped")
        d.start()
        job = d.job(job_id)
        assert (job["status"], job["error"]) == ("failed", "interrupted: daemon stopped during connecting")
    finally:
        d.close()


@pytest.mark.sqlite_only  # not collected on PostgreSQL (tests/conftest.py)
def test_passwords_reach_no_response_log_or_database_file(tmp_path, black_hole):
    d = Daemon(tmp_path, {"worker_count": 1}).start()
    try:
        job_id = d.submit(stuck_job(black_hole))
        d.wait_job(job_id, lambda j: j["status"] == "running")
        texts = [d.get(f"/jobs/{job_id}").text, d.post("/jobs/query", {}).text]
        d.stop()
        texts.append(d.output())
        for path in (tmp_path / "var").iterdir():
            if path.is_file():
                texts.append(path.read_bytes().decode("latin-1"))
        assert all(PASSWORD not in text for text in texts)
        key = tmp_path / "var" / "jobs.db.key"
        assert oct(key.stat().st_mode & 0o777) == "0o600"
    finally:
        d.close()


def test_body_limits_and_media_types(tmp_path):
    d = Daemon(tmp_path, {"limits": {"max_body_bytes": 4096}}).start()
    try:
        too_big = d.post("/jobs/submit", definition(metadata={"x": "y" * 10000}))
        assert too_big.status_code == 413 and "4096" in too_big.json()["error"]
        form = requests.post(d.url + "/jobs/submit", data={"vm_path": "x"}, timeout=10)
        assert form.status_code == 415
        broken = requests.post(d.url + "/jobs/submit", data=b"{not json", headers={"Content-Type": "application/json"},
                               timeout=10)
        assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
        assert d.get("/status").json()["total_jobs"] == 0
    finally:
        d.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=15,
)
fields = st.sampled_from(["vm_path", "source", "destination", "options", "metadata", "id", "name", "jobs"])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(json_values, st.dictionaries(fields, json_values)))
def test_any_json_body_gets_a_json_answer_never_a_500(shared_daemon, body):
    response = shared_daemon.post("/jobs/submit", body)
    assert response.status_code in (201, 400), response.text
    assert response.headers["Content-Type"] == "application/json"
    assert "error" in response.json() or response.status_code == 201
    query = shared_daemon.post("/jobs/query", body)
    assert query.status_code in (200, 400), query.text


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("shared"), {"worker_count": 1}).start()
    yield d
    d.close()


def test_config_errors_stop_startup_with_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("worker_count: 2\nlog:\n  formt: json\n")
    out = subprocess.run([TWISTD, "--pidfile=", "-n", "hypersdk", "--config", str(config)], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path, env=daemon_env(tmp_path))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"hypersdk: {config}: log.formt: unknown key"]


def test_json_log_format_writes_one_object_per_line(tmp_path):
    d = Daemon(tmp_path, {"log": {"format": "json", "level": "info"}}).start()
    try:
        d.get("/status")
        wait_for(lambda: '"/status"' in d.output(), 10, "the access log line")
    finally:
        d.stop()
    records = [json.loads(line) for line in d.output().splitlines() if line.startswith("{")]
    access = [r for r in records if r.get("path") == "/status"]
    assert access and access[0]["status"] == 200 and access[0]["method"] == "GET"


@pytest.mark.sqlite_only  # not collected on PostgreSQL (tests/conftest.py)
def test_database_uses_wal_and_indexes(tmp_path):
    d = Daemon(tmp_path).start()
    d.stop()
    conn = sqlite3.connect(tmp_path / "var" / "jobs.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {row[1] for row in conn.execute("SELECT * FROM sqlite_master WHERE type = 'index'")}
    assert {"jobs_by_created", "jobs_by_status_created", "jobs_pending_fifo"} <= indexes
