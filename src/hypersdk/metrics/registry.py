"""The daemon's Prometheus metrics.

Counters and histograms are updated as things happen (requests, finished jobs);
the current state (jobs by status, workers, WebSocket clients, webhook and
schedule totals) is read from its owners when Prometheus scrapes.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .. import events
from ..events import Event

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_BUCKETS = (10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400)
KNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
_FINAL = {events.JOB_COMPLETED: "completed", events.JOB_FAILED: "failed", events.JOB_CANCELLED: "cancelled"}


class Metrics:
    def __init__(self, registry: CollectorRegistry, version: str):
        self.registry = registry
        self._requests = Counter("hypersdk_api_requests", "Total API requests", ["method", "path", "status"],
                                 registry=registry)
        self._request_seconds = Histogram("hypersdk_api_request_duration_seconds", "API request duration",
                                          ["method", "path"], buckets=REQUEST_BUCKETS, registry=registry)
        self._bytes = Counter("hypersdk_bytes_transferred", "Bytes of disk data copied by completed jobs",
                              registry=registry)
        self._job_seconds = Histogram("hypersdk_job_duration_seconds", "Time from start to end of finished jobs",
                                      ["status"], buckets=JOB_BUCKETS, registry=registry)
        self._denied = Counter("hypersdk_api_denied", "Requests refused: no or bad token, read-only token, rate limit",
                               ["reason"], registry=registry)
        Gauge("hypersdk_build_info", "The daemon's version", ["version"], registry=registry).labels(version).set(1)

    def observe_request(self, method: str, path: str, code: int, seconds: float) -> None:
        """``path`` is the route template (``/jobs/{id}``), never a raw path. Any token is an HTTP
        method: methods outside the usual ones count as "other", so that labels stay bounded."""
        method = method if method in KNOWN_METHODS else "other"
        try:
            status = HTTPStatus(code).phrase
        except ValueError:
            status = str(code)
        self._requests.labels(method, path, status).inc()
        self._request_seconds.labels(method, path).observe(seconds)

    def count_denied(self, reason: str) -> None:
        self._denied.labels(reason).inc()

    def on_event(self, event: Event) -> None:
        status = _FINAL.get(event.type)
        if status is None:
            return
        job = event.subject
        if job.started_at is not None and job.completed_at is not None:
            self._job_seconds.labels(status).observe(max(0.0, job.completed_at - job.started_at))
        if status == "completed":
            self._bytes.inc((job.result or {}).get("bytes_copied", 0) or 0)

    def watch(self, *, job_counts: Callable[[], dict[str, int]], workers_active: Callable[[], int],
              websocket_clients: Callable[[], int], webhook_counts: Callable[[], dict[str, int]],
              schedule_stats: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_Current(job_counts, workers_active, websocket_clients, webhook_counts, schedule_stats))


class _Current:
    """A custom collector: values read from their owners at scrape time."""

    def __init__(self, job_counts, workers_active, websocket_clients, webhook_counts, schedule_stats):
        self._job_counts = job_counts
        self._workers_active = workers_active
        self._websocket_clients = websocket_clients
        self._webhook_counts = webhook_counts
        self._schedule_stats = schedule_stats

    def describe(self):
        return []  # names are only known at collect time; nothing to pre-register

    def collect(self):
        jobs = GaugeMetricFamily("hypersdk_jobs_total", "Total jobs by status", labels=["status"])
        for status, count in sorted(self._job_counts().items()):
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily("hypersdk_workers_active", "Jobs being worked on now", value=self._workers_active())
        yield GaugeMetricFamily("hypersdk_websocket_clients", "Connected WebSocket clients",
                                value=self._websocket_clients())
        counts = self._webhook_counts()
        deliveries = CounterMetricFamily("hypersdk_webhook_deliveries", "Webhook deliveries by outcome",
                                         labels=["outcome"])
        for outcome in ("delivered", "failed", "dropped"):
            deliveries.add_metric([outcome], counts.get(outcome, 0))
        yield deliveries
        yield CounterMetricFamily("hypersdk_webhook_attempts", "Webhook delivery attempts",
                                  value=counts.get("attempts", 0))
        stats = self._schedule_stats()
        runs = CounterMetricFamily("hypersdk_schedule_runs", "Schedule runs by outcome", labels=["outcome"])
        for outcome, key in (("succeeded", "successful_runs"), ("failed", "failed_runs"), ("skipped", "skipped_runs")):
            runs.add_metric([outcome], stats.get(key, 0))
        yield runs
