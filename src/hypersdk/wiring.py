"""Builds the daemon's object graph from a Config. No I/O happens here."""

from __future__ import annotations

import hashlib
import os
import socket
from typing import TYPE_CHECKING, Optional

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString

from . import __version__
from .api.guard import ApiToken, Guard
from .api.jobs import JobsAPI
from .api.metrics import MetricsArea, MetricsOnlyResource
from .api.openapi import OpenAPIArea
from .api.web import WebArea
from .api.schedules import SchedulesAPI
from .api.site import APISite, build_resource, route_templates
from .api.status import StatusAPI
from .api.vms import VmsAPI
from .api.webhooks import WebhooksAPI
from .api.ws import INITIAL_JOBS, LiveArea, LiveFeed
from .config import Config, metrics_listen, read_secret, read_token
from . import events
from .events import EventBus
from .jobs.definition import SubmitContext
from .cluster.events import EventBridge
from .cluster.fence import Fence
from .cluster.membership import Membership
from .jobs.leftovers import JobLeftovers
from .jobs.manager import RESUMABLE_STAGES, JobManager
from .logs import build_observer
from .metrics.registry import Metrics
from .notify import Notifier
from .pipeline.migration import MigrationPipeline
from .pipeline.appliance import appliance_probe
from .schedules.scheduler import Scheduler
from .service import HyperSDKService
from .store.engine import SQLiteEngine
from .store.jobs import JobStore, this_node
from .store.nodes import NodeStore
from .store.postgres import PostgresEngine
from .store.runner import ThreadRunner
from .store.schedules import ScheduleStore
from .store.webhooks import WebhookStore
from .vsphere.client import VSphere
from .webhooks.connect import resolver, webhook_client
from .webhooks.delivery import WebhookService
from .webhooks.model import CONFIG, Webhook

if TYPE_CHECKING:
    from .bus.service import DBusService


def build_service(config: Config, reactor, *, listen: str, cwd: str) -> HyperSDKService:
    engine, key_path = store_engine(config, reactor, cwd)
    store = JobStore(engine, key_path=key_path, node=this_node(config.node_name or socket.gethostname()))
    bus = EventBus()
    bridge = event_bridge(engine, reactor, bus, store)  # None: one node (SQLite)
    announce = bridge.announce if bridge is not None else (lambda topic: None)
    vsphere = VSphere(reactor, config.pipeline.connect_timeout, named=config.vcenters)
    nodes = NodeStore(store)
    fence = Fence(reactor, config.cluster.lease, store.confirm_progress)  # stops this node's copies when its lease lapses
    # KVM or TCG for libguestfs: found out once, in the background; jobs that need it wait for the answer
    appliance = appliance_probe(reactor, work_root=os.path.join(cwd, config.pipeline.work_dir),
                                forced=config.pipeline.libguestfs_force_tcg,
                                kill_grace=config.pipeline.process_kill_grace, vddk_libdir=config.vddk.libdir)
    pipeline = MigrationPipeline(reactor, config, cwd, vsphere, store, confirm=fence.confirm, appliance=appliance)
    context = SubmitContext(vcenter_urls={name: vc.url for name, vc in config.vcenters.items()},
                            method_problem=pipeline.method_problem, inspection_problem=pipeline.inspection_problem)
    manager = JobManager(store, pipeline, reactor, bus, config.worker_count, context,
                         jobs_per_vcenter=config.limits.jobs_per_vcenter,
                         cancel_elsewhere=bridge.ask_cancel if bridge is not None else None)
    client = webhook_client(reactor, resolver(reactor),
                            deny_private_networks=config.webhook_settings.deny_private_networks)
    webhooks = WebhookService(
        WebhookStore(store, keep=config.webhook_settings.keep_deliveries, on_change=lambda: announce("webhooks")),
        client, reactor, bus,
        config_hooks=config_webhooks(config), queue_size=config.webhook_settings.queue_size, version=__version__,
    )
    scheduler = Scheduler(ScheduleStore(store, on_change=lambda: announce("schedules")), manager, reactor, bus,
                          vm_finder(vsphere), context)
    fence.follow(manager.fence, manager.unfence)
    leftovers = JobLeftovers(store, pipeline, reactor, config.pipeline.keep_resumable_for)
    membership = Membership(nodes, manager, reactor, heartbeat_interval=config.cluster.heartbeat_interval,
                            lease_seconds=config.cluster.lease, resumable_stages=RESUMABLE_STAGES, webhooks=webhooks,
                            scheduler=scheduler, fence=fence, leftovers=leftovers)
    if bridge is not None:
        bridge.follow(recount=membership.refresh, reloads={"schedules": scheduler.reload, "webhooks": webhooks.reload},
                      cancel=manager.cancel_here)
    status = StatusAPI(manager, store, reactor, started_at=reactor.seconds(), membership=membership,
                       appliance=appliance)
    feed = LiveFeed(clock=reactor, bus=bus, status=status.status_body, newest_jobs=newest_jobs(manager),
                    max_clients=config.limits.websocket_clients,
                    held_bytes_limit=config.limits.websocket_send_buffer_bytes,
                    ping_every=config.limits.websocket_ping_interval, ping_timeout=config.limits.websocket_ping_timeout)
    metrics = Metrics(CollectorRegistry(), __version__) if config.metrics.enabled else None
    metrics_endpoint = metrics_listen(config, listen)
    areas = [JobsAPI(manager, leftovers), SchedulesAPI(scheduler, context, reactor), WebhooksAPI(webhooks, reactor),
             VmsAPI(vsphere, context), LiveArea(feed), OpenAPIArea(__version__), WebArea()]
    if metrics is not None and metrics_endpoint is None:
        areas.append(MetricsArea(metrics.registry))
    root = build_resource(status, *areas)
    metrics_listener = None
    on_request = None
    if metrics is not None:
        bus.subscribe(metrics.on_event, local_only=True)  # per node; the job counts are the cluster's
        metrics.watch(job_counts=manager.counts, workers_active=lambda: manager.status()["active_workers"],
                      websocket_clients=lambda: len(feed.clients), webhook_counts=webhooks.counts,
                      schedule_stats=scheduler.stats)
        on_request = request_observer(metrics, route_templates(root))
    tokens = [ApiToken(t.name, read_token(t), t.role) for t in config.auth.tokens]
    on_denied = metrics.count_denied if metrics is not None else lambda reason: None
    guard = Guard(tokens, reactor, requests_per_second=config.limits.requests_per_second, burst=config.limits.burst,
                  on_denied=on_denied, loopback_hosts_only=not config.auth.tokens and not config.auth.allow_anonymous)
    if metrics is not None and metrics_endpoint is not None:
        open_metrics = config.metrics.allow_anonymous
        metrics_guard = Guard([] if open_metrics else tokens, reactor, on_denied=on_denied,
                              loopback_hosts_only=not tokens and not open_metrics)
        metrics_site = APISite(MetricsOnlyResource(metrics.registry), reactor,
                               max_body_bytes=config.limits.max_body_bytes, access_log=False, guard=metrics_guard)
        metrics_listener = (serverFromString(reactor, metrics_endpoint), metrics_site)
    site = APISite(root, reactor, max_body_bytes=config.limits.max_body_bytes,
                   access_log=config.log.level in ("debug", "info"), on_request=on_request, guard=guard)
    notifier = Notifier(reactor, status=lambda: status_line(manager))
    bus.subscribe(lambda event: event.type in JOB_STATE_CHANGES and notifier.status_changed())
    service = HyperSDKService(
        reactor=reactor,
        endpoint=serverFromString(reactor, listen),
        site=site,
        store=store,
        store_runner=engine,
        membership=membership,
        manager=manager,
        leftovers=leftovers,
        scheduler=scheduler,
        webhooks=webhooks,
        log_observer=build_observer(config.log),
        workers=(vsphere, appliance, pipeline, *([bridge] if bridge is not None else [])),
        feed=feed,
        metrics_listener=metrics_listener,
        notifier=notifier,
        dbus=dbus_service(config, reactor, bus, manager, status.status_body),
    )
    return service


