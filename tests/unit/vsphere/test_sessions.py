"""SessionCache with a fake connect function: no vCenter, no sockets."""

from __future__ import annotations

import threading

import pytest

from hypersdk import errors
from hypersdk.vsphere.connection import VCenterParams, VCenterSessionExpired
from hypersdk.vsphere.sessions import SessionCache


class FakeSessionManager:
    def __init__(self) -> None:
        self.logged_in = True
        self.checks = 0
        self.connection_closed = False

    @property
    def currentSession(self):
        self.checks += 1
        if self.connection_closed:
            raise ConnectionResetError(104, "Connection reset by peer")
        return object() if self.logged_in else None

    def Logout(self) -> None:
        self.logged_in = False


class FakeStub:
    def __init__(self) -> None:
        self.sm = FakeSessionManager()
        self._hypersdk_content = type("Content", (), {"sessionManager": self.sm})()
        self.dropped = False

    def DropConnections(self) -> None:
        self.dropped = True


class FakeSi:
    def __init__(self, params: VCenterParams) -> None:
        self.params = params
        self._stub = FakeStub()


class FakeConnect:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[VCenterParams] = []
        self.gate = gate
        self.lock = threading.Lock()

    def __call__(self, params: VCenterParams, timeout: float) -> FakeSi:
        with self.lock:
            self.calls.append(params)
        if self.gate is not None:
            assert self.gate.wait(5)
        if params.password == "wrong":
            raise errors.VCenterLoginFailed("vCenter login failed: x")
        return FakeSi(params)


def params(**kw) -> VCenterParams:
    base = dict(host="vc.example.com", port=443, username="admin", password="pw")
    base.update(kw)
    return VCenterParams(**base)


def test_one_session_per_account_reused_while_logged_in():
    connect = FakeConnect()
    cache = SessionCache(connect=connect)
    first = cache.thd_session(params())
    assert cache.thd_session(params()) is first
    assert cache.thd_session(params(host="VC.example.com")) is first  # host names are case-insensitive
    assert len(connect.calls) == 1


def test_different_password_user_or_tls_policy_means_a_different_session():
    connect = FakeConnect()
    cache = SessionCache(connect=connect)
    sessions = {
        id(cache.thd_session(p))
        for p in (params(), params(password="other"), params(username="bob"), params(insecure=True),
                  params(thumbprint="aa" * 20), params(port=8443))
    }
    assert len(sessions) == 6


def test_keys_hold_no_plaintext_password():
    cache = SessionCache(connect=FakeConnect())
    assert "pw-s3cret" not in repr(cache.key(params(password="pw-s3cret")))


def test_expired_session_is_replaced_by_a_new_login():
    connect = FakeConnect()
    cache = SessionCache(connect=connect)
    first = cache.thd_session(params())
    first._stub.sm.Logout()
    second = cache.thd_session(params())
    assert second is not first
    assert first._stub.dropped
    assert len(connect.calls) == 2


def test_session_whose_pooled_connection_was_closed_is_replaced():
    connect = FakeConnect()
    cache = SessionCache(connect=connect)
    first = cache.thd_session(params())
    first._stub.sm.connection_closed = True
    assert cache.thd_session(params()) is not first
    assert len(connect.calls) == 2


def test_recently_verified_session_is_not_rechecked_within_the_interval():
    now = [100.0]
    cache = SessionCache(connect=FakeConnect(), check_interval=5.0, clock=lambda: now[0])
    si = cache.thd_session(params())
    cache.thd_session(params())
    assert si._stub.sm.checks == 0
    now[0] += 6
    cache.thd_session(params())
    assert si._stub.sm.checks == 1


def test_concurrent_logins_for_one_account_are_serialized_into_one():
    gate = threading.Event()
    connect = FakeConnect(gate)
    cache = SessionCache(connect=connect)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.thd_session(params()))) for _ in range(4)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(5)
    assert len(connect.calls) == 1
    assert len({id(r) for r in results}) == 1


def test_login_failure_is_raised_and_not_cached():
    connect = FakeConnect()
    cache = SessionCache(connect=connect)
    with pytest.raises(errors.VCenterLoginFailed):
        cache.thd_session(params(password="wrong"))
    with pytest.raises(errors.VCenterLoginFailed):
        cache.thd_session(params(password="wrong"))
    assert len(connect.calls) == 2
    assert len(cache) == 0


def test_thd_call_retries_once_on_an_expired_session():
    connect = FakeConnect()
    cache = SessionCache(connect=connect)
    seen = []

    def operation(si, value):
        seen.append(si)
        if len(seen) == 1:
            si._stub.sm.Logout()
            raise VCenterSessionExpired("expired")
        return value * 2

    assert cache.thd_call(params(), operation, 21) == 42
    assert seen[0] is not seen[1]


def test_close_all_logs_every_session_out():
    cache = SessionCache(connect=FakeConnect())
    a = cache.thd_session(params())
    b = cache.thd_session(params(username="bob"))
    cache.thd_close_all()
    assert not a._stub.sm.logged_in and not b._stub.sm.logged_in
    assert a._stub.dropped and b._stub.dropped
    assert len(cache) == 0


class Recorder:
    """Records each logout, as thd_disconnect would do it."""

    def __init__(self):
        self.logged_out = []

    def __call__(self, si):
        self.logged_out.append(si)
        si._stub.DropConnections()


def test_a_session_dropped_because_its_connection_broke_is_logged_out():
    disconnect = Recorder()
    cache = SessionCache(connect=FakeConnect(), disconnect=disconnect)
    first = cache.thd_session(params())
    first._stub.sm.connection_closed = True
    assert cache.thd_session(params()) is not first
    assert disconnect.logged_out == [first]


def test_invalidating_a_session_logs_it_out():
    disconnect = Recorder()
    cache = SessionCache(connect=FakeConnect(), disconnect=disconnect)
    first = cache.thd_session(params())
    cache.invalidate(params())
    assert disconnect.logged_out == [first] and len(cache) == 0


def test_sessions_unused_for_the_idle_timeout_are_logged_out_at_the_next_call():
    now = [0.0]
    disconnect = Recorder()
    cache = SessionCache(connect=FakeConnect(), disconnect=disconnect, idle_timeout=600, clock=lambda: now[0])
    one_off = cache.thd_session(params(username="once"))
    busy = cache.thd_session(params())
    now[0] = 500
    assert cache.thd_session(params()) is busy
    now[0] = 700  # "once" unused for 700 s, the other for 200 s
    assert cache.thd_session(params()) is busy
    assert disconnect.logged_out == [one_off] and len(cache) == 1
