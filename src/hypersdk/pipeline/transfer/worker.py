"""The transfer worker: a supervised child that moves one disk, so its data never passes the daemon.

    python -m hypersdk.pipeline.transfer.worker   (one JSON spec on stdin, JSON lines on stdout)

``copy``: ``streams`` threads each keep one HTTPS connection to the datastore and take chunks from
a queue: a range GET into a buffer, a hash of the bytes as read, then a write into the target (a
file by pwrite, or a qcow2 through ``qemu-nbd``), nothing written for a chunk of zeros (sparse).
Four times a second the target is synced to disk (a raw file by fdatasync; a qcow2 by an NBD FLUSH,
which qemu-nbd run with a safe cache mode passes on to the disk) and the chunks written before the
sync are printed, ``{"chunk": i, "hash": h, "zero": z}``: that is the checkpoint, true even after a
power loss. A copy says done only when every chunk it was given is checkpointed.
``{"read": n}`` says how many bytes arrived so far (the daemon's stall timer), ``{"retry": ...}``
a chunk tried again after a transport error or a 5xx (with backoff), ``{"auth": status}`` a
session cookie vCenter refused: the worker waits for the daemon to write a new one into the
cookie file, then goes on. It ends with ``{"done": true}``, or ``{"error": ..., "kind": ...}``.

A copy of areas (``"areas": {index: {"pieces": [[start, length], ...], "outside": ...}}``) reads only
a chunk's pieces from the source, one range request each, into the chunk's bytes as the target holds
them outside the pieces (``outside``: "target", read locally; "zero"; "clear", zeros to be written), hashes
the whole chunk and writes the pieces (their zeros too, unless the target is fresh); a "clear" chunk
is written whole. ``{"read": n}`` counts only the bytes read from the source.

``verify``: reads the target locally by the same chunks and prints ``{"checked": i, "hash": h}``.

A failure of the target is said in the user's words (``pipeline/conditions.py``): the condition, the
file and the range, what to do, and, for a copy, that its checkpointed chunks are kept for a resume.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import http.client
import json
import os
import queue
import socket
import ssl
import sys
import threading
import time
import urllib.parse

import xxhash

from .. import conditions
from ..conditions import RESUME
from .nbd import NbdClient
from .plan import Chunk, describe_ranges, ranges

FLUSH_EVERY = 0.25  # seconds between syncs (and checkpoints): what a kill can make read again
BLOCK = 256 * 1024  # zero detection: a block of zeros in a chunk is not written (larger: less Python per byte)
BACKOFF_CAP = 16.0
AUTH_WAIT = 120.0  # seconds to wait for a renewed cookie


def chunk_hash(data) -> str:
    return xxhash.xxh3_128_hexdigest(data)


@functools.lru_cache(maxsize=16)
def zero_hash(length: int) -> str:
    """The hash of ``length`` zeros, computed once: a disk's free space is mostly chunks of zeros."""
    return chunk_hash(bytes(length))


