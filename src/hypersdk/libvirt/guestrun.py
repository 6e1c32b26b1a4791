"""Running a domain to see it boot: an isolated network, the serial console, the guest agent.

Blocking ``thd_*`` functions run in the libvirt thread pool, each briefly; ``GuestRun`` is their
async face for one domain on one host. No thread of the pool waits for the guest: the serial console
is read by libvirt's own event loop (a non-blocking stream with a callback, on a connection kept
open for it), the guest agent is pinged by short calls on a timer, and a shutdown is watched by
short calls too. So a boot check that waits minutes holds no thread, and other jobs' libvirt calls
never queue behind it. The console is read through libvirt's stream API (``virDomainOpenConsole``),
so it works for remote hosts too. The domain is started paused, the console attached, then resumed:
no line of the boot is missed.
"""

from __future__ import annotations

import json
from contextlib import suppress
from typing import Callable, Optional

import libvirt
import libvirt_qemu
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from .host import LibvirtHost, find_domain, mapped_errors

AGENT_TIMEOUT = 2  # seconds a guest-ping may take
AGENT_EVERY = 5.0  # seconds between pings
STOP_POLL = 0.5  # seconds between looks at a domain shutting down
_STREAM_EVENTS = libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP


def thd_create_network(conn: libvirt.virConnect, xml: str) -> str:
    with mapped_errors(conn.getURI(), "creating an isolated network"):
        return conn.networkCreateXML(xml).name()


def thd_destroy_network(conn: libvirt.virConnect, name: str) -> bool:
    try:
        network = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        return False
    with mapped_errors(conn.getURI(), f"removing network {name!r}"):
        network.destroy()
    return True


def thd_start_paused(conn: libvirt.virConnect, xml: str) -> str:
    """Start ``xml`` paused. An inactive persistent domain with its name and uuid runs with ``xml`` as its
    live configuration; its persistent configuration stays as it is."""
    with mapped_errors(conn.getURI(), "starting the domain for its boot check"):
        return conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED).name()


class Console:
    """A domain's serial console, read by libvirt's event loop on a connection of its own."""

    def __init__(self, conn: libvirt.virConnect, stream: libvirt.virStream):
        self.conn = conn
        self.stream = stream


def thd_open_console(opener: Callable[[str], libvirt.virConnect], uri: str, name: str,
                     on_output: Callable[[bytes], None], on_end: Callable[[str], None]) -> Console:
    """Attach to ``name``'s console, then resume it. ``on_output(data)`` and, once, ``on_end(why)`` are
    called from libvirt's event loop thread."""
    conn = opener(uri)
    try:
        dom = find_domain(conn, name)
        if dom is None:
            raise libvirt.libvirtError(f"domain {name!r} is gone")
        stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        ended = []

        def end(why: str) -> None:
            if not ended:
                ended.append(why)
                on_end(why)

        def readable(_stream: libvirt.virStream, events: int, _opaque: object) -> None:
            while not ended:
                try:
                    data = stream.recv(65536)
                except libvirt.libvirtError:
                    end("the console closed")
                    return
                if data == -2:  # nothing more for now
                    if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
                        end("the console closed")
                    return
                if not data:
                    end("the domain stopped")
                    return
                on_output(data)

        with mapped_errors(uri, f"opening the console of {name!r}"):
            dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            stream.eventAddCallback(_STREAM_EVENTS, readable, None)
            dom.resume()
        return Console(conn, stream)
    except BaseException:
        with suppress(libvirt.libvirtError):
            conn.close()
        raise


def thd_close_console(console: Console) -> None:
    for step in (console.stream.eventRemoveCallback, console.stream.abort, console.conn.close):
        with suppress(libvirt.libvirtError):
            step()


def thd_agent_answers(conn: libvirt.virConnect, name: str) -> bool:
    dom = find_domain(conn, name)
    if dom is None:
        return False
    try:
        reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps({"execute": "guest-ping"}), AGENT_TIMEOUT, 0)
    except libvirt.libvirtError:
        return False
    return "return" in json.loads(reply or "{}")


