"""JSON in, JSON out, and the one place errors become HTTP responses."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound
from werkzeug.routing import RequestRedirect

from ..errors import HyperSDKError, InvalidRequest, UnsupportedMediaType

log = Logger()

_NOTHING = object()


def respond(request, body: Any, status: int = 200) -> bytes:
    data = json.dumps(body).encode("utf-8") + b"\n"
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", b"%d" % len(data))  # not chunked: one write, known size
    return data


def read_json(request, default: Any = _NOTHING) -> Any:
    """The request's JSON body; ``default`` when the body is empty (else 400)."""
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        if default is _NOTHING:
            raise InvalidRequest("the request body must be a JSON document")
        return default
    content_type = (request.getHeader("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"the request body must be sent as Content-Type: application/json (got {content_type or 'none'})"
        )
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise InvalidRequest(f"the request body is not valid JSON: {e}") from None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed in JSON")


def detached(d: Deferred) -> Deferred:
    """Follow ``d`` without letting a disconnecting client cancel it.

    Klein cancels a handler's Deferred when the client goes away; a submit or a
    cancel already under way must still finish, or stored work would be half done.
    """
    follower: Deferred = Deferred()

    def forward(result):
        if not follower.called:
            (follower.errback if isinstance(result, Failure) else follower.callback)(result)
        elif isinstance(result, Failure):
            log.failure("request failed after its client went away", result)

    d.addBoth(forward)
    return follower


def error_response(request, failure) -> bytes:
    """Map any failure of a route to a JSON error; unexpected ones are logged as 500."""
    e = failure.value
    if isinstance(e, HyperSDKError):
        for name, value in e.headers.items():
            request.setHeader(name.encode(), value.encode())
        return respond(request, {"error": e.message, "code": e.code}, e.status)
    if isinstance(e, MethodNotAllowed):
        allowed = sorted(set(e.valid_methods or ()))
        request.setHeader(b"Allow", ", ".join(allowed).encode())
        return respond(
            request,
            {"error": f"method {request.method.decode()} is not allowed here; use {', '.join(allowed)}", "code": "method_not_allowed"},
            405,
        )
    if isinstance(e, (RouteNotFound, RequestRedirect)):  # werkzeug "redirects" /jobs//query: no such endpoint
        return respond(request, {"error": f"no such endpoint: {request.path.decode('utf-8', 'replace')}", "code": "route_not_found"}, 404)
    if isinstance(e, CancelledError):
        return b""  # the client went away; nobody reads this
    request_id = getattr(request, "request_id", "-")
    log.failure("unhandled error in {method} {path} (request {request_id})", failure,
                method=request.method.decode(), path=request.path.decode("utf-8", "replace"), request_id=request_id)
    return respond(
        request,
        {"error": f"internal error; the daemon log has the details under request id {request_id}", "code": "internal_error", "request_id": request_id},
        500,
    )
