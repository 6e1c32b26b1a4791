import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from hypersdk.api.guard import ApiToken, Guard
from hypersdk.errors import Forbidden, TooManyRequests, Unauthorized

TOKENS = [ApiToken("ops", "adm1n-t0ken", "admin"), ApiToken("grafana", "r3ad-t0ken", "read")]


def request(method=b"GET", path=b"/jobs/x", token=None, query_token=None, client="10.0.0.9"):
    r = DummyRequest(path.lstrip(b"/").split(b"/"))
    r.method, r.path = method, path
    r.client = IPv4Address("TCP", client, 40000)
    if token is not None:
        r.requestHeaders.setRawHeaders(b"authorization", [b"Bearer " + token.encode()])
    if query_token is not None:
        r.args = {b"token": [query_token.encode()]}
    return r


def test_health_is_open_and_everything_else_needs_a_token():
    denied = []
    g = Guard(TOKENS, Clock(), on_denied=denied.append)
    g.check(request(path=b"/health"))
    with pytest.raises(Unauthorized, match="required"):
        g.check(request())
    with pytest.raises(Unauthorized, match="not valid"):
        g.check(request(token="guess"))
    assert denied == ["no token", "invalid token"]


def test_read_tokens_read_and_admin_tokens_do_everything():
    g = Guard(TOKENS, Clock())
    g.check(request(token="r3ad-t0ken"))
    g.check(request(method=b"POST", path=b"/jobs/query", token="r3ad-t0ken"))
    with pytest.raises(Forbidden, match="'grafana' may only read"):
        g.check(request(method=b"POST", path=b"/jobs/submit", token="r3ad-t0ken"))
    with pytest.raises(Forbidden):
        g.check(request(method=b"DELETE", path=b"/schedules/x", token="r3ad-t0ken"))
    g.check(request(method=b"POST", path=b"/jobs/cancel", token="adm1n-t0ken"))


def test_the_websocket_may_carry_its_token_in_the_query_other_paths_may_not():
    g = Guard(TOKENS, Clock())
    g.check(request(path=b"/ws", query_token="r3ad-t0ken"))
    with pytest.raises(Unauthorized):
        g.check(request(path=b"/jobs/x", query_token="r3ad-t0ken"))


def test_without_tokens_nothing_is_checked():
    Guard([], Clock()).check(request(method=b"POST", path=b"/jobs/submit"))


def test_token_bucket_per_client_answers_429_with_retry_after():
    clock = Clock()
    g = Guard([], clock, requests_per_second=2, burst=3)
    for _ in range(3):
        g.check(request())
    with pytest.raises(TooManyRequests) as e:
        g.check(request())
    assert e.value.headers == {"Retry-After": "1"} and e.value.status == 429
    g.check(request(client="10.0.0.10"))  # another client has its own bucket
    clock.advance(0.5)
    g.check(request())  # one token back after half a second at 2/s
    with pytest.raises(TooManyRequests):
        g.check(request())
    g.check(request(path=b"/health"))  # never limited


def with_headers(r, **headers):
    for name, value in headers.items():
        r.requestHeaders.setRawHeaders(name.replace("_", "-").encode(), [value.encode()])
    return r


def test_pages_of_other_sites_may_not_write_or_open_the_websocket():
    g = Guard([], Clock())
    g.check(with_headers(request(method=b"POST", path=b"/jobs/submit"), host="127.0.0.1:8080"))  # curl: no Origin
    g.check(with_headers(request(method=b"POST", path=b"/jobs/cancel"), host="127.0.0.1:8080",
                         origin="http://127.0.0.1:8080"))  # the dashboard itself
    with pytest.raises(Forbidden, match="http://evil.example"):
        g.check(with_headers(request(method=b"POST", path=b"/schedules/x/trigger"), host="127.0.0.1:8080",
                             origin="http://evil.example"))
    with pytest.raises(Forbidden):
        g.check(with_headers(request(path=b"/ws"), host="127.0.0.1:8080", origin="http://evil.example"))
    g.check(with_headers(request(path=b"/status"), host="127.0.0.1:8080", origin="http://evil.example"))  # unreadable


def test_without_tokens_only_localhost_names_are_answered():
    g = Guard([], Clock(), loopback_hosts_only=True)
    for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "localhost"):
        g.check(with_headers(request(), host=host))
    with pytest.raises(Forbidden, match="only answers to localhost"):
        g.check(with_headers(request(), host="rebound.evil.example:8080"))  # DNS rebinding
    g.check(with_headers(request(path=b"/health"), host="rebound.evil.example"))  # open paths stay open
