"""Who may call what, and how often: API tokens with roles, and a token bucket per client address.

Checked for every request before routing. ``/health`` and the dashboard's files are always open. A ``read``
token may use GET endpoints, the WebSocket and the two read-only POSTs
(``/jobs/query``, ``/vms/info``); an ``admin`` token may use everything. Tokens
come in ``Authorization: Bearer``, and for the WebSocket also as ``?token=``.
"""

from __future__ import annotations

import hmac
import math
from typing import Callable, Optional

from attrs import frozen
from twisted.logger import Logger

from ..config import is_loopback_host
from ..errors import Forbidden, TooManyRequests, Unauthorized

OPEN_PATHS = (b"/health", b"/")  # the dashboard's page and files hold no data: it asks for a token
OPEN_PREFIXES = (b"/static/",)
READ_ONLY_POSTS = (b"/jobs/query", b"/vms/info")
READ, ADMIN = "read", "admin"
MAX_TRACKED_CLIENTS = 10_000


@frozen
class ApiToken:
    name: str
    secret: str
    role: str


class Guard:
    log = Logger()

    def __init__(self, tokens: list[ApiToken], clock, *, requests_per_second: Optional[float] = None,
                 burst: int = 20, on_denied: Callable[[str], None] = lambda reason: None,
                 loopback_hosts_only: bool = False):
        self._tokens = [(t, t.secret.encode()) for t in tokens]
        # Without tokens on loopback, a Host naming anything else is a DNS-rebinding page, not a local tool.
        self._loopback_hosts_only = loopback_hosts_only
        self._clock = clock
        self._rate = requests_per_second
        self._burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # client address -> (tokens left, when)
        self._on_denied = on_denied

    @property
    def auth_enabled(self) -> bool:
        return bool(self._tokens)

    def check(self, request) -> None:
        """Raise the error to answer with, or return to let the request through."""
        if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
            return
        client = getattr(request.getClientAddress(), "host", "-")
        if self._rate is not None:
            self._take(client)
        self._same_origin(request, client)
        if not self._tokens:
            return
        presented = self._presented(request)
        token = self._match(presented) if presented else None
        if token is None:
            reason = "invalid token" if presented else "no token"
            self._denied(reason, client, request)
            raise Unauthorized("an API token is required: send Authorization: Bearer <token>" if not presented
                               else "the API token is not valid")
        if token.role != ADMIN and not _read_only(request):
            self._denied("read-only token", client, request, token.name)
            raise Forbidden(f"token {token.name!r} may only read; "
                            f"{request.method.decode()} {request.path.decode('utf-8', 'replace')} needs an admin token")

    def _same_origin(self, request, client: str) -> None:
        """Browsers name the page that sends a request in Origin: another site's page may not write to
        the daemon or read its WebSocket (with or without tokens)."""
        host = (request.getHeader(b"host") or b"").decode("latin-1").strip().lower()
        name = _hostname(host)
        if self._loopback_hosts_only and name and not is_loopback_host(name):  # no Host at all: HTTP/1.0, a local tool
            self._denied("foreign Host header", client, request)
            raise Forbidden(f"Host {host!r} is not this daemon's: without tokens it only answers to localhost")
        origin = (request.getHeader(b"origin") or b"").decode("latin-1").strip().lower()
        if origin and (request.path == b"/ws" or not _read_only(request)) and origin.split("://", 1)[-1] != host:
            self._denied("cross-origin", client, request)
            raise Forbidden(f"requests from the page at {origin} are refused: it is not served by this daemon")

    def _presented(self, request) -> Optional[bytes]:
        header = request.getHeader(b"authorization") or b""
        if isinstance(header, str):
            header = header.encode()
        scheme, _, value = header.partition(b" ")
        if scheme.lower() == b"bearer" and value.strip():
            return value.strip()
        if request.path == b"/ws":
            values = request.args.get(b"token")
            if values and values[0]:
                return values[0]
        return None

    def _match(self, presented: bytes) -> Optional[ApiToken]:
        found = None
        for token, secret in self._tokens:  # every one compared, in constant time
            if hmac.compare_digest(presented, secret):
                found = token
        return found

    def _denied(self, reason: str, client: str, request, name: str = "") -> None:
        self.log.warn("denied {method} {path} from {client}: {reason}{who}", method=request.method.decode(),
                      path=request.path.decode("utf-8", "replace"), client=client, reason=reason,
                      who=f" ({name})" if name else "")
        self._on_denied(reason)

    def _take(self, client: str) -> None:
        now = self._clock.seconds()
        tokens, last = self._buckets.get(client, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - last) * self._rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            self._on_denied("rate limited")
            wait = math.ceil((1.0 - tokens) / self._rate)
            raise TooManyRequests(f"too many requests from {client}: at most {self._rate:g} per second"
                                  f" (burst {self._burst}); retry in {wait} s", retry_after=wait)
        self._buckets.pop(client, None)  # re-inserted last: the dict's order is least recently seen first
        self._buckets[client] = (tokens - 1.0, now)
        while len(self._buckets) > MAX_TRACKED_CLIENTS:  # forget the longest silent client
            del self._buckets[next(iter(self._buckets))]


def _hostname(host: str) -> str:
    """The name in a Host header, without its port ("[::1]:8080" -> "[::1]")."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _read_only(request) -> bool:
    return request.method in (b"GET", b"HEAD") or (request.method == b"POST" and request.path in READ_ONLY_POSTS)
