"""Delivery through StubTreq (the real HTTP client interface, in memory) with a Clock: no sockets, no sleeping."""

import json
import random

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from hypersdk import events
from hypersdk.events import Event, EventBus
from hypersdk.jobs.model import Job, Progress
from tests.stores import make_store
from hypersdk.store.webhooks import WebhookStore
from hypersdk.webhooks import rules
from hypersdk.webhooks.connect import PrivateAddress
from hypersdk.webhooks.delivery import WebhookService
from hypersdk.webhooks.model import CONFIG, Webhook
from tests.helpers import result_of

pytestmark = pytest.mark.usefixtures("store_engine")  # every test on SQLite and on PostgreSQL

URL = "http://receiver.test/hook"


class Receiver(Resource):
    """Answers each POST by script: a status code, or "hang" (never answers)."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.script: list = []
        self.received: list[dict] = []
        self.hanging = []

    def render_POST(self, request):
        raw = request.content.read()
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.received.append({"headers": headers, "raw": raw, "body": json.loads(raw)})
        action = self.script.pop(0) if self.script else 200
        if action == "hang":
            self.hanging.append(request)
            return NOT_DONE_YET
        request.setResponseCode(action)
        return b"thanks"

    def events(self):
        return [r["body"]["event"] for r in self.received]


class World:
    def __init__(self, hooks=None, queue_size=1000, store=None, receiver=None, clock=None, client=None):
        self.clock = clock or Clock()
        if clock is None:
            self.clock.advance(1_700_000_000)
        if store is None:
            jobs_store = make_store()
            result_of(jobs_store.open())
            store = WebhookStore(jobs_store, keep=5)
        self.store = store
        self.receiver = receiver or Receiver()
        self.stub = StubTreq(self.receiver)
        self.bus = EventBus()
        self.service = WebhookService(
            self.store, client or self.stub, self.clock, self.bus,
            config_hooks=hooks if hooks is not None else [Webhook(key="config-0", origin=CONFIG, url=URL, secret="k3y")],
            queue_size=queue_size, version="9.9", rng=random.Random(1),
        )
        result_of(self.service.start())
        self.pump()

    def pump(self):
        for _ in range(6):
            self.stub.flush()

    def publish(self, event_type, job_id="j1", stage="conversion", status="running"):
        job = Job(id=job_id, definition={"vm_path": "DC0/vm/web"}, status=status, progress=Progress(stage=stage),
                  created_at=self.clock.seconds(), updated_at=self.clock.seconds())
        self.bus.publish(Event(event_type, self.clock.seconds(), job))
        self.pump()

    def advance(self, seconds):
        """Move time in small steps, letting each timer's work go through the stub."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(min(0.05, end - self.clock.seconds()))
            self.pump()

    def recent(self, index=0):
        return result_of(self.service.recent(index))


def test_a_subscribed_event_is_posted_once_signed_with_identity_headers():
    w = World()
    w.publish(events.JOB_COMPLETED, status="completed")
    (got,) = w.receiver.received
    assert got["body"]["event"] == "job.completed" and got["body"]["data"]["id"] == "j1"
    assert got["body"]["data"]["status"] == "completed" and got["body"]["timestamp"].endswith("Z")
    h = got["headers"]
    assert h["content-type"] == "application/json" and h["user-agent"] == "hypersdk-webhook/9.9"
    assert h["x-hypersdk-event"] == "job.completed"
    assert h["x-hypersdk-signature"] == rules.signature("k3y", got["raw"])
    (delivery,) = w.recent()
    assert (delivery.id, delivery.state, len(delivery.attempts)) == (h["x-hypersdk-delivery"], "delivered", 1)


def test_only_the_events_a_webhook_asked_for_are_sent():
    w = World(hooks=[Webhook(key="c", origin=CONFIG, url=URL, events=("job.failed",))])
    w.publish(events.JOB_STARTED)
    w.publish(events.JOB_FAILED, status="failed")
    assert w.receiver.events() == ["job.failed"]


def test_failures_retry_with_growing_jittered_delays_until_delivered():
    w = World()
    w.receiver.script = [500, 503, 200]
    w.publish(events.JOB_FAILED)
    assert len(w.receiver.received) == 1
    w.advance(0.79)
    assert len(w.receiver.received) == 1  # the first retry waits about 1 s
    w.advance(0.42)
    assert len(w.receiver.received) == 2
    w.advance(1.59)
    assert len(w.receiver.received) == 2  # the second about 2 s
    w.advance(0.82)
    assert len(w.receiver.received) == 3
    (delivery,) = w.recent()
    assert delivery.state == "delivered" and [a.status_code for a in delivery.attempts] == [500, 503, 200]
    assert len({r["headers"]["x-hypersdk-delivery"] for r in w.receiver.received}) == 1  # one delivery, retried


