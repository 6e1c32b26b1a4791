"""The scheduler with a Clock, an in-memory store and a scripted pipeline: no sleeping, no sockets."""

import copy
from datetime import datetime

import pytest
from twisted.internet.defer import succeed

from hypersdk.errors import Conflict, ScheduleNotFound
from hypersdk.jobs.definition import SubmitContext
from hypersdk.jobs.model import PENDING
from hypersdk.schedules.definition import parse_create, parse_update
from hypersdk.schedules.scheduler import Scheduler
from hypersdk.store.schedules import ScheduleStore
from tests.helpers import VALID_DEFINITION, result_of
from tests.unit.jobs.test_manager import Harness

pytestmark = pytest.mark.usefixtures("store_engine")  # every test on SQLite and on PostgreSQL


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class World:
    """A daemon's worth of scheduling: job manager (one worker), store, bus, clock."""

    def __init__(self, start="2026-01-17T12:00:00+00:00", vms=()):
        self.h = Harness(workers=1)
        self.h.clock.advance(ts(start) - self.h.clock.seconds())
        self.h.start()
        self.clock, self.manager, self.store = self.h.clock, self.h.manager, ScheduleStore(self.h.store)
        self.vms = list(vms)
        self.searched = []
        self.schedule_events = []
        self.h.bus.subscribe(lambda e: e.type.startswith("schedule.") and self.schedule_events.append(
            (e.subject.schedule_id, e.subject.event, e.subject.job_ids)))
        self.scheduler = self.new_scheduler()

    def new_scheduler(self):
        def find_vms(source, folder):
            self.searched.append((source.vcenter_url, folder))
            return succeed(self.vms)

        scheduler = Scheduler(self.store, self.manager, self.clock, self.h.bus, find_vms, SubmitContext())
        result_of(scheduler.start())
        return scheduler

    def create(self, **fields):
        body = {"id": "nightly", "schedule": "0 2 * * *", "job_template": copy.deepcopy(VALID_DEFINITION), **fields}
        return result_of(self.scheduler.create(parse_create(body, SubmitContext())))

    def update(self, schedule_id="nightly", **fields):
        return result_of(self.scheduler.update(schedule_id, parse_update(fields, SubmitContext(), schedule_id)))

    def advance_to(self, when: str):
        self.clock.advance(ts(when) - self.clock.seconds())

    def jobs(self):
        return self.h.pipeline.started

    def finish_all(self, ok=True):
        for job_id, run in list(self.h.pipeline.runs.items()):
            if not run.deferred.called:
                run.complete() if ok else run.fail(RuntimeError("disk on fire"))

    def runs(self, schedule_id="nightly"):
        return [(r.trigger, r.outcome) for r in reversed(result_of(self.store.runs(schedule_id)))]

    def timers(self):
        return [round(c.getTime()) for c in self.clock.getDelayedCalls() if c.func == self.scheduler._on_timer]


@pytest.fixture
def w():
    return World()


def test_a_schedule_fires_at_its_time_and_submits_the_template_as_a_job(w):
    s = w.create()
    assert s.next_run == ts("2026-01-18T02:00:00+00:00")
    w.advance_to("2026-01-18T01:59:59+00:00")
    assert w.jobs() == []
    w.advance_to("2026-01-18T02:00:00+00:00")
    assert len(w.jobs()) == 1
    job = result_of(w.manager.get(w.jobs()[0]))
    assert job.definition["vm_path"] == "DC0/vm/web-1"
    assert job.definition["metadata"]["schedule_id"] == "nightly"
    assert result_of(w.h.store.secrets(job.id)) == {"source.password": "s3cret-Pa55"}  # the job can log in
    s = w.scheduler.get("nightly")
    assert (s.run_count, s.last_run, s.next_run) == (1, ts("2026-01-18T02:00:00+00:00"), ts("2026-01-19T02:00:00+00:00"))
    assert w.schedule_events == [("nightly", "triggered", (job.id,))]
    w.finish_all()
    assert w.runs() == [("cron", "succeeded")]
    assert w.schedule_events[-1] == ("nightly", "completed", (job.id,))
    assert w.scheduler.stats()["successful_runs"] == 1


def test_one_timer_for_the_earliest_schedule_rearmed_by_update_disable_enable_and_delete(w):
    w.create(id="late", schedule="0 5 * * *")
    w.create(id="early", schedule="0 3 * * *")
    assert w.timers() == [ts("2026-01-18T03:00:00+00:00")]
    w.update("early", schedule="0 6 * * *")
    assert w.timers() == [ts("2026-01-18T05:00:00+00:00")]
    result_of(w.scheduler.set_enabled("late", False))
    assert w.scheduler.get("late").next_run is None
    assert w.timers() == [ts("2026-01-18T06:00:00+00:00")]
    result_of(w.scheduler.delete("early"))
    assert w.timers() == []
    result_of(w.scheduler.set_enabled("late", True))
    assert w.timers() == [ts("2026-01-18T05:00:00+00:00")]


