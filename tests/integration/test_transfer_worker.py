"""The transfer worker as the daemon runs it, against a scripted datastore: retries, a refused cookie,
sparse writes into a raw file and into a qcow2 through qemu-nbd, verification by chunk hashes, a chunk
whose fetch fails in a way nobody foresaw, a certificate pin that holds on every connection, and copies
of given areas only (changed block tracking) into a fresh target and over an older copy."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import succeed

from hypersdk.pipeline.process import ProcessRunner
from hypersdk.pipeline.transfer.engine import DiskCopy, StreamSource, TransferFailed, worker_argv, worker_env
from hypersdk.pipeline.transfer.worker import zero_hash
from hypersdk.pipeline.transfer.plan import area_pieces, area_work, chunks
from hypersdk.store.checkpoints import ChunkRecord
from hypersdk.pipeline.transfer.worker import chunk_hash
from tests.integration.daemon import wait_for
from tests.integration.filesystems import fill, read_only, small_filesystem

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
    "reset" (the connection closes without an answer); a request whose cookie is not ``cookie`` gets 401.
    ``broken``: ranges (the Range header's "A-B") answered with their bytes in a chunked body that ends on a
    negative chunk size, on which http.client raises ValueError (not an HTTPException): an unforeseen
    failure of one chunk's fetch, as a library bug would be. ``close``: answers that say Connection: close."""

    def __init__(self, data: bytes, offset: int = 0, tls: Optional["Certificates"] = None):
        self.data, self.offset = data, offset
        self.script: list = []
        self.broken: set[str] = set()
        self.close = False
        self.cookie = "vmware_soap_session=one"
        self.requests: list[tuple[str, str]] = []
        self.sent = 0  # bytes of the disk sent in 206 answers
        self.connections: list[dict] = []  # per connection: its certificate and the requests it carried
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                self.seen = {"certificate": getattr(self.request, "certificate", None), "requests": []}
                store.connections.append(self.seen)

            def do_GET(self):
                store.requests.append((self.headers.get("Cookie"), self.headers.get("Range")))
                self.seen["requests"].append(self.headers.get("Cookie"))
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
                span = self.headers["Range"].split("=")[1]
                start, end = (int(x) for x in span.split("-"))
                body = (b"\0" * store.offset + store.data)[start:end + 1]
                self.send_response(206)
                if store.close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                if span in store.broken:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"%x\r\n%s\r\n-5\r\n" % (len(body), body))
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                store.sent += len(body)

            def log_message(self, *args):
                pass

        self.server = (TLSServer(tls, Handler) if tls else ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/folder/vm/vm-flat.vmdk?dsName=ds"

    def close_server(self):
        self.server.shutdown()
        self.server.server_close()


class Certificates:
    """Self-signed certificates made for the test; a datastore presents ``names[0]`` on its first
    connection and ``names[1]`` on every later one (a host that changed hands between two requests)."""

    def __init__(self, directory: Path, names=("first", "second")):
        self.names = list(names)
        self.contexts, self.sha256 = {}, {}
        for name in dict.fromkeys(self.names):
            key, cert = directory / f"{name}.key", directory / f"{name}.pem"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}"],
                           check=True, capture_output=True)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.contexts[name] = context
            der = ssl.PEM_cert_to_DER_cert(cert.read_text())
            self.sha256[name] = hashlib.sha256(der).hexdigest()


class TLSServer(ThreadingHTTPServer):
    def __init__(self, certificates: Certificates, handler):
        super().__init__(("127.0.0.1", 0), handler)
        self._certificates, self._accepted = certificates, 0

    def get_request(self):
        sock, address = super().get_request()
        names = self._certificates.names
        name = names[min(self._accepted, len(names) - 1)]
        self._accepted += 1
        tls = self._certificates.contexts[name].wrap_socket(sock, server_side=True)
        tls.certificate = name
        return tls, address


@pytest.fixture
def datastore():
    store = Datastore(disk_content(), offset=512)
    yield store
    store.close_server()