def thd_plug(conn: libvirt.virConnect, name: str, interfaces: list[str]) -> None:
    """Move the running domain's NICs (matched by MAC) to the networks ``interfaces`` name."""
    with mapped_errors(conn.getURI(), f"connecting the NICs of {name!r}"):
        dom = conn.lookupByName(name)
        for xml in interfaces:
            dom.updateDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)


def thd_is_active(conn: libvirt.virConnect, name: str) -> bool:
    dom = find_domain(conn, name)
    return dom is not None and bool(dom.isActive())


def thd_shutdown(conn: libvirt.virConnect, name: str) -> bool:
    """Ask the guest to shut down (ACPI); whether it was running."""
    dom = find_domain(conn, name)
    if dom is None or not dom.isActive():
        return False
    with suppress(libvirt.libvirtError):
        dom.shutdown()
    return True


def thd_power_off(conn: libvirt.virConnect, name: str) -> bool:
    dom = find_domain(conn, name)
    if dom is None or not dom.isActive():
        return False
    with mapped_errors(conn.getURI(), f"powering off {name!r}"):
        dom.destroy()
    return True


class GuestRun:
    """The boot check's calls for one domain on one host (each its own connection)."""

    log = Logger()

    def __init__(self, host: LibvirtHost, name: str):
        self._host = host
        self.name = name

    async def create_network(self, xml: str) -> str:
        return await self._host.call("creating an isolated network", thd_create_network, xml)

    async def destroy_network(self, name: str) -> bool:
        return await self._host.call(f"removing network {name!r}", thd_destroy_network, name)

    async def start_paused(self, xml: str) -> str:
        return await self._host.call(f"starting domain {self.name!r}", thd_start_paused, xml)

    async def watch(self, on_output: Callable[[bytes], None], on_agent: Optional[Callable[[], None]]) -> "Watching":
        """Read the console (and ping the agent) until ``stop()`` or the domain stops; resumes the domain."""
        reactor = self._host.reactor
        done: Deferred = Deferred()

        def end(why: str) -> None:
            if not done.called:
                done.callback(why)

        console = await self._host.call_in_pool(
            f"opening the console of {self.name!r}", thd_open_console, self._host.opener, self._host.uri, self.name,
            lambda data: reactor.callFromThread(on_output, data), lambda why: reactor.callFromThread(end, why))
        pings = None
        if on_agent is not None:
            pings = LoopingCall(self._ping, on_agent)
            pings.clock = reactor
            pings.start(AGENT_EVERY, now=False).addErrback(lambda f: self.log.failure("pinging the guest agent", f))
        return Watching(self._host, console, done, pings)

    async def _ping(self, on_agent: Callable[[], None]) -> None:
        try:
            answered = await self._host.call(f"pinging the guest agent of {self.name!r}", thd_agent_answers, self.name)
        except Exception as e:  # (a slow answer is no answer: the next ping asks again)
            self.log.debug("guest agent of {name}: {error}", name=self.name, error=str(e))
            return
        if answered:
            on_agent()

    async def plug(self, interfaces: list[str]) -> None:
        await self._host.call(f"connecting the NICs of {self.name!r}", thd_plug, self.name, interfaces)

    async def stop(self, grace: float) -> str:
        """Shut down, powering off after ``grace`` seconds; watched by short calls, one at a time."""
        if not await self._host.call(f"shutting down {self.name!r}", thd_shutdown, self.name):
            return "not running"
        deadline = self._host.reactor.seconds() + grace
        while self._host.reactor.seconds() < deadline:
            await deferLater(self._host.reactor, STOP_POLL, lambda: None)
            if not await self._host.call(f"looking at {self.name!r}", thd_is_active, self.name):
                return "shut down"
        await self._host.call(f"powering off {self.name!r}", thd_power_off, self.name)
        return "powered off"


class Watching:
    def __init__(self, host: LibvirtHost, console: Console, done: Deferred, pings: Optional[LoopingCall]):
        self.done = done  # fires with why the watch ended
        self._host = host
        self._console = console
        self._pings = pings

    async def stop(self) -> None:
        """Stop reading and pinging; let go of the console."""
        if self._pings is not None and self._pings.running:
            self._pings.stop()
        await self._host.call_in_pool("closing the console", thd_close_console, self._console)
        if not self.done.called:
            self.done.callback("stopped")
