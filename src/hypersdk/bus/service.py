"""org.hypersdk.Daemon1 on D-Bus (system bus, or the session bus or an address by config).

Methods take and answer JSON strings, the API's own shapes: GetStatus() → status,
SubmitJob(definition) → {"job_ids"}, CancelJob(id) → the cancel answer,
ListJobs(filter) → {"jobs", "total"} (filter as POST /jobs/query takes it).
JobChanged(id, status, job) is emitted on every job change. Who may call is the
bus's policy (etc/dbus-org.hypersdk.Daemon1.conf), not the HTTP tokens.
"""

from __future__ import annotations

import json
from typing import Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from txdbus import client
from txdbus.interface import DBusInterface, Method, Signal
from txdbus.objects import DBusObject, dbusMethod

from ..api.requests import parse_query
from ..api.serialize import job_json
from ..errors import HyperSDKError, InvalidRequest
from ..events import Event, EventBus
from .inhibitor import Inhibitor

NAME, PATH = "org.hypersdk.Daemon1", "/org/hypersdk/Daemon1"
INTERFACE = DBusInterface(
    NAME,
    Method("GetStatus", "", "s"),
    Method("SubmitJob", "s", "s"),
    Method("CancelJob", "s", "s"),
    Method("ListJobs", "s", "s"),
    Signal("JobChanged", "sss"),
)


class DBusFailure(Exception):
    """A HyperSDKError as a D-Bus error: org.hypersdk.Error.<Code> with the API's message."""

    def __init__(self, error: HyperSDKError):
        super().__init__(error.message)
        self.dbusErrorName = "org.hypersdk.Error." + "".join(part.title() for part in error.code.split("_"))


class DaemonObject(DBusObject):
    dbusInterfaces = [INTERFACE]

    def __init__(self, manager, status):
        super().__init__(PATH)
        self._manager = manager
        self._status = status  # () -> the /status fields

    @dbusMethod(NAME, "GetStatus")
    def dbus_GetStatus(self):
        return json.dumps(self._status())

    @dbusMethod(NAME, "SubmitJob")
    def dbus_SubmitJob(self, definition: str):
        return _answer(self._submit(definition))

    @dbusMethod(NAME, "CancelJob")
    def dbus_CancelJob(self, job_id: str):
        return _answer(self._cancel(job_id))

    @dbusMethod(NAME, "ListJobs")
    def dbus_ListJobs(self, query: str):
        return _answer(self._list(query))

    async def _submit(self, text: str) -> dict:
        data = _json(text)
        definitions = data if isinstance(data, list) else [data]
        jobs = await self._manager.submit(self._manager.validate(definitions))
        return {"job_ids": [job.id for job in jobs]}

    async def _cancel(self, job_id: str) -> dict:
        cancelled, errors = await self._manager.cancel([job_id], [])
        return {"cancelled": cancelled, "errors": errors}

    async def _list(self, text: str) -> dict:
        q = parse_query(_json(text) if text.strip() else {})
        jobs, total = await self._manager.query(q.statuses, q.job_ids, q.limit, q.offset)
        return {"jobs": [job_json(j) for j in jobs], "total": total}

    def job_changed(self, event: Event) -> None:
        if event.type.startswith("job."):
            job = event.subject
            self.emitSignal("JobChanged", job.id, job.status, json.dumps(job_json(job)))


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError as e:
        raise InvalidRequest(f"the argument is not valid JSON: {e}") from None


def _answer(coroutine) -> Deferred:
    async def run():
        try:
            return json.dumps(await coroutine)
        except HyperSDKError as e:
            raise DBusFailure(e) from None

    return Deferred.fromCoroutine(run())


class DBusService:
    """Connects to the bus at start, exports the object, takes the name; drops it all at stop."""

    log = Logger()

    def __init__(self, reactor, bus: EventBus, manager, status, *, address: str = "system",
                 inhibit: Optional[dict] = None):
        self._reactor = reactor
        self._bus = bus
        self._manager = manager
        self._status = status
        self._address = address
        self._inhibit = inhibit  # {"what": ..., "mode": ...} or None
        self._conn = None
        self._inhibitor: Optional[Inhibitor] = None
        self._unsubscribe: list = []

    async def start(self) -> None:
        self._conn = await client.connect(self._reactor, self._address)
        obj = DaemonObject(self._manager, self._status)
        self._conn.exportObject(obj)
        await self._conn.requestBusName(NAME)
        self._unsubscribe.append(self._bus.subscribe(obj.job_changed, local_only=True))
        if self._inhibit is not None:
            self._inhibitor = Inhibitor(self._conn, lambda: self._manager.status()["running_jobs"], **self._inhibit)
            self._unsubscribe.append(self._bus.subscribe(self._inhibitor.on_event, local_only=True))
            self._inhibitor.jobs_running()
        self.log.info("D-Bus: {name} on the {bus} bus", name=NAME, bus=self._address)

    def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        if self._inhibitor is not None:
            self._inhibitor.release()
        if self._conn is not None:
            self._conn.disconnect()
            self._conn = None