def run_worker(spec: dict, tmp_path: Path, on_line=None, timeout: float = 60, expect_exit=(0, 1)) -> list[dict]:
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
    code = process.wait(timeout)
    assert code in expect_exit if isinstance(expect_exit, tuple) else code == expect_exit, lines
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
        target = {"kind": "nbd", "socket": str(nbd_socket), "path": str(image)}
        lines = run_worker(copy_spec(datastore, tmp_path, target), tmp_path)
        assert lines[-1]["done"] is True
        expected = {line["chunk"]: line["hash"] for line in lines if "chunk" in line}
        checked = run_worker({"mode": "verify", "target": target,
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


FULL = ("no space left on the destination's file system (writing {path}, bytes {start}-{end}): free space there,"
        " then resume the job: the chunks copied so far are kept")


def test_a_raw_file_on_a_full_file_system_ends_the_worker_naming_the_condition_the_file_and_the_resume(
        datastore, tmp_path):
    with small_filesystem(4 * MiB) as directory:
        fill(directory)
        target = directory / "disk.raw"
        lines = run_worker(copy_spec(datastore, tmp_path, {"kind": "file", "path": str(target), "size": SIZE},
                                     streams=1), tmp_path, expect_exit=1)
    assert lines[-1] == {"error": FULL.format(path=target, start=0, end=CHUNK - 1), "kind": "target"}
    assert not [line for line in lines if "chunk" in line]


def test_a_qcow2_on_a_full_file_system_ends_the_worker_naming_the_condition_as_libnbd_reports_it(
        datastore, tmp_path):
    with small_filesystem(4 * MiB) as directory:
        image = directory / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(SIZE)], check=True)
        nbd_socket = tmp_path / "nbd.sock"
        server = subprocess.Popen(["qemu-nbd", "--format=qcow2", "--shared=8", "--persistent", "--cache=writeback",
                                   "--socket", str(nbd_socket), str(image)])
        try:
            wait_for(lambda: nbd_socket.exists(), 10, "qemu-nbd")
            fill(directory)
            target = {"kind": "nbd", "socket": str(nbd_socket), "path": str(image)}
            lines = run_worker(copy_spec(datastore, tmp_path, target, streams=1), tmp_path, expect_exit=1)
        finally:
            server.terminate()
            server.wait(10)
    assert lines[-1]["kind"] == "target"
    assert lines[-1]["error"] in (FULL.format(path=image, start=0, end=CHUNK - 1),  # the write, or the flush after it
                                  FULL.format(path=image, start=0, end=CHUNK - 1).replace(
                                      f"writing {image}, bytes 0-{CHUNK - 1}", f"syncing {image}"))


def test_a_destination_on_a_read_only_file_system_ends_the_worker_before_any_read(datastore, tmp_path):
    with small_filesystem(4 * MiB) as directory:
        read_only(directory)
        target = directory / "disk.raw"
        lines = run_worker(copy_spec(datastore, tmp_path, {"kind": "file", "path": str(target), "size": SIZE}),
                           tmp_path, expect_exit=1)
    assert lines == [{"error": f"the destination's file system is read-only (opening {target}): make it writable, or"
                               " choose another output_dir or storage pool, then resume the job", "kind": "target"}]
    assert datastore.requests == []


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


def test_a_chunk_whose_fetch_fails_unforeseen_ends_the_worker_with_an_error_naming_its_range(datastore, tmp_path):
    plan = chunks(SIZE, CHUNK)
    datastore.broken = {f"{512 + plan[6].offset}-{512 + plan[6].end - 1}"}
    lines = run_worker(copy_spec(datastore, tmp_path, {"kind": "file", "path": str(tmp_path / "d.raw"), "size": SIZE},
                                 streams=2), tmp_path, expect_exit=1)
    assert lines[-1]["kind"] == "internal"
    assert lines[-1]["error"] == (f"bytes {6 * CHUNK}-{7 * CHUNK - 1}: internal error: ValueError: read length must be"
                                  " non-negative or -1")
    assert 6 not in {line["chunk"] for line in lines if "chunk" in line}


def test_every_connection_to_the_datastore_is_checked_against_the_pin_before_a_request(tmp_path):
    certificates = Certificates(tmp_path)
    store = Datastore(disk_content(), offset=512, tls=certificates)
    store.close = True  # each answer closes its connection: http.client opens the next one by itself
    try:
        spec = copy_spec(store, tmp_path, {"kind": "file", "path": str(tmp_path / "d.raw"), "size": SIZE}, streams=1,
                         tls={"pin": certificates.sha256["first"]})
        lines = run_worker(spec, tmp_path, expect_exit=1)
    finally:
        store.close_server()
    assert lines[-1]["kind"] == "transport"
    assert lines[-1]["error"] == ("the datastore's TLS certificate does not match the pinned thumbprint"
                                  f" {certificates.sha256['first']} (127.0.0.1:{store.server.server_address[1]}"
                                  f" presented {certificates.sha256['second']})")
    first, *others = store.connections
    assert first == {"certificate": "first", "requests": [store.cookie]}
    assert others and all(c["requests"] == [] for c in others)  # the other certificate never got the cookie
    assert [line["chunk"] for line in lines if "chunk" in line] == [0]


