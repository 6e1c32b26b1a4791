"""Safe to expose: tokens and roles, refusal of an open listener, rate limits and TLS, on the real daemon."""

import datetime
import socket
import subprocess
import sys

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.jobs import UNREACHABLE_JOB, job_for_vcenter
from tests.integration.daemon import TWISTD, Daemon, daemon_env, wait_for
from tests.integration.test_live import WS_CLIENT

ADMIN = "adm1n-t0ken-from-a-file"
READER = "r3ad-t0ken-inline"
JOB = UNREACHABLE_JOB


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    home = tmp_path_factory.mktemp("auth")
    token_file = home / "admin.token"
    token_file.write_text(ADMIN + "\n")
    token_file.chmod(0o600)
    config = {"metrics": {"enabled": True},
              "auth": {"tokens": [{"name": "ops", "token_file": str(token_file), "role": "admin"},
                                  {"name": "grafana", "token": READER, "role": "read"}]}}
    d = Daemon(home, config).start()
    yield d
    d.close()


def call(d, method, path, token=None, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, d.url + path, headers=headers, timeout=30, **kw)


def test_tokens_and_roles(guarded):
    assert call(guarded, "GET", "/health").json()["status"] == "ok"  # always open
    missing = call(guarded, "GET", "/status")
    assert missing.status_code == 401 and missing.json()["code"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert call(guarded, "GET", "/status", token="wrong").status_code == 401
    assert call(guarded, "GET", "/status", token=READER).status_code == 200
    assert call(guarded, "POST", "/jobs/query", token=READER, json={}).status_code == 200
    forbidden = call(guarded, "POST", "/jobs/submit", token=READER, json=JOB)
    assert forbidden.status_code == 403 and "needs an admin token" in forbidden.json()["error"]
    assert call(guarded, "POST", "/jobs/submit", token=ADMIN, json=JOB).status_code == 201
    assert call(guarded, "GET", "/metrics", token=READER).status_code == 200
    log = guarded.output()
    assert "denied GET /status from 127.0.0.1: no token" in log
    assert "denied POST /jobs/submit from 127.0.0.1: read-only token (grafana)" in log
    assert ADMIN not in log and READER not in log
    metrics = call(guarded, "GET", "/metrics", token=READER).text
    assert 'hypersdk_api_denied_total{reason="no token"}' in metrics
    assert 'hypersdk_api_denied_total{reason="read-only token"} 1.0' in metrics


def ws_handshake(d, path: str, headers: str = "") -> bytes:
    host, port = d.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
                     .encode())
        return sock.recv(12)


def test_websocket_takes_the_token_in_a_header_or_the_query(guarded):
    assert ws_handshake(guarded, "/ws") == b"HTTP/1.1 401"
    assert ws_handshake(guarded, "/ws?token=nope") == b"HTTP/1.1 401"
    assert ws_handshake(guarded, "/ws", f"Authorization: Bearer {READER}\r\n") == b"HTTP/1.1 101"
    ws_url = guarded.url.replace("http://", "ws://") + f"/ws?token={READER}"
    client = subprocess.run([sys.executable, WS_CLIENT, ws_url, "--until-status", "none", "--seconds", "3"],
                            capture_output=True, text=True, timeout=30)
    assert '"type":"status"' in client.stdout.splitlines()[0]
    assert READER not in guarded.output()  # the query string is never logged


def start_twistd(tmp_path, config_text: str, listen: str) -> subprocess.CompletedProcess:
    path = tmp_path / "c.yaml"
    path.write_text(config_text)
    return subprocess.run([TWISTD, "--pidfile=", "-n", "hypersdk", "--config", str(path), "--listen", listen],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path, env=daemon_env(tmp_path))


def test_a_listener_open_to_other_hosts_needs_tokens_or_an_explicit_choice(tmp_path):
    refused = start_twistd(tmp_path, f"database: {{path: {tmp_path}/db}}\n", "tcp:0")
    assert refused.returncode == 1
    assert "reachable from other hosts and auth has no tokens" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    d = Daemon(tmp_path / "anon", {"auth": {"allow_anonymous": True}}, listen="tcp:0")
    (tmp_path / "anon").mkdir()
    d.start()
    try:
        assert d.get("/status").status_code == 200
    finally:
        d.close()


