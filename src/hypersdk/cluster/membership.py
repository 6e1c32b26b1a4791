"""This node's membership of the cluster: its name, its heartbeat, and the takeover of lost nodes.

Every ``heartbeat_interval`` the node renews its lease, learns which of its running jobs another
node has taken over (they are stopped here, keeping what they wrote), settles the jobs of nodes
whose lease expired, and refreshes the job counts and the node list that ``/status`` shows. Each
renewal that succeeds is reported to the fence, which stops this node's copies when renewals stop
succeeding (see fence.py).
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..store.nodes import NodeStore
from ..cancel import within
from .fence import Fence
from .outage import OnceLogged


STOP_SECONDS = 3.0  # how long stopping waits for the database to record that this node left


class Membership:
    log = Logger()

    def __init__(self, nodes: NodeStore, manager, clock, *, heartbeat_interval: float, lease_seconds: float,
                 resumable_stages=(), webhooks=None, scheduler=None, fence: Optional[Fence] = None,
                 leftovers=None):
        self._nodes = nodes
        self.fence = fence or Fence(clock, lease_seconds, nodes.confirm_progress)
        self._manager = manager
        self._webhooks = webhooks  # sends the pending deliveries it adopts from lost nodes
        self._scheduler = scheduler  # follows the schedule runs it adopts
        self._leftovers = leftovers  # cleans what the failed jobs of a lost node made (jobs/leftovers.py)
        self._clock = clock
        self._interval = heartbeat_interval
        self._lease = lease_seconds
        self._resumable = resumable_stages
        self._loop: Optional[LoopingCall] = None
        self._beating: Optional[Deferred] = None
        self._heartbeats = OnceLogged(self.log, "heartbeat: {error}", "heartbeats reach the database again")
        self.known: list = []  # [(Node, running_jobs)] as of the last heartbeat
        # Since when this node's heartbeats reach the database without a break: only after a whole
        # lease of them does it judge the others (after an outage, every node's heartbeat looks old).
        self._connected_since: Optional[float] = None
        self.name = nodes.me.name

    async def start(self) -> None:
        """Take this node's name (refused while another live daemon holds it)."""
        sent = self._clock.seconds()
        await self._nodes.register(self._lease)
        self.fence.renewed(sent)
        self._connected_since = self._clock.seconds()
        self.known = await self._nodes.nodes()
        self._loop = LoopingCall(self._beat)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=False).addErrback(
            lambda f: self.log.failure("the heartbeat loop stopped", f))

    def _beat(self) -> Optional[Deferred]:
        if self._beating is not None:  # the last one still waits for the database
            return None
        self._beating = Deferred.fromCoroutine(self.beat())
        self._beating.addCallbacks(self._heartbeats.ok, self._heartbeats.failed)
        self._beating.addBoth(lambda _: setattr(self, "_beating", None))
        return None

    async def beat(self) -> None:
        now = self._clock.seconds()
        try:
            renewed = await self._nodes.heartbeat()
        except Exception:
            self._connected_since = None
            raise
        if self._connected_since is None:
            self._connected_since = now
        if renewed:
            self.fence.renewed(now)
        else:
            self.log.error("another daemon has taken node_name {name}: this one stops taking jobs", name=self.name)
            self._manager.pause("another daemon has taken this node's name")
            self.fence.revoke(f"another daemon has taken node_name {self.name}")
        running = self._manager.running_ids()
        if running:
            mine = await self._nodes.still_mine(running)
            lost = [job_id for job_id in running if job_id not in mine]
            if lost:
                self._manager.lose(lost)
        await self._manager.requeue_orphans()
        if now - self._connected_since >= self._lease:
            await self._take_over()
        await self.refresh()

    async def _take_over(self) -> None:
        settled, adopted = await self._nodes.take_over(self._lease, self._resumable)
        if settled:
            self._manager.took_over(settled)
            failed = [job.id for job, requeued in settled if not requeued]
            if failed and self._leftovers is not None:  # (a snapshot, a switched-off source, a domain booting)
                await self._leftovers.clean_taken_over(failed)
        if adopted:
            self.log.info("adopted {count} webhook deliveries and schedule runs of a lost node", count=adopted)
            if self._webhooks is not None:
                await self._webhooks.resume_pending()
            if self._scheduler is not None:
                await self._scheduler.resume_open_runs()

    async def refresh(self) -> None:
        """Read the cluster's job counts and nodes again (after another node moved jobs)."""
        await self._manager.refresh_counts()
        self.known = await self._nodes.nodes()

    async def stop(self, seconds: float = STOP_SECONDS) -> None:
        """Stop beating and mark this node stopped; a database that does not answer within ``seconds``
        is not waited for (the others then judge this node by its lease)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.fence.stop()
        outcome: list = []  # (a result or a Failure, once the database answers)
        leaving = Deferred.fromCoroutine(self._leave()).addBoth(outcome.append)
        await within(self._clock, leaving, seconds)
        if not outcome or isinstance(outcome[0], Failure):
            error = outcome[0].getErrorMessage() if outcome else f"the database did not answer within {seconds:g} s"
            self.log.warn("could not mark node {name} stopped: {error}", name=self.name, error=error)

    async def _leave(self) -> None:
        if self._beating is not None:  # (its outcome is the heartbeat loop's to log: it never fails)
            await self._beating
        await self._nodes.leave()
