"""Parsing schedule requests, pure: create and partial update bodies, and job templates.

A job template is validated like a submitted job, except that it has no ``id``
(every run creates new jobs) and its ``vm_path`` may end in a glob
(``Datacenter/vm/production/*``) that each run expands to one job per VM.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, Optional

from attrs import frozen

from ..errors import InvalidField
from ..jobs.definition import REDACTED, USER_ID, FieldReader, JobSpec, SubmitContext, parse_definition
from .cron import BadSchedule, parse_cron, parse_timezone
from .model import CATCH_UP, MISSED_RUNS

_GLOB_CHARACTERS = "*?["
_FIELDS = ("id", "name", "description", "schedule", "timezone", "enabled", "missed_runs", "job_template")


@frozen
class ScheduleChanges:
    """The fields a request sets; None where it leaves them alone."""

    id: Optional[str] = None
    name: Optional[str] = None
    description: Optional[str] = None
    cron: Optional[str] = None
    timezone: Optional[str] = None
    enabled: Optional[bool] = None
    missed_runs: Optional[str] = None
    template: Optional[JobSpec] = None


def parse_create(data: Any, context: SubmitContext) -> ScheduleChanges:
    changes = _parse(data, context)
    for required, value in (("schedule", changes.cron), ("job_template", changes.template)):
        if value is None:
            raise InvalidField(required, "is required")
    if changes.template.source.password == REDACTED:
        raise InvalidField("job_template.source.password", f"is {REDACTED!r}, the placeholder: send the password")
    return changes


def parse_update(data: Any, context: SubmitContext, schedule_id: str) -> ScheduleChanges:
    """A partial update: only the fields present change. A template password of
    "***" (as GET shows it) keeps the stored one."""
    changes = _parse(data, context)
    if changes.id is not None and changes.id != schedule_id:
        raise InvalidField("id", f"cannot change ({schedule_id!r} in the path)")
    return changes


def _parse(data: Any, context: SubmitContext) -> ScheduleChanges:
    if not isinstance(data, dict):
        raise InvalidField("schedule", "the request body must be a JSON object")
    body = FieldReader(data, "")
    cron = body.text("schedule")
    zone = body.text("timezone")
    changes = ScheduleChanges(
        id=body.text("id", pattern=USER_ID, hint="must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"),
        name=body.get("name", str),
        description=body.get("description", str),
        cron=_checked("schedule", parse_cron, cron),
        timezone=zone if _checked("timezone", parse_timezone, zone) is not None else None,
        enabled=body.get("enabled", bool),
        missed_runs=body.choice("missed_runs", MISSED_RUNS),
        template=parse_template(data["job_template"], context) if data.get("job_template") is not None else None,
    )
    body.seen.add("job_template")
    body.done()
    return changes


def _checked(field: str, parse, value):
    if value is None:
        return None
    try:
        return parse(value)
    except BadSchedule as e:
        raise InvalidField(field, str(e)) from None


def parse_template(data: Any, context: SubmitContext) -> JobSpec:
    if isinstance(data, dict) and "id" in data:
        raise InvalidField("job_template.id", "must not be set: every run creates new jobs")
    try:
        spec = parse_definition(data, context)
    except InvalidField as e:
        field = "job_template" if e.field == "definition" else f"job_template.{e.field}"
        raise InvalidField(field, e.problem) from None
    folder, _, last = spec.vm_path.rpartition("/")
    if is_glob(folder):
        raise InvalidField("job_template.vm_path", "only the last element may be a glob (Datacenter/vm/folder/*)")
    if is_glob(last) and spec.destination.domain_name is not None:
        raise InvalidField("job_template.destination.domain_name",
                           "must not be set when vm_path is a glob: each VM's domain takes the VM's name")
    return spec


def is_glob(text: str) -> bool:
    return any(c in text for c in _GLOB_CHARACTERS)


def split_glob(vm_path: str) -> tuple[str, Optional[str]]:
    """("DC/vm/prod", "web-*") for a glob path; (vm_path, None) for a plain one."""
    folder, _, last = vm_path.rpartition("/")
    return (folder, last) if is_glob(last) else (vm_path, None)


def matching_paths(pattern_path: str, vm_paths: list[str]) -> list[str]:
    """The VM paths directly in the glob's folder whose name matches it, sorted."""
    folder, pattern = split_glob(pattern_path)
    found = []
    for path in vm_paths:
        parent, _, name = path.rpartition("/")
        if parent == folder and fnmatchcase(name, pattern or name):
            found.append(path)
    return sorted(found)


DEFAULTS = {"description": "", "timezone": "UTC", "enabled": True, "missed_runs": CATCH_UP}