def test_rate_limit_answers_429_with_retry_after(tmp_path):
    d = Daemon(tmp_path, {"limits": {"requests_per_second": 2, "burst": 5}}).start()
    try:
        codes = [d.get("/status").status_code for _ in range(8)]
        assert codes[:5] == [200] * 5 and 429 in codes[5:]
        limited = d.get("/status")
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert "at most 2 per second" in limited.json()["error"]
        assert d.get("/health").status_code == 200
        wait_for(lambda: d.get("/status").status_code == 200, 5, "the bucket to refill")
    finally:
        d.close()


def self_signed(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_the_api_over_tls(tmp_path):
    key, cert = self_signed(tmp_path)
    listen = f"ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1"
    d = Daemon(tmp_path, {"auth": {"tokens": [{"name": "ops", "token": ADMIN, "role": "admin"}]}}, listen=listen,
               scheme="https").start()
    try:
        assert d.url.startswith("https://")
        trusted = {"verify": str(cert), "token": ADMIN}  # explicit verify: REQUESTS_CA_BUNDLE would win over a session's
        assert call(d, "GET", "/status", **trusted).json()["worker_count"] == 4
        assert call(d, "POST", "/jobs/submit", json=JOB, **trusted).status_code == 201
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(d.url + "/health", timeout=10)  # not trusted without the certificate
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(d.url.replace("https://", "http://") + "/health", timeout=10)
    finally:
        d.close()


def test_jobs_beyond_the_per_vcenter_limit_wait_in_the_queue(tmp_path, black_hole):
    d = Daemon(tmp_path, {"worker_count": 3, "limits": {"jobs_per_vcenter": 1},
                          "pipeline": {"connect_timeout": 30}}).start()
    try:
        silent = job_for_vcenter(black_hole)
        first, second = d.submit(silent), d.submit(silent)
        other = d.submit(JOB)  # another vCenter: not held back
        wait_for(lambda: d.job(first)["status"] == "running", 10, "the first job to start")
        wait_for(lambda: d.job(other)["status"] == "failed", 10, "the other vCenter's job to run")
        assert d.job(second)["status"] == "pending"  # a worker is free, but its vCenter is at the limit
        d.post("/jobs/cancel", {"job_ids": [first]})
        wait_for(lambda: d.job(second)["status"] == "running", 10, "the second job to start")
    finally:
        d.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_metrics_port_open_to_other_hosts_needs_tokens_or_an_explicit_choice(tmp_path):
    port = free_port()
    metrics = f"metrics: {{enabled: true, port: {port}}}\n"
    database = f"database: {{path: {tmp_path}/db}}\n"
    # The API is open on purpose; metrics on their own port, reachable from other hosts, are not.
    refused = start_twistd(tmp_path, database + metrics + "auth: {allow_anonymous: true}\n", "tcp:0")
    assert refused.returncode == 1
    assert f"metrics.port {port} is reachable from other hosts and auth has no tokens" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    (tmp_path / "open").mkdir()
    d = Daemon(tmp_path / "open", {"metrics": {"enabled": True, "port": port, "allow_anonymous": True},
                                   "auth": {"allow_anonymous": True}}, listen="tcp:0").start()
    try:
        assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 200
    finally:
        d.close()


def test_a_metrics_port_of_its_own_asks_for_the_api_tokens(tmp_path):
    port = free_port()
    d = Daemon(tmp_path, {"metrics": {"enabled": True, "port": port},
                          "auth": {"tokens": [{"name": "ops", "token": ADMIN, "role": "admin"},
                                              {"name": "prometheus", "token": READER, "role": "read"}]}},
               listen="tcp:0").start()  # every interface, metrics too
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        missing = requests.get(url, timeout=10)
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert "token" in missing.json()["error"]
        assert requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
        for token in (READER, ADMIN):
            answered = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert answered.status_code == 200 and "hypersdk_build_info" in answered.text
        assert "denied GET /metrics from 127.0.0.1: no token" in d.output()
    finally:
        d.close()
