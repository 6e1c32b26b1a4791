"""A real HTTP webhook receiver on loopback, scripted per request, for the integration tests."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional


class Receiver:
    """Records every POST; answers by ``script`` (status codes, or ("slow", seconds, status)), then ``default``."""

    def __init__(self, port: int = 0, default=200, tls=None):
        """``tls``: a server-side ssl.SSLContext to answer HTTPS instead of HTTP."""
        self.script: list = []
        self.default = default
        self.received: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.received.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "raw": raw,
                                              "body": json.loads(raw), "path": self.path, "at": time.monotonic()})
                    action = receiver.script.pop(0) if receiver.script else receiver.default
                if isinstance(action, tuple):
                    _, seconds, action = action
                    time.sleep(seconds)
                try:
                    self.send_response(action)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the daemon gave up waiting
                    pass

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/hook"
        self._thread: Optional[threading.Thread] = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def events(self) -> list[str]:
        return [r["body"]["event"] for r in self.received]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
