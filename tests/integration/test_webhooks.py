"""Webhook delivery end to end: the real daemon process, real HTTP receivers on loopback."""

import hashlib
import hmac
import socket
import time

import requests

from tests.integration.daemon import Daemon, wait_for
from tests.integration.jobs import UNREACHABLE_JOB
from tests.integration.receiver import Receiver

SECRET = "hm4c-k3y"
TOKEN = "Bearer s3cr3t-t0ken"


def failing_job(daemon) -> str:
    """A job that fails at once (nothing listens on the vCenter port): submitted, started, failed."""
    return daemon.submit(UNREACHABLE_JOB)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_config_webhook_gets_every_event_signed_in_order_despite_first_failures(tmp_path):
    with Receiver() as receiver:
        receiver.script = [500, 503]  # the first two attempts fail
        hook = {"url": receiver.url, "secret": SECRET, "retry_count": 5, "headers": {"Authorization": TOKEN}}
        daemon = Daemon(tmp_path, {"webhooks": [hook]}).start()
        try:
            job_id = failing_job(daemon)
            daemon.wait_finished(job_id)
            wait_for(lambda: "job.failed" in receiver.events(), 30, "job.failed to arrive")
            events = receiver.events()
            assert events[:3] == ["job.submitted"] * 3  # the first delivery, retried twice
            distinct = [e for e in events[2:] if e != "job.progress"]  # progress comes at each stage change
            assert distinct == ["job.submitted", "job.started", "job.failed"]
            for got in receiver.received:
                expected = "sha256=" + hmac.new(SECRET.encode(), got["raw"], hashlib.sha256).hexdigest()
                assert got["headers"]["x-hypersdk-signature"] == expected
                assert got["headers"]["authorization"] == TOKEN
                assert got["body"]["data"]["id"] == job_id
            ids = [r["headers"]["x-hypersdk-delivery"] for r in receiver.received]
            assert ids[0] == ids[1] == ids[2] and len(set(ids)) == len(ids) - 2
            failed = receiver.received[-1]["body"]
            assert failed["data"]["status"] == "failed" and failed["data"]["error"]

            listed = daemon.get("/webhooks").json()
            (w,) = listed["webhooks"]
            assert w["headers"] == {"Authorization": "***"} and w["secret"] == "***" and w["source"] == "config"
            assert w["deliveries"]["delivered"] == len(set(ids))
            history = daemon.get("/webhooks/0/deliveries").json()["deliveries"]
            first = next(d for d in history if d["id"] == ids[0])
            assert [a["status_code"] for a in first["attempts"]] == [500, 503, 200]
            assert TOKEN not in daemon.get("/webhooks").text and SECRET not in daemon.output()
        finally:
            daemon.close()


def test_api_webhooks_persist_and_can_be_listed_deleted_and_tested(tmp_path):
    with Receiver() as config_receiver, Receiver() as api_receiver:
        daemon = Daemon(tmp_path, {"webhooks": [{"url": config_receiver.url, "events": ["job.failed"]}]}).start()
        try:
            added = daemon.post("/webhooks", {"url": api_receiver.url, "events": ["job.completed", "job.failed"],
                                              "enabled": True, "timeout": 30, "retry_count": 3,
                                              "headers": {"Authorization": "Bearer token123"}})
            assert added.status_code == 201, added.text
            assert added.json()["message"] == "webhook added successfully"
            assert added.json()["webhook"]["headers"] == {"Authorization": "***"}
            assert "token123" not in added.text

            daemon.wait_finished(failing_job(daemon))
            wait_for(lambda: api_receiver.events() == ["job.failed"] and config_receiver.events() == ["job.failed"],
                     30, "both webhooks to get job.failed")
            assert api_receiver.received[0]["headers"]["authorization"] == "Bearer token123"

            daemon.stop()
            daemon.start()
            listed = daemon.get("/webhooks").json()
            assert [(w["url"], w["source"]) for w in listed["webhooks"]] == \
                [(config_receiver.url, "config"), (api_receiver.url, "api")]
            assert listed["total"] == 2 and "token123" not in daemon.get("/webhooks").text

            tested = daemon.post("/webhooks/test", {"url": api_receiver.url, "event": "test"})
            assert tested.status_code == 200
            assert tested.json()["message"] == "test webhook sent" and tested.json()["delivered"] is True
            assert api_receiver.received[-1]["body"]["event"] == "test"
            down = daemon.post("/webhooks/test", {"url": f"http://127.0.0.1:{free_port()}/x"}).json()
            assert down["delivered"] is False and down["status_code"] is None and down["error"]

            assert daemon.post("/webhooks", {"url": "ftp://x"}).status_code == 400
            assert requests.delete(daemon.url + "/webhooks/0", timeout=10).status_code == 409  # config file's
            assert requests.delete(daemon.url + "/webhooks/5", timeout=10).status_code == 404
            assert requests.delete(daemon.url + "/webhooks/1", timeout=10).json() == \
                {"message": "webhook deleted successfully"}
            daemon.stop()
            daemon.start()
            assert daemon.get("/webhooks").json()["total"] == 1
        finally:
            daemon.close()
    database = b"".join(p.read_bytes() for p in (tmp_path / "var").glob("jobs.db*"))
    assert b"token123" not in database