async def disk_copy(store: Datastore, tmp_path: Path, tls: dict, streams: int = 3):
    """The daemon's DiskCopy over a real worker on the real reactor: (its error message, the chunks it stored)."""
    (tmp_path / "cookie").write_text(store.cookie)
    saved = []

    async def nothing():
        pass

    copy = DiskCopy(ProcessRunner(reactor), reactor, job_id="test-job", label="Hard disk 1",
                    source=StreamSource(store.url, str(tmp_path / "cookie"), tls, 512, SIZE, "vc.example:443"),
                    chunks=chunks(SIZE, CHUNK), save=lambda records: succeed(saved.extend(r.index for r in records)),
                    renew_cookie=nothing, refresh_cookie=nothing, on_done=lambda n: None, stall_timeout=60,
                    streams=streams, fresh=True, timeout=5)
    with pytest.raises(TransferFailed) as failed:
        await copy.run({"kind": "file", "path": str(tmp_path / "d.raw"), "size": SIZE})
    return failed.value.message, saved


@pytest_twisted.ensureDeferred
async def test_the_daemon_fails_a_disk_copy_naming_the_range_whose_fetch_failed_unforeseen(datastore, tmp_path):
    datastore.broken = {f"{512 + 3 * CHUNK}-{512 + 4 * CHUNK - 1}"}
    message, saved = await disk_copy(datastore, tmp_path, {})
    assert message == (f"copying Hard disk 1 from vCenter vc.example:443: bytes {3 * CHUNK}-{4 * CHUNK - 1}: internal"
                       " error: ValueError: read length must be non-negative or -1")
    assert 3 not in saved


@pytest_twisted.ensureDeferred
async def test_the_daemon_fails_a_disk_copy_whose_datastore_changes_certificate_on_a_reconnect(tmp_path):
    certificates = Certificates(tmp_path)
    store = Datastore(disk_content(), offset=512, tls=certificates)
    store.close = True
    try:
        message, saved = await disk_copy(store, tmp_path, {"pin": certificates.sha256["first"]}, streams=1)
    finally:
        store.close_server()
    assert message.startswith("copying Hard disk 1 from vCenter vc.example:443: the datastore's TLS certificate does"
                              f" not match the pinned thumbprint {certificates.sha256['first']}")
    assert saved == [0] and all(c["requests"] == [] for c in store.connections[1:])


# -- copies of given areas (changed block tracking) ----------------------------------------------------------

K64 = 64 * 1024


class Destination:
    """A raw file, or a qcow2 served by qemu-nbd, made from ``data`` (None: new and empty)."""

    def __init__(self, kind: str, tmp_path: Path, data: Optional[bytes]):
        self.kind, self.tmp_path, self.server = kind, tmp_path, None
        raw = tmp_path / "disk.raw"
        if data is None:
            raw.touch()
            os.truncate(raw, SIZE)
        else:
            raw.write_bytes(data)
        if kind == "raw":
            self.path = raw
            self.target = {"kind": "file", "path": str(raw), "size": SIZE}
            return
        self.path = tmp_path / "disk.qcow2"
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(self.path)], check=True)
        raw.unlink()
        nbd_socket = tmp_path / "nbd.sock"
        self.server = subprocess.Popen(["qemu-nbd", "--format=qcow2", "--shared=8", "--persistent", "--cache=writeback",
                                        "--discard=unmap", "--socket", str(nbd_socket), str(self.path)])
        wait_for(lambda: nbd_socket.exists(), 10, "qemu-nbd")
        self.target = {"kind": "nbd", "socket": str(nbd_socket), "path": str(self.path)}

    def verified(self) -> dict[int, str]:
        """What verification hashes, chunk by chunk (the worker's verify, every chunk read)."""
        lines = run_worker({"mode": "verify", "target": self.target,
                            "chunks": [[c.index, c.offset, c.length] for c in chunks(SIZE, CHUNK)]}, self.tmp_path)
        assert lines[-1] == {"done": True}, lines
        return {line["checked"]: line["hash"] for line in lines if "checked" in line}

    def content(self) -> bytes:
        if self.kind == "raw":
            return self.path.read_bytes()
        self.close()
        back = self.tmp_path / "back.raw"
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(self.path), str(back)], check=True)
        return back.read_bytes()

    def close(self):
        if self.server is not None:
            self.server.terminate()
            self.server.wait(10)
            self.server = None


