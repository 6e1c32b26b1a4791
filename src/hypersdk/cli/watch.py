"""hyperctl watch: live progress of jobs from the daemon's WebSocket, until they end."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
from typing import Optional, TextIO

from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

from .client import CONNECTION, JOB_FAILED, OK, ApiClient, CliError
from .render import TERMINAL, outcome, progress_lines

REDRAW_EVERY = 0.5  # seconds between progress lines when not on a terminal


class Board:
    """What the watched jobs look like now, drawn in place on a terminal or as lines otherwise."""

    def __init__(self, jobs: dict[str, dict], out: TextIO):
        self.jobs = jobs
        self._out = out
        self._tty = out.isatty()
        self._drawn = 0
        self._last_line: dict[str, float] = {}

    def update(self, job: dict) -> None:
        if job["id"] not in self.jobs:
            return
        self.jobs[job["id"]] = job
        if self._tty:
            self._redraw()
        elif job["status"] in TERMINAL or time.monotonic() - self._last_line.get(job["id"], 0) >= REDRAW_EVERY:
            self._last_line[job["id"]] = time.monotonic()
            self._out.write("\n".join(progress_lines(job)) + "\n")
            self._out.flush()

    def _redraw(self) -> None:
        lines = [line for job in self.jobs.values() for line in progress_lines(job)]
        if self._drawn:
            self._out.write(f"\x1b[{self._drawn}F\x1b[J")
        self._out.write("\n".join(lines) + "\n")
        self._out.flush()
        self._drawn = len(lines)

    def done(self) -> bool:
        return all(job["status"] in TERMINAL for job in self.jobs.values())


def watch(client: ApiClient, job_ids: list[str], out: TextIO = sys.stdout, cacert: Optional[str] = None) -> int:
    if not job_ids:
        listed = client.post("/jobs/query", {"status": ["pending", "running"], "limit": 1000})["jobs"]
        job_ids = [j["id"] for j in listed]
        if not job_ids:
            out.write("no pending or running jobs\n")
            return OK
    board = Board({job_id: client.get(f"/jobs/{job_id}") for job_id in job_ids}, out)
    for job in list(board.jobs.values()):
        board.update(job)
    if not board.done():
        asyncio.run(_follow(client, board, cacert))
    for job in board.jobs.values():
        out.write(outcome(job) + "\n")
    return OK if all(job["status"] == "completed" for job in board.jobs.values()) else JOB_FAILED


async def _follow(client: ApiClient, board: Board, cacert: Optional[str]) -> None:
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    class Follower(WebSocketClientProtocol):
        def onMessage(self, payload, isBinary):
            message = json.loads(payload)
            if message["type"] == "job_update":
                board.update(message["data"])
            elif message["type"] == "jobs":
                for job in message["data"]["jobs"]:
                    board.update(job)
            if board.done() and not finished.done():
                finished.set_result(None)
                self.sendClose()

        def onClose(self, wasClean, code, reason):
            if not finished.done():
                finished.set_exception(CliError(f"the daemon closed the WebSocket: {reason or code}", CONNECTION))

    headers = {"Authorization": f"Bearer {client.token}"} if client.token else None
    factory = WebSocketClientFactory(client.ws_url(), headers=headers)
    factory.protocol = Follower
    context = None
    if factory.isSecure:
        context = ssl.create_default_context(cafile=cacert)
    try:
        await loop.create_connection(factory, factory.host, factory.port, ssl=context)
    except OSError as e:
        raise CliError(f"cannot reach the daemon's WebSocket at {client.ws_url()}: {e.strerror or e}", CONNECTION)
    for job_id, job in list(board.jobs.items()):  # ended between the first look and the connection?
        if job["status"] not in TERMINAL:
            board.update(client.get(f"/jobs/{job_id}"))
    if board.done() and not finished.done():
        finished.set_result(None)
    await finished