def test_deliveries_to_a_down_receiver_are_resumed_after_a_restart(tmp_path):
    port = free_port()
    hook = {"url": f"http://127.0.0.1:{port}/hook", "retry_count": 20, "events": ["job.failed"]}
    daemon = Daemon(tmp_path, {"webhooks": [hook]}).start()
    try:
        job_id = failing_job(daemon)
        daemon.wait_finished(job_id)
        wait_for(lambda: (daemon.get("/webhooks/0/deliveries").json()["deliveries"] or [{}])[0].get("attempts"),
                 30, "a first failed attempt")
        daemon.stop()
        with Receiver(port=port) as receiver:
            daemon.start()
            wait_for(lambda: receiver.events() == ["job.failed"], 30, "the resumed delivery")
            assert receiver.received[0]["body"]["data"]["id"] == job_id
            (delivery,) = daemon.get("/webhooks/0/deliveries").json()["deliveries"]
            assert delivery["state"] == "delivered" and delivery["attempts"][0]["status_code"] is None
    finally:
        daemon.close()


def test_a_slow_receiver_times_out_per_attempt_and_the_api_stays_responsive(tmp_path):
    with Receiver() as receiver:
        receiver.default = ("slow", 3.0, 200)
        hooks = [{"url": receiver.url, "timeout": 1, "retry_count": 1} for _ in range(5)]
        daemon = Daemon(tmp_path, {"webhooks": hooks}).start()
        try:
            for _ in range(5):
                failing_job(daemon)
            slowest = 0.0
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                started = time.monotonic()
                assert daemon.get("/status").status_code == 200
                slowest = max(slowest, time.monotonic() - started)
            assert slowest < 0.5, slowest
            history = wait_for(lambda: (lambda d: d if d and d[-1]["state"] == "failed" else None)(
                daemon.get("/webhooks/0/deliveries").json()["deliveries"]), 30, "the first delivery to fail")
            attempts = history[-1]["attempts"]
            assert [a["error"] for a in attempts] == ["no answer within 1 s"] * 2
            assert all(900 <= a["duration_ms"] < 2000 for a in attempts)
        finally:
            daemon.close()


def test_private_receivers_are_refused_when_denied(tmp_path):
    with Receiver() as receiver:
        config = {"webhooks": {"deny_private_networks": True, "endpoints": [{"url": receiver.url}]}}
        daemon = Daemon(tmp_path, config).start()
        try:
            daemon.wait_finished(failing_job(daemon))
            history = wait_for(lambda: (lambda d: d if len(d) >= 3 and all(x["state"] == "failed" for x in d) else None)(
                daemon.get("/webhooks/0/deliveries").json()["deliveries"]), 30, "the deliveries to be refused")
            assert "127.0.0.1, a private address" in history[0]["attempts"][0]["error"]
            assert receiver.received == []
        finally:
            daemon.close()
