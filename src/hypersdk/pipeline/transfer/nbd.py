"""The transfer worker's NBD connection to ``qemu-nbd``: libnbd's client (the one nbdcopy is built on),
through its Python binding.

The binding is Debian's ``python3-libnbd`` (PyPI has none), built for Debian's ``python3``. The
daemon's venv runs the same Python minor version, whose C extensions share one ABI, so the module
is loaded from Debian's directory; only that module: the directory leaves ``sys.path`` again.
Blocking calls release the GIL, so the worker's threads each keep a connection and run at once
(``qemu-nbd --shared`` takes several). Failures are ``NbdError``, an ``OSError`` like any failure
of the destination. It writes as fast as the worker's former own client did (benchmarks/transfer.py,
part E).
"""

from __future__ import annotations

import errno
import importlib
import sys

DEBIAN_MODULES = "/usr/lib/python3/dist-packages"
MAX_REQUEST = 32 * 1024 * 1024  # qemu-nbd's limit per request


class NbdError(OSError):
    pass


def _libnbd():
    try:
        return importlib.import_module("nbd")
    except ImportError:
        pass
    sys.path.append(DEBIAN_MODULES)
    try:
        return importlib.import_module("nbd")
    except ImportError as e:
        raise NbdError(f"libnbd's Python binding cannot be loaded ({e}): install Debian's python3-libnbd"
                       " (make does), for a Python of the same minor version as Debian's python3") from None
    finally:
        sys.path.remove(DEBIAN_MODULES)


class NbdClient:
    def __init__(self, socket_path: str):
        self._nbd = _libnbd()
        self._handle = self._nbd.NBD()
        self._call(self._handle.connect_unix, socket_path)
        self.size = self._call(self._handle.get_size)

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        view = memoryview(data)
        for start in range(0, len(view), MAX_REQUEST):
            self._call(self._handle.pwrite, view[start:start + MAX_REQUEST], offset + start)

    def write_zeroes(self, offset: int, length: int) -> None:
        for start in range(0, length, MAX_REQUEST):
            self._call(self._handle.zero, min(MAX_REQUEST, length - start), offset + start)

    def pread_into(self, buffer: memoryview, offset: int) -> None:
        for start in range(0, len(buffer), MAX_REQUEST):
            piece = buffer[start:start + MAX_REQUEST]
            piece[:] = self._call(self._handle.pread, len(piece), offset + start)

    def flush(self) -> None:
        self._call(self._handle.flush)

    def close(self) -> None:
        try:
            self._handle.shutdown()
        except self._nbd.Error:
            pass

    def _call(self, method, *args):
        try:
            return method(*args)
        except self._nbd.Error as e:  # its errno is a name ("ENOSPC") or a number, or None
            code = getattr(errno, e.errno, None) if isinstance(e.errno, str) else e.errno
            raise NbdError(code or errno.EIO, e.string) from None
