"""Webhook delivery: one ordered, bounded, persistent queue and one sender per webhook.

Events from the bus become deliveries: the exact bytes to POST, stored before
they are sent. Each webhook's sender posts them one at a time, in order, each
attempt under its own timeout, retrying with exponential backoff and jitter.
Nothing here waits on a receiver on behalf of the API or a job: publishing an
event only appends to queues. A full queue drops its oldest ``job.progress``
first. Deliveries still pending at stop are resumed at the next start
(at-least-once; receivers de-duplicate with ``X-Hypersdk-Delivery``).
"""

from __future__ import annotations

import random
import time
import uuid
from collections import deque
from typing import Any, Optional
from urllib.parse import urlsplit

import treq
from attrs import define, evolve, field
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from .. import events
from ..errors import Conflict, NotFound
from ..events import Event, EventBus
from ..timefmt import rfc3339
from . import rules
from .connect import PrivateAddress
from .model import API, DELIVERED, DROPPED, FAILED, PENDING, Attempt, Delivery, Webhook
from .payload import event_data

class WebhookNotFound(NotFound):
    code = "webhook_not_found"


@define
class _Hook:
    webhook: Webhook
    queue: deque = field(factory=deque)  # of Delivery; queue[0] is being sent
    sender: Optional[Deferred] = None
    deleted: bool = False
    counts: dict = field(factory=lambda: dict.fromkeys((DELIVERED, FAILED, DROPPED, "attempts"), 0))


