"""A TCP proxy in a process of its own, for cutting one client off a server the way a lost network
does: ``SIGSTOP`` the proxy and the client's connections hang (its kernel still accepts and
acknowledges bytes, nothing answers); ``SIGCONT`` heals them.

    python -m tests.tcpproxy TARGET_HOST TARGET_PORT    (prints the port it listens on, on 127.0.0.1)
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from typing import Optional


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _serve(host: str, port: int) -> None:
    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


class TcpProxy:
    """The proxy as the tests drive it."""

    def __init__(self, host: str, port: int):
        self._process: Optional[subprocess.Popen] = subprocess.Popen(
            [sys.executable, "-m", "tests.tcpproxy", host, str(port)], stdout=subprocess.PIPE, text=True)
        self.port = int(self._process.stdout.readline())

    def pause(self) -> None:
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)
            self._process.kill()
            self._process.wait()
            self._process = None


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], int(sys.argv[2])))
