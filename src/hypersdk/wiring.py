"""Builds the daemon's object graph from a Config. No I/O happens here."""

from __future__ import annotations

import os

from twisted.internet.endpoints import serverFromString

from .api.jobs import JobsAPI
from .api.site import APISite, build_resource
from .api.status import StatusAPI
from .api.vms import VmsAPI
from .config import Config, unsupported_settings
from .events import EventBus
from .jobs.definition import SubmitContext
from .jobs.manager import JobManager
from .logs import build_observer
from .pipeline import build_pipeline
from .service import HyperSDKService
from .store.runner import ThreadRunner
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
    root = build_resource(
        StatusAPI(manager, store, reactor, started_at=reactor.seconds()),
        JobsAPI(manager),
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
        log_observer=build_observer(config.log),
        workers=(vsphere, pipeline),
        notices=unsupported_settings(config),
    )
    return service
