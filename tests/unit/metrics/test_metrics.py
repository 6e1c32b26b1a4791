from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hypersdk import events
from hypersdk.api.site import build_resource, route_templates
from hypersdk.events import Event
from hypersdk.jobs.model import Job, Progress
from hypersdk.metrics.registry import Metrics


def samples(registry) -> dict:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_routes_become_templates_named_as_the_api_document_does():
    from hypersdk.api.jobs import JobsAPI
    from hypersdk.api.schedules import SchedulesAPI
    from hypersdk.api.webhooks import WebhooksAPI

    root = build_resource(_Status(), JobsAPI(None), SchedulesAPI(None, None, None), WebhooksAPI(None, None))
    template = route_templates(root)
    assert template("GET", "/jobs/0b8e-42") == "/jobs/{id}"
    assert template("POST", "/jobs/submit") == "/jobs/submit"
    assert template("GET", "/schedules/nightly") == "/schedules/{id}"
    assert template("GET", "/schedules/stats") == "/schedules/stats"
    assert template("DELETE", "/webhooks/3") == "/webhooks/{index}"
    assert template("GET", "/status") == "/status"
    assert template("GET", "/no/such/thing") == "unmatched"
    assert template("DELETE", "/jobs/submit") == "unmatched"


class _Status:
    def register(self, app):
        app.route("/status", methods=["GET"])(self.status)

    def status(self, request):
        return b"{}"


def test_requests_are_counted_by_template_and_reason_phrase():
    registry = CollectorRegistry()
    m = Metrics(registry, "1.0")
    m.observe_request("GET", "/jobs/{id}", 200, 0.003)
    m.observe_request("GET", "/jobs/{id}", 404, 0.001)
    m.observe_request("GET", "/jobs/{id}", 200, 0.2)
    got = samples(registry)
    assert got[("hypersdk_api_requests_total", (("method", "GET"), ("path", "/jobs/{id}"), ("status", "OK")))] == 2
    assert got[("hypersdk_api_requests_total",
                (("method", "GET"), ("path", "/jobs/{id}"), ("status", "Not Found")))] == 1
    assert got[("hypersdk_api_request_duration_seconds_count", (("method", "GET"), ("path", "/jobs/{id}")))] == 3
    assert got[("hypersdk_build_info", (("version", "1.0"),))] == 1


def test_finished_jobs_feed_durations_and_bytes():
    registry = CollectorRegistry()
    m = Metrics(registry, "1.0")
    job = Job(id="j", definition={}, status="completed", progress=Progress(), created_at=0, updated_at=0,
              started_at=100.0, completed_at=160.0, result={"bytes_copied": 5000})
    m.on_event(Event(events.JOB_COMPLETED, 160.0, job))
    m.on_event(Event(events.JOB_PROGRESS, 150.0, job))  # not a final event: ignored
    got = samples(registry)
    assert got[("hypersdk_bytes_transferred_total", ())] == 5000
    assert got[("hypersdk_job_duration_seconds_sum", (("status", "completed"),))] == 60


def test_current_values_are_read_at_scrape_time():
    registry = CollectorRegistry()
    m = Metrics(registry, "1.0")
    jobs = {"pending": 2, "running": 1}
    m.watch(job_counts=lambda: jobs, workers_active=lambda: 1, websocket_clients=lambda: 7,
            webhook_counts=lambda: {"delivered": 4, "dropped": 1, "attempts": 6},
            schedule_stats=lambda: {"successful_runs": 3, "failed_runs": 1, "skipped_runs": 2})
    got = samples(registry)
    assert got[("hypersdk_jobs_total", (("status", "pending"),))] == 2
    jobs["pending"] = 0
    got = samples(registry)
    assert got[("hypersdk_jobs_total", (("status", "pending"),))] == 0
    assert got[("hypersdk_websocket_clients", ())] == 7
    assert got[("hypersdk_webhook_deliveries_total", (("outcome", "dropped"),))] == 1
    assert got[("hypersdk_webhook_attempts_total", ())] == 6
    assert got[("hypersdk_schedule_runs_total", (("outcome", "skipped"),))] == 2


def test_unusual_methods_share_one_label():
    registry = CollectorRegistry()
    m = Metrics(registry, "1.0")
    m.observe_request("FROBNICATE1", "unmatched", 405, 0.001)
    m.observe_request("FROBNICATE2", "unmatched", 405, 0.001)
    got = samples(registry)
    assert got[("hypersdk_api_requests_total",
                (("method", "other"), ("path", "unmatched"), ("status", "Method Not Allowed")))] == 2