def test_retries_are_bounded_by_retry_count_then_the_next_event_goes():
    w = World(hooks=[Webhook(key="c", origin=CONFIG, url=URL, retry_count=2)])
    w.receiver.script = [500, 500, 500]
    w.publish(events.JOB_STARTED)
    w.publish(events.JOB_COMPLETED)
    w.advance(10)
    assert w.receiver.events() == ["job.started"] * 3 + ["job.completed"]
    failed, delivered = sorted(w.recent(), key=lambda d: d.state != "failed")
    assert failed.state == "failed" and len(failed.attempts) == 3
    assert delivered.state == "delivered"
    assert w.service.counts()["failed"] == 1 and w.service.counts()["delivered"] == 1


def test_each_attempt_has_its_own_timeout():
    w = World(hooks=[Webhook(key="c", origin=CONFIG, url=URL, timeout=5, retry_count=1)])
    w.receiver.script = ["hang", "hang"]
    w.publish(events.JOB_STARTED)
    w.advance(4.9)
    assert w.recent()[0].attempts == ()
    w.advance(0.2)
    assert w.recent()[0].attempts[0].error == "no answer within 5 s"
    while len(w.receiver.received) < 2:  # a backoff of 0.8-1.2 s, then a second attempt with a fresh 5 s
        w.advance(0.05)
    w.advance(4.9)
    assert w.recent()[0].state == "pending"
    w.advance(0.2)
    assert w.recent()[0].state == "failed"


def test_events_arrive_in_order_while_an_earlier_one_is_retried():
    w = World()
    w.receiver.script = [500, 500]
    for event in (events.JOB_SUBMITTED, events.JOB_STARTED, events.JOB_COMPLETED):
        w.publish(event)
    w.advance(20)
    assert w.receiver.events() == ["job.submitted"] * 3 + ["job.started", "job.completed"]


def test_a_full_queue_drops_the_oldest_progress_first_and_counts_it():
    w = World(queue_size=3)
    w.receiver.script = ["hang"]
    w.publish(events.JOB_STARTED, job_id="a")  # being sent (hangs)
    w.publish(events.JOB_PROGRESS, job_id="a", stage="conversion")
    w.publish(events.JOB_PROGRESS, job_id="b", stage="conversion")
    w.publish(events.JOB_FAILED, job_id="c")  # 4 > 3: the oldest progress (job a) goes
    w.publish(events.JOB_FAILED, job_id="d")  # then job b's progress
    assert w.service.webhooks()[0][1]["dropped"] == 2
    w.advance(31)  # the hanging attempt times out; the rest go through
    w.advance(5)
    sent = [(r["body"]["event"], r["body"]["data"]["id"]) for r in w.receiver.received]
    assert sent == [("job.started", "a"), ("job.started", "a"), ("job.failed", "c"), ("job.failed", "d")]


def test_progress_is_sent_at_most_every_10_s_per_job_and_at_each_stage_change():
    w = World()
    w.publish(events.JOB_PROGRESS, stage="conversion")
    w.advance(3)
    w.publish(events.JOB_PROGRESS, stage="conversion")  # too soon
    w.publish(events.JOB_PROGRESS, job_id="other", stage="conversion")  # another job
    w.publish(events.JOB_PROGRESS, stage="import")  # stage changed
    w.advance(10)
    w.publish(events.JOB_PROGRESS, stage="import")  # 10 s later
    sent = [(r["body"]["data"]["id"], r["body"]["data"]["progress"]["stage"]) for r in w.receiver.received]
    assert sent == [("j1", "conversion"), ("other", "conversion"), ("j1", "import"), ("j1", "import")]


def test_pending_deliveries_are_resumed_by_the_next_start_with_the_same_delivery_id():
    w = World()
    w.receiver.script = ["hang"]
    w.publish(events.JOB_COMPLETED)
    w.publish(events.JOB_FAILED, job_id="j2")
    first_id = w.receiver.received[0]["headers"]["x-hypersdk-delivery"]
    w.service.stop()  # the daemon stops mid-delivery
    again = World(store=w.store, clock=w.clock)
    assert again.receiver.events() == ["job.completed", "job.failed"]
    assert again.receiver.received[0]["headers"]["x-hypersdk-delivery"] == first_id


class RefusingClient:
    """What connect.webhook_client does when the receiver resolves to a private address."""

    def __init__(self):
        self.posts = 0

    def post(self, url, **kwargs):
        self.posts += 1
        return fail(PrivateAddress("receiver.test", "10.0.0.8"))


