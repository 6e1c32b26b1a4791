"""A small blocking NBD client: what the transfer worker needs to write into and read from a qcow2
served by ``qemu-nbd`` on a unix socket.

Fixed newstyle handshake with ``NBD_OPT_GO``, then simple replies only: READ, WRITE, WRITE_ZEROES,
FLUSH, DISC. One client per thread (``qemu-nbd --shared`` takes several), so no request ever waits
for another's reply.
"""

from __future__ import annotations

import socket
import struct

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPTION_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
OPT_GO = 7
REP_ACK = 1
REP_INFO = 3
INFO_EXPORT = 0
REP_ERROR_BIT = 1 << 31

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_WRITE_ZEROES = 0, 1, 2, 3, 6
MAX_REQUEST = 32 * 1024 * 1024  # qemu-nbd's limit per request


class NbdError(OSError):
    pass


class NbdClient:
    def __init__(self, socket_path: str, export: str = "", timeout: float = 60.0):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(socket_path)
        self._handle = 0
        self.size = self._handshake(export)

    # -- handshake ---------------------------------------------------------------------------------

    def _handshake(self, export: str) -> int:
        magic, opt_magic, flags = struct.unpack(">QQH", self._recv(18))
        if magic != NBDMAGIC or opt_magic != IHAVEOPT or not flags & FLAG_FIXED_NEWSTYLE:
            raise NbdError("not a fixed-newstyle NBD server")
        no_zeroes = flags & FLAG_NO_ZEROES
        self._sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | no_zeroes))
        name = export.encode()
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        self._sock.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
        size = None
        while True:
            magic, _option, reply, length = struct.unpack(">QIII", self._recv(20))
            if magic != OPTION_REPLY_MAGIC:
                raise NbdError("bad option reply from the NBD server")
            payload = self._recv(length)
            if reply & REP_ERROR_BIT:
                raise NbdError(f"the NBD server refused the export: {payload.decode('utf-8', 'replace')}")
            if reply == REP_INFO and struct.unpack(">H", payload[:2])[0] == INFO_EXPORT:
                size = struct.unpack(">Q", payload[2:10])[0]
            if reply == REP_ACK:
                break
        if size is None:
            raise NbdError("the NBD server did not say the export's size")
        return size

    # -- transmission --------------------------------------------------------------------------------

    def _request(self, command: int, offset: int, length: int, payload: bytes | memoryview = b"") -> None:
        self._handle += 1
        self._sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, command, self._handle, offset, length))
        if payload:
            self._sock.sendall(payload)

    def _reply(self) -> None:
        magic, error, handle = struct.unpack(">IIQ", self._recv(16))
        if magic != SIMPLE_REPLY_MAGIC or handle != self._handle:
            raise NbdError("bad reply from the NBD server")
        if error:
            raise NbdError(error, f"the NBD server answered error {error}")

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        view = memoryview(data)
        for start in range(0, len(view), MAX_REQUEST):
            piece = view[start:start + MAX_REQUEST]
            self._request(CMD_WRITE, offset + start, len(piece), piece)
            self._reply()

    def write_zeroes(self, offset: int, length: int) -> None:
        for start in range(0, length, MAX_REQUEST):
            self._request(CMD_WRITE_ZEROES, offset + start, min(MAX_REQUEST, length - start))
            self._reply()

    def pread_into(self, buffer: memoryview, offset: int) -> None:
        for start in range(0, len(buffer), MAX_REQUEST):
            piece = buffer[start:start + MAX_REQUEST]
            self._request(CMD_READ, offset + start, len(piece))
            self._reply()
            self._recv_into(piece)

    def flush(self) -> None:
        self._request(CMD_FLUSH, 0, 0)
        self._reply()

    def close(self) -> None:
        try:
            self._request(CMD_DISC, 0, 0)
        except OSError:
            pass
        self._sock.close()

    def _recv(self, n: int) -> bytes:
        buffer = bytearray(n)
        self._recv_into(memoryview(buffer))
        return bytes(buffer)

    def _recv_into(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            n = self._sock.recv_into(view[got:])
            if n == 0:
                raise NbdError("the NBD server closed the connection")
            got += n