def test_update_is_partial_and_does_not_disable(w):
    w.create(name="Nightly", description="all of prod")
    s = w.update(schedule="0 4 * * *")
    assert (s.name, s.description, s.enabled, s.cron) == ("Nightly", "all of prod", True, "0 4 * * *")
    assert s.next_run == ts("2026-01-18T04:00:00+00:00")


def test_a_run_is_skipped_while_the_previous_one_has_unfinished_jobs(w):
    w.create(schedule="*/10 * * * *")
    w.advance_to("2026-01-17T12:10:00+00:00")
    assert len(w.jobs()) == 1
    w.advance_to("2026-01-17T12:20:00+00:00")
    assert len(w.jobs()) == 1
    assert w.runs() == [("cron", "running"), ("cron", "skipped")]
    assert "still has 1 pending or running job" in result_of(w.store.runs("nightly"))[0].reason
    w.finish_all(ok=False)
    assert w.runs() == [("cron", "failed"), ("cron", "skipped")]
    w.advance_to("2026-01-17T12:30:00+00:00")
    assert len(w.jobs()) == 2
    assert w.scheduler.stats() == {
        "total_schedules": 1, "enabled_schedules": 1, "disabled_schedules": 0, "total_runs": 2,
        "successful_runs": 0, "failed_runs": 1, "skipped_runs": 1, "running_runs": 1}
    assert [e[1] for e in w.schedule_events] == ["triggered", "failed", "triggered"]


def test_a_late_timer_makes_one_run_not_a_burst(w):
    w.create(schedule="* * * * *")
    w.clock.advance(3600)  # the reactor was stuck for an hour
    assert len(w.jobs()) == 1
    assert w.scheduler.get("nightly").next_run == w.clock.seconds() + 60 - w.clock.seconds() % 60


def test_trigger_runs_a_disabled_schedule_now_and_conflicts_while_its_run_is_unfinished(w):
    w.create(enabled=False)
    run = result_of(w.scheduler.trigger("nightly"))
    assert run.trigger == "trigger" and list(run.job_ids) == w.jobs()
    with pytest.raises(Conflict, match="still has 1 pending or running job"):
        result_of(w.scheduler.trigger("nightly"))
    with pytest.raises(ScheduleNotFound):
        result_of(w.scheduler.trigger("nope"))


def test_duplicate_id_is_a_conflict_and_keeps_the_first(w):
    w.create(schedule="0 3 * * *")
    with pytest.raises(Conflict):
        w.create(schedule="0 4 * * *")
    assert w.scheduler.get("nightly").cron == "0 3 * * *"
    assert w.timers() == [ts("2026-01-18T03:00:00+00:00")]


def test_glob_expands_to_one_job_per_matching_vm_in_the_folder():
    w = World(vms=["DC0/vm/prod/web-1", "DC0/vm/prod/web-2", "DC0/vm/prod/db-1", "DC0/vm/prod/x/web-3"])
    t = copy.deepcopy(VALID_DEFINITION)
    t["vm_path"] = "DC0/vm/prod/web-*"
    w.create(job_template=t)
    run = result_of(w.scheduler.trigger("nightly"))
    assert w.searched == [("vcenter.example.com", "DC0/vm/prod")]
    paths = sorted(result_of(w.manager.get(j)).definition["vm_path"] for j in run.job_ids)
    assert paths == ["DC0/vm/prod/web-1", "DC0/vm/prod/web-2"]


def test_a_glob_matching_nothing_fails_the_run_with_the_reason():
    w = World(vms=["DC0/vm/prod/db-1"])
    t = copy.deepcopy(VALID_DEFINITION)
    t["vm_path"] = "DC0/vm/prod/web-*"
    w.create(job_template=t)
    w.advance_to("2026-01-18T02:00:00+00:00")
    (run,) = result_of(w.store.runs("nightly"))
    assert (run.outcome, run.reason) == ("failed", "no VM in DC0/vm/prod matches 'web-*'")
    assert [e[1] for e in w.schedule_events] == ["triggered", "failed"]


def test_daylight_saving_changes_fire_once_a_day():
    w = World(start="2026-03-27T12:00:00+00:00")
    w.create(schedule="30 2 * * *", timezone="Europe/Berlin")
    for day in range(3):
        (due,) = w.timers()
        w.clock.advance(due - w.clock.seconds())
        w.finish_all()
    fired = [r.started_at for r in result_of(w.store.runs("nightly"))]
    assert [outcome for _, outcome in w.runs()] == ["succeeded"] * 3
    assert sorted(fired) == [ts("2026-03-28T02:30:00+01:00"), ts("2026-03-29T03:30:00+02:00"),
                             ts("2026-03-30T02:30:00+02:00")]