def test_a_receiver_refused_as_private_fails_at_once_without_retries():
    client = RefusingClient()
    w = World(client=client)
    w.publish(events.JOB_FAILED)
    w.advance(60)
    assert client.posts == 1
    (delivery,) = w.recent()
    assert delivery.state == "failed" and len(delivery.attempts) == 1  # retrying cannot help
    assert "10.0.0.8, a private address" in delivery.attempts[0].error


def test_the_test_delivery_reports_its_outcome():
    w = World()
    w.receiver.script = [404]
    d = w.service.test(URL, "test")
    w.pump()
    outcome = result_of(d)
    assert (outcome["delivered"], outcome["status_code"]) == (False, 404)
    assert w.receiver.received[0]["body"]["event"] == "test"
    assert w.receiver.received[0]["headers"]["x-hypersdk-signature"]  # the configured webhook's secret


def test_api_webhooks_persist_with_their_secrets_encrypted_and_delete_drops_them():
    from hypersdk.webhooks.definition import parse_webhook

    w = World(hooks=[])
    spec = parse_webhook({"url": URL, "headers": {"Authorization": "Bearer s3cr3t"}, "secret": "hm4c"})
    result_of(w.service.add(spec))
    again = World(hooks=[], store=w.store, clock=w.clock)
    (hook, counts), = again.service.webhooks()
    assert hook.headers == {"Authorization": "Bearer s3cr3t"} and hook.secret == "hm4c"
    again.publish(events.JOB_STARTED)
    assert again.receiver.received[0]["headers"]["authorization"] == "Bearer s3cr3t"
    result_of(again.service.delete(0))
    assert again.service.webhooks() == []
    assert World(hooks=[], store=w.store, clock=w.clock).service.webhooks() == []


def test_config_webhooks_cannot_be_deleted_through_the_api():
    from hypersdk.errors import Conflict

    with pytest.raises(Conflict, match="configuration file"):
        result_of(World().service.delete(0))


def test_schedule_events_carry_the_run():
    from hypersdk.schedules.model import ScheduleEvent

    w = World()
    w.bus.publish(Event(events.SCHEDULE_FAILED, w.clock.seconds(),
                        ScheduleEvent("nightly", "failed", ("j1", "j2"), 7, "1 of 2 job(s) did not complete: j2")))
    w.pump()
    assert w.receiver.received[0]["body"]["event"] == "schedule.failed"
    assert w.receiver.received[0]["body"]["data"] == {
        "schedule_id": "nightly", "event": "failed", "job_ids": ["j1", "j2"], "run_id": 7,
        "reason": "1 of 2 job(s) did not complete: j2"}


def test_deleting_a_webhook_stops_its_delivery_at_once():
    from hypersdk.webhooks.definition import parse_webhook

    w = World(hooks=[])
    result_of(w.service.add(parse_webhook({"url": URL, "timeout": 2, "retry_count": 5})))
    w.receiver.script = ["hang"] * 10
    w.publish(events.JOB_STARTED)
    assert len(w.receiver.received) == 1
    result_of(w.service.delete(0))
    w.advance(60)
    assert len(w.receiver.received) == 1  # no retry to a deleted webhook


def test_a_lost_node_s_pending_delivery_is_sent_once_by_the_node_that_adopts_it():
    from hypersdk.store.jobs import this_node
    from hypersdk.store.nodes import NodeStore
    from tests.stores import silence

    shared = make_store()
    result_of(shared.open())
    n1, n2 = shared.for_node(this_node("n1")), shared.for_node(this_node("n2"))
    for store in (n1, n2):
        result_of(NodeStore(store).register(30.0))
    first = World(store=WebhookStore(n1, keep=5))
    first.receiver.script = ["hang"]  # n1 dies while its receiver has not answered
    first.publish(events.JOB_FAILED, status="failed")
    assert [d.state for d in first.recent()] == ["pending"]
    second = World(store=WebhookStore(n2, keep=5))
    assert second.receiver.received == []  # not n2's to send
    silence(shared, "n1", 100.0)  # by the database's clock, n1 has not renewed its lease for 100 s
    _, adopted = result_of(NodeStore(n2).take_over(30.0, ()))
    assert adopted == 1
    assert result_of(second.service.resume_pending()) == 1
    second.pump()
    (got,) = second.receiver.received
    assert got["headers"]["x-hypersdk-delivery"] == first.receiver.received[0]["headers"]["x-hypersdk-delivery"]
    assert [d.state for d in second.recent()] == ["delivered"]
    assert result_of(second.service.resume_pending()) == 0  # queued once
