"""The HTTP site: one Klein app for every route, request ids, body limit, access log."""

from __future__ import annotations

import itertools
import os
import re

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from werkzeug.exceptions import HTTPException

from ..errors import HyperSDKError, PayloadTooLarge
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
        self.request_id = self.channel.site.next_request_id()
        self.started = self.channel.site.reactor.seconds()
        self.setHeader(b"X-Request-Id", self.request_id.encode())
        if self._too_large:
            limit = self.channel.site.max_body_bytes
            error = PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
            self.setHeader(b"Connection", b"close")
            self.write(respond(self, {"error": error.message, "code": error.code}, error.status))
            self.finish()
            return
        guard = self.channel.site.guard
        if guard is not None:
            try:
                guard.check(self)
            except HyperSDKError:
                self.write(error_response(self, Failure()))
                self.finish()
                return
        super().process()


class APISite(server.Site):
    """twisted.web Site with our request class and a structured access log."""

    requestFactory = APIRequest
    noisy = False

    def __init__(self, resource, reactor, max_body_bytes: int, access_log: bool = True, on_request=None,
                 guard=None):
        super().__init__(resource, reactor=reactor)
        self.guard = guard  # authentication and rate limits, checked before routing
        self.max_body_bytes = max_body_bytes
        self.displayTracebacks = False
        self._access_log = access_log  # off when the log level filters info lines out anyway
        self._on_request = on_request  # (request, seconds): metrics
        self._id_prefix = os.urandom(4).hex()
        self._id_counter = itertools.count(1)

    def next_request_id(self) -> str:
        """Unique within this process and across restarts (random prefix), and cheap."""
        return f"{self._id_prefix}{next(self._id_counter):08x}"

    def log(self, request):
        started = getattr(request, "started", None)
        seconds = None if started is None else self.reactor.seconds() - started
        if self._on_request is not None and seconds is not None:
            self._on_request(request, seconds)
        if not self._access_log:
            return
        # Our own line instead of the combined log format: never the query
        # string (it may carry a password), always the request id.
        duration_ms = None if seconds is None else round(seconds * 1000, 2)
        access_log.info(
            "{client} {method} {path} {status} {duration_ms}ms {request_id}",
            client=getattr(request.getClientAddress(), "host", "-"),
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("utf-8", "replace"),
            status=request.code,
            duration_ms=duration_ms,
            request_id=getattr(request, "request_id", "-"),
        )


class FastRoutes(resource.Resource):
    """Answers GET of a few hot, fixed, synchronous paths (``/status``) without Klein's
    routing, which costs as much as the rest of such a request; everything else,
    other methods on those paths included, goes to the Klein app."""

    isLeaf = True

    def __init__(self, app: Klein, routes: dict):
        super().__init__()
        self.app = app
        self._app = app.resource()
        self._routes = {path.encode(): handler for path, handler in routes.items()}

    def render(self, request):
        handler = self._routes.get(request.path) if request.method in (b"GET", b"HEAD") else None
        if handler is None:
            return self._app.render(request)
        try:
            return handler(request)
        except Exception:
            return error_response(request, Failure())


def build_app(*areas) -> Klein:
    """One Klein app: each area registers its routes; errors are mapped once."""
    app = Klein()
    for area in areas:
        area.register(app)
    app.handle_errors(Exception)(error_response)
    return app


def build_resource(status, *areas) -> resource.Resource:
    """The API's root resource: every area's routes, with GET /status on the fast path."""
    return FastRoutes(build_app(status, *areas), {"/status": status.status})


# Route variables as the API document names them: /jobs/{id}, /webhooks/{index}
_VARIABLE_NAMES = {"job_id": "id", "schedule_id": "id"}
_VARIABLE = re.compile(r"<(?:[^:>]+:)?([^>]+)>")


def route_templates(root: "FastRoutes"):
    """(method, path) -> the route's template (``/jobs/{id}``), or "unmatched": bounded metric labels."""
    adapter = root.app.url_map.bind("localhost")
    known: dict[str, str] = {}

    def template(method: str, path: str) -> str:
        try:
            rule, _ = adapter.match(path, method, return_rule=True)
        except HTTPException:
            return "unmatched"
        if rule.rule not in known:
            known[rule.rule] = _VARIABLE.sub(lambda m: "{" + _VARIABLE_NAMES.get(m.group(1), m.group(1)) + "}",
                                             rule.rule)
        return known[rule.rule]

    return template
