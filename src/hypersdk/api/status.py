"""GET /health and GET /status."""

from __future__ import annotations

from twisted.logger import Logger

from .. import __version__
from ..jobs.manager import JobManager
from ..timefmt import rfc3339
from .http import respond

HEALTH_TIMEOUT = 2.0


class StatusAPI:
    log = Logger()

    def __init__(self, manager: JobManager, store, clock, started_at: float, membership=None, appliance=None):
        self._manager = manager
        self._appliance = appliance  # libguestfs' backend here: {"backend": "kvm" | "tcg" | ..., "why": ...}
        self._membership = membership
        self._store = store
        self._clock = clock
        self._started_at = started_at

    def register(self, app) -> None:
        app.route("/health", methods=["GET"])(self.health)
        app.route("/status", methods=["GET"])(self.status)

    def _uptime(self) -> float:
        return round(self._clock.seconds() - self._started_at, 3)

    async def health(self, request):
        try:
            await self._store.ping().addTimeout(HEALTH_TIMEOUT, self._clock)
        except Exception as e:
            self.log.warn("health check: database unreachable: {error}", error=repr(e))
            return respond(request, {"status": "unavailable", "error": "the job database cannot be reached"}, 503)
        return respond(request, {"status": "ok", "version": __version__, "uptime_seconds": self._uptime()})

    def status(self, request):
        return respond(request, self.status_body())

    def status_body(self) -> dict:
        """The /status fields (the WebSocket's ``status`` message carries them too)."""
        body = self._manager.status()
        body.update(version=__version__, uptime_seconds=self._uptime(), timestamp=rfc3339(self._clock.seconds()))
        if self._appliance is not None:
            body["libguestfs"] = self._appliance.describe()
        if self._membership is not None:
            body["node"] = self._membership.name
            body["fenced"] = self._membership.fence.fenced  # its lease lapsed: it copies and claims nothing
            body["nodes"] = [{"name": node.name, "state": node.state, "last_heartbeat": rfc3339(node.last_heartbeat),
                              "running_jobs": running} for node, running in self._membership.known]
        return body
