"""The transfer worker as the daemon runs it, against a scripted datastore: retries, a refused cookie,
sparse writes into a raw file and into a qcow2 through qemu-nbd, and verification by chunk hashes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hypersdk.pipeline.transfer.engine import worker_argv, worker_env
from hypersdk.pipeline.transfer.plan import chunks
from hypersdk.pipeline.transfer.worker import chunk_hash
from tests.integration.daemon import wait_for

MiB = 1 << 20
SIZE = 40 * MiB
CHUNK = 4 * MiB


def disk_content() -> bytes:
    data = bytearray(SIZE)
    data[0:MiB] = b"\xab" * MiB
    data[17 * MiB + 5] = 0x01  # one byte in an otherwise empty chunk
    data[SIZE - 4096:] = b"\xef" * 4096
    return bytes(data)


class Datastore:
    """Serves DATA with byte ranges; ``script`` says what the next requests get instead: a status code,
    "reset" (the connection closes without an answer); a request whose cookie is not ``cookie`` gets 401."""

    def __init__(self, data: bytes, offset: int = 0):
        self.data, self.offset = data, offset
        self.script: list = []
        self.cookie = "vmware_soap_session=one"
        self.requests: list[tuple[str, str]] = []
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                store.requests.append((self.headers.get("Cookie"), self.headers.get("Range")))
                action = store.script.pop(0) if store.script else None
                if action == "reset":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action is None and self.headers.get("Cookie") != store.cookie:
                    action = 401
                if action:
                    self.send_response(action)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start, end = (int(x) for x in self.headers["Range"].split("=")[1].split("-"))
                body = (b"\0" * store.offset + store.data)[start:end + 1]
                self.send_response(206)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/folder/vm/vm-flat.vmdk?dsName=ds"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def datastore():
    store = Datastore(disk_content(), offset=512)
    yield store
    store.close()


def run_worker(spec: dict, tmp_path: Path, on_line=None, timeout: float = 60) -> list[dict]:
    process = subprocess.Popen(worker_argv("test-job"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               env={**worker_env(), "PATH": os.environ["PATH"]})
    process.stdin.write(json.dumps(spec) + "\n")
    process.stdin.flush()
    lines = []
    for raw in iter(process.stdout.readline, ""):
        line = json.loads(raw)
        lines.append(line)
        if on_line:
            on_line(line)
    assert process.wait(timeout) in (0, 1)
    return lines


def copy_spec(datastore: Datastore, tmp_path: Path, target: dict, **changes) -> dict:
    cookie = tmp_path / "cookie"
    if not cookie.exists():
        cookie.write_text(datastore.cookie)
    return {"mode": "copy", "url": datastore.url, "cookie_file": str(cookie), "tls": {}, "source_offset": 512,
            "streams": 3, "chunks": [[c.index, c.offset, c.length] for c in chunks(SIZE, CHUNK)], "fresh": True,
            "target": target, "timeout": 5, **changes}


def test_transport_errors_and_a_refused_cookie_are_ridden_out_and_the_copy_is_exact_and_sparse(datastore, tmp_path):
    datastore.script = [503, "reset", 500]
    target = tmp_path / "disk.raw"
    renewed = []

    def renew(line):  # what the daemon does on {"auth": ...}: a new login's cookie, written whole
        if "auth" in line:
            datastore.cookie = "vmware_soap_session=two"
            (tmp_path / "cookie.new").write_text(datastore.cookie)
            os.replace(tmp_path / "cookie.new", tmp_path / "cookie")
            renewed.append(line)

    (tmp_path / "cookie").write_text("vmware_soap_session=expired")
    lines = run_worker(copy_spec(datastore, tmp_path, {"kind": "file", "path": str(target), "size": SIZE}),
                       tmp_path, on_line=renew)
    assert lines[-1]["done"] is True
    assert len([line for line in lines if "retry" in line]) == 3 and renewed
    records = {line["chunk"]: line for line in lines if "chunk" in line}
    assert sorted(records) == list(range(10))
    data = target.read_bytes()
    assert data == datastore.data
    assert all(records[i]["hash"] == chunk_hash(data[i * CHUNK:(i + 1) * CHUNK]) for i in records)
    assert sorted(i for i in records if records[i]["zero"]) == [1, 2, 3, 5, 6, 7, 8]
    assert os.stat(target).st_blocks * 512 < 3 * MiB  # only the blocks holding data were written


def test_into_a_qcow2_through_qemu_nbd_then_verified_by_chunk_hashes(datastore, tmp_path):
    image = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(SIZE)], check=True)
    nbd_socket = tmp_path / "nbd.sock"
    server = subprocess.Popen(["qemu-nbd", "--format=qcow2", "--shared=8", "--persistent", "--socket",
                               str(nbd_socket), str(image)])
    try:
        wait_for(lambda: nbd_socket.exists(), 10, "qemu-nbd")
        lines = run_worker(copy_spec(datastore, tmp_path, {"kind": "nbd", "socket": str(nbd_socket)}), tmp_path)
        assert lines[-1]["done"] is True
        expected = {line["chunk"]: line["hash"] for line in lines if "chunk" in line}
        checked = run_worker({"mode": "verify", "target": {"kind": "nbd", "socket": str(nbd_socket)},
                              "chunks": [[c.index, c.offset, c.length] for c in chunks(SIZE, CHUNK)]}, tmp_path)
        assert {line["checked"]: line["hash"] for line in checked if "checked" in line} == expected
    finally:
        server.terminate()
        server.wait(10)
    raw = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(image), str(raw)], check=True)
    assert raw.read_bytes() == datastore.data
    allocated = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)], capture_output=True,
                                          text=True, check=True).stdout)["actual-size"]
    assert allocated < 4 * MiB


def test_a_source_that_keeps_failing_ends_the_worker_with_an_error_naming_the_range(datastore, tmp_path):
    datastore.script = [503] * 100
    started = time.monotonic()
    lines = run_worker(copy_spec(datastore, tmp_path, {"kind": "file", "path": str(tmp_path / "d.raw"), "size": SIZE},
                                 retries=2, streams=1, chunks=[[0, 0, CHUNK]]), tmp_path)
    assert lines[-1]["kind"] == "transport" and "bytes 0-4194303: HTTP 503 (2 retries)" in lines[-1]["error"]
    assert time.monotonic() - started < 10  # backoff 1 s, 2 s


def test_a_datastore_that_ignores_ranges_is_a_clear_error(tmp_path):
    class Whole(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"data")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Whole)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "cookie").write_text("c")
        spec = {"mode": "copy", "url": f"http://127.0.0.1:{server.server_address[1]}/folder/x", "tls": {},
                "cookie_file": str(tmp_path / "cookie"), "chunks": [[0, 0, 4]], "streams": 1,
                "target": {"kind": "file", "path": str(tmp_path / "x"), "size": 4}}
        lines = run_worker(spec, tmp_path)
        assert lines[-1] == {"error": "the datastore answered HTTP 200 to a range request (it serves no byte ranges)",
                             "kind": "source"}
    finally:
        server.shutdown()
        server.server_close()
