"""Builds the daemon's object graph from a Config. No I/O happens here."""

from __future__ import annotations

import os

from twisted.internet.endpoints import serverFromString

from .api.jobs import JobsAPI
from .api.schedules import SchedulesAPI
from .api.site import APISite, build_resource
from .api.status import StatusAPI
from .api.vms import VmsAPI
from .config import Config, unsupported_settings
from .events import EventBus
from .jobs.definition import SubmitContext
from .jobs.manager import JobManager
from .logs import build_observer
from .pipeline import build_pipeline
from .schedules.scheduler import Scheduler
from .service import HyperSDKService
from .store.runner import ThreadRunner
from .store.schedules import SQLiteScheduleStore
from .store.sqlite import SQLiteJobStore
from .vsphere.client import VSphere


def build_service(config: Config, reactor, *, listen: str, cwd: str) -> HyperSDKService:
    db_path = os.path.join(cwd, config.database.path)
    store_runner = ThreadRunner(reactor, name="sqlite")
    store = SQLiteJobStore(db_path, store_runner, key_path=db_path + ".key")
    bus = EventBus()
    vsphere = VSphere(reactor, config.pipeline.connect_timeout, named=config.vcenters)
    pipeline = build_pipeline(config, reactor, cwd=cwd, vsphere=vsphere)
    context = SubmitContext(vcenter_names=frozenset(config.vcenters), method_problem=pipeline.method_problem)
    manager = JobManager(store, pipeline, reactor, bus, config.worker_count, context)
    scheduler = Scheduler(SQLiteScheduleStore(store), manager, reactor, bus, vm_finder(vsphere), context)
    root = build_resource(
        StatusAPI(manager, store, reactor, started_at=reactor.seconds()),
        JobsAPI(manager),
        SchedulesAPI(scheduler, context, reactor),
        VmsAPI(vsphere, frozenset(config.vcenters)),
    )
    site = APISite(root, reactor, max_body_bytes=config.limits.max_body_bytes,
                   access_log=config.log.level in ("debug", "info"))
    service = HyperSDKService(
        reactor=reactor,
        endpoint=serverFromString(reactor, listen),
        site=site,
        store=store,
        store_runner=store_runner,
        manager=manager,
        scheduler=scheduler,
        log_observer=build_observer(config.log),
        workers=(vsphere, pipeline),
        notices=unsupported_settings(config),
    )
    return service


def vm_finder(vsphere: VSphere):
    """The VM paths in an inventory folder, for schedules whose vm_path is a glob (templates left out)."""

    async def find(source, folder: str) -> list[str]:
        params = await vsphere.params_for(source)
        return [vm.path for vm in await vsphere.list_vms(params, None, folder) if not vm.template]

    return find
