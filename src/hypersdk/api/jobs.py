"""Routes of the Jobs API: submit, query, get, cancel, resume, discard, cutover."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from werkzeug.routing import BaseConverter

from ..errors import InvalidField, JobNotFound
from ..jobs.manager import JobManager
from .http import detached, read_json, respond
from .requests import parse_cancel, parse_query, parse_query_args, split_submission
from .serialize import job_json


class _JobIdConverter(BaseConverter):
    """A job id, but not the fixed names beside it: GET /jobs/submit is a 405, not 'job submit not found'."""

    regex = r"(?!(?:submit|cancel)$)[^/]+"


class JobsAPI:
    def __init__(self, manager: JobManager, leftovers=None):
        self._manager = manager
        self._leftovers = leftovers  # jobs.leftovers.JobLeftovers: discards what a failed job kept

    def register(self, app) -> None:
        app.url_map.converters["job_id"] = _JobIdConverter
        app.route("/jobs/submit", methods=["POST"])(self.submit)
        app.route("/jobs/query", methods=["POST"])(self.query)
        app.route("/jobs/query", methods=["GET"], endpoint="query_get")(self.query_get)
        app.route("/jobs/cancel", methods=["POST"])(self.cancel)
        app.route("/jobs/<job_id:job_id>", methods=["GET"])(self.get)
        app.route("/jobs/<job_id:job_id>/resume", methods=["POST"], endpoint="resume")(self.resume)
        app.route("/jobs/<job_id:job_id>/discard", methods=["POST"], endpoint="discard")(self.discard)
        app.route("/jobs/<job_id:job_id>/cutover", methods=["POST"], endpoint="cutover")(self.cutover)

    async def submit(self, request):
        definitions, prefix = split_submission(read_json(request))
        specs = []
        for index, definition in enumerate(definitions):
            try:
                specs.extend(self._manager.validate([definition]))
            except InvalidField as e:
                raise InvalidField(prefix(index) + e.field, e.problem) from None
        jobs = await detached(Deferred.fromCoroutine(self._manager.submit(specs)))
        ids = [job.id for job in jobs]
        return respond(request, {"job_id": ids[0], "job_ids": ids, "message": "job submitted successfully"}, 201)

    async def query(self, request):
        return await self._answer_query(request, parse_query(read_json(request, default={})))

    async def query_get(self, request):
        return await self._answer_query(request, parse_query_args(request.args))

    async def _answer_query(self, request, q) -> bytes:
        jobs, total = await self._manager.query(q.statuses, q.job_ids, q.limit, q.offset)
        body: dict[str, Any] = {"jobs": [job_json(j) for j in jobs], "total": total, "limit": q.limit, "offset": q.offset}
        return respond(request, body)

    async def get(self, request, job_id: str):
        job = await self._manager.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return respond(request, job_json(job, await self._manager.history(job_id)))

    async def resume(self, request, job_id: str):
        job = await detached(Deferred.fromCoroutine(self._manager.resume(job_id)))
        return respond(request, {"message": "job resumed: it goes on from its checkpoints", "job_id": job.id,
                                 "status": job.status}, 202)

    async def cutover(self, request, job_id: str):
        job = await self._manager.cutover(job_id)
        return respond(request, {"message": "cutover started: the source is shut down, what changed since the last"
                                            " pass is copied and the target started", "job_id": job.id,
                                 "status": job.status}, 202)

    async def discard(self, request, job_id: str):
        removed = await detached(Deferred.fromCoroutine(self._leftovers.discard(job_id)))
        return respond(request, {"job_id": job_id, "removed": removed,
                                 "message": f"removed {len(removed)} kept item(s); the job can no longer be resumed"})

    async def cancel(self, request):
        job_ids, statuses = parse_cancel(read_json(request))
        cancelled, errors = await detached(Deferred.fromCoroutine(self._manager.cancel(job_ids, statuses)))
        return respond(
            request,
            {
                "message": "jobs cancelled successfully" if cancelled else "no jobs were cancelled",
                "count": len(cancelled),
                "cancelled": cancelled,
                "failed": list(errors),
                "errors": errors,
            },
        )
