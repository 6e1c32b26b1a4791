"""Blocking libvirt calls (``thd_*``) and the async facade ``LibvirtHost``.

The ``thd_*`` functions run in the ``libvirt`` thread pool, never on the
reactor thread. Each takes an open connection (or, for ``thd_open``, a URI),
and turns libvirt's errors into hypersdk errors whose messages name the URI
and the object concerned.

Timeouts come in two layers: libvirt keepalive (the connection is declared
dead after ``KEEPALIVE_INTERVAL * (KEEPALIVE_COUNT + 1)`` seconds without an
answer, which makes a blocked call fail and frees its thread) and a timeout on
every Deferred the facade returns (the caller gets UpstreamTimeout even while
the thread is still blocked, e.g. in an ssh connect).
"""

from __future__ import annotations

import errno
import os
import threading
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager, suppress
from typing import Any, Callable, Iterator, Optional

import libvirt
from attrs import define, frozen
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from hypersdk import errors
from hypersdk.cancel import CancelToken

KEEPALIVE_INTERVAL = 5  # seconds of silence before libvirt sends a keepalive
KEEPALIVE_COUNT = 3  # unanswered keepalives before the connection is closed
PROGRESS_INTERVAL = 1.0  # seconds between progress reports of an upload

ProgressCallback = Callable[[int, int], None]  # (bytes done, total bytes)

# refused/missing socket, ssh or TCP failures; a bad URI (VIR_ERR_NO_CONNECT) or
# refused authentication are UpstreamError
_UNREACHABLE = {libvirt.VIR_ERR_SYSTEM_ERROR}
_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
}
_EXISTS = {
    libvirt.VIR_ERR_STORAGE_VOL_EXIST,
    libvirt.VIR_ERR_DOM_EXIST,
    libvirt.VIR_ERR_OPERATION_INVALID,
}


@frozen
class PoolInfo:
    name: str
    path: Optional[str]  # target directory (dir, fs, netfs pools), else None
    capacity: int  # bytes
    allocation: int
    available: int
    active: bool


# -- process-wide set-up ------------------------------------------------------

_init_lock = threading.Lock()
_initialized = False


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """libvirt's default handler prints every error on stderr; we raise instead."""


def _run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def _noop_timer(_timer: int, _opaque: object) -> None:
    pass


def thd_init_libvirt() -> None:
    """Once per process: silence libvirt's stderr printer and run its event loop.

    libvirt keeps this state per process (like pyvmomi); the event loop is what
    lets connections use keepalive. It must exist before the first connection.
    """
    global _initialized
    with _init_lock:
        if _initialized:
            return
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        libvirt.virEventRegisterDefaultImpl()
        # a timer keeps the loop from sleeping forever before any connection exists
        libvirt.virEventAddTimeout(60_000, _noop_timer, None)
        threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True).start()
        _initialized = True


# -- blocking functions ---------------------------------------------------------


@contextmanager
def mapped_errors(uri: str, what: str) -> Iterator[None]:
    """Turn libvirt errors raised inside into hypersdk errors naming ``uri``."""
    try:
        yield
    except libvirt.libvirtError as e:
        code, message = e.get_error_code(), e.get_error_message() or str(e)
        text = f"libvirt {uri}: {what}: {message}"
        if code in _NOT_FOUND:
            raise errors.NotFound(text) from None
        if code in _EXISTS:
            raise errors.Conflict(text) from None
        raise errors.UpstreamError(text) from None


def thd_open(uri: str) -> libvirt.virConnect:
    thd_init_libvirt()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as e:
        message = f"libvirt {uri}: cannot connect: {e.get_error_message() or e}"
        if e.get_error_code() in _UNREACHABLE:
            raise errors.UpstreamUnreachable(message) from None
        raise errors.UpstreamError(message) from None
    try:
        conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
    except libvirt.libvirtError:
        pass  # in-process drivers (test://) have no keepalive
    return conn


def thd_with_connection(
    uri: str,
    fn: Callable[..., Any],
    *args: Any,
    opener: Callable[[str], Any] = thd_open,
    **kwargs: Any,
) -> Any:
    """Open ``uri``, run ``fn(conn, *args, **kwargs)``, close the connection."""
    conn = opener(uri)
    try:
        return fn(conn, *args, **kwargs)
    finally:
        with suppress(libvirt.libvirtError):
            conn.close()