@pytest.fixture(params=["raw", "qcow2"])
def destination(request, tmp_path):
    made = []

    def make(data: Optional[bytes]) -> Destination:
        made.append(Destination(request.param, tmp_path, data))
        return made[-1]
    yield make
    for d in made:
        d.close()


def copy_areas(datastore: Datastore, tmp_path: Path, destination: Destination, areas, done: dict, fresh: bool):
    """The worker run as JobCopier runs it for ``areas``: (records of every chunk afterwards, its lines)."""
    plan = chunks(SIZE, CHUNK)
    work = area_work(plan, done, area_pieces(plan, areas), fresh)
    spec = copy_spec(datastore, tmp_path, destination.target, fresh=fresh,
                     chunks=[[c.index, c.offset, c.length] for c in work.copy],
                     areas={str(c.index): {"pieces": [list(p) for p in work.pieces[c.index]],
                                           "outside": work.outside[c.index]} for c in work.copy})
    lines = run_worker(spec, tmp_path)
    assert lines[-1]["done"] is True, lines
    records = {i: r.hash for i, r in done.items()}
    records.update({c.index: zero_hash(c.length) for c in work.zero})
    reported = [line["chunk"] for line in lines if "chunk" in line]
    assert sorted(reported) == [c.index for c in work.copy]  # each once
    records.update({line["chunk"]: line["hash"] for line in lines if "chunk" in line})
    assert max(line["read"] for line in lines if "read" in line) == work.read_bytes
    return records, lines


def test_an_allocated_only_copy_into_a_fresh_target_reads_only_the_areas(datastore, tmp_path, destination):
    areas = [(0, MiB), (17 * MiB, K64), (SIZE - K64, K64)]  # where disk_content() holds data, 64 KiB-aligned
    target = destination(None)
    records, _ = copy_areas(datastore, tmp_path, target, areas, {}, fresh=True)
    assert datastore.sent == MiB + 2 * K64  # not the chunks around them
    assert sorted(r for _c, r in datastore.requests) == sorted(f"bytes={512 + s}-{512 + s + n - 1}" for s, n in areas)
    assert records == target.verified()  # the zero chunks' records too, never read
    assert target.content() == datastore.data


def test_a_later_pass_over_an_older_copy_reads_only_the_changed_areas_and_its_records_verify(
        datastore, tmp_path, destination):
    old = datastore.data
    new = bytearray(old)
    new[256 * 1024:512 * 1024] = bytes(256 * 1024)  # data that became zeros
    new[CHUNK - K64:CHUNK + K64] = b"\x11" * 2 * K64  # across a chunk boundary
    new[5 * CHUNK:5 * CHUNK + K64] = b"\x22" * K64  # in a chunk of zeros
    new[5 * CHUNK + 2 * K64:5 * CHUNK + 3 * K64] = b"\x23" * K64  # apart from it in the same chunk
    new[SIZE - 2 * K64:SIZE - K64] = b"\x33" * K64  # next to the data of the last chunk
    areas = [(256 * 1024, 256 * 1024), (CHUNK - K64, 2 * K64), (5 * CHUNK, K64), (5 * CHUNK + 2 * K64, K64),
             (SIZE - 2 * K64, K64)]
    target = destination(old)
    plan = chunks(SIZE, CHUNK)
    done = {c.index: ChunkRecord(c.index, chunk_hash(old[c.offset:c.end]), not any(old[c.offset:c.end]))
            for c in plan}
    datastore.data = bytes(new)
    records, lines = copy_areas(datastore, tmp_path, target, areas, done, fresh=False)
    assert datastore.sent == sum(n for _s, n in areas)
    pieces = [*areas[:1], (CHUNK - K64, K64), (CHUNK, K64), *areas[2:]]  # the boundary's area cut in two
    assert sorted(r for _c, r in datastore.requests) == sorted(f"bytes={512 + s}-{512 + s + n - 1}" for s, n in pieces)
    assert {line["chunk"] for line in lines if "chunk" in line} == {0, 1, 5, 9}
    assert records == target.verified() == {c.index: chunk_hash(new[c.offset:c.end]) for c in plan}
    assert target.content() == bytes(new)