class WebhookService:
    log = Logger()

    def __init__(self, store, client, clock, bus: EventBus, *, config_hooks: list[Webhook], queue_size: int = 1000,
                 version: str = "", rng: Optional[random.Random] = None):
        self._store = store
        self._client = client  # a treq HTTPClient with its own connection pool (connect.webhook_client)
        self._clock = clock
        self._bus = bus
        self._config_hooks = config_hooks
        self._queue_size = queue_size
        self._version = version
        self._rng = rng or random.Random()
        self._hooks: list[_Hook] = []
        self._last_progress: dict[str, tuple[float, str]] = {}  # job id -> (sent at, stage)
        self._unsubscribe = None
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Load API webhooks, resume pending deliveries, then follow the bus."""
        hooks = self._config_hooks + await self._store.load_webhooks()
        self._hooks = [_Hook(h) for h in hooks]
        dropped = await self._store.drop_unknown([h.key for h in hooks], self._clock.seconds())
        if dropped:
            self.log.warn("webhooks: dropped {count} pending deliveries of webhooks no longer configured",
                          count=dropped)
        resumed = await self.resume_pending()
        if resumed:
            self.log.info("webhooks: resuming {count} pending deliveries", count=resumed)
        self._unsubscribe = self._bus.subscribe(self._on_event, local_only=True)  # each node sends its own

    async def resume_pending(self) -> int:
        """Queue this node's stored pending deliveries not queued yet (at start, and those adopted from a
        lost node); how many."""
        by_key = {h.webhook.key: h for h in self._hooks}
        queued = {d.id for h in self._hooks for d in h.queue}
        added = 0
        for delivery in await self._store.pending():
            hook = by_key.get(delivery.hook_key)
            if hook is not None and delivery.id not in queued:
                hook.queue.append(delivery)
                added += 1
        for hook in self._hooks:
            self._wake(hook)
        return added

    async def reload(self) -> None:
        """Another node added or deleted a webhook: follow the stored list."""
        stored = {h.key: h for h in await self._store.load_webhooks()}
        for hook in [h for h in self._hooks if h.webhook.origin == API and h.webhook.key not in stored]:
            self._forget(hook)
        known = {h.webhook.key for h in self._hooks}
        self._hooks.extend(_Hook(webhook) for key, webhook in stored.items() if key not in known)

    def stop(self) -> None:
        """Stop sending; what is pending stays stored for the next start."""
        self._stopping = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        for hook in self._hooks:
            if hook.sender is not None:
                hook.sender.cancel()

    # -- the API's view ----------------------------------------------------------

    def webhooks(self) -> list[tuple[Webhook, dict[str, int]]]:
        """Every webhook, config file first, with its delivery counts (pending included)."""
        return [(h.webhook, {**h.counts, PENDING: len(h.queue)}) for h in self._hooks]

    async def add(self, spec) -> Webhook:
        webhook = Webhook(key=str(uuid.uuid4()), origin=API, url=spec.url, events=spec.events, enabled=spec.enabled,
                          timeout=spec.timeout, retry_count=spec.retry_count, headers=spec.headers,
                          secret=spec.secret, created_at=self._clock.seconds())
        await self._store.add_webhook(webhook)
        self._hooks.append(_Hook(webhook))
        self.log.info("webhook {url} added", url=_safe_url(webhook.url))
        return webhook

    async def delete(self, index: int) -> Webhook:
        hook = self._at(index)
        if hook.webhook.origin != API:
            raise Conflict(f"webhook {index} is defined in the configuration file: remove it there")
        self._forget(hook)
        await self._store.delete_webhook(hook.webhook.key)
        self.log.info("webhook {url} deleted", url=_safe_url(hook.webhook.url))
        return hook.webhook

    def _forget(self, hook: _Hook) -> None:
        self._hooks.remove(hook)
        hook.deleted = True  # before the cancel: a cancelled attempt must not count as a failure to retry
        hook.queue.clear()
        if hook.sender is not None:
            hook.sender.cancel()

    def recent(self, index: int, limit: int = 50):
        return self._store.recent(self._at(index).webhook.key, limit)

    def counts(self) -> dict[str, int]:
        """Deliveries by outcome over every webhook (for metrics)."""
        total: dict[str, int] = {}
        for hook in self._hooks:
            for name, n in hook.counts.items():
                total[name] = total.get(name, 0) + n
        return total

    async def test(self, url: str, event_type: str) -> dict[str, Any]:
        """One real delivery, now, outside any queue. A configured webhook with this URL lends its headers,
        secret and timeout, so the receiver sees what real deliveries look like."""
        known = next((h.webhook for h in self._hooks if h.webhook.url == url), None)
        webhook = known or Webhook(key="test", origin=API, url=url)
        raw = rules.body(event_type, rfc3339(self._clock.seconds()), {"message": "test webhook from hypersdk"})
        delivery = Delivery(id=str(uuid.uuid4()), hook_key=webhook.key, event=event_type, body=raw,
                            created_at=self._clock.seconds())
        attempt = await self._attempt(webhook, delivery)
        return {"delivered": attempt.error is None and rules.is_success(attempt.status_code or 0),
                "status_code": attempt.status_code, "duration_ms": round(attempt.duration * 1000),
                "error": attempt.error, "delivery_id": delivery.id}

    def _at(self, index: int) -> _Hook:
        if not 0 <= index < len(self._hooks):
            raise WebhookNotFound(f"no webhook at index {index} ({len(self._hooks)} configured)")
        return self._hooks[index]

    # -- events -> deliveries ------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.type not in rules.EVENTS or not self._progress_due(event):
            return
        raw = None
        for hook in self._hooks:
            if hook.webhook.enabled and rules.wants(hook.webhook.events, event.type):
                raw = raw or rules.body(event.type, rfc3339(event.timestamp), event_data(event))
                self._enqueue(hook, Delivery(id=str(uuid.uuid4()), hook_key=hook.webhook.key, event=event.type,
                                             body=raw, created_at=event.timestamp))

    def _progress_due(self, event: Event) -> bool:
        """job.progress at most every 10 s per job, and at each stage change."""
        if not event.type.startswith("job."):
            return True
        job = event.subject
        if event.type in events.JOB_ENDED:
            self._last_progress.pop(job.id, None)
            return True
        if event.type != events.JOB_PROGRESS:
            return True
        last = self._last_progress.get(job.id)
        stage = job.progress.stage
        if last is not None and last[1] == stage and event.timestamp - last[0] < rules.PROGRESS_INTERVAL:
            return False
        self._last_progress[job.id] = (event.timestamp, stage)
        return True

    def _enqueue(self, hook: _Hook, delivery: Delivery) -> None:
        hook.queue.append(delivery)
        self._background(self._store.add(delivery), "storing a delivery")
        if len(hook.queue) > self._queue_size:
            self._drop_one(hook)
        self._wake(hook)

    def _drop_one(self, hook: _Hook) -> None:
        """The oldest job.progress waiting (not the one being sent), else the oldest waiting."""
        waiting = list(hook.queue)[1:] if hook.sender is not None else list(hook.queue)
        victim = next((d for d in waiting if d.event == events.JOB_PROGRESS), waiting[0])
        hook.queue.remove(victim)
        hook.counts[DROPPED] += 1
        self.log.warn("webhook {url}: queue full ({size}): dropped a {event} delivery", url=_safe_url(hook.webhook.url),
                      size=self._queue_size, event=victim.event)
        self._background(self._store.update(evolve(victim, state=DROPPED), self._clock.seconds()), "dropping")

    # -- sending ---------------------------------------------------------------------

    def _wake(self, hook: _Hook) -> None:
        if hook.sender is None and hook.queue and not self._stopping:
            sender = Deferred.fromCoroutine(self._send_all(hook))
            if not sender.called:  # (it can end at once when nothing it awaits waits)
                hook.sender = sender
            sender.addErrback(lambda f: f.trap(CancelledError))
            sender.addErrback(lambda f: self.log.failure("webhook {url}: sender failed", f,
                                                         url=_safe_url(hook.webhook.url)))

    async def _send_all(self, hook: _Hook) -> None:
        try:
            while hook.queue and not self._stopping:
                delivery = hook.queue[0]
                delivery = await self._deliver(hook, delivery)
                if hook.queue and hook.queue[0].id == delivery.id:
                    hook.queue.popleft()
                hook.counts[delivery.state] += 1
        finally:
            hook.sender = None

    async def _deliver(self, hook: _Hook, delivery: Delivery) -> Delivery:
        """Attempts until one succeeds or the retries are spent; each attempt is stored."""
        webhook = hook.webhook
        while True:
            if hook.deleted or self._stopping:
                raise CancelledError()
            attempt = await self._attempt(webhook, delivery, hook)
            hook.counts["attempts"] += 1
            ok = attempt.error is None and rules.is_success(attempt.status_code or 0)
            retries_spent = len(delivery.attempts) >= webhook.retry_count  # attempts before this one
            refused = (attempt.error or "").startswith(_REFUSED)  # retrying cannot help
            state = DELIVERED if ok else (FAILED if retries_spent or refused else PENDING)
            delivery = evolve(delivery, attempts=delivery.attempts + (attempt,), state=state)
            await self._store.update(delivery, self._clock.seconds())
            if state != PENDING:
                if state == FAILED:
                    self.log.warn("webhook {url}: {event} delivery {delivery_id} failed after {count} attempt(s): "
                                  "{error}", url=_safe_url(webhook.url), event=delivery.event,
                                  delivery_id=delivery.id, count=len(delivery.attempts),
                                  error=attempt.error or f"HTTP {attempt.status_code}")
                return delivery
            await deferLater(self._clock, rules.backoff(len(delivery.attempts), self._rng), lambda: None)

    async def _attempt(self, webhook: Webhook, delivery: Delivery, hook: Optional[_Hook] = None) -> Attempt:
        started, wall = self._clock.seconds(), time.monotonic()
        timed_out = []

        def give_up(d: Deferred):
            timed_out.append(True)
            d.cancel()

        def ended(status_code=None, error=None) -> Attempt:
            return Attempt(at=started, duration=time.monotonic() - wall, status_code=status_code, error=error)

        work = Deferred.fromCoroutine(self._post(webhook, delivery))
        timer = self._clock.callLater(webhook.timeout, give_up, work)
        try:
            return ended(status_code=await work)
        except Exception as e:  # treq may wrap a cancellation in a failure of its own
            if timed_out:
                return ended(error=f"no answer within {webhook.timeout:g} s")
            if isinstance(e, CancelledError) or self._stopping or (hook is not None and hook.deleted):
                raise CancelledError() from None  # stopping or deleted: the delivery stays as it is
            if isinstance(e, PrivateAddress):
                return ended(error=f"{_REFUSED}: {e}")
            return ended(error=_describe(e))
        finally:
            if timer.active():
                timer.cancel()

    async def _post(self, webhook: Webhook, delivery: Delivery) -> int:
        headers = rules.headers_for(delivery_id=delivery.id, event_type=delivery.event, raw_body=delivery.body,
                                    version=self._version, configured=webhook.headers, secret=webhook.secret)
        # No redirects: a 3xx is an answer, and must not lead around deny_private_networks.
        response = await self._client.post(webhook.url, data=delivery.body, headers=headers, allow_redirects=False)
        await treq.collect(response, lambda chunk: None)  # read and discard: frees the connection for reuse
        return response.code

    def _background(self, d: Deferred, what: str) -> None:
        d.addErrback(lambda f: self.log.failure("webhooks: " + what + " failed", f))


_REFUSED = "refused"


def _describe(e: Exception) -> str:
    reasons = getattr(e, "reasons", None)  # twisted.web's ResponseFailed and friends wrap the cause
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return str(e) or type(e).__name__


def _safe_url(url: str) -> str:
    """The URL without its query string, which may carry a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
