"""Routes of the Schedules API: list, create, get, update, delete, enable, disable, trigger, stats."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from werkzeug.routing import BaseConverter

from ..jobs.definition import SubmitContext
from ..schedules.definition import parse_create, parse_update
from ..schedules.scheduler import Scheduler
from ..timefmt import rfc3339
from .http import detached, read_json, respond
from .serialize import schedule_json, schedule_run_json


class _ScheduleIdConverter(BaseConverter):
    """A schedule id, but not "stats": GET /schedules/stats is the statistics."""

    regex = r"(?!stats$)[^/]+"


class SchedulesAPI:
    def __init__(self, scheduler: Scheduler, context: SubmitContext, clock):
        self._scheduler = scheduler
        self._context = context
        self._clock = clock

    def register(self, app) -> None:
        app.url_map.converters["schedule_id"] = _ScheduleIdConverter
        app.route("/schedules", methods=["GET"], endpoint="schedules_list")(self.list)
        app.route("/schedules", methods=["POST"], endpoint="schedules_create")(self.create)
        app.route("/schedules/stats", methods=["GET"], endpoint="schedules_stats")(self.stats)
        app.route("/schedules/<schedule_id:schedule_id>", methods=["GET"], endpoint="schedules_get")(self.get)
        app.route("/schedules/<schedule_id:schedule_id>", methods=["PUT"], endpoint="schedules_update")(self.update)
        app.route("/schedules/<schedule_id:schedule_id>", methods=["DELETE"], endpoint="schedules_delete")(self.delete)
        app.route("/schedules/<schedule_id:schedule_id>/enable", methods=["POST"], endpoint="schedules_enable")(self.enable)
        app.route("/schedules/<schedule_id:schedule_id>/disable", methods=["POST"], endpoint="schedules_disable")(self.disable)
        app.route("/schedules/<schedule_id:schedule_id>/trigger", methods=["POST"], endpoint="schedules_trigger")(self.trigger)

    def list(self, request):
        schedules = [schedule_json(s) for s in self._scheduler.list()]
        return respond(request, {"schedules": schedules, "total": len(schedules), "timestamp": self._now()})

    async def create(self, request):
        changes = parse_create(read_json(request), self._context)
        schedule = await detached(Deferred.fromCoroutine(self._scheduler.create(changes)))
        return respond(request, {"message": "schedule created successfully", "schedule": schedule_json(schedule)}, 201)

    async def get(self, request, schedule_id: str):
        schedule = self._scheduler.get(schedule_id)
        runs = await self._scheduler.runs(schedule_id)
        return respond(request, {**schedule_json(schedule), "runs": [schedule_run_json(r) for r in runs]})

    async def update(self, request, schedule_id: str):
        self._scheduler.get(schedule_id)  # 404 before 400
        changes = parse_update(read_json(request), self._context, schedule_id)
        schedule = await detached(Deferred.fromCoroutine(self._scheduler.update(schedule_id, changes)))
        return respond(request, {"message": "schedule updated successfully", "schedule": schedule_json(schedule)})

    async def delete(self, request, schedule_id: str):
        await detached(Deferred.fromCoroutine(self._scheduler.delete(schedule_id)))
        return respond(request, {"message": "schedule deleted successfully"})

    async def enable(self, request, schedule_id: str):
        return await self._set_enabled(request, schedule_id, True)

    async def disable(self, request, schedule_id: str):
        return await self._set_enabled(request, schedule_id, False)

    async def _set_enabled(self, request, schedule_id: str, enabled: bool):
        schedule = await detached(Deferred.fromCoroutine(self._scheduler.set_enabled(schedule_id, enabled)))
        word = "enabled" if enabled else "disabled"
        return respond(request, {"message": f"schedule {word} successfully", "schedule": schedule_json(schedule)})

    async def trigger(self, request, schedule_id: str):
        run = await detached(Deferred.fromCoroutine(self._scheduler.trigger(schedule_id)))
        return respond(request, {"message": "schedule triggered successfully", "job_ids": list(run.job_ids),
                                 "run": schedule_run_json(run)})

    def stats(self, request):
        return respond(request, {**self._scheduler.stats(), "timestamp": self._now()})

    def _now(self) -> str:
        return rfc3339(self._clock.seconds())
