import copy

import pytest

from hypersdk.errors import InvalidField
from hypersdk.jobs.definition import SubmitContext
from hypersdk.schedules.definition import matching_paths, parse_create, parse_update, split_glob
from tests.helpers import VALID_DEFINITION

CONTEXT = SubmitContext()


def body(**changes):
    b = {"id": "nightly", "schedule": "0 2 * * *", "job_template": copy.deepcopy(VALID_DEFINITION)}
    b.update(changes)
    return b


def template(**changes):
    t = copy.deepcopy(VALID_DEFINITION)
    t.update(changes)
    return t


def refused(data, field, update=False):
    with pytest.raises(InvalidField) as e:
        parse_update(data, CONTEXT, "nightly") if update else parse_create(data, CONTEXT)
    assert e.value.field == field, e.value.message
    return e.value.message


def test_the_seed_example_parses_with_defaults_left_to_the_scheduler():
    changes = parse_create(body(name="Daily VM Backup", description="nightly", enabled=True), CONTEXT)
    assert (changes.id, changes.cron, changes.enabled, changes.timezone) == ("nightly", "0 2 * * *", True, None)
    assert changes.template.vm_path == "DC0/vm/web-1"
    assert changes.template.source.password == "s3cret-Pa55"


def test_bad_cron_names_the_field_and_the_reason():
    assert "needs 5 fields" in refused(body(schedule="0 2 * *"), "schedule")
    assert "out of range" in refused(body(schedule="0 24 * * *"), "schedule")


def test_bad_time_zone_names_the_field():
    assert "unknown time zone" in refused(body(timezone="Europe/Atlantis"), "timezone")


def test_required_and_unknown_fields():
    refused({"id": "x", "job_template": VALID_DEFINITION}, "schedule")
    refused({"id": "x", "schedule": "@daily"}, "job_template")
    refused(body(cron="@daily"), "cron")
    refused(body(id="bad id!"), "id")
    refused(body(enabled="yes"), "enabled")
    refused(body(missed_runs="twice"), "missed_runs")
    refused([1, 2], "schedule")


def test_template_is_validated_like_a_job_with_the_field_path_prefixed():
    refused(body(job_template=template(vm_path="nope")), "job_template.vm_path")
    refused(body(job_template=template(colour="red")), "job_template.colour")
    refused(body(job_template=template(id="fixed")), "job_template.id")
    refused(body(job_template="DC0/vm/web-1"), "job_template")
    t = template()
    t["source"]["password"] = "***"
    refused(body(job_template=t), "job_template.source.password")


def test_glob_only_in_the_last_element_and_without_a_fixed_domain_name():
    assert parse_create(body(job_template=template(vm_path="DC0/vm/prod/web-*")), CONTEXT).template.vm_path == \
        "DC0/vm/prod/web-*"
    refused(body(job_template=template(vm_path="DC0/vm/*/web")), "job_template.vm_path")
    t = template(vm_path="DC0/vm/prod/*")
    t["destination"]["domain_name"] = "fixed"
    refused(body(job_template=t), "job_template.destination.domain_name")


def test_update_is_partial_and_keeps_the_path_id():
    changes = parse_update({"schedule": "0 3 * * *"}, CONTEXT, "nightly")
    assert (changes.cron, changes.enabled, changes.name, changes.template) == ("0 3 * * *", None, None, None)
    assert parse_update({"id": "nightly", "enabled": False}, CONTEXT, "nightly").enabled is False
    refused({"id": "other"}, "id", update=True)
    refused({"schedule": "bad"}, "schedule", update=True)


def test_glob_expansion_matches_only_direct_children_by_name():
    paths = ["DC0/vm/prod/web-1", "DC0/vm/prod/web-2", "DC0/vm/prod/db-1", "DC0/vm/prod/sub/web-3", "DC0/vm/web-4"]
    assert matching_paths("DC0/vm/prod/web-*", paths) == ["DC0/vm/prod/web-1", "DC0/vm/prod/web-2"]
    assert matching_paths("DC0/vm/prod/*", paths) == ["DC0/vm/prod/db-1", "DC0/vm/prod/web-1", "DC0/vm/prod/web-2"]
    assert split_glob("DC0/vm/prod/web-1") == ("DC0/vm/prod/web-1", None)
    assert split_glob("DC0/vm/prod/web-?") == ("DC0/vm/prod", "web-?")
