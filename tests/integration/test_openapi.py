"""The OpenAPI document describes the daemon as it really answers: real responses validate
against it, and schemathesis fuzzing the live daemon finds no 5xx and no response breaking it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import schemathesis

from tests.integration.jobs import UNREACHABLE_JOB
from tests.integration.daemon import Daemon
from tests.integration.receiver import Receiver

JOB = UNREACHABLE_JOB
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance," \
         "response_headers_conformance"
MIN_REQUESTS = 2000


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("daemon"), {"metrics": {"enabled": True}}).start()
    yield d
    d.close()


def test_real_responses_validate_against_the_document(daemon):
    schema = schemathesis.openapi.from_url(daemon.url + "/openapi.json")
    with Receiver() as receiver:
        job_id = daemon.submit(JOB)
        daemon.wait_finished(job_id)
        exchanges = [
            ("GET", "/health", None), ("GET", "/status", None), ("GET", f"/jobs/{job_id}", None),
            ("GET", "/jobs/nope", None), ("POST", "/jobs/query", {"status": "failed"}), ("GET", "/jobs/query", None),
            ("POST", "/jobs/cancel", {"job_ids": [job_id]}), ("POST", "/jobs/submit", {"vm_path": 1}),
            ("POST", "/schedules", {"id": "s1", "schedule": "@daily", "job_template": {**JOB}}),
            ("GET", "/schedules", None), ("GET", "/schedules/s1", None), ("PUT", "/schedules/s1", {"enabled": False}),
            ("POST", "/schedules/s1/trigger", None), ("GET", "/schedules/stats", None),
            ("POST", "/webhooks", {"url": receiver.url, "secret": "k"}), ("GET", "/webhooks", None),
            ("POST", "/webhooks/test", {"url": receiver.url}), ("GET", "/webhooks/0/deliveries", None),
            ("DELETE", "/webhooks/0", None), ("GET", "/metrics", None), ("GET", "/ws", None),
            ("DELETE", "/schedules/s1", None), ("GET", "/openapi.json", None),
        ]
        for method, path, body in exchanges:
            response = requests.request(method, daemon.url + path, json=body, timeout=30)
            template = re.sub(r"^/jobs/(?!query|submit|cancel)[^/]+$", "/jobs/{id}", path)
            template = re.sub(r"^/schedules/(?!stats)[^/]+", "/schedules/{id}", template)
            template = re.sub(r"^/webhooks/\d+", "/webhooks/{index}", template)
            operation = schema[template][method]
            operation.validate_response(response)  # raises, naming what breaks the document
            assert response.status_code < 500, (method, path, response.text)


def test_schemathesis_finds_no_server_error_and_no_response_breaking_the_document(daemon, tmp_path):
    # /vms/* and /webhooks/test call out to the hosts in the request (a vCenter, a receiver):
    # fuzzing them would test the network, and answers 502/504 by design. The test above and
    # tests/integration/test_vms_api.py cover them.
    run = subprocess.run(
        [str(Path(sys.executable).parent / "st"), "run", daemon.url + "/openapi.json", "--max-examples", "60",
         "--exclude-path-regex", "^/vms|^/webhooks/test", "--checks", CHECKS, "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    summary = re.search(r"(\d+) generated, (.*)", run.stdout)
    assert summary, run.stdout[-3000:]
    print(f"schemathesis: {summary.group(0)}")
    assert run.returncode == 0, run.stdout[-6000:]
    assert int(summary.group(1)) >= MIN_REQUESTS, summary.group(0)
