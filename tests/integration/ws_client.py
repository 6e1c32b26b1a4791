"""A WebSocket client on Autobahn (asyncio), run as a process by the tests.

    python ws_client.py URL [--until-status completed] [--seconds 60]

Prints every message it receives as one JSON line, flushed, and exits 0 once it
has seen a job_update whose status is one of --until-status (or after --seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--until-status", nargs="*", default=["completed", "failed", "cancelled"])
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # Autobahn's timers (txaio) use the current loop
    done = loop.create_future()

    class Client(WebSocketClientProtocol):
        def onMessage(self, payload, isBinary):
            print(payload.decode(), flush=True)
            message = json.loads(payload)
            if message["type"] == "job_update" and message["data"]["status"] in args.until_status:
                done.done() or done.set_result(0)

        def onClose(self, wasClean, code, reason):
            done.done() or done.set_result(2)

    factory = WebSocketClientFactory(args.url)
    factory.protocol = Client
    host, port = factory.host, factory.port
    loop.run_until_complete(loop.create_connection(factory, host, port))
    try:
        code = loop.run_until_complete(asyncio.wait_for(done, args.seconds))
    except asyncio.TimeoutError:
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
