"""Parsing a webhook sent to POST /webhooks, pure."""

from __future__ import annotations

from typing import Any

from attrs import frozen

from ..config import parse_duration
from ..errors import InvalidField
from ..jobs.definition import FieldReader
from .rules import WebhookProblem, check_events, check_headers, check_url



@frozen
class WebhookSpec:
    url: str
    events: tuple[str, ...]
    enabled: bool
    timeout: float
    retry_count: int
    headers: dict[str, str]
    secret: Any


def parse_webhook(data: Any) -> WebhookSpec:
    if isinstance(data, dict) and "retry" in data and "retry_count" not in data:  # the older name
        data = {("retry_count" if k == "retry" else k): v for k, v in data.items()}
    body = FieldReader(data, "")
    url = _checked("url", check_url, body.text("url", required=True))
    events = body.get("events", list, default=[])
    if not all(isinstance(e, str) for e in events):
        raise InvalidField("events", "must be a list of event names")
    retry_count = body.get("retry_count", int, default=3)
    if not 0 <= retry_count <= 20:
        raise InvalidField("retry_count", "must be 0..20")
    headers = body.get("headers", dict, default={})
    spec = WebhookSpec(
        url=url,
        events=_checked("events", check_events, events),
        enabled=body.get("enabled", bool, default=True),
        timeout=_seconds(body.data.get("timeout", 30)),
        retry_count=retry_count,
        headers=_checked("headers", check_headers, headers),
        secret=body.text("secret"),
    )
    body.seen.add("timeout")
    body.done()
    return spec


def _checked(field: str, check, value):
    try:
        return check(value)
    except WebhookProblem as e:
        raise InvalidField(field, str(e)) from None


def _seconds(value: Any) -> float:
    """Seconds as a number, or a duration string such as "30s" (never nanoseconds)."""
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_duration(value)
    if seconds is None or not 0 < seconds <= 600:
        raise InvalidField("timeout", "must be a number of seconds (or a duration such as 30s), more than 0 and at most 600")
    return seconds