def _unless_missing(missing: int, lookup: Callable[[], Any]) -> Any:
    """``lookup()``, or None when libvirt answers that the object does not exist (error ``missing``)."""
    try:
        return lookup()
    except libvirt.libvirtError as e:
        if e.get_error_code() == missing:
            return None
        raise


def find_domain(conn: libvirt.virConnect, name: str) -> Optional[libvirt.virDomain]:
    with mapped_errors(conn.getURI(), f"looking up domain {name!r}"):
        return _unless_missing(libvirt.VIR_ERR_NO_DOMAIN, lambda: conn.lookupByName(name))


def thd_domain_exists(conn: libvirt.virConnect, name: str) -> bool:
    return find_domain(conn, name) is not None


def thd_domain_with_uuid(conn: libvirt.virConnect, uuid: str) -> Optional[str]:
    """The name of the domain that has ``uuid``, or None."""
    with mapped_errors(conn.getURI(), f"looking up uuid {uuid}"):
        domain = _unless_missing(libvirt.VIR_ERR_NO_DOMAIN, lambda: conn.lookupByUUIDString(uuid))
        return None if domain is None else domain.name()


def thd_define_domain(conn: libvirt.virConnect, xml: str) -> str:
    """Define a new persistent domain; never redefine an existing one.

    libvirt's defineXML silently replaces the configuration of a domain with
    the same name, so an existing name (or BIOS uuid) is a Conflict here.
    """
    uri = conn.getURI()
    root = ET.fromstring(xml)
    name, uuid = root.findtext("name", ""), root.findtext("uuid")
    if find_domain(conn, name) is not None:
        raise errors.Conflict(f"libvirt {uri}: domain {name!r} already exists")
    other = thd_domain_with_uuid(conn, uuid) if uuid else None
    if other is not None:
        raise errors.Conflict(f"libvirt {uri}: domain {other!r} already has uuid {uuid}")
    with mapped_errors(uri, f"defining domain {name!r}"):
        return conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE).name()


def thd_domain_xml(conn: libvirt.virConnect, name: str) -> str:
    with mapped_errors(conn.getURI(), f"reading domain {name!r}"):
        return conn.lookupByName(name).XMLDesc(0)


def thd_start_domain(conn: libvirt.virConnect, name: str) -> None:
    with mapped_errors(conn.getURI(), f"starting domain {name!r}"):
        conn.lookupByName(name).create()


def thd_undefine_domain(conn: libvirt.virConnect, name: str) -> bool:
    """Stop (if running) and undefine ``name`` with its NVRAM; False if absent."""
    dom = find_domain(conn, name)
    if dom is None:
        return False
    with mapped_errors(conn.getURI(), f"undefining domain {name!r}"):
        if dom.isActive():
            dom.destroy()
        flags = (
            libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
            | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        )
        try:
            dom.undefineFlags(flags)
        except libvirt.libvirtError as e:
            # drivers without NVRAM support (test://) reject the flags
            if e.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                raise
            dom.undefine()
    return True


def _pool(conn: libvirt.virConnect, pool: str) -> libvirt.virStoragePool:
    with mapped_errors(conn.getURI(), f"storage pool {pool!r}"):
        return conn.storagePoolLookupByName(pool)


def thd_pool_info(conn: libvirt.virConnect, pool: str) -> PoolInfo:
    p = _pool(conn, pool)
    with mapped_errors(conn.getURI(), f"storage pool {pool!r}"):
        state, capacity, allocation, available = p.info()
        path = ET.fromstring(p.XMLDesc(0)).findtext("target/path")
    return PoolInfo(
        name=pool,
        path=path,
        capacity=capacity,
        allocation=allocation,
        available=available,
        active=state == libvirt.VIR_STORAGE_POOL_RUNNING,
    )


def volume_xml(name: str, capacity_bytes: int, format: str) -> str:
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="bytes").text = str(capacity_bytes)
    ET.SubElement(vol, "allocation", unit="bytes").text = "0"
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", type=format)
    return ET.tostring(vol, encoding="unicode")


def thd_create_volume(
    conn: libvirt.virConnect, pool: str, name: str, capacity_bytes: int, format: str
) -> str:
    """Create an empty volume; returns its path on the host."""
    uri = conn.getURI()
    p = _pool(conn, pool)
    with mapped_errors(uri, f"creating volume {name!r} in pool {pool!r}"):
        if name in p.listVolumes():
            raise errors.Conflict(f"libvirt {uri}: volume {name!r} already exists in pool {pool!r}")
        return p.createXML(volume_xml(name, capacity_bytes, format), 0).path()