def test_a_run_missed_while_down_is_made_once_at_start_with_catch_up():
    w = World()
    w.create()  # due 2026-01-18 02:00
    w.scheduler.stop()
    w.advance_to("2026-01-20T12:00:00+00:00")  # down for three firings
    w.scheduler = w.new_scheduler()
    assert len(w.jobs()) == 1
    assert w.runs() == [("catch_up", "running")]
    assert w.scheduler.get("nightly").next_run == ts("2026-01-21T02:00:00+00:00")


def test_a_run_missed_while_down_is_skipped_and_recorded_with_skip():
    w = World()
    w.create(missed_runs="skip")
    w.scheduler.stop()
    w.advance_to("2026-01-20T12:00:00+00:00")
    w.scheduler = w.new_scheduler()
    assert w.jobs() == []
    assert w.runs() == [("catch_up", "skipped")]


def test_schedules_counters_and_unfinished_runs_survive_a_restart():
    w = World()
    w.create(schedule="*/10 * * * *")
    w.advance_to("2026-01-17T12:10:00+00:00")
    (job_id,) = w.jobs()
    w.scheduler.stop()
    w.scheduler = w.new_scheduler()
    assert w.scheduler.get("nightly").run_count == 1
    w.h.pipeline.runs[job_id].complete()
    assert w.runs() == [("cron", "succeeded")]
    assert w.scheduler.stats()["successful_runs"] == 1


def test_the_template_password_is_stored_encrypted_and_kept_when_sent_back_redacted(w):
    s = w.create()
    assert s.job_template["source"]["password"] == "***"
    t = copy.deepcopy(s.job_template)
    t["options"]["verify"] = False
    w.update(job_template=t)
    run = result_of(w.scheduler.trigger("nightly"))
    assert result_of(w.h.store.secrets(run.job_ids[0])) == {"source.password": "s3cret-Pa55"}


def test_pending_jobs_of_a_run_block_the_next_run_too(w):
    w.create(schedule="*/10 * * * *")
    w.h.submit(1)  # occupies the only worker: the scheduled job waits
    w.advance_to("2026-01-17T12:10:00+00:00")
    (run,) = result_of(w.store.runs("nightly"))
    assert result_of(w.manager.get(run.job_ids[0])).status == PENDING
    w.advance_to("2026-01-17T12:20:00+00:00")
    assert w.runs()[-1] == ("cron", "skipped")


def test_a_redacted_password_is_kept_only_for_the_same_vcenter_and_user(w):
    from hypersdk.errors import InvalidField

    s = w.create()
    t = copy.deepcopy(s.job_template)
    t["source"]["vcenter_url"] = "attacker.example.com"
    with pytest.raises(InvalidField, match="vcenter_url, vcenter or username changed: send the password"):
        w.update(job_template=t)
    assert w.scheduler.get("nightly").job_template["source"]["vcenter_url"] == "vcenter.example.com"


def test_run_history_is_pruned_per_schedule_and_never_drops_a_running_run():
    from hypersdk.schedules.model import ScheduleRun
    from hypersdk.store.schedules import KEEP_RUNS

    w = World()
    w.create(id="a", schedule="*/10 * * * *")
    w.create(id="b", schedule="@yearly", enabled=False)
    w.advance_to("2026-01-17T12:10:00+00:00")  # a's run is running (its job never ends here)
    b = w.scheduler.get("b")
    for i in range(KEEP_RUNS + 5):
        result_of(w.store.record_run(ScheduleRun("b", "trigger", 1.0 + i, "skipped", finished_at=1.0 + i), b))
    w.advance_to("2026-01-17T12:20:00+00:00")  # a skips: its history is pruned, its running run stays
    assert [r.schedule_id for r in result_of(w.store.open_runs())] == ["a"]
    assert len(result_of(w.store.runs("b", limit=1000))) == KEEP_RUNS


def test_two_nodes_schedulers_fire_a_due_schedule_once_and_the_other_reloads_what_it_did(w):
    from hypersdk.store.jobs import this_node

    w.create()
    other_store = ScheduleStore(w.h.store.for_node(this_node("n2")))
    other = Scheduler(other_store, w.manager, w.clock, w.h.bus, lambda source, folder: succeed([]), SubmitContext())
    result_of(other.start())  # both nodes know the schedule and arm a timer for 02:00
    w.advance_to("2026-01-18T02:00:00+00:00")
    assert len(w.jobs()) == 1 and w.runs() == [("cron", "running")]
    result_of(other.reload())
    assert other.get("nightly").run_count == 1
    assert other.get("nightly").next_run == w.scheduler.get("nightly").next_run == ts("2026-01-19T02:00:00+00:00")
    other.stop()