def store_engine(config: Config, reactor, cwd: str):
    """(the database engine, the secrets key file): PostgreSQL when database.url says so, else SQLite."""
    database = config.database
    if database.url is not None:
        password = read_secret(None, database.password_file) if database.password_file else None
        runner = ThreadRunner(reactor, name="postgresql", threads=database.connections)
        engine = PostgresEngine(database.url, runner, password=password, connections=database.connections,
                                clock=reactor)
        return engine, os.path.join(cwd, database.key_file)
    path = os.path.join(cwd, database.path)
    return SQLiteEngine(path, ThreadRunner(reactor, name="sqlite")), path + ".key"


def event_bridge(engine, reactor, bus: EventBus, store: JobStore) -> Optional[EventBridge]:
    """With PostgreSQL, the events of every node on every node's bus (None with SQLite: one node)."""
    if engine.dialect != "postgresql":
        return None
    return EventBridge(bus, engine.channel(reactor, EVENTS_CHANNEL), store.node, reactor, read_job=store.get)


def vm_finder(vsphere: VSphere):
    """The VM paths in an inventory folder, for schedules whose vm_path is a glob (templates left out)."""

    async def find(source, folder: str) -> list[str]:
        params = await vsphere.params_for(source)
        return [vm.path for vm in await vsphere.list_vms(params, None, folder) if not vm.template]

    return find


def config_webhooks(config: Config) -> list[Webhook]:
    """The config file's webhooks; each key follows its position and URL, so pending
    deliveries find their webhook again after a restart with the same file."""
    return [
        Webhook(key=f"config-{i}-{hashlib.sha256(w.url.encode()).hexdigest()[:12]}", origin=CONFIG, url=w.url,
                events=w.events, enabled=w.enabled, timeout=w.timeout, retry_count=w.retry_count,
                headers=dict(w.headers), secret=w.secret)
        for i, w in enumerate(config.webhooks)
    ]


def newest_jobs(manager: JobManager):
    """The jobs message a WebSocket client gets on connect: the newest ones."""
    return lambda: Deferred.fromCoroutine(manager.query(None, None, INITIAL_JOBS, 0)).addCallback(lambda found: found[0])


def request_observer(metrics: Metrics, template):
    def observe(request, seconds: float) -> None:
        method = request.method.decode("ascii", "replace")
        metrics.observe_request(method, template(method, request.path.decode("utf-8", "replace")), request.code,
                                seconds)

    return observe


EVENTS_CHANNEL = "hypersdk_events"
JOB_STATE_CHANGES = (events.JOB_SUBMITTED, events.JOB_STARTED, *events.JOB_ENDED)


def status_line(manager: JobManager) -> str:
    """systemd's STATUS=: what `systemctl status` shows."""
    s = manager.status()
    return (f"{s['running_jobs']} running, {s['pending_jobs']} pending, {s['completed_jobs']} completed,"
            f" {s['failed_jobs']} failed")


def dbus_service(config: Config, reactor, bus: EventBus, manager: JobManager, status) -> Optional["DBusService"]:
    if not config.dbus.enabled:
        return None
    from .bus.service import DBusService  # txdbus only when D-Bus is wanted

    inhibit = config.dbus.inhibit
    return DBusService(reactor, bus, manager, status, address=config.dbus.bus,
                       inhibit={"what": inhibit.what, "mode": inhibit.mode} if inhibit.enabled else None)
