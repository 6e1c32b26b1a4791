"""The async face of the vSphere layer: blocking calls in the ``vsphere`` thread pool.

Every call runs off the reactor thread, holds a shared session (one per vCenter
account) and has a deadline; waits that take long take a CancelToken.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from .. import errors
from ..config import VCenterConfig, read_vcenter_password
from ..jobs.definition import SourceSpec
from ..cancel import CancelToken
from ..threads import RemoteCallPool
from . import files, inventory, power, snapshots
from .connection import VCenterParams
from .datastore import session_cookie
from .model import VmInfo
from .sessions import SessionCache


class VSphere:
    log = Logger()

    def __init__(self, reactor, timeout: float, named: Optional[dict[str, VCenterConfig]] = None, max_threads: int = 8):
        """``named``: the vCenters of the configuration file, by name."""
        self._reactor = reactor
        self._timeout = timeout
        self._named = named or {}
        self.pool = RemoteCallPool(minthreads=0, maxthreads=max_threads, name="vsphere")
        self.sessions = SessionCache(timeout=timeout)

    def start(self) -> None:
        self.pool.start()

    async def stop(self) -> None:
        """Log every vCenter session out (bounded), then stop the threads."""
        if not self.pool.started:  # the daemon stopped before starting its workers: no session
            return
        try:
            await self._in_thread(self._timeout, self.sessions.thd_close_all)
        except Exception as e:
            self.log.warn("logging out of vCenter at stop: {error}", error=getattr(e, "message", None) or repr(e))
        self.pool.stop()

    def _in_thread(self, deadline: Optional[float], fn, *args) -> Deferred:
        d = deferToThreadPool(self._reactor, self.pool, fn, *args)
        if deadline is not None:
            # The socket timeouts inside bound each call; this bounds the whole
            # sequence (the thread finishes on its own, its result is dropped).
            d.addTimeout(deadline, self._reactor, onTimeoutCancel=_timed_out)
        return d

    def _with_session(self, params: VCenterParams, fn, *args, deadline: Optional[float] = None) -> Deferred:
        return self._in_thread(deadline or self._timeout * 4, self.sessions.thd_call, params, fn, *args)

    async def params_for(self, source: SourceSpec) -> VCenterParams:
        """Login parameters for a job's source or a request's credentials."""
        if source.vcenter is not None:
            named = self._named[source.vcenter]
            password = await self._in_thread(self._timeout, read_vcenter_password, named)
            return VCenterParams.from_url(named.url, named.username, password, insecure=named.insecure,
                                          thumbprint=named.thumbprint)
        return VCenterParams.from_url(source.vcenter_url, source.username, source.password,
                                      insecure=source.insecure, thumbprint=source.thumbprint)

    def login(self, params: VCenterParams) -> Deferred:
        """Make sure a session exists (distinct errors for login, TLS, DNS, refusal, timeout)."""
        return self._in_thread(self._timeout * 2, lambda: self.sessions.thd_session(params) and None)

    def read_vm(self, params: VCenterParams, vm_path: str) -> Deferred:
        """The VmInfo of the VM at an inventory path (VMNotFound naming it)."""
        return self._with_session(params, _thd_read_vm_at, vm_path)

    def session_cookie(self, params: VCenterParams) -> Deferred:
        return self._with_session(params, session_cookie)

    def read_range(self, params: VCenterParams, url: str, start: int, length: int) -> Deferred:
        def thd(si):
            return files.thd_read_range(params, url, session_cookie(si), start, length, self._timeout)

        return self._with_session(params, thd)

    def file_identity(self, params: VCenterParams, url: str) -> Deferred:
        """(size, Last-Modified) of a datastore file."""
        def thd(si):
            return files.thd_file_identity(params, url, session_cookie(si), self._timeout)

        return self._with_session(params, thd)

    def new_session_cookie(self, params: VCenterParams) -> Deferred:
        """The cookie of a fresh login: for a cookie the datastore refused (the session is logged out)."""
        def thd():
            self.sessions.invalidate(params)
            return self.sessions.thd_call(params, session_cookie)

        return self._in_thread(self._timeout * 4, thd)

    def server_certificate(self, params: VCenterParams) -> Deferred:
        """vCenter's certificate (DER) as the session's TLS policy accepts it."""
        return self._in_thread(self._timeout * 2, files.thd_server_certificate, params, self._timeout)

    def shutdown_guest(self, params: VCenterParams, vm_path: str) -> Deferred:
        return self._on_vm(params, vm_path, power.thd_shutdown_guest)

    def power_off(self, params: VCenterParams, vm_path: str, timeout: float = 60.0) -> Deferred:
        return self._on_vm(params, vm_path, power.thd_power_off, timeout, deadline=timeout + self._timeout * 2)

    def wait_powered_off(self, params: VCenterParams, vm_path: str, timeout: float) -> Deferred:
        """Wait for the VM to be off; cancelling the Deferred stops the waiting thread."""
        token = CancelToken()
        d = self._on_vm(params, vm_path, power.thd_wait_powered_off, timeout, token, deadline=timeout + self._timeout * 2)
        d.addErrback(_cancel_token_on_cancel, token)
        return d

    def remove_cdroms(self, params: VCenterParams, vm_path: str) -> Deferred:
        return self._on_vm(params, vm_path, power.thd_remove_cdroms)

    def power_on(self, params: VCenterParams, vm_path: str, timeout: float = 120.0) -> Deferred:
        return self._on_vm(params, vm_path, power.thd_power_on, timeout, deadline=timeout + self._timeout * 2)

    # -- warm migration: snapshots and Changed Block Tracking ---------------------------

    def enable_change_tracking(self, params: VCenterParams, vm_path: str) -> Deferred:
        """True if it was off (it takes effect at the VM's next snapshot or power on)."""
        return self._on_vm(params, vm_path, snapshots.thd_enable_change_tracking, self._timeout * 2)

    def create_snapshot(self, params: VCenterParams, vm_path: str, name: str, quiesce: bool,
                        timeout: float = 600.0) -> Deferred:
        """The snapshot's disks' changeIds, by device key (the snapshot is found again by its name)."""
        def thd(si, vm):
            snapshot = snapshots.thd_create_snapshot(si, vm, name, quiesce, timeout)
            return snapshots.thd_change_ids(si, snapshot)

        return self._on_vm(params, vm_path, thd, deadline=timeout + self._timeout * 4)

    def remove_snapshots(self, params: VCenterParams, vm_path: str, name: str, timeout: float = 1800.0) -> Deferred:
        """Remove the VM's snapshots of this name (merging them can take long on a busy VM): how many."""
        return self._on_vm(params, vm_path, snapshots.thd_remove_snapshots_named, name, timeout,
                           deadline=timeout + self._timeout * 4)

    def changed_areas(self, params: VCenterParams, vm_path: str, snapshot_name: Optional[str], device_key: int,
                      capacity: int, change_id: str) -> Deferred:
        """The disk's areas changed since ``change_id`` as of the named snapshot (None: now, VM off)."""
        def thd(si, vm):
            snapshot = None
            if snapshot_name is not None:
                found = [s for name, s in snapshots.thd_snapshots(si, vm) if name == snapshot_name]
                if len(found) != 1:
                    raise errors.Conflict(f"the VM has {len(found)} snapshot(s) named {snapshot_name}, not one")
                snapshot = found[0]
            return snapshots.thd_changed_areas(si, vm, snapshot, device_key, capacity, change_id)

        return self._on_vm(params, vm_path, thd, deadline=self._timeout * 8)

    def _on_vm(self, params: VCenterParams, vm_path: str, fn, *args, deadline: Optional[float] = None) -> Deferred:
        """``fn(si, vm, *args)`` on the VM at ``vm_path``, with the session's retries and a deadline."""
        return self._with_session(params, lambda si: fn(si, inventory.thd_find_vm(si, vm_path), *args),
                                  deadline=deadline)

    def list_vms(self, params: VCenterParams, datacenter: Optional[str], folder: Optional[str]) -> Deferred:
        return self._with_session(params, inventory.thd_list_vms, datacenter, folder)


def _thd_read_vm_at(si, vm_path: str) -> VmInfo:
    return inventory.thd_read_vm(si, inventory.thd_find_vm(si, vm_path), vm_path)


def _cancel_token_on_cancel(failure, token: CancelToken):
    if failure.check(CancelledError):
        token.cancel()
    return failure


def _timed_out(result, timeout):
    raise errors.UpstreamTimeout(f"vCenter did not finish the operation within {timeout:g} s")
