"""The live view through the real daemon: WebSocket /ws (Autobahn and Node clients) and /metrics.

A real migration from the simulator (rate-capped so that it lasts a few seconds)
feeds the WebSocket while clients watch it.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from hypersdk.jobs.model import STAGES
from tests.integration.daemon import REPO, Daemon, wait_for
from tests.integration.jobs import UNREACHABLE_JOB
from tests.integration.vcsim import MiB, Write, create_vm_with_disk

WS_CLIENT = str(Path(__file__).with_name("ws_client.py"))
JS_DIR = REPO / "tests" / "js"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    config = {"metrics": {"enabled": True}, "pipeline": {"max_bytes_per_second": 16 * MiB}}
    d = Daemon(tmp_path_factory.mktemp("daemon"), config).start()
    yield d
    d.close()


def source_vm(si, sim, tmp_path, size=96 * MiB) -> str:
    return create_vm_with_disk(si, sim, tmp_path, f"live-{uuid.uuid4().hex[:8]}", size,
                               [Write(0, MiB, 0x11), Write(size - MiB, MiB, 0x22)])


def job_definition(sim, vm_path, out: Path) -> dict:
    out.mkdir(exist_ok=True)
    return {
        "vm_path": vm_path,
        "source": {"vcenter_url": sim.info.url, "username": "user", "password": "pass", "insecure": True},
        "destination": {"libvirt_uri": "test:///default", "output_dir": str(out)},
        "options": {"network_mapping": {"*": "br0"}, "device_models": "source"},  # no guest on these disks
    }


def start_ws_client(url: str, *extra) -> subprocess.Popen:
    ws_url = url.replace("http://", "ws://") + "/ws"
    return subprocess.Popen([sys.executable, WS_CLIENT, ws_url, *extra], stdout=subprocess.PIPE, text=True)


def read_messages(process: subprocess.Popen, count: int) -> list[dict]:
    return [json.loads(process.stdout.readline()) for _ in range(count)]


def test_autobahn_and_node_clients_follow_a_real_migration(daemon, si, sim, tmp_path):
    watcher = start_ws_client(daemon.url)
    try:
        first = read_messages(watcher, 2)
        assert [m["type"] for m in first] == ["status", "jobs"]
        assert set(first[0]["data"]) >= {"total_jobs", "running_jobs", "completed_jobs", "failed_jobs"}
        assert isinstance(first[1]["data"]["jobs"], list) and first[0]["timestamp"].endswith("Z")

        definition = job_definition(sim, source_vm(si, sim, tmp_path), tmp_path / "out")
        node = subprocess.run(["node", str(JS_DIR / "seed_example.js")], capture_output=True, text=True, timeout=120,
                              cwd=JS_DIR, env={**os.environ, "HYPERSDK_URL": daemon.url,
                                               "HYPERSDK_JOB": json.dumps(definition)})
        assert node.returncode == 0, node.stderr
        lines = node.stdout.splitlines()
        percents = [float(line.split()[1].rstrip("%")) for line in lines if line.startswith("Progress:")]
        assert lines[-1] == "Final: completed", node.stdout
        assert len(percents) >= 5 and percents == sorted(percents) and percents[-1] == 100, percents

        assert watcher.wait(60) == 0
        messages = first + [json.loads(line) for line in watcher.stdout.read().splitlines()]
    finally:
        watcher.kill()
    updates = [m["data"] for m in messages if m["type"] == "job_update"]
    job_id = updates[-1]["id"]
    mine = [u for u in updates if u["id"] == job_id]
    assert mine[0]["status"] == "pending" and mine[-1]["status"] == "completed"
    stages = [u["progress"]["stage"] for u in mine]
    assert [s for s in STAGES if s in stages] == list(dict.fromkeys(stages))  # in pipeline order
    assert {"connecting", "discovery", "conversion", "import", "verification", "done"} <= set(stages)
    copied = [u["progress"]["current_bytes"] for u in mine if u["progress"]["stage"] == "conversion"]
    assert copied == sorted(copied) and len(set(copied)) >= 3  # the copy was seen growing
    assert sum(1 for m in messages if m["type"] == "status") >= 2  # one on connect, then every 2 s
    assert all(set(m) == {"type", "timestamp", "data"} for m in messages)


def test_plain_get_is_426_and_over_limit_upgrades_get_503(tmp_path):
    d = Daemon(tmp_path, {"limits": {"websocket_clients": 1}}).start()
    try:
        plain = d.get("/ws")
        assert plain.status_code == 426 and "WebSocket" in plain.json()["error"]
        first = start_ws_client(d.url, "--seconds", "30")
        try:
            read_messages(first, 1)
            key = "dGhlIHNhbXBsZSBub25jZQ=="
            second = d.get("/ws", headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                           "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": key})
            assert second.status_code == 503 and "limits.websocket_clients" in second.json()["error"]
        finally:
            first.kill()
    finally:
        d.close()


def raw_ws_connection(url: str) -> socket.socket:
    """A WebSocket handshake on a socket that will then never be read from, with a tiny receive buffer."""
    host, port = url.split("//")[1].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert sock.recv(12) == b"HTTP/1.1 101"
    return sock


def test_a_client_that_cannot_keep_up_is_dropped_and_the_others_keep_receiving(tmp_path):
    d = Daemon(tmp_path, {"limits": {"websocket_send_buffer_bytes": 65536}, "worker_count": 8}).start()
    try:
        slow = raw_ws_connection(d.url)
        normal = start_ws_client(d.url, "--until-status", "none", "--seconds", "120")
        received: list[dict] = []
        reader = threading.Thread(target=lambda: received.extend(json.loads(line) for line in normal.stdout),
                                  daemon=True)
        reader.start()  # a reader that keeps up
        try:
            failing = UNREACHABLE_JOB
            batch = 0
            while not d.log_contains("dropped: "):
                assert batch < 30, "the slow client was never dropped"
                assert d.post("/jobs/submit", {"jobs": [failing] * 50}).status_code == 201
                batch += 1
            assert d.post("/jobs/submit", {"jobs": [failing] * 20}).status_code == 201  # after the drop
            jobs = d.post("/jobs/query", {"limit": 20}).json()["jobs"]
            wait_for(lambda: all(d.job(j["id"])["status"] == "failed" for j in jobs), 60, "the last jobs to fail")
            failed_seen = lambda: {m["data"]["id"] for m in list(received)  # noqa: E731
                                   if m["type"] == "job_update" and m["data"]["status"] == "failed"}
            wait_for(lambda: {j["id"] for j in jobs} <= failed_seen(), 30, "the normal client to see them all")
            assert normal.poll() is None  # still connected
            slow.settimeout(5)
            with pytest.raises(OSError):
                while slow.recv(1 << 20):  # what the kernel held, then the reset
                    pass
                raise ConnectionResetError("closed")
        finally:
            normal.kill()
            slow.close()
    finally:
        d.close()


def metrics_of(text: str) -> dict:
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_match_the_api_and_label_routes_by_template(daemon):
    job_ids = [j["id"] for j in daemon.post("/jobs/query", {"limit": 3}).json()["jobs"]]
    before = metrics_of(daemon.get("/metrics").text)
    key = ("hypersdk_api_requests_total", (("method", "GET"), ("path", "/jobs/{id}"), ("status", "OK")))
    for _ in range(7):
        for job_id in job_ids or ["none"]:
            daemon.get(f"/jobs/{job_id}")
    daemon.get("/jobs/does-not-exist")
    response = daemon.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain")
    after = metrics_of(response.text)
    assert after.get(key, 0) - before.get(key, 0) == 7 * len(job_ids)
    assert after[("hypersdk_api_requests_total", (("method", "GET"), ("path", "/jobs/{id}"), ("status", "Not Found")))] >= 1
    assert not any("does-not-exist" in str(labels) for _, labels in after)  # one series per route, not per id
    status = daemon.get("/status").json()
    for name in ("completed", "failed", "running", "pending", "cancelled"):
        assert after[("hypersdk_jobs_total", (("status", name),))] == status[f"{name}_jobs"]
    assert after[("hypersdk_build_info", (("version", status["version"]),))] == 1
    assert ("hypersdk_workers_active", ()) in after and ("hypersdk_websocket_clients", ()) in after
    if status["completed_jobs"]:
        assert after[("hypersdk_bytes_transferred_total", ())] > 0
        assert after[("hypersdk_job_duration_seconds_count", (("status", "completed"),))] >= 1


def test_metrics_off_answer_404_and_a_separate_port_serves_them_alone(tmp_path):
    off = Daemon(tmp_path / "off", {"metrics": {"enabled": False}})
    (tmp_path / "off").mkdir()
    off.start()
    try:
        r = off.get("/metrics")
        assert r.status_code == 404 and r.json()["error"]
    finally:
        off.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "own").mkdir()
    own = Daemon(tmp_path / "own", {"metrics": {"enabled": True, "port": port}}).start()
    try:
        own.get("/status")
        assert own.get("/metrics").status_code == 404
        separate = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert separate.status_code == 200
        samples = metrics_of(separate.text)
        assert samples[("hypersdk_api_requests_total", (("method", "GET"), ("path", "/status"), ("status", "OK")))] >= 1
        assert requests.get(f"http://127.0.0.1:{port}/jobs", timeout=10).status_code == 404
    finally:
        own.close()


def test_schedule_runs_reach_websocket_clients(daemon):
    watcher = start_ws_client(daemon.url, "--until-status", "none", "--seconds", "60")
    received: list[dict] = []
    threading.Thread(target=lambda: received.extend(json.loads(line) for line in watcher.stdout), daemon=True).start()
    try:
        wait_for(lambda: len(received) >= 2, 30, "the initial messages")
        template = UNREACHABLE_JOB
        assert daemon.post("/schedules", {"id": "ws-watch", "schedule": "@yearly",
                                          "job_template": template}).status_code == 201
        job_ids = daemon.post("/schedules/ws-watch/trigger").json()["job_ids"]
        events = wait_for(lambda: (lambda e: e if len(e) >= 2 else None)(
            [m["data"] for m in list(received) if m["type"] == "schedule_event"]), 30, "the run's events")
        assert [(e["schedule_id"], e["event"], e["job_ids"]) for e in events] == \
            [("ws-watch", "triggered", job_ids), ("ws-watch", "failed", job_ids)]
    finally:
        watcher.kill()


def test_clients_that_stop_answering_pings_are_closed_and_the_others_stay(tmp_path):
    d = Daemon(tmp_path, {"limits": {"websocket_ping_interval": 1, "websocket_ping_timeout": 2}}).start()
    try:
        silent = raw_ws_connection(d.url)  # completes the handshake, then never answers a ping
        polite = start_ws_client(d.url, "--until-status", "none", "--seconds", "8")  # Autobahn answers pings
        silent.settimeout(10)
        started = time.monotonic()
        received = b""
        while True:
            try:
                chunk = silent.recv(65536)
            except ConnectionResetError:  # closed by an abort rather than a FIN: closed all the same
                break
            if not chunk:
                break
            received += chunk
        closed_after = time.monotonic() - started
        assert 2 <= closed_after < 6, closed_after
        assert b"\x89" in received  # it was pinged (opcode 9) before being closed
        assert polite.poll() is None  # the answering client is still connected
    finally:
        polite.kill()
        silent.close()
        d.close()
