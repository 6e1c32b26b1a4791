import pytest

from hypersdk.jobs.model import CANCELLED, PENDING, RUNNING
from tests.helpers import VALID_DEFINITION, definition, result_of
from tests.unit.api.client import APIClient

pytestmark = pytest.mark.usefixtures("store_engine")  # every test on SQLite and on PostgreSQL

PASSWORD = VALID_DEFINITION["source"]["password"]


@pytest.fixture
def api():
    return APIClient()


def test_health_and_status_shapes(api):
    assert api.get("/health").json()["status"] == "ok"
    api.post("/jobs/submit", definition())
    status = api.get("/status").json()
    for key in ("total_jobs", "running_jobs", "completed_jobs", "failed_jobs", "worker_count", "active_workers",
                "pending_jobs", "cancelled_jobs", "version", "uptime_seconds", "timestamp"):
        assert key in status
    assert status["total_jobs"] == 1 and status["running_jobs"] == 1 and status["active_workers"] == 1
    assert status["timestamp"].endswith("Z")


def test_status_answers_get_and_head_and_refuses_other_methods(api):
    get = api.get("/status")
    assert get.code == 200 and get.length == len(get.body)
    assert get.header("X-Request-Id")
    head = api.request("HEAD", "/status")
    assert head.code == 200 and head.body == b""
    post = api.post("/status", {})
    assert post.code == 405 and post.header("Allow") == "GET, HEAD"


def test_health_is_503_when_the_database_is_gone(api):
    result_of(api.h.store.close())
    response = api.get("/health")
    assert response.code == 503 and response.json()["status"] == "unavailable"


def test_submit_single_returns_201_with_the_id(api):
    response = api.post("/jobs/submit", definition())
    assert response.code == 201
    body = response.json()
    assert body["message"] == "job submitted successfully"
    assert body["job_ids"] == [body["job_id"]]
    job = api.get(f"/jobs/{body['job_id']}").json()
    assert job["definition"]["id"] == body["job_id"]
    assert job["definition"]["vm_path"] == "DC0/vm/web-1"


@pytest.mark.parametrize("wrap", [lambda ds: {"jobs": ds}, lambda ds: ds])
def test_submit_batch_in_both_shapes(api, wrap):
    response = api.post("/jobs/submit", wrap([definition(), definition(vm_path="DC0/vm/web-2")]))
    assert response.code == 201
    assert len(response.json()["job_ids"]) == 2
    assert api.get("/status").json()["total_jobs"] == 2


def test_one_bad_definition_refuses_the_whole_batch_naming_it(api):
    bad = definition()
    bad["options"]["conversion_methd"] = "https"
    response = api.post("/jobs/submit", {"jobs": [definition(), bad]})
    assert response.code == 400
    assert response.json()["error"] == "jobs[1].options.conversion_methd: unknown field"
    assert response.json()["code"] == "invalid_field"
    assert api.get("/status").json()["total_jobs"] == 0


def test_duplicate_user_id_is_409(api):
    assert api.post("/jobs/submit", definition(id="web-1-move")).code == 201
    response = api.post("/jobs/submit", definition(id="web-1-move"))
    assert response.code == 409
    assert "web-1-move" in response.json()["error"]


def test_password_is_never_returned(api):
    job_id = api.post("/jobs/submit", definition()).json()["job_id"]
    for response in (api.get(f"/jobs/{job_id}"), api.post("/jobs/query", {}), api.get("/jobs/query")):
        assert PASSWORD not in response.body.decode()
    assert api.get(f"/jobs/{job_id}").json()["definition"]["source"]["password"] == "***"


def test_job_object_has_progress_and_error_always(api):
    api.h.manager._slots.count = 0  # keep it pending
    job_id = api.post("/jobs/submit", definition()).json()["job_id"]
    job = api.get(f"/jobs/{job_id}").json()
    assert job["status"] == PENDING
    assert job["progress"]["stage"] == "queued" and job["progress"]["percent_complete"] == 0
    assert job["error"] is None
    assert job["definition"]["created_at"].endswith("Z")
    assert [h["message"] for h in job["history"]] == ["submitted"]


def test_unknown_job_is_404_json(api):
    response = api.get("/jobs/no-such-job")
    assert response.code == 404
    assert response.json() == {"error": "job no-such-job not found", "code": "job_not_found"}


