"""HyperSDKService: wiring only, with a fixed start and stop order.

Start: store thread → schema → this node's name and heartbeat → worker pools → webhook senders → restart
recovery and queue → clean-up of what interrupted jobs left → schedules (catch-up runs) → HTTP listener. Stop (SIGTERM):
stop listening → stop the schedule timer → interrupt running jobs and wait for
their clean-up → leave the nodes → webhook senders (pending deliveries stay stored) → worker
pools → close the store → join its thread.
"""

from __future__ import annotations

import os

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized


class HyperSDKService(MultiService):
    log = Logger()

    def __init__(self, *, reactor, endpoint, site, store, store_runner, manager, membership=None, leftovers=None,
                 scheduler=None, webhooks=None, log_observer=None, workers=(), feed=None, metrics_listener=None,
                 notifier=None, dbus=None):
        super().__init__()
        self._reactor = reactor
        self._endpoint = endpoint
        self._site = site
        self._store = store
        self._store_runner = store_runner
        self._manager = manager
        self._leftovers = leftovers  # what ended jobs left: cleaned after a crash, swept when kept too long
        self._membership = membership  # this node's name and heartbeat among the nodes sharing the database
        self._scheduler = scheduler
        self._webhooks = webhooks
        self._log_observer = log_observer
        self._workers = workers  # thread pools etc. with start() and stop()
        self._feed = feed  # the WebSocket feed: started and stopped here (twisted.web does not)
        self._metrics_listener = metrics_listener  # (endpoint, site) when metrics have a port of their own
        self._metrics_port = None
        self._dbus = dbus  # org.hypersdk.Daemon1 and the logind lock, when configured
        self._notifier = notifier  # systemd: READY=1 once listening, STOPPING=1, STATUS=, WATCHDOG=1
        self._port = None
        self.ready: Deferred = Deferred()

    def setServiceParent(self, parent):
        # twistd builds the Application around the service a plugin returns and
        # then asks that Application for its log observer: this is where a
        # plugin can make ``log.format`` and ``log.level`` take effect.
        if self._log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self._log_observer)
        super().setServiceParent(parent)

    def startService(self):
        super().startService()
        Deferred.fromCoroutine(self._start()).addCallbacks(self.ready.callback, self._start_failed)

    async def _start(self):
        self._store_runner.start()
        await self._store.open()
        if self._membership is not None:  # before this node touches its jobs of an earlier run
            await self._membership.start()
        for worker in self._workers:
            worker.start()
        if self._webhooks is not None:  # before any job or schedule event is published
            await self._webhooks.start()
        await self._manager.start()
        if self._leftovers is not None:  # (after the manager settled the jobs a crash interrupted)
            await self._leftovers.start()
        if self._scheduler is not None:
            await self._scheduler.start()
        if self._feed is not None:
            self._feed.start()
        if self._dbus is not None:
            await self._dbus.start()
        if self._metrics_listener is not None:
            endpoint, site = self._metrics_listener
            self._metrics_port = await endpoint.listen(site)
            metrics_address = self._metrics_port.getHost()
            self.log.info("metrics on {host}:{port}/metrics", host=getattr(metrics_address, "host", ""),
                          port=getattr(metrics_address, "port", ""))
        self._port = await self._endpoint.listen(self._site)
        address = self._port.getHost()
        self.log.info("hypersdk listening on {host}:{port}", host=getattr(address, "host", ""), port=getattr(address, "port", ""))
        if self._notifier is not None:
            self._notifier.ready()
        return self._port

    def _start_failed(self, failure):
        self.log.critical("hypersdk could not start: {error}", error=_describe(failure.value))
        # twistd has no exit status of its own for this: leave with 1 once stopped.
        self._reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        self._reactor.stop()

    def stopService(self):
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self):
        self.log.info("hypersdk stopping")
        if self._notifier is not None:
            self._notifier.stopping()
        if self._port is not None:
            await self._port.stopListening()
        if self._metrics_port is not None:
            await self._metrics_port.stopListening()
        if self._feed is not None:
            self._feed.stop()
        if self._dbus is not None:
            self._dbus.stop()
        if self._scheduler is not None:
            self._scheduler.stop()
        if self._leftovers is not None:
            self._leftovers.stop()
        if self._membership is not None:  # (a job waiting for a lapsed lease to clean up waits no more)
            self._membership.fence.stopping()
        await self._manager.stop()
        if self._membership is not None:
            await self._membership.stop()
        if self._webhooks is not None:  # after the last job events: they are stored, sent after restart
            self._webhooks.stop()
        for worker in reversed(self._workers):
            await maybeDeferred(worker.stop)  # the vSphere layer logs its sessions out first
        try:
            await self._store.close()
        except Exception as e:  # the store may never have opened
            self.log.warn("closing the job store: {error}", error=_describe(e))
        self._store_runner.stop()
        self.log.info("hypersdk stopped")


def _describe(error: BaseException) -> str:
    return getattr(error, "message", None) or str(error) or type(error).__name__
