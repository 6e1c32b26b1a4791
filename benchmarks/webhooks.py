"""Does a dead webhook receiver slow the API? GET /status latency with and without 10 webhooks.

    PYTHONPATH=src:. .venv/bin/python benchmarks/webhooks.py [--seconds 20] [--jobs-per-second 10]

In one run, twice (interleaved: baseline, webhooks, baseline, webhooks):
  - starts the real daemon (twistd, log level info) with no webhooks, or with 10
    webhooks all pointing at one receiver that accepts connections and never answers
    (timeout 30 s, retry_count 3: every delivery waits on it);
  - a background thread keeps submitting jobs that fail at once (nothing listens on
    their vCenter port), so every job publishes submitted/started/progress/failed
    events: with webhooks, each event becomes 10 deliveries, queued and stored;
  - meanwhile, sequential GET /status requests on one keep-alive connection; the
    p50/p99 latency is what an operator polling the daemon would see.
Prints the figures and the ratio of the p99 with webhooks to the p99 without (goal: <= 1.5).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.integration.daemon import Daemon  # noqa: E402
from tests.integration.jobs import UNREACHABLE_JOB  # noqa: E402

GOAL_RATIO = 1.5


class BlackHole:
    """Accepts every connection and never reads or answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)


def submitter(url: str, per_second: float, stop: threading.Event, count: list[int]) -> None:
    job = json.dumps(UNREACHABLE_JOB)
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    next_at = time.monotonic()
    while not stop.is_set():
        conn.request("POST", "/jobs/submit", job, {"Content-Type": "application/json"})
        conn.getresponse().read()
        count[0] += 1
        next_at += 1 / per_second
        time.sleep(max(0.0, next_at - time.monotonic()))


def measure(daemon: Daemon, seconds: float, per_second: float) -> tuple[list[float], int]:
    stop, submitted = threading.Event(), [0]
    thread = threading.Thread(target=submitter, args=(daemon.url, per_second, stop, submitted), daemon=True)
    thread.start()
    host, port = daemon.url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    for _ in range(200):  # warm-up
        conn.request("GET", "/status")
        conn.getresponse().read()
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        conn.request("GET", "/status")
        conn.getresponse().read()
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.002)  # a busy poller, not a load test
    stop.set()
    thread.join()
    return latencies, submitted[0]


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--jobs-per-second", type=float, default=10)
    args = parser.parse_args()
    hole = BlackHole()
    hooks = [{"url": f"http://127.0.0.1:{hole.port}/hook/{i}", "timeout": 30, "retry_count": 3} for i in range(10)]
    results: dict[str, list[float]] = {"baseline": [], "webhooks": []}
    pending = 0
    with tempfile.TemporaryDirectory(prefix="hypersdk-bench-") as work:
        for round_number in range(2):
            for name, config in (("baseline", {}), ("webhooks", {"webhooks": hooks})):
                directory = Path(work) / f"{name}-{round_number}"
                directory.mkdir()
                daemon = Daemon(directory, {**config, "worker_count": 4}).start()
                try:
                    latencies, submitted = measure(daemon, args.seconds / 2, args.jobs_per_second)
                    if name == "webhooks":
                        listed = json.loads(_get(daemon.url, "/webhooks"))
                        pending += sum(w["deliveries"]["pending"] + w["deliveries"]["dropped"]
                                       for w in listed["webhooks"])
                finally:
                    daemon.close()
                results[name] += latencies
                print(f"round {round_number + 1} {name:8s}: {len(latencies)} requests, {submitted} jobs submitted, "
                      f"p50 {statistics.median(latencies):.2f} ms, p99 {p99(latencies):.2f} ms", flush=True)
    base, hooked = results["baseline"], results["webhooks"]
    ratio = p99(hooked) / p99(base)
    print(f"\nGET /status, {len(base)} + {len(hooked)} requests while jobs publish events")
    print(f"  no webhooks          p50 {statistics.median(base):6.2f} ms   p99 {p99(base):6.2f} ms")
    print(f"  10 dead webhooks     p50 {statistics.median(hooked):6.2f} ms   p99 {p99(hooked):6.2f} ms"
          f"   ({pending} deliveries were waiting or dropped at the end)")
    print(f"  p99 ratio            {ratio:6.2f}   (goal <= {GOAL_RATIO})  {'PASS' if ratio <= GOAL_RATIO else 'MISS'}")
    return 0 if ratio <= GOAL_RATIO else 1


def _get(url: str, path: str) -> str:
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", path)
    return conn.getresponse().read().decode()


if __name__ == "__main__":
    sys.exit(main())