def test_query_filters_orders_and_counts(api):
    ids = api.post("/jobs/submit", [definition() for _ in range(3)]).json()["job_ids"]
    body = api.post("/jobs/query", {"all": True, "status": "running", "limit": 10}).json()
    assert {j["status"] for j in body["jobs"]} == {RUNNING}
    assert body["total"] == 2
    body = api.post("/jobs/query", {"status": ["running", "pending"], "limit": 1, "offset": 1}).json()
    assert body["total"] == 3 and len(body["jobs"]) == 1
    assert api.post("/jobs/query", {"status": "failed"}).json() == {"jobs": [], "total": 0, "limit": 100, "offset": 0}
    body = api.get("/jobs/query?status=pending&limit=5").json()
    assert [j["id"] for j in body["jobs"]] == [ids[2]]
    assert api.post("/jobs/query", {"limit": 5000}).json()["limit"] == 1000


def test_query_and_empty_body_mean_all(api):
    api.post("/jobs/submit", definition())
    assert api.post("/jobs/query").json()["total"] == 1


@pytest.mark.parametrize(
    "body, error",
    [
        ({"status": "finished"}, "status: 'finished' is not a status; use one of pending, running, completed, failed, cancelled"),
        ({"limit": -1}, "limit: must be an integer from 0 to 1000000000"),
        ({"limit": "10"}, "limit: must be an integer from 0 to 1000000000"),
        ({"offset": 154560245352037447892992}, "offset: must be an integer from 0 to 1000000000"),  # was a 500
        ({"stauts": "running"}, "stauts: unknown field"),
        ({"job_ids": "abc"}, "job_ids: must be a list of job id strings"),
        ([1, 2], "the request body must be a JSON object"),
    ],
)
def test_bad_queries_are_400(api, body, error):
    response = api.post("/jobs/query", body)
    assert response.code == 400 and response.json()["error"] == error


def test_cancel_by_id_and_status(api):
    api.h.manager._slots.count = 1
    ids = api.post("/jobs/submit", [definition() for _ in range(3)]).json()["job_ids"]
    body = api.post("/jobs/cancel", {"job_ids": [ids[0], "ghost"], "status": "pending"}).json()
    assert body["message"] == "jobs cancelled successfully"
    assert body["count"] == 3 and sorted(body["cancelled"]) == sorted(ids)
    assert body["failed"] == ["ghost"] and body["errors"] == {"ghost": "job not found"}
    assert {api.get(f"/jobs/{i}").json()["status"] for i in ids} == {CANCELLED}
    again = api.post("/jobs/cancel", {"job_ids": [ids[0]]}).json()
    assert again["count"] == 0 and again["errors"] == {ids[0]: "job already cancelled"}


def test_cancel_needs_ids_or_status(api):
    response = api.post("/jobs/cancel", {})
    assert response.code == 400


def test_unknown_route_is_json_404(api):
    response = api.get("/nope")
    assert response.code == 404 and response.json()["code"] == "route_not_found"


def test_wrong_method_is_405_with_allow(api):
    response = api.get("/jobs/submit")
    assert response.code == 405
    assert response.header("Allow") == "POST"
    assert "GET" in response.json()["error"]
    assert api.request("DELETE", "/jobs/abc").header("Allow") == "GET, HEAD"


def test_non_json_body_is_415_and_broken_json_400(api):
    response = api.post("/jobs/submit", raw=b"vm_path=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.code == 415 and "application/json" in response.json()["error"]
    response = api.post("/jobs/submit", raw=b'{"vm_path": ', headers={"Content-Type": "application/json"})
    assert response.code == 400 and response.json()["error"].startswith("the request body is not valid JSON")
    response = api.post("/jobs/submit", raw=b'{"a": NaN}', headers={"Content-Type": "application/json"})
    assert response.code == 400


def test_body_over_the_limit_is_413():
    api = APIClient(max_body_bytes=2000)
    big = definition(metadata={"blob": "x" * 5000})
    response = api.post("/jobs/submit", big)
    assert response.code == 413
    assert response.json()["error"] == "the request body is larger than the limit of 2000 bytes"
    assert api.get("/status").json()["total_jobs"] == 0


class Exploding:
    def register(self, app):
        app.route("/explode", methods=["GET"])(self.explode)

    def explode(self, request):
        raise RuntimeError("secret internals at /opt/x.py line 3")


def test_bug_is_500_with_a_request_id_and_no_traceback():
    api = APIClient(extra_areas=[Exploding()])
    response = api.get("/explode")
    assert response.code == 500
    body = response.json()
    assert body["request_id"] == response.header("X-Request-Id")
    assert "Traceback" not in response.body.decode() and "secret internals" not in response.body.decode()
