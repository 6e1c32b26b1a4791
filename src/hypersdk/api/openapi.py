"""The OpenAPI 3.1 document of the API, served at GET /openapi.json.

Written out by hand, next to the routes it describes; the integration tests check
real responses against it and schemathesis fuzzes the live daemon with it.
"""

from __future__ import annotations

from typing import Any

from ..jobs.definition import BOOT_CHECK_FAILURE, BOOT_CHECK_SECONDS, CONVERSION_METHODS, DEVICE_MODELS, DISK_FORMATS, \
    DOMAIN_TYPES
from ..jobs.model import STAGES, STATUSES
from ..webhooks.rules import EVENTS
from .http import respond

USER_ID = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
TIMESTAMP = {"type": "string", "format": "date-time"}
MAYBE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
COUNT = {"type": "integer", "minimum": 0, "maximum": 1_000_000_000}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict, required=(), additional=True) -> dict:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if not additional:
        schema["additionalProperties"] = False
    return schema


def array(items: dict, **kw) -> dict:
    return {"type": "array", "items": items, **kw}


def json_body(schema: dict, required: bool = True) -> dict:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def answer(description: str, schema: dict | None = None) -> dict:
    body = {"description": description}
    if schema is not None:
        body["content"] = {"application/json": {"schema": schema}}
    return body


def operation(summary: str, responses: dict, *, body: dict | None = None, parameters=(), tags=()) -> dict:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, "default": answer("An error", ref("Error"))}}
    if body is not None:
        op["requestBody"] = body
    if parameters:
        op["parameters"] = list(parameters)
    if tags:
        op["tags"] = list(tags)
    return op


def path_id(name: str, schema: dict) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def query(name: str, schema: dict, description: str = "") -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def message(*extra_required: str, **extra: dict) -> dict:
    return obj({"message": {"type": "string"}, **extra}, ["message", *extra_required])


