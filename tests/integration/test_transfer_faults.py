"""Faults of the datastore seen through the real daemon: the vCenter simulator behind an HTTPS proxy
that the test scripts. One chunk's fetch failing in a way nobody foresaw fails the job naming that
range; a host that presents another certificate once a connection is closed never gets the cookie."""

from __future__ import annotations

import http.client
import ssl
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional

from tests.integration import libvirtd
from tests.integration.daemon import Daemon
from tests.integration.test_transfer import Source
from tests.integration.test_transfer_worker import Certificates
from tests.integration.vcsim import MiB, destroy_vm

CHUNK = 8 * MiB


class Proxy:
    """HTTPS in front of the simulator: each request is passed on and its answer passed back, unless
    ``fault(method, path, range)`` names another answer: "broken" (the range's bytes in a chunked body
    ending on a negative chunk size, on which http.client raises ValueError) or "close" (the answer
    passed back with Connection: close). ``certificates`` says which certificate each connection gets."""

    def __init__(self, upstream: tuple[str, int], certificates: Certificates, fault: Callable = lambda *a: None):
        self.connections: list[dict] = []  # per connection: its certificate and the cookies of its requests
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                self.seen = {"certificate": self.request.certificate, "requests": []}
                proxy.connections.append(self.seen)
                self.upstream = http.client.HTTPSConnection(*upstream, timeout=30,
                                                            context=ssl._create_unverified_context())

            def finish(self):
                super().finish()
                self.upstream.close()

            def forward(self):
                self.seen["requests"].append(self.headers.get("Cookie"))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                self.upstream.request(self.command, self.path, body=body, headers=headers)
                answer = self.upstream.getresponse()
                data = answer.read()
                action = fault(self.command, self.path, self.headers.get("Range"))
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                        self.send_header(name, value)
                if action == "broken":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"%x\r\n%s\r\n-5\r\n" % (len(data), data))
                    self.close_connection = True
                    return
                if action == "close":
                    self.send_header("Connection", "close")
                    self.close_connection = True
                length = answer.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_HEAD = do_PUT = forward

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                sock, address = super().get_request()
                name = certificates.next_name()
                tls = certificates.contexts[name].wrap_socket(sock, server_side=True)
                tls.certificate = name
                return tls, address

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Switching(Certificates):
    """``first`` until ``switch()``, then ``second`` on every new connection."""

    def __init__(self, directory: Path):
        super().__init__(directory)
        self.current = "first"

    def next_name(self) -> str:
        return self.current

    def switch(self) -> None:
        self.current = "second"


def colons(digest: str) -> str:
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2)).upper()


def run_job(tmp_path: Path, sim, si, certificates: Switching, fault, source_options: dict) -> tuple[dict, Proxy]:
    """A VM with a 256 MiB flat disk migrated through the proxy: (the finished job, the proxy)."""
    source = Source(si, sim, tmp_path, 256 * MiB, name=f"tf-{uuid.uuid4().hex[:8]}")
    proxy = Proxy((sim.info.host, sim.info.port), certificates, fault)
    out = Path(libvirtd.scratch_dir("hypersdk-tf-"))
    (tmp_path / "d").mkdir()
    d = Daemon(tmp_path / "d").start()
    try:
        definition = source.definition(sim, str(out))
        definition["source"] = {**definition["source"], "vcenter_url": f"https://127.0.0.1:{proxy.port}/sdk",
                                **source_options}
        job = d.wait_finished(d.submit(definition), 120)
        return job, proxy
    finally:
        d.close()
        proxy.close()
        destroy_vm(source.vm)


def is_flat_range(method: str, path: str, range_: Optional[str]) -> bool:
    return method == "GET" and "-flat.vmdk" in path and range_ is not None


def test_a_chunk_whose_fetch_fails_unforeseen_fails_the_job_naming_its_range(tmp_path, sim, si):
    data = f"bytes={16 * CHUNK}-{17 * CHUNK - 1}"  # a chunk of data (0x33), and verification is on

    def fault(method, path, range_):
        return "broken" if is_flat_range(method, path, range_) and range_ == data else None

    certificates = Switching(tmp_path)
    job, _ = run_job(tmp_path, sim, si, certificates, fault, {"insecure": True})
    assert job["status"] == "failed", job["error"]
    assert f"bytes {16 * CHUNK}-{17 * CHUNK - 1}: internal error: ValueError: read length must be non-negative" \
           in job["error"], job["error"]


def test_a_datastore_that_changes_certificate_on_a_reconnect_gets_no_cookie_and_fails_the_job(tmp_path, sim, si):
    certificates = Switching(tmp_path)

    def fault(method, path, range_):
        if is_flat_range(method, path, range_):  # the worker's first answer closes its connection, and from
            certificates.switch()  # then on another host answers under the same name
            return "close"
        return None

    pin = colons(certificates.sha256["first"])
    job, proxy = run_job(tmp_path, sim, si, certificates, fault, {"insecure": False, "thumbprint": pin})
    assert job["status"] == "failed", job["error"]
    assert "does not match the pinned thumbprint" in job["error"], job["error"]
    switched = [c for c in proxy.connections if c["certificate"] == "second"]
    assert switched and all(c["requests"] == [] for c in switched)  # not one request: no cookie
