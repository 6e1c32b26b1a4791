"""Pure parsing of the Jobs API request bodies (everything but job definitions)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from attrs import frozen

from ..errors import InvalidField, InvalidRequest
from ..jobs.model import STATUSES

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_IDS = 1000


@frozen
class JobQuery:
    statuses: Optional[tuple[str, ...]]
    job_ids: Optional[tuple[str, ...]]
    limit: int
    offset: int


def split_submission(body: Any) -> tuple[list, Callable[[int], str]]:
    """A single definition, ``{"jobs": [...]}`` or a bare array → (definitions, field prefix)."""
    if isinstance(body, list):
        definitions, prefix = body, lambda i: f"[{i}]."
    elif isinstance(body, dict) and set(body) == {"jobs"}:
        definitions, prefix = body["jobs"], lambda i: f"jobs[{i}]."
        if not isinstance(definitions, list):
            raise InvalidField("jobs", "must be a list of job definitions")
    elif isinstance(body, dict):
        return [body], lambda i: ""
    else:
        raise InvalidRequest("the request body must be a job definition, a list of them or {\"jobs\": [...]}")
    if not definitions:
        raise InvalidRequest("the list of job definitions is empty")
    return definitions, prefix


def parse_query(body: Any) -> JobQuery:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    unknown = set(body) - {"all", "status", "limit", "offset", "job_ids"}
    if unknown:
        raise InvalidField(sorted(unknown)[0], "unknown field")
    if "all" in body and not isinstance(body["all"], bool):
        raise InvalidField("all", "must be true or false")
    return JobQuery(
        statuses=_statuses(body.get("status"), "status"),
        job_ids=_ids(body.get("job_ids"), "job_ids"),
        limit=min(_count(body.get("limit"), "limit", DEFAULT_LIMIT), MAX_LIMIT),
        offset=_count(body.get("offset"), "offset", 0),
    )


def parse_query_args(args: dict[bytes, list[bytes]]) -> JobQuery:
    """``GET /jobs/query?status=running,pending&limit=10&offset=0&job_ids=a,b``."""
    values = {k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs] for k, vs in args.items()}
    unknown = set(values) - {"all", "status", "limit", "offset", "job_ids"}
    if unknown:
        raise InvalidField(sorted(unknown)[0], "unknown query parameter")

    def listed(name):
        items = [item for v in values.get(name, []) for item in v.split(",") if item]
        return items or None

    def number(name):
        raw = values.get(name, [None])[-1]
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise InvalidField(name, "must be an integer") from None

    return parse_query({
        k: v for k, v in {
            "status": listed("status"),
            "job_ids": listed("job_ids"),
            "limit": number("limit"),
            "offset": number("offset"),
        }.items() if v is not None
    })


def parse_cancel(body: Any) -> tuple[list[str], list[str]]:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object with job_ids and/or status")
    unknown = set(body) - {"job_ids", "status"}
    if unknown:
        raise InvalidField(sorted(unknown)[0], "unknown field")
    job_ids = _ids(body.get("job_ids"), "job_ids") or ()
    statuses = _statuses(body.get("status"), "status") or ()
    if not job_ids and not statuses:
        raise InvalidRequest("give job_ids and/or status to say which jobs to cancel")
    return list(job_ids), list(statuses)


def _statuses(value: Any, name: str) -> Optional[tuple[str, ...]]:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise InvalidField(name, "must be a status or a non-empty list of statuses")
    for item in items:
        if item not in STATUSES:
            raise InvalidField(name, f"{item!r} is not a status; use one of {', '.join(STATUSES)}")
    return tuple(dict.fromkeys(items))


def _ids(value: Any, name: str) -> Optional[tuple[str, ...]]:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise InvalidField(name, "must be a list of job id strings")
    if len(value) > MAX_IDS:
        raise InvalidField(name, f"at most {MAX_IDS} ids per request")
    return tuple(dict.fromkeys(value))


MAX_COUNT = 1_000_000_000  # far beyond any job count, far below SQLite's integer range


def _count(value: Any, name: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise InvalidField(name, f"must be an integer from 0 to {MAX_COUNT}")
    return value