class Fatal(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # "source" | "target" | "transport" | "auth" | "internal"


class Retry(Exception):
    """A transient failure: the chunk is tried again."""


class AuthRefused(Exception):
    pass


class Output:
    def __init__(self):
        self._lock = threading.Lock()

    def __call__(self, **message) -> None:
        with self._lock:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()


# -- the source: datastore ranges over HTTP(S) ---------------------------------------------------------

class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Checks the server's certificate against the pin on every connect, before a byte of a request
    is sent: http.client reconnects by itself after a ``Connection: close`` answer."""

    def __init__(self, *args, pin: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.pin = pin

    def connect(self) -> None:
        super().connect()
        der = self.sock.getpeercert(binary_form=True) or b""
        algorithm = hashlib.sha1 if len(self.pin) == 40 else hashlib.sha256
        digest = algorithm(der).hexdigest()
        if digest != self.pin:
            self.close()
            raise Fatal("transport", f"the datastore's TLS certificate does not match the pinned thumbprint"
                                     f" {self.pin} ({self.host}:{self.port} presented {digest})")


class Source:
    """One keep-alive connection to the datastore (one per thread)."""

    def __init__(self, spec: dict):
        url = urllib.parse.urlsplit(spec["url"])
        self._https = url.scheme == "https"
        self._host, self._port = url.hostname, url.port or (443 if self._https else 80)
        self._target = url.path + ("?" + url.query if url.query else "")
        self._offset = spec.get("source_offset", 0)
        self._cookie_file = spec["cookie_file"]
        self._timeout = spec.get("timeout", 30)
        self._rate = spec.get("stream_rate")  # bytes per second, or None
        self._tls = spec.get("tls", {})
        self._conn = None
        self._cookie = None  # read again after vCenter refuses it (the daemon writes a new one)

    def _connect(self):
        if not self._https:
            return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        tls = self._tls
        if tls.get("pin") or not tls.get("verify", True):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cafile=tls.get("cafile"))
        if tls.get("pin"):
            return PinnedHTTPSConnection(self._host, self._port, timeout=self._timeout, context=ctx, pin=tls["pin"])
        return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=ctx)

    def cookie(self) -> str:
        with open(self._cookie_file, encoding="utf-8") as f:
            self._cookie = f.read().strip()
        return self._cookie

    def read_into(self, buffer: memoryview, offset: int) -> None:
        """The disk's bytes ``offset .. offset+len(buffer)`` into ``buffer``."""
        start = self._offset + offset
        cookie = self._cookie or self.cookie()
        headers = {"Cookie": cookie, "Range": f"bytes={start}-{start + len(buffer) - 1}"}
        try:
            if self._conn is None:
                self._conn = self._connect()
            self._conn.request("GET", self._target, headers=headers)
            sock = self._conn.sock  # (before the answer: one that closes the connection takes it from there)
            response = self._conn.getresponse()
            if response.status in (401, 403):
                response.read()
                self._cookie = None
                raise AuthRefused(response.status, cookie)
            if response.status >= 500:
                response.read()
                raise Retry(f"HTTP {response.status}")
            if response.status != 206:
                raise Fatal("source", f"the datastore answered HTTP {response.status} to a range request"
                            + (" (it serves no byte ranges)" if response.status == 200 else ""))
            self._read_body(response, sock, buffer)
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise Retry(f"{type(e).__name__}: {e}") from None
        except BaseException:
            self.close()
            raise

    def _read_body(self, response, sock, buffer: memoryview) -> None:
        """The body into ``buffer``. An answer of the range's length (the usual one) is read from the
        socket itself once http.client's reader has given what it holds past the headers: http.client's
        layers of Python calls for each TLS record (16 KiB) cost a third of the read's CPU
        (benchmarks/transfer.py, part G). Any other (chunked, or not the range's length) goes through
        http.client, which says what is wrong with it."""
        direct = response.length == len(buffer)
        read = response.fp.readinto1 if direct else response.readinto
        got, started = 0, time.monotonic()
        while got < len(buffer):
            n = read(buffer[got:got + (1 << 20)])
            if not n:
                raise Retry(f"the response ended after {got} of {len(buffer)} bytes")
            got += n
            if direct:
                read = sock.recv_into  # (the socket, even if http.client closed its side: "Connection: close")
            if self._rate:  # hold this stream to its share of the cap
                ahead = started + got / self._rate - time.monotonic()
                if ahead > 0:  # (read once: a second reading could be negative, which sleep refuses)
                    time.sleep(ahead)
        if direct:
            response.length = 0  # read whole, here: the connection takes the next request
            response.close()
        elif response.read(1):
            raise Retry("the response is longer than the range asked for")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# -- the target: a file, or qemu-nbd ----------------------------------------------------------------------

class Target:
    """Where chunks go: shared by the threads (a file descriptor), or one NBD client per thread."""

    def __init__(self, spec: dict):
        self.kind = spec["kind"]
        self.path = _name(spec)
        self._spec = spec
        self._local = threading.local()
        self._fd = None
        if self.kind == "file":
            flags = os.O_RDWR | os.O_CREAT
            self._fd = os.open(spec["path"], flags, 0o600)
            if spec.get("size") is not None and os.fstat(self._fd).st_size < spec["size"]:
                os.ftruncate(self._fd, spec["size"])  # sparse: what is never written reads as zeros

    def _nbd(self) -> NbdClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = NbdClient(self._spec["socket"])
        return client

    def write(self, data: memoryview, offset: int) -> None:
        if self._fd is not None:
            written = 0
            while written < len(data):
                written += os.pwrite(self._fd, data[written:], offset + written)
        else:
            self._nbd().pwrite(data, offset)

    def zero(self, offset: int, length: int) -> None:
        """Make a range read as zeros (a chunk of zeros over what an earlier run may have written)."""
        if self._fd is not None:  # (rare: only where a resumed run may have written before)
            if self.hole(offset, length):
                return
            zeros = bytes(min(length, 1 << 20))
            for start in range(0, length, len(zeros)):
                os.pwrite(self._fd, zeros[:min(len(zeros), length - start)], offset + start)
        else:
            self._nbd().write_zeroes(offset, length)

    def hole(self, offset: int, length: int) -> bool:
        """Whether a file target holds no data in the range (it reads as zeros)."""
        if self._fd is None:
            return False
        try:
            return os.lseek(self._fd, offset, os.SEEK_DATA) >= offset + length
        except OSError:  # ENXIO: no data from here to the end
            return True

    def read_into(self, buffer: memoryview, offset: int) -> None:
        if self._fd is not None:
            got = 0
            while got < len(buffer):
                n = os.preadv(self._fd, [buffer[got:]], offset + got)
                if n == 0:  # past the end of a short file: zeros
                    buffer[got:] = bytes(len(buffer) - got)
                    return
                got += n
        else:
            self._nbd().pread_into(buffer, offset)

    def checkpoint(self, client: NbdClient | None = None) -> None:
        """What is written is on disk: it survives a kill of this process or of qemu-nbd, and a power
        loss (measured in benchmarks/transfer.py: no dearer than one sync at the end)."""
        if self._fd is not None:
            os.fdatasync(self._fd)
        else:
            client.flush()  # qemu-nbd syncs the qcow2 (its metadata, and the data of --cache=writeback)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


def runs(buffer: bytearray, length: int, block: int = BLOCK, begin: int = 0):
    """(start, end, has data) for the runs of ``buffer[begin:length]`` made of data blocks or of zero blocks.
    (``startswith`` compares in place, at memcmp speed; a slice or a memoryview comparison would not.)"""
    zero_block = bytes(block)
    start, data = begin, None
    for at in range(begin, length, block):
        size = min(block, length - at)
        has = not buffer.startswith(zero_block if size == block else zero_block[:size], at)
        if data is None:
            data = has
        elif has != data:
            yield start, at, data
            start, data = at, has
    if data is not None:
        yield start, length, data


# -- copy ------------------------------------------------------------------------------------------------

class Copy:
    def __init__(self, spec: dict, out: Output):
        self.spec = spec
        self.out = out
        self.target = Target(spec["target"])
        self.fresh = spec.get("fresh", True)  # a new target reads zeros everywhere: zero chunks need nothing
        self.plan = [Chunk(*chunk) for chunk in spec["chunks"]]  # (index, offset, length)
        self.areas = {int(i): area for i, area in spec.get("areas", {}).items()}  # chunks copied by pieces
        self.todo: queue.Queue = queue.Queue()
        for chunk in self.plan:
            self.todo.put(chunk)
        self.written: list[dict] = []
        self.checkpointed: set[int] = set()
        self.lock = threading.Lock()
        self.read_bytes = 0
        self.failure: Fatal | None = None
        self.stop = threading.Event()

    def run(self) -> int:
        flusher = NbdClient(self.spec["target"]["socket"]) if self.target.kind == "nbd" else None
        threads = [threading.Thread(target=self._stream, daemon=True) for _ in range(self.spec.get("streams", 4))]
        for t in threads:
            t.start()
        started = time.monotonic()
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(FLUSH_EVERY / len(threads))
                self._checkpoint(flusher)
            self._checkpoint(flusher)
            copied = time.monotonic()
            missing = [c.index for c in self.plan if c.index not in self.checkpointed]
            if self.failure is None and missing:  # no thread may end without its chunks: say which are not done
                self.failure = Fatal("internal", f"{describe_ranges(ranges(self.plan, missing))}: not copied,"
                                                 " though no stream failed")
        finally:
            if flusher is not None:
                flusher.close()
            self.target.close()
        if self.failure is not None:
            self.out(error=str(self.failure), kind=self.failure.kind)
            return 1
        self.out(done=True, copy_seconds=round(copied - started, 3))
        return 0

    def _checkpoint(self, flusher) -> None:
        """Sync what is written, then say so: a reported chunk is on disk."""
        with self.lock:
            batch, self.written = self.written, []
            read = self.read_bytes
        if batch:
            try:
                self.target.checkpoint(flusher)
            except OSError as e:  # qemu-nbd gone, a disk error: these chunks are not known to be on disk
                self._fail(Fatal("target", target_failure(e, f"syncing {self.target.path}", RESUME)))
                return
            for record in batch:
                self.out(**record)
                self.checkpointed.add(record["chunk"])
        self.out(read=read)

    def _stream(self) -> None:
        source = Source(self.spec)
        largest = max((c[2] for c in self.spec["chunks"]), default=0)
        buffer = bytearray(largest)
        zeros = bytes(largest)
        chunk = None
        try:
            while not self.stop.is_set():
                try:
                    chunk = self.todo.get_nowait()
                except queue.Empty:
                    return
                index, offset, length = chunk.index, chunk.offset, chunk.length
                view = memoryview(buffer)[:length]
                area = self.areas.get(index)
                if area is None:
                    self._fetch(source, index, offset, view)
                    spans = [(0, length)]
                else:
                    spans = self._fetch_pieces(source, chunk, view, area, memoryview(zeros))
                is_zero = buffer.startswith(zeros if length == largest else zeros[:length])
                for begin, stop in spans:
                    if is_zero:  # (not scanned again by blocks)
                        if not self.fresh:
                            self.target.zero(offset + begin, stop - begin)
                        continue
                    for start, end, data in runs(buffer, stop, begin=begin):  # zero blocks stay holes in a fresh target
                        if data:
                            self.target.write(view[start:end], offset + start)
                        elif not self.fresh:
                            self.target.zero(offset + start, end - start)
                digest = zero_hash(length) if is_zero else chunk_hash(view)
                with self.lock:
                    self.written.append({"chunk": index, "hash": digest, "zero": is_zero})
        except Fatal as e:
            self._fail(e)
        except OSError as e:  # the target: full disk, qemu-nbd gone
            self._fail(Fatal("target", target_failure(e, _doing("writing", self.target.path, chunk), RESUME)))
        except Exception as e:  # a bug, or a library failing in a way not foreseen: the copy must not pass
            self._fail(Fatal("internal", f"{_bytes(chunk)}: internal error: {type(e).__name__}: {e}"))
        finally:
            source.close()

    def _fetch_pieces(self, source: Source, chunk: Chunk, view: memoryview, area: dict,
                      zeros: memoryview) -> list[tuple[int, int]]:
        """The chunk's bytes: its pieces from the source over what the target holds outside them. Returns
        the spans of the chunk to write, [start, end) in it: the pieces, or the whole of a "clear" chunk."""
        if area["outside"] == "target":
            try:
                self.target.read_into(view, chunk.offset)
            except OSError as e:
                raise Fatal("target", target_failure(e, _doing("reading", self.target.path, chunk), RESUME)) from None
        else:
            view[:] = zeros[:len(view)]
        spans = []
        for start, length in area["pieces"]:
            begin = start - chunk.offset
            self._fetch(source, chunk.index, start, view[begin:begin + length])
            spans.append((begin, begin + length))
        return [(0, len(view))] if area["outside"] == "clear" else spans

    def _fetch(self, source: Source, index: int, offset: int, view: memoryview) -> None:
        retries, auth_waits = self.spec.get("retries", 5), 0
        attempt = 0
        while True:
            try:
                source.read_into(view, offset)
                with self.lock:
                    self.read_bytes += len(view)
                return
            except Retry as e:
                attempt += 1
                if attempt > retries:
                    raise Fatal("transport", f"bytes {offset}-{offset + len(view) - 1}: {e} ({retries} retries)")
                self.out(retry=index, attempt=attempt, error=str(e))
                self._sleep(min(BACKOFF_CAP, 2 ** (attempt - 1)))
            except AuthRefused as e:
                auth_waits += 1
                if auth_waits > 3:
                    raise Fatal("auth", f"vCenter refused the session cookie (HTTP {e.args[0]}) after renewals")
                self._wait_for_new_cookie(source, *e.args)

    def _wait_for_new_cookie(self, source: Source, status: int, old: str) -> None:
        """Until the cookie file holds another cookie than the one refused (another stream may have
        had it renewed already)."""
        if source.cookie() != old:
            return
        self.out(auth=status)
        deadline = time.monotonic() + AUTH_WAIT
        while source.cookie() == old:
            if time.monotonic() > deadline:
                raise Fatal("auth", f"vCenter refused the session cookie (HTTP {status}) and none came to replace it")
            self._sleep(0.2)

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Fatal(self.failure.kind if self.failure else "transport", "stopped")

    def _fail(self, failure: Fatal) -> None:
        with self.lock:
            if self.failure is None:
                self.failure = failure
        self.stop.set()


def _bytes(chunk: Chunk | None) -> str:
    return "before the first chunk" if chunk is None else f"bytes {chunk.offset}-{chunk.end - 1}"


def _name(target: dict) -> str:
    """The target's file (a qcow2 behind qemu-nbd), for messages."""
    return target.get("path") or target.get("socket", "the destination")


def _doing(action: str, path: str, chunk: Chunk | None) -> str:
    """``writing /x/a.qcow2, bytes 0-8388607``"""
    return f"{action} {path}" + (f", {_bytes(chunk)}" if chunk is not None else "")


def target_failure(error: OSError, doing: str, then: str = "") -> str:
    """A failure of the target in the user's words (the condition as its text says it: NbdClient makes a
    missing errno EIO); what the OS or libnbd said when the condition is not one of those (qemu-nbd
    gone: ``writing /x/a.qcow2, bytes ...: nbd_pwrite: ...``)."""
    condition = conditions.found_in([str(error.strerror or "")]) or conditions.of_errno(error.errno)
    if condition is None:
        return f"{doing}: {error.strerror or error}"
    return conditions.sentence(condition, doing, then)


# -- verify ------------------------------------------------------------------------------------------------

def verify(spec: dict, out: Output) -> int:
    """Hash the destination by chunks, ``streams`` threads at once (each its own NBD connection)."""
    try:
        target = Target(spec["target"])
    except OSError as e:
        out(error=target_failure(e, f"opening {_name(spec['target'])}"), kind="target")
        return 1
    todo: queue.Queue = queue.Queue()
    for chunk in spec["chunks"]:
        todo.put(Chunk(*chunk))
    largest = max((c[2] for c in spec["chunks"]), default=0)
    known_zero = set(spec.get("zero", ()))  # holes of the destination: they read as zeros, unread
    failures: list[str] = []

    def check() -> None:
        buffer = memoryview(bytearray(largest))
        chunk = None
        try:
            while not failures:
                try:
                    chunk = todo.get_nowait()
                except queue.Empty:
                    return
                index, offset, length = chunk.index, chunk.offset, chunk.length
                view = buffer[:length]
                if index in known_zero or target.hole(offset, length):
                    out(checked=index, hash=zero_hash(length))
                    continue
                target.read_into(view, offset)
                out(checked=index, hash=chunk_hash(view))
        except OSError as e:
            failures.append(target_failure(e, _doing("reading", target.path, chunk)))
        except Exception as e:  # the daemon also counts the chunks checked: this says why one is not
            failures.append(f"{_bytes(chunk)}: internal error: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=check, daemon=True) for _ in range(spec.get("streams", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    target.close()
    if failures:
        out(error=failures[0], kind="target")
        return 1
    out(done=True)
    return 0


def main() -> int:
    # argv (--job ID) only names the job for ps; everything else comes on stdin, secrets included
    spec = json.loads(sys.stdin.readline())
    gc.freeze()  # what the imports made is never garbage: collections need not look at it again
    out = Output()
    socket.setdefaulttimeout(spec.get("timeout", 30))
    if spec["mode"] == "verify":
        return verify(spec, out)
    try:
        copy = Copy(spec, out)
    except OSError as e:  # the target cannot be opened: nothing was copied
        out(error=target_failure(e, f"opening {_name(spec['target'])}", "then resume the job"), kind="target")
        return 1
    try:
        return copy.run()
    except OSError as e:  # qemu-nbd cannot be reached before the first chunk
        out(error=target_failure(e, f"connecting to qemu-nbd serving {copy.target.path}", RESUME), kind="target")
        return 1


if __name__ == "__main__":
    sys.exit(main())