def _schemas() -> dict[str, Any]:
    text = {"type": "string", "minLength": 1, "pattern": r"\S"}
    source = obj({
        "type": {"enum": ["vsphere"]},
        "vcenter_url": text,
        "username": {"type": "string"},
        "password": {"type": "string", "writeOnly": True},
        "datacenter": text,
        "insecure": {"type": "boolean"},
        "thumbprint": {"type": "string"},
        "vcenter": text,
    }, ["type"], additional=False)
    destination = obj({
        "type": {"enum": ["kvm"]},
        "libvirt_uri": text,
        "storage_pool": text,
        "output_dir": text,
        "disk_format": {"enum": list(DISK_FORMATS)},
        "domain_name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
        "domain_type": {"enum": list(DOMAIN_TYPES)},
        "start": {"type": "boolean"},
    }, ["type", "libvirt_uri"], additional=False)
    options = obj({
        "conversion_method": {"enum": list(CONVERSION_METHODS)},
        "network_mapping": {"type": "object", "additionalProperties": {"type": "string"}},
        "shutdown_source": {"type": "boolean"},
        "remove_cdrom": {"type": "boolean"},
        "verify": {"oneOf": [{"type": "boolean"}, {"const": "full"}], "description": "true: every chunk's hash"
                   " taken from the source is checked on the destination; full: a second read of the source"},
        "device_models": {"enum": list(DEVICE_MODELS), "description": "auto (https, vddk): the models the copied"
                          " guest has drivers for; source: the VM's own; virtio. virt-v2v: virtio"},
        "boot_check": {"oneOf": [{"type": "boolean"}, obj({
            "ready_pattern": {"type": "string", "description": "a regex for a console line (default: a login"
                                                                  " prompt, or the guest agent answering)"},
            "timeout": {"type": "number", "minimum": BOOT_CHECK_SECONDS[0], "maximum": BOOT_CHECK_SECONDS[1]},
            "on_failure": {"enum": list(BOOT_CHECK_FAILURE)}}, additional=False)]},
        "warm": {"description": "copy while the source runs (changed block tracking and snapshots over the HTTPS"
                                " datastore interface), then cut over: the source shut down, the last changes"
                                " copied and verified, the target started; rolled back if it does not come up",
                 "oneOf": [{"type": "boolean"}, obj({
                     "precopy_interval": {"type": "string", "description": "between passes, e.g. 30m, 1h (default)"},
                     "cutover_at": {"type": "string", "format": "date-time",
                                    "description": "default: on POST /jobs/{id}/cutover"},
                     "quiesce": {"type": "boolean"},
                     "force_off": {"type": "boolean", "description": "power off a guest that does not shut down"
                                                                      " in pipeline.shutdown_timeout"}},
                     additional=False)]},
    }, additional=False)
    definition = obj({
        "id": {"type": "string", "pattern": USER_ID},
        "name": text,
        "vm_path": {"type": "string", "pattern": r"^[^/]+/[^/]+/.+$", "description": "Datacenter/vm/folder/name"},
        "source": source,
        "destination": destination,
        "options": options,
        "metadata": {"type": "object"},
    }, ["vm_path", "source", "destination"], additional=False)
    progress = obj({
        "stage": {"enum": list(STAGES)},
        "percent_complete": {"type": "number", "minimum": 0, "maximum": 100},
        "current_bytes": {"type": "integer", "minimum": 0},
        "total_bytes": {"type": "integer", "minimum": 0},
        "disk_index": {"type": "integer", "minimum": 0},
        "disk_count": {"type": "integer", "minimum": 0},
        "disk_current_bytes": {"type": "integer", "minimum": 0},
        "disk_total_bytes": {"type": "integer", "minimum": 0},
        "rate_bytes_per_second": {"type": "integer", "minimum": 0},
        "eta_seconds": {"type": ["integer", "null"]},
        "message": {"type": "string"},
        "disks": array(obj({"index": {"type": "integer"}, "label": {"type": "string"},
                            "current_bytes": {"type": "integer"}, "total_bytes": {"type": "integer"}})),
        "resumed_at_bytes": {"type": "integer", "minimum": 0},
        "passes": array(obj({"number": {"type": "integer"}, "started_at": TIMESTAMP,
                             "read_bytes": {"type": "integer"}, "changed_bytes": {"type": "integer"},
                             "seconds": {"type": "number"}, "full": {"type": "boolean"},
                             "query_seconds": {"type": "number", "description": "of seconds, waiting for vCenter"
                                                                               " to say what changed"}})),
        "next_pass_at": MAYBE_TIMESTAMP,
    }, ["stage", "percent_complete", "current_bytes", "total_bytes"])
    job = obj({
        "id": {"type": "string"},
        "definition": {"type": "object", "required": ["id", "vm_path", "source", "destination", "created_at"]},
        "status": {"enum": list(STATUSES)},
        "progress": ref("Progress"),
        "result": {"type": ["object", "null"]},
        "error": {"type": ["string", "null"]},
        "created_at": TIMESTAMP,
        "started_at": MAYBE_TIMESTAMP,
        "completed_at": MAYBE_TIMESTAMP,
        "updated_at": TIMESTAMP,
        "node": {"type": ["string", "null"], "description": "The node (node_name) that runs or ran the job"},
        "history": array(obj({"at": TIMESTAMP, "status": {"type": "string"}, "stage": {"type": "string"},
                              "message": {"type": "string"}}, ["at", "status", "stage", "message"])),
    }, ["id", "definition", "status", "progress", "result", "error", "created_at", "updated_at"])
    counts = {name: {"type": "integer", "minimum": 0} for name in (
        "total_jobs", "running_jobs", "completed_jobs", "failed_jobs", "worker_count", "active_workers",
        "pending_jobs", "cancelled_jobs")}
    node = obj({"name": {"type": "string"}, "state": {"enum": ["up", "stopped", "lost"]},
                "last_heartbeat": TIMESTAMP, "running_jobs": {"type": "integer", "minimum": 0}},
               ["name", "state", "last_heartbeat", "running_jobs"])
    status = obj({**counts, "version": {"type": "string"}, "uptime_seconds": {"type": "number"},
                  "timestamp": TIMESTAMP, "node": {"type": "string"},
                  "fenced": {"type": "boolean", "description": "This node could not renew its lease for half of"
                                                              " it: its copies are stopped and it claims no job"},
                  "nodes": array(node),
                  "libguestfs": {**obj({"backend": {"enum": ["kvm", "tcg", "probing", "unknown"]},
                                        "why": {"type": "string"}}, ["backend", "why"]),
                                 "description": "How the libguestfs appliance (virt-v2v, guest inspection) runs"
                                                " here: found by starting it once, at start"}},
                 list(counts) + ["version", "timestamp"])
    template = {**definition, "properties": {k: v for k, v in definition["properties"].items() if k != "id"},
                "description": "A job definition without id; vm_path may end in a glob (Datacenter/vm/prod/*)."}
    schedule_fields = {
        "name": {"type": "string"},
        "description": {"type": "string"},
        "schedule": {"type": "string", "description": "5-field cron expression or @daily, @hourly, ..."},
        "timezone": {"type": "string", "description": "IANA time zone, default UTC"},
        "enabled": {"type": "boolean"},
        "missed_runs": {"enum": ["catch_up", "skip"]},
        "job_template": template,
    }
    run = obj({
        "id": {"type": ["integer", "null"]},
        "trigger": {"enum": ["cron", "trigger", "catch_up"]},
        "outcome": {"enum": ["running", "succeeded", "failed", "skipped"]},
        "started_at": TIMESTAMP,
        "finished_at": MAYBE_TIMESTAMP,
        "job_ids": array({"type": "string"}),
        "reason": {"type": ["string", "null"]},
    }, ["trigger", "outcome", "started_at", "job_ids"])
    schedule = obj({
        "id": {"type": "string"}, **schedule_fields, "job_template": {"type": "object"},
        "created_at": TIMESTAMP, "updated_at": TIMESTAMP, "last_run": MAYBE_TIMESTAMP, "next_run": MAYBE_TIMESTAMP,
        "run_count": {"type": "integer"}, "last_job_ids": array({"type": "string"}),
        "successful_runs": {"type": "integer"}, "failed_runs": {"type": "integer"}, "skipped_runs": {"type": "integer"},
        "runs": array(ref("ScheduleRun")),
    }, ["id", "name", "schedule", "timezone", "enabled", "job_template", "last_run", "next_run", "run_count"])
    event_names = {"enum": ["*", *EVENTS]}
    webhook_fields = {
        "url": {"type": "string", "format": "uri"},
        "events": array(event_names),
        "enabled": {"type": "boolean"},
        "timeout": {"oneOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 600},
                              {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h)?$"}]},
        "retry_count": {"type": "integer", "minimum": 0, "maximum": 20},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "secret": {"type": "string", "writeOnly": True},
    }
    webhook = obj({**webhook_fields, "timeout": {"type": "number"}, "secret": {"type": ["string", "null"]},
                   "source": {"enum": ["config", "api"]}, "created_at": MAYBE_TIMESTAMP,
                   "deliveries": {"type": "object", "additionalProperties": {"type": "integer"}}},
                  ["url", "events", "enabled", "timeout", "retry_count", "headers"])
    delivery = obj({
        "id": {"type": "string"}, "event": {"type": "string"}, "state": {"enum": ["pending", "delivered", "failed",
                                                                               "dropped"]},
        "created_at": TIMESTAMP,
        "attempts": array(obj({"at": TIMESTAMP, "duration_ms": {"type": "integer"},
                               "status_code": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]}})),
    }, ["id", "event", "state", "attempts"])
    vm = obj({"name": {"type": "string"}, "path": {"type": "string"}, "power_state": {"type": "string"},
              "num_cpu": {"type": "integer"}, "memory_mb": {"type": "integer"}, "storage": {"type": "integer"},
              "guest_os": {"type": "string"}, "ip_address": {"type": ["string", "null"]}, "uuid": {"type": "string"}},
             ["name", "path", "power_state", "num_cpu", "memory_mb", "storage", "guest_os", "ip_address"])
    vm_info = obj({"name": {"type": "string"}, "uuid": {"type": "string"}, "hardware": {"type": "object"},
                   "disks": array({"type": "object"}), "nics": array({"type": "object"}),
                   "firmware": {"type": "string"}}, ["uuid", "hardware", "disks"])
    credentials = obj({"vcenter_url": text, "server": text, "username": {"type": "string"},
                       "password": {"type": "string", "writeOnly": True}, "datacenter": text,
                       "insecure": {"type": "boolean"}, "thumbprint": {"type": "string"}, "vcenter": text})
    vm_request = {**credentials, "properties": {**credentials["properties"], "vm_path": text}, "required": ["vm_path"]}
    error = obj({"error": {"type": "string", "minLength": 1}, "code": {"type": "string"},
                 "request_id": {"type": "string"}}, ["error"])
    return {
        "Error": error, "JobDefinition": definition, "Progress": progress, "Job": job, "Status": status,
        "ScheduleRun": run, "Schedule": schedule, "ScheduleCreate": obj({"id": {"type": "string", "pattern": USER_ID},
                                                                         **schedule_fields},
                                                                        ["schedule", "job_template"], additional=False),
        "ScheduleUpdate": obj({"id": {"type": "string", "pattern": USER_ID}, **schedule_fields}, additional=False),
        "WebhookCreate": obj(webhook_fields, ["url"], additional=False), "Webhook": webhook, "Delivery": delivery,
        "VmSummary": vm, "VmInfo": vm_info, "VmRequest": vm_request,
    }


