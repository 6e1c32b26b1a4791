import hashlib
import hmac
import json
import random

import pytest

from hypersdk.errors import InvalidField
from hypersdk.webhooks import rules
from hypersdk.webhooks.definition import parse_webhook


def test_body_is_the_documented_envelope():
    raw = rules.body("job.completed", "2026-01-17T12:00:00.000Z", {"id": "j1"})
    assert json.loads(raw) == {"event": "job.completed", "timestamp": "2026-01-17T12:00:00.000Z", "data": {"id": "j1"}}


def test_signature_is_hmac_sha256_of_the_raw_body_that_a_receiver_can_check():
    raw = b'{"event":"job.failed"}'
    sig = rules.signature("k3y", raw)
    assert sig.startswith("sha256=")
    assert hmac.compare_digest(sig[7:], hmac.new(b"k3y", raw, hashlib.sha256).hexdigest())
    assert rules.signature("other", raw) != sig


def test_headers_carry_identity_event_signature_and_the_configured_ones():
    h = rules.headers_for(delivery_id="d-1", event_type="job.started", raw_body=b"{}", version="1.2",
                          configured={"Authorization": "Bearer t"}, secret="s")
    assert h["Authorization"] == "Bearer t" and h["Content-Type"] == "application/json"
    assert h["User-Agent"] == "hypersdk-webhook/1.2" and h["X-Hypersdk-Delivery"] == "d-1"
    assert h["X-Hypersdk-Signature"] == rules.signature("s", b"{}")
    assert "X-Hypersdk-Signature" not in rules.headers_for(delivery_id="d", event_type="e", raw_body=b"", version="",
                                                             configured={}, secret=None)


def test_backoff_doubles_with_jitter_and_a_cap():
    rng = random.Random(7)
    for retry, base in ((1, 1), (2, 2), (3, 4), (4, 8), (12, 300)):
        delays = {rules.backoff(retry, rng) for _ in range(50)}
        assert all(0.8 * base <= d <= 1.2 * base for d in delays)
        assert len(delays) > 1  # jittered: receivers are not hit in lockstep


def test_events_star_or_empty_mean_all():
    assert rules.wants((), "job.progress") and rules.wants(("*",), "schedule.failed")
    assert rules.wants(("job.failed",), "job.failed") and not rules.wants(("job.failed",), "job.completed")


@pytest.mark.parametrize("address, private", [
    ("127.0.0.1", True), ("10.0.0.5", True), ("172.16.0.1", True), ("192.168.1.1", True), ("169.254.169.254", True),
    ("::1", True), ("fe80::1", True), ("fd00::1", True), ("::ffff:127.0.0.1", True), ("8.8.8.8", False),
    ("2606:4700::1111", False),
])
def test_private_addresses(address, private):
    assert rules.private_address(address) is private


def test_seed_webhook_body_parses_with_its_fields():
    spec = parse_webhook({"url": "https://hooks.example.com/notify", "events": ["job.completed", "job.failed"],
                          "enabled": True, "timeout": 30, "retry_count": 3,
                          "headers": {"Authorization": "Bearer token123"}})
    assert (spec.url, spec.events, spec.timeout, spec.retry_count) == \
        ("https://hooks.example.com/notify", ("job.completed", "job.failed"), 30.0, 3)


def test_older_shapes_are_accepted_and_timeouts_are_seconds_never_nanoseconds():
    assert parse_webhook({"url": "http://h/x", "retry": 5, "timeout": "45s"}).retry_count == 5
    assert parse_webhook({"url": "http://h/x", "timeout": "45s"}).timeout == 45.0
    assert parse_webhook({"url": "http://h/x", "timeout": "500ms"}).timeout == 0.5


@pytest.mark.parametrize("body, field", [
    ({}, "url"),
    ({"url": "ftp://h/x"}, "url"),
    ({"url": "https://"}, "url"),
    ({"url": "https://u:p@h/x"}, "url"),
    ({"url": "http://h/x", "events": ["job.done"]}, "events"),
    ({"url": "http://h/x", "events": "job.failed"}, "events"),
    ({"url": "http://h/x", "timeout": 0}, "timeout"),
    ({"url": "http://h/x", "timeout": 30000000000}, "timeout"),
    ({"url": "http://h/x", "retry_count": -1}, "retry_count"),
    ({"url": "http://h/x", "headers": {"X-Hypersdk-Signature": "forged"}}, "headers"),
    ({"url": "http://h/x", "headers": {"A": "b\r\nInjected: 1"}}, "headers"),
    ({"url": "http://h/x", "colour": "red"}, "colour"),
])
def test_bad_webhooks_name_the_field(body, field):
    with pytest.raises(InvalidField) as e:
        parse_webhook(body)
    assert e.value.field == field
