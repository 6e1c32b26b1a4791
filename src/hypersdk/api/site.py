"""The HTTP site: one Klein app for every route, request ids, body limit, access log."""

from __future__ import annotations

import uuid

from klein import Klein
from twisted.logger import Logger
from twisted.web import server

from ..errors import PayloadTooLarge
from .http import error_response, respond


access_log = Logger(namespace="hypersdk.access")


class APIRequest(server.Request):
    """A request that refuses bodies over the site's limit without storing them."""

    request_id = "-"
    _too_large = False
    _received = 0

    def gotLength(self, length):
        limit = self.channel.site.max_body_bytes
        if length is not None and length > limit:
            self._too_large = True
            length = 0  # keep nothing: the body is refused unread
        super().gotLength(length)

    def handleContentChunk(self, data):
        self._received += len(data)
        if self._received > self.channel.site.max_body_bytes:
            self._too_large = True
        if not self._too_large:
            super().handleContentChunk(data)

    def process(self):
        self.request_id = uuid.uuid4().hex[:16]
        self.started = self.channel.site.reactor.seconds()
        self.setHeader(b"X-Request-Id", self.request_id.encode())
        if self._too_large:
            limit = self.channel.site.max_body_bytes
            error = PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
            self.setHeader(b"Connection", b"close")
            self.write(respond(self, {"error": error.message, "code": error.code}, error.status))
            self.finish()
            return
        super().process()


class APISite(server.Site):
    """twisted.web Site with our request class and a structured access log."""

    requestFactory = APIRequest
    noisy = False

    def __init__(self, resource, reactor, max_body_bytes: int):
        super().__init__(resource, reactor=reactor)
        self.max_body_bytes = max_body_bytes
        self.displayTracebacks = False

    def log(self, request):
        # Our own line instead of the combined log format: never the query
        # string (it may carry a password), always the request id.
        started = getattr(request, "started", None)
        duration_ms = None if started is None else round((self.reactor.seconds() - started) * 1000, 2)
        access_log.info(
            "{client} {method} {path} {status} {duration_ms}ms {request_id}",
            client=getattr(request.getClientAddress(), "host", "-"),
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("utf-8", "replace"),
            status=request.code,
            duration_ms=duration_ms,
            request_id=getattr(request, "request_id", "-"),
        )


def build_app(*areas) -> Klein:
    """One Klein app: each area registers its routes; errors are mapped once."""
    app = Klein()
    for area in areas:
        area.register(app)
    app.handle_errors(Exception)(error_response)
    return app
