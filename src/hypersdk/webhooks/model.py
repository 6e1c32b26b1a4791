"""Webhook values: the receivers, the deliveries queued for them and each attempt."""

from __future__ import annotations

from typing import Optional

from attrs import field, frozen

CONFIG, API = "config", "api"
PENDING, DELIVERED, FAILED, DROPPED = "pending", "delivered", "failed", "dropped"


@frozen
class Webhook:
    key: str  # stable identity: "config-<hash of its url and index>" or the id of an API-added one
    origin: str  # CONFIG | API
    url: str
    events: tuple[str, ...] = ()  # empty or "*": every event
    enabled: bool = True
    timeout: float = 30.0  # seconds per attempt
    retry_count: int = 3
    headers: dict[str, str] = field(factory=dict)
    secret: Optional[str] = None
    created_at: Optional[float] = None


@frozen
class Attempt:
    at: float
    duration: float
    status_code: Optional[int] = None
    error: Optional[str] = None  # transport error, timeout or refusal


@frozen
class Delivery:
    id: str  # X-Hypersdk-Delivery: receivers de-duplicate with it
    hook_key: str
    event: str
    body: bytes
    created_at: float
    state: str = PENDING
    attempts: tuple[Attempt, ...] = ()