LEFTOVER = {"type": "object", "required": ["kind"], "properties": {
    "kind": {"enum": ["file", "volume", "domain", "network", "snapshot", "source_off"]},
    "path": {"type": "string"}, "uri": {"type": "string"},
    "pool": {"type": "string"}, "name": {"type": "string"}}}


def openapi_document(version: str) -> dict[str, Any]:
    schedule_id = path_id("id", {"type": "string", "pattern": USER_ID})
    submitted = obj({"job_id": {"type": "string"}, "job_ids": array({"type": "string"}),
                     "message": {"type": "string"}}, ["job_id", "job_ids", "message"])
    query_result = obj({"jobs": array(ref("Job")), "total": {"type": "integer"}, "limit": {"type": "integer"},
                        "offset": {"type": "integer"}}, ["jobs", "total"])
    job_query = obj({
        "all": {"type": "boolean"},
        "status": {"oneOf": [{"enum": list(STATUSES)}, array({"enum": list(STATUSES)})]},
        "limit": COUNT, "offset": COUNT, "job_ids": array({"type": "string"}),
    }, additional=False)
    cancel = obj({"job_ids": array({"type": "string"}),
                  "status": {"oneOf": [{"enum": list(STATUSES)}, array({"enum": list(STATUSES)})]}},
                 additional=False)
    cancelled = obj({"message": {"type": "string"}, "count": {"type": "integer"}, "cancelled": array({"type": "string"}),
                     "failed": array({"type": "string"}), "errors": {"type": "object"}},
                    ["message", "count", "cancelled", "failed", "errors"])
    credentials = [query(name, {"type": "string"}) for name in
                   ("vcenter_url", "server", "username", "password", "datacenter", "insecure", "thumbprint", "vcenter")]
    jobs, schedules, webhooks, vms, live = ("jobs",), ("schedules",), ("webhooks",), ("vms",), ("live",)
    paths = {
        "/health": {"get": operation("Liveness and database reachability", {
            "200": answer("Up", obj({"status": {"const": "ok"}, "version": {"type": "string"},
                                     "uptime_seconds": {"type": "number"}}, ["status"]))})},
        "/status": {"get": operation("Job counts and workers", {"200": answer("Status", ref("Status"))})},
        "/jobs/submit": {"post": operation("Submit one job, a batch {jobs: [...]} or a bare array", {
            "201": answer("Queued", submitted)}, body=json_body({"oneOf": [
                ref("JobDefinition"), obj({"jobs": array(ref("JobDefinition"), minItems=1)}, ["jobs"], False),
                array(ref("JobDefinition"), minItems=1)]}), tags=jobs)},
        "/jobs/query": {
            "post": operation("Jobs, newest first", {"200": answer("Jobs", query_result)},
                              body=json_body(job_query, required=False), tags=jobs),
            "get": operation("Jobs, newest first", {"200": answer("Jobs", query_result)}, tags=jobs, parameters=[
                query("status", {"type": "string"}, "comma-separated statuses"),
                query("limit", COUNT), query("offset", COUNT),
                query("job_ids", {"type": "string"}, "comma-separated ids"), query("all", {"type": "string"})]),
        },
        "/jobs/cancel": {"post": operation("Cancel jobs by id and/or status; running ones are stopped", {
            "200": answer("What was cancelled", cancelled)}, body=json_body(cancel), tags=jobs)},
        "/jobs/{id}": {"get": operation("One job with its history", {"200": answer("The job", ref("Job"))},
                                        parameters=[path_id("id", {"type": "string"})], tags=jobs)},
        "/jobs/{id}/resume": {"post": operation(
            "Queue a failed job again whose copy was kept (result.resumable): it goes on from its checkpoints",
            {"202": answer("Queued", message("job_id", "status", job_id={"type": "string"},
                                             status={"type": "string"}))},
            parameters=[path_id("id", {"type": "string"})], tags=jobs)},
        "/jobs/{id}/cutover": {"post": operation(
            "Cut a warm job over now (options.warm, stage precopy): the source is shut down, what changed since"
            " the last pass is copied and verified, the target started (the source powered on again if the"
            " target does not come up). 409 outside precopy",
            {"202": answer("Cutover started", message("job_id", "status", job_id={"type": "string"},
                                                      status={"type": "string"}))},
            parameters=[path_id("id", {"type": "string"})], tags=jobs)},
        "/jobs/{id}/discard": {"post": operation(
            "Remove what a failed or cancelled job kept (result.kept: its partial copy, a domain that did not"
            " boot); it can no longer be resumed. 409 for a job that is pending, running or completed",
            {"200": answer("What was removed", message("job_id", "removed", job_id={"type": "string"},
                                                       removed=array(LEFTOVER)))},
            parameters=[path_id("id", {"type": "string"})], tags=jobs)},
        "/schedules": {
            "get": operation("Every schedule", {"200": answer("Schedules", obj({
                "schedules": array(ref("Schedule")), "total": {"type": "integer"}, "timestamp": TIMESTAMP},
                ["schedules", "total"]))}, tags=schedules),
            "post": operation("Create a schedule", {"201": answer("Created", message("schedule",
                                                                                     schedule=ref("Schedule")))},
                              body=json_body(ref("ScheduleCreate")), tags=schedules),
        },
        "/schedules/stats": {"get": operation("Schedules and runs by outcome", {"200": answer("Stats", obj(
            {k: {"type": "integer"} for k in ("total_schedules", "enabled_schedules", "disabled_schedules",
                                              "total_runs", "successful_runs", "failed_runs")},
            ["total_schedules", "enabled_schedules", "disabled_schedules", "total_runs", "successful_runs",
             "failed_runs"]))}, tags=schedules)},
        "/schedules/{id}": {
            "get": operation("One schedule with its recent runs", {"200": answer("The schedule", ref("Schedule"))},
                             parameters=[schedule_id], tags=schedules),
            "put": operation("Partial update: only the fields sent change", {
                "200": answer("Updated", message(schedule=ref("Schedule")))},
                body=json_body(ref("ScheduleUpdate")), parameters=[schedule_id], tags=schedules),
            "delete": operation("Delete a schedule", {"200": answer("Deleted", message())},
                                parameters=[schedule_id], tags=schedules),
        },
        **{f"/schedules/{{id}}/{action}": {"post": operation(f"{action.capitalize()} a schedule", {
            "200": answer("Done", message(schedule=ref("Schedule")))}, parameters=[schedule_id], tags=schedules)}
           for action in ("enable", "disable")},
        "/schedules/{id}/trigger": {"post": operation("Run now, even when disabled", {
            "200": answer("Its jobs", message("job_ids", job_ids=array({"type": "string"}), run=ref("ScheduleRun")))},
            parameters=[schedule_id], tags=schedules)},
        "/webhooks": {
            "get": operation("Every webhook, config file first; secrets as ***", {"200": answer("Webhooks", obj({
                "webhooks": array(ref("Webhook")), "total": {"type": "integer"}, "timestamp": TIMESTAMP},
                ["webhooks", "total"]))}, tags=webhooks),
            "post": operation("Add a webhook", {"201": answer("Added", message("webhook", webhook=ref("Webhook")))},
                              body=json_body(ref("WebhookCreate")), tags=webhooks),
        },
        "/webhooks/{index}": {"delete": operation("Delete an API-added webhook by index", {
            "200": answer("Deleted", message())}, parameters=[path_id("index", {"type": "integer", "minimum": 0})],
            tags=webhooks)},
        "/webhooks/{index}/deliveries": {"get": operation("Recent deliveries and their attempts", {
            "200": answer("Deliveries", obj({"deliveries": array(ref("Delivery")), "total": {"type": "integer"}},
                                            ["deliveries", "total"]))},
            parameters=[path_id("index", {"type": "integer", "minimum": 0})], tags=webhooks)},
        "/webhooks/test": {"post": operation("Send one real delivery now", {"200": answer("Its outcome", obj({
            "message": {"type": "string"}, "delivered": {"type": "boolean"},
            "status_code": {"type": ["integer", "null"]}, "duration_ms": {"type": "integer"},
            "error": {"type": ["string", "null"]}}, ["message", "delivered", "status_code", "duration_ms"]))},
            body=json_body(obj({"url": {"type": "string", "format": "uri"}, "event": {"type": "string"}}, ["url"],
                               additional=False)), tags=webhooks)},
        "/vms/list": {"get": operation("VMs of a vCenter", {"200": answer("VMs", obj({
            "vms": array(ref("VmSummary")), "total": {"type": "integer"}}, ["vms", "total"]))},
            parameters=credentials + [query("folder", {"type": "string"})], tags=vms)},
        "/vms/info": {
            "get": operation("One VM's hardware", {"200": answer("The VM", ref("VmInfo"))},
                             parameters=credentials + [query("vm_path", {"type": "string"})], tags=vms),
            "post": operation("One VM's hardware", {"200": answer("The VM", ref("VmInfo"))},
                              body=json_body(ref("VmRequest")), tags=vms),
        },
        "/vms/shutdown": {"post": operation("Start a guest shutdown", {"202": answer("Started", message())},
                                            body=json_body(ref("VmRequest")), tags=vms)},
        "/vms/poweroff": {"post": operation("Power off (waits up to 60 s)", {"200": answer("Off", message())},
                                            body=json_body(ref("VmRequest")), tags=vms)},
        "/vms/remove-cdrom": {"post": operation("Remove CD-ROM devices", {"200": answer("Removed", message(
            "count", count={"type": "integer"}))}, body=json_body(ref("VmRequest")), tags=vms)},
        "/metrics": {"get": operation("Prometheus metrics (404 when disabled)", {"200": {
            "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            tags=live)},
        "/ws": {"get": operation("WebSocket: status, jobs, job_update, schedule_event (426 without an upgrade)", {
            "101": answer("Switching to the WebSocket protocol")}, tags=live)},
        "/openapi.json": {"get": operation("This document", {"200": answer("OpenAPI 3.1", {"type": "object"})})},
        "/": {"get": operation("The dashboard (no token needed for its files)", {"200": {
            "description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}})},
        "/static/{name}": {"get": operation("The dashboard's script and style sheet", {"200": {
            "description": "The file", "content": {"text/javascript": {"schema": {"type": "string"}},
                                                  "text/css": {"schema": {"type": "string"}}}}},
            parameters=[path_id("name", {"type": "string"})])},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "hypersdk", "version": version,
                 "description": "Migrate VMware vSphere VMs onto KVM/libvirt hosts."},
        "servers": [{"url": "/"}],
        "security": [{}, {"bearer": []}],
        "paths": paths,
        "components": {"schemas": _schemas(),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "auth.tokens; /health is always open"}}},
    }


class OpenAPIArea:
    def __init__(self, version: str):
        self._document = openapi_document(version)

    def register(self, app) -> None:
        app.route("/openapi.json", methods=["GET"], endpoint="openapi")(self.document)

    def document(self, request):
        return respond(request, self._document)
