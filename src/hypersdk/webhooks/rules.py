"""Webhook rules, pure: what a webhook may be, what is sent, how it is signed, when to retry."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import random
import re
from typing import Any, Iterable, Optional
from urllib.parse import urlsplit

from .. import events

EVENTS = (
    events.JOB_SUBMITTED, events.JOB_STARTED, events.JOB_PROGRESS, events.JOB_COMPLETED, events.JOB_FAILED,
    events.JOB_CANCELLED, events.JOB_CUTOVER_STARTED, events.SCHEDULE_TRIGGERED, events.SCHEDULE_COMPLETED,
    events.SCHEDULE_FAILED,
)
ALL = "*"
PROGRESS_INTERVAL = 10.0  # job.progress at most this often per job (and at each stage change)
MAX_BACKOFF = 300.0
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
# Headers the daemon sets itself: a configured value would corrupt or forge them.
_RESERVED_HEADERS = ("content-type", "content-length", "host", "user-agent", "transfer-encoding")


class WebhookProblem(ValueError):
    """A webhook setting that cannot work; the message says why."""


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise WebhookProblem("must be an http:// or https:// URL")
    if not parts.hostname:
        raise WebhookProblem("has no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookProblem("must not carry credentials: send them as a header (headers: Authorization)")
    try:
        parts.port
    except ValueError:
        raise WebhookProblem("has an invalid port") from None
    return url


def check_events(names: Iterable[str]) -> tuple[str, ...]:
    names = tuple(names)
    for name in names:
        if name != ALL and name not in EVENTS:
            raise WebhookProblem(f"unknown event {name!r}: use {ALL!r} or any of {', '.join(EVENTS)}")
    return names


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise WebhookProblem(f"{name!r} is not a valid header name")
        if name.lower() in _RESERVED_HEADERS or name.lower().startswith("x-hypersdk-"):
            raise WebhookProblem(f"{name} is set by the daemon itself")
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise WebhookProblem(f"the value of {name} must be a string on one line")
    return headers


def wants(subscribed: tuple[str, ...], event_type: str) -> bool:
    """``*`` or an empty list means every event."""
    return not subscribed or ALL in subscribed or event_type in subscribed


def body(event_type: str, timestamp: str, data: dict[str, Any]) -> bytes:
    """The raw bytes POSTed (and signed): ``{"event", "timestamp", "data"}``."""
    return json.dumps({"event": event_type, "timestamp": timestamp, "data": data}, separators=(",", ":")).encode()


def signature(secret: str, raw_body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), raw_body, hashlib.sha256).hexdigest()


def headers_for(*, delivery_id: str, event_type: str, raw_body: bytes, version: str, configured: dict[str, str],
                secret: Optional[str]) -> dict[str, str]:
    headers = {
        **configured,
        "Content-Type": "application/json",
        "User-Agent": f"hypersdk-webhook/{version}",
        "X-Hypersdk-Event": event_type,
        "X-Hypersdk-Delivery": delivery_id,
    }
    if secret:
        headers["X-Hypersdk-Signature"] = signature(secret, raw_body)
    return headers


def backoff(retry: int, rng: random.Random) -> float:
    """Seconds before retry number ``retry`` (1, 2, 3...): 1, 2, 4, ... each within ±20 %, at most 5 min."""
    return min(MAX_BACKOFF, 2.0 ** (retry - 1)) * rng.uniform(0.8, 1.2)


def is_success(status_code: int) -> bool:
    return 200 <= status_code < 300


def private_address(address: str) -> bool:
    """Loopback, private, link-local and other non-public addresses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast
