"""One logged-in pyvmomi session per vCenter account, shared by the vsphere thread pool.

Blocking and thread-safe: every method runs in a pool thread. Logins to the
same (vCenter, account, TLS policy) are serialized; different accounts log in
concurrently. A session found logged out (expired, or ended by an admin) is
replaced by a fresh login. Every session that leaves the cache is logged out:
when it is dropped, when it has sat unused for ``idle_timeout`` (the accounts
of one-off /vms requests), and when the daemon stops. A vCenter that limits
sessions per user never fills up with ours.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from typing import Callable, Optional, TypeVar

from pyVmomi import vim
from twisted.logger import Logger

from hypersdk import errors
from hypersdk.vsphere.connection import (
    VCenterParams,
    VCenterSessionExpired,
    service_content,
    thd_connect,
    thd_disconnect,
    upstream_errors,
    where as _where,
)

log = Logger()

T = TypeVar("T")
SessionKey = tuple


class SessionCache:
    def __init__(
        self,
        connect: Callable[[VCenterParams, float], vim.ServiceInstance] = thd_connect,
        timeout: float = 30.0,
        check_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        disconnect: Callable[[vim.ServiceInstance], None] = thd_disconnect,
        idle_timeout: float = 600.0,
    ) -> None:
        """``check_interval``: a session used successfully less than this many seconds
        ago is handed out without asking vCenter whether it is still logged in."""
        self._connect = connect
        self._disconnect = disconnect
        self._timeout = timeout
        self._check_interval = check_interval
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._digest_key = os.urandom(32)  # passwords are only held as keyed digests in keys
        self._lock = threading.Lock()
        self._key_locks: dict[SessionKey, threading.Lock] = {}
        self._sessions: dict[SessionKey, vim.ServiceInstance] = {}
        self._verified_at: dict[SessionKey, float] = {}
        self._used_at: dict[SessionKey, float] = {}

    def key(self, params: VCenterParams) -> SessionKey:
        digest = hmac.new(self._digest_key, params.password.encode(), "sha256").hexdigest()
        return (
            params.scheme, params.host.lower(), params.port, params.path, params.username, digest,
            params.insecure, params.thumbprint, params.ca_file,
        )

    def _key_lock(self, key: SessionKey) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _thd_alive(self, si: vim.ServiceInstance, params: VCenterParams) -> bool:
        """Still logged in? A pooled connection the server closed also counts as dead:
        a fresh login tells whether vCenter itself is unreachable."""
        try:
            with upstream_errors(params.where, self._timeout):
                return service_content(si).sessionManager.currentSession is not None
        except (VCenterSessionExpired, errors.UpstreamUnreachable):
            return False

    def thd_session(self, params: VCenterParams) -> vim.ServiceInstance:
        """A logged-in ServiceInstance for ``params``, logging in (again) if needed."""
        key = self.key(params)
        self._close_idle(but=key)
        with self._key_lock(key):
            self._used_at[key] = self._clock()
            si = self._sessions.get(key)
            if si is not None:
                if self._clock() - self._verified_at.get(key, float("-inf")) < self._check_interval:
                    return si
                if self._thd_alive(si, params):
                    self._verified_at[key] = self._clock()
                    return si
                log.info("vCenter session on {vcenter} for {user} expired: logging in again",
                         vcenter=params.where, user=params.username)
                self._forget(key, si)
            si = self._connect(params, self._timeout)
            self._sessions[key] = si
            self._verified_at[key] = self._clock()
            return si

    def thd_call(self, params: VCenterParams, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """``fn(si, *args, **kwargs)`` with a live session; once more after a re-login if it expired meanwhile."""
        si = self.thd_session(params)
        try:
            return fn(si, *args, **kwargs)
        except VCenterSessionExpired:
            self.invalidate(params, si)
            return fn(self.thd_session(params), *args, **kwargs)

    def invalidate(self, params: VCenterParams, si: Optional[vim.ServiceInstance] = None) -> None:
        """Forget the session of ``params`` (only if it is still ``si``, when given)."""
        key = self.key(params)
        with self._key_lock(key):
            current = self._sessions.get(key)
            if current is not None and (si is None or current is si):
                self._forget(key, current)

    def _forget(self, key: SessionKey, si: vim.ServiceInstance) -> None:
        self._sessions.pop(key, None)
        self._verified_at.pop(key, None)
        self._used_at.pop(key, None)
        self._disconnect(si)  # logged out, not just abandoned: vCenter counts it until it times out

    def _close_idle(self, but: SessionKey) -> None:
        """Log out the sessions nobody used for ``idle_timeout`` (other than ``but``, about to be used)."""
        now = self._clock()
        with self._lock:
            idle = [key for key, at in self._used_at.items() if key != but and now - at > self._idle_timeout]
        for key in idle:
            with self._key_lock(key):
                si = self._sessions.get(key)
                if si is not None and now - self._used_at.get(key, now) > self._idle_timeout:
                    log.info("logging out of an idle vCenter session on {vcenter}", vcenter=_where(si))
                    self._forget(key, si)

    def thd_close_all(self) -> None:
        """Log every session out (best effort); for stopService."""
        with self._lock:
            sessions = list(self._sessions.items())
            self._sessions.clear()
            self._verified_at.clear()
            self._used_at.clear()
        for _key, si in sessions:
            self._disconnect(si)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
