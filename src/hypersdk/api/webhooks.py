"""Routes of the Webhooks API: list, add, delete by index, recent deliveries, test."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from ..errors import InvalidField
from ..jobs.definition import FieldReader
from ..timefmt import rfc3339
from ..webhooks.definition import parse_webhook
from ..webhooks.delivery import WebhookService
from ..webhooks.model import Delivery, Webhook
from ..webhooks.rules import WebhookProblem, check_url
from .http import detached, read_json, respond

REDACTED = "***"


class WebhooksAPI:
    def __init__(self, service: WebhookService, clock):
        self._service = service
        self._clock = clock

    def register(self, app) -> None:
        app.route("/webhooks", methods=["GET"], endpoint="webhooks_list")(self.list)
        app.route("/webhooks", methods=["POST"], endpoint="webhooks_add")(self.add)
        app.route("/webhooks/test", methods=["POST"], endpoint="webhooks_test")(self.test)
        app.route("/webhooks/<int:index>", methods=["DELETE"], endpoint="webhooks_delete")(self.delete)
        app.route("/webhooks/<int:index>/deliveries", methods=["GET"], endpoint="webhooks_deliveries")(self.deliveries)

    def list(self, request):
        hooks = [{**webhook_json(w), "deliveries": counts} for w, counts in self._service.webhooks()]
        return respond(request, {"webhooks": hooks, "total": len(hooks), "timestamp": rfc3339(self._clock.seconds())})

    async def add(self, request):
        spec = parse_webhook(read_json(request))
        webhook = await detached(Deferred.fromCoroutine(self._service.add(spec)))
        return respond(request, {"message": "webhook added successfully", "webhook": webhook_json(webhook)}, 201)

    async def delete(self, request, index: int):
        await detached(Deferred.fromCoroutine(self._service.delete(index)))
        return respond(request, {"message": "webhook deleted successfully"})

    async def deliveries(self, request, index: int):
        recent = await self._service.recent(index)
        return respond(request, {"deliveries": [delivery_json(d) for d in recent], "total": len(recent)})

    async def test(self, request):
        body = FieldReader(read_json(request), "")
        url = body.text("url", required=True)
        event = body.text("event", default="test")
        body.done()
        try:
            check_url(url)
        except WebhookProblem as e:
            raise InvalidField("url", str(e)) from None
        outcome = await self._service.test(url, event)
        return respond(request, {"message": "test webhook sent", **outcome})


def webhook_json(w: Webhook) -> dict[str, Any]:
    return {
        "url": w.url,
        "events": list(w.events),
        "enabled": w.enabled,
        "timeout": w.timeout,
        "retry_count": w.retry_count,
        "headers": {name: REDACTED for name in w.headers},
        "secret": REDACTED if w.secret else None,
        "source": w.origin,
        "created_at": rfc3339(w.created_at),
    }


def delivery_json(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "event": d.event,
        "state": d.state,
        "created_at": rfc3339(d.created_at),
        "attempts": [{"at": rfc3339(a.at), "duration_ms": round(a.duration * 1000), "status_code": a.status_code,
                      "error": a.error} for a in d.attempts],
    }
