"""GET /metrics: the Prometheus text format, on the API port or on a listener of its own."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.web import resource

from .http import respond


def _exposition(registry, request) -> bytes:
    data = generate_latest(registry)
    request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
    request.setHeader(b"Content-Length", b"%d" % len(data))
    return data


class MetricsArea:
    """The route on the API port."""

    def __init__(self, registry):
        self._registry = registry

    def register(self, app) -> None:
        app.route("/metrics", methods=["GET"], endpoint="metrics")(self.metrics)

    def metrics(self, request):
        return _exposition(self._registry, request)


class MetricsOnlyResource(resource.Resource):
    """The root of the separate metrics listener: /metrics, and JSON 404 for anything else."""

    isLeaf = True

    def __init__(self, registry):
        super().__init__()
        self._registry = registry

    def render_GET(self, request):
        if request.path != b"/metrics":
            return respond(request, {"error": "only /metrics is served on this port", "code": "not_found"}, 404)
        return _exposition(self._registry, request)