def thd_volume_path(conn: libvirt.virConnect, pool: str, name: str) -> Optional[str]:
    """The path of an existing volume, or None."""
    p = _pool(conn, pool)
    with mapped_errors(conn.getURI(), f"looking up volume {name!r} in pool {pool!r}"):
        volume = _unless_missing(libvirt.VIR_ERR_NO_STORAGE_VOL, lambda: p.storageVolLookupByName(name))
        return None if volume is None else volume.path()


def thd_delete_volume(conn: libvirt.virConnect, pool: str, name: str) -> bool:
    """Delete a volume; False if it did not exist."""
    p = _pool(conn, pool)
    with mapped_errors(conn.getURI(), f"deleting volume {name!r} in pool {pool!r}"):
        vol = _unless_missing(libvirt.VIR_ERR_NO_STORAGE_VOL, lambda: p.storageVolLookupByName(name))
        if vol is None:
            return False
        vol.delete(0)
    return True


def thd_upload_volume(
    conn: libvirt.virConnect,
    pool: str,
    vol: str,
    local_file: str,
    token: CancelToken,
    progress_cb: Optional[ProgressCallback] = None,
    *,
    sparse: bool = True,
) -> int:
    """Stream ``local_file`` into volume ``vol`` byte for byte; returns its size.

    Holes are sent as holes when ``sparse`` (the target gets them punched as
    well). The token is checked before every chunk; on cancel the stream is
    aborted and CancelledError raised.
    """
    uri = conn.getURI()
    p = _pool(conn, pool)
    with mapped_errors(uri, f"volume {vol!r} in pool {pool!r}"):
        volume = p.storageVolLookupByName(vol)
    total = os.path.getsize(local_file)
    state = {"done": 0, "reported_at": time.monotonic()}

    def advance(n: int) -> None:
        state["done"] += n
        now = time.monotonic()
        if progress_cb and now - state["reported_at"] >= PROGRESS_INTERVAL:
            state["reported_at"] = now
            progress_cb(state["done"], total)

    def read(_stream: libvirt.virStream, nbytes: int, fd: int) -> bytes:
        token.raise_if_cancelled()
        data = os.read(fd, nbytes)
        advance(len(data))
        return data

    def skip(_stream: libvirt.virStream, length: int, fd: int) -> int:
        token.raise_if_cancelled()
        advance(length)
        return os.lseek(fd, length, os.SEEK_CUR)

    fd = os.open(local_file, os.O_RDONLY)
    stream = conn.newStream(0)
    try:
        with mapped_errors(uri, f"uploading {local_file} to volume {vol!r} in pool {pool!r}"):
            flags = libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM if sparse else 0
            volume.upload(stream, 0, total, flags)
            if sparse:
                stream.sparseSendAll(read, _section, skip, fd)
            else:
                stream.sendAll(read, fd)
            stream.finish()
    except BaseException:
        with suppress(libvirt.libvirtError):
            stream.abort()
        raise
    finally:
        os.close(fd)
    if progress_cb:
        progress_cb(total, total)
    return total


def _section(_stream: libvirt.virStream, fd: int) -> tuple[bool, int]:
    """(in data?, length of the current data or hole section) at fd's offset."""
    cur = os.lseek(fd, 0, os.SEEK_CUR)
    end = os.fstat(fd).st_size
    try:
        data = os.lseek(fd, cur, os.SEEK_DATA)
    except OSError as e:
        if e.errno != errno.ENXIO:  # ENXIO: only a hole up to the end
            raise
        data = end
    if data > cur:
        result = (False, data - cur)
    elif cur >= end:
        result = (True, 0)  # end of file: the next read returns b"" and ends the stream
    else:
        result = (True, os.lseek(fd, cur, os.SEEK_HOLE) - cur)
    os.lseek(fd, cur, os.SEEK_SET)
    return result


# -- async facade ---------------------------------------------------------------


@define
class LibvirtHost:
    """One libvirt URI, its blocking calls run in the injected thread pool.

    ``reactor`` needs ``callLater`` and ``callFromThread``; ``pool`` is the
    service's ``libvirt`` ThreadPool. Every call opens its own connection (a
    few ms locally), so a dropped connection never poisons later calls.
    ``timeout`` bounds every call; for uploads it bounds the time without
    progress. ``opener`` (a URI -> connection function run in the pool) is
    there for tests.
    """

    uri: str
    reactor: Any
    pool: Any
    timeout: float = 60.0
    opener: Callable[[str], Any] = thd_open
    log = Logger()

    def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        return deferToThreadPool(
            self.reactor, self.pool, thd_with_connection, self.uri, fn, *args, opener=self.opener, **kwargs
        )

    async def call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(conn, *args)`` on a connection of its own, in the pool, within ``timeout``."""
        return await self._bounded(what, self._run(fn, *args))

    async def call_in_pool(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the pool, within ``timeout`` (it manages its connection itself)."""
        return await self._bounded(what, deferToThreadPool(self.reactor, self.pool, fn, *args))

    async def _bounded(self, what: str, d: Deferred) -> Any:
        d.addTimeout(self.timeout, self.reactor)
        try:
            return await d
        except TimeoutError:
            raise errors.UpstreamTimeout(
                f"libvirt {self.uri}: {what} did not finish within {self.timeout:g} s"
            ) from None

    async def domain_exists(self, name: str) -> bool:
        return await self.call(f"looking up domain {name!r}", thd_domain_exists, name)

    async def domain_with_uuid(self, uuid: str) -> Optional[str]:
        return await self.call(f"looking up uuid {uuid}", thd_domain_with_uuid, uuid)

    async def define_domain(self, xml: str) -> str:
        return await self.call("defining a domain", thd_define_domain, xml)

    async def domain_xml(self, name: str) -> str:
        return await self.call(f"reading domain {name!r}", thd_domain_xml, name)

    async def start_domain(self, name: str) -> None:
        await self.call(f"starting domain {name!r}", thd_start_domain, name)

    async def undefine_domain(self, name: str) -> bool:
        return await self.call(f"undefining domain {name!r}", thd_undefine_domain, name)

    async def pool_info(self, pool: str) -> PoolInfo:
        return await self.call(f"reading storage pool {pool!r}", thd_pool_info, pool)

    async def create_volume(self, pool: str, name: str, capacity_bytes: int, format: str) -> str:
        return await self.call(
            f"creating volume {name!r}", thd_create_volume, pool, name, capacity_bytes, format
        )

    async def volume_path(self, pool: str, name: str) -> Optional[str]:
        return await self.call(f"looking up volume {name!r}", thd_volume_path, pool, name)

    async def delete_volume(self, pool: str, name: str) -> bool:
        return await self.call(f"deleting volume {name!r}", thd_delete_volume, pool, name)

    async def upload_volume(
        self,
        pool: str,
        vol: str,
        local_file: str,
        progress: Optional[ProgressCallback] = None,
        *,
        sparse: bool = True,
    ) -> int:
        """Upload ``local_file``; ``progress(done, total)`` runs on the reactor thread.

        Cancelling stops the thread at its next chunk and waits for it (the
        stream is aborted before this returns); no progress for ``timeout``
        seconds ends the upload the same way with UpstreamTimeout.
        """
        token = CancelToken()
        outcome: Deferred = Deferred(lambda _: token.cancel())
        stall = self.reactor.callLater(self.timeout, outcome.cancel)

        def on_progress(done: int, total: int) -> None:
            if stall.active():
                stall.reset(self.timeout)
            if progress is not None:
                progress(done, total)

        def relay(done: int, total: int) -> None:
            self.reactor.callFromThread(on_progress, done, total)

        finished: Deferred = Deferred()

        def forward(result: Any) -> None:
            finished.callback(None)
            if not outcome.called:  # else it was cancelled: the result is moot
                if isinstance(result, Failure):
                    outcome.errback(result)
                else:
                    outcome.callback(result)

        work = self._run(thd_upload_volume, pool, vol, local_file, token, relay, sparse=sparse)
        work.addBoth(forward)
        try:
            return await outcome
        except CancelledError:
            timed_out = not stall.active()
            await self._wait_for_thread(finished, vol)
            if timed_out:
                raise errors.UpstreamTimeout(
                    f"libvirt {self.uri}: upload to volume {vol!r} made no progress for {self.timeout:g} s"
                ) from None
            raise
        finally:
            if stall.active():
                stall.cancel()

    async def _wait_for_thread(self, finished: Deferred, vol: str) -> None:
        """Wait (bounded) until a cancelled upload thread has aborted its stream."""
        finished.addTimeout(self.timeout, self.reactor)
        try:
            await finished
        except TimeoutError:
            self.log.warn(
                "upload thread for volume {volume} on {uri} still blocked after cancel",
                volume=vol,
                uri=self.uri,
            )
