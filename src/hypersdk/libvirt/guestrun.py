"""Running a domain to see it boot: an isolated network, the serial console, the guest agent.

Blocking ``thd_*`` functions run in the libvirt thread pool; ``GuestRun`` is
their async face for one domain on one host. The console is read through
libvirt's stream API (``virDomainOpenConsole``), so it works for remote hosts
too. The domain is started paused, the console attached, then resumed: no
line of the boot is missed.
"""

from __future__ import annotations

import json
import time
from contextlib import suppress
from typing import Callable, Optional

import libvirt
import libvirt_qemu
from twisted.internet.defer import Deferred

from hypersdk.cancel import CancelToken

from .host import LibvirtHost, _find_domain, _mapped

POLL_SECONDS = 0.1  # console reads are non-blocking: how long to wait when there is nothing to read
AGENT_TIMEOUT = 2  # seconds a guest-ping may take


def thd_create_network(conn: libvirt.virConnect, xml: str) -> str:
    with _mapped(conn.getURI(), "creating an isolated network"):
        return conn.networkCreateXML(xml).name()


def thd_destroy_network(conn: libvirt.virConnect, name: str) -> bool:
    try:
        network = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        return False
    with _mapped(conn.getURI(), f"removing network {name!r}"):
        network.destroy()
    return True


def thd_start_paused(conn: libvirt.virConnect, xml: str) -> str:
    """Start ``xml`` paused. An inactive persistent domain with its name and uuid runs with ``xml`` as its
    live configuration; its persistent configuration stays as it is."""
    with _mapped(conn.getURI(), "starting the domain for its boot check"):
        return conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED).name()


def thd_watch(conn: libvirt.virConnect, name: str, on_output: Callable[[bytes], None], token: CancelToken,
              on_agent: Optional[Callable[[], None]] = None, agent_every: float = 5.0) -> str:
    """Resume ``name`` and pass its console output to ``on_output`` until ``token`` is cancelled or the
    domain stops; ``on_agent()`` when its guest agent answers a ping. Returns why it ended."""
    uri = conn.getURI()
    dom = _find_domain(conn, name)
    if dom is None:
        return "the domain is gone"
    stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
    try:
        with _mapped(uri, f"opening the console of {name!r}"):
            dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            dom.resume()
        next_ping = time.monotonic() + agent_every
        while not token.cancelled:
            try:
                data = stream.recv(65536)
            except libvirt.libvirtError:
                return "the console closed"
            if data == -2:  # nothing to read now
                if on_agent is not None and time.monotonic() >= next_ping:
                    next_ping = time.monotonic() + agent_every
                    if _agent_answers(dom):
                        on_agent()
                with suppress(Exception):
                    token.wait(POLL_SECONDS)
                continue
            if not data:
                return "the domain stopped"
            on_output(data)
        return "cancelled"
    finally:
        with suppress(libvirt.libvirtError):
            stream.abort()


def _agent_answers(dom: libvirt.virDomain) -> bool:
    try:
        reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps({"execute": "guest-ping"}), AGENT_TIMEOUT, 0)
    except libvirt.libvirtError:
        return False
    return "return" in json.loads(reply or "{}")


def thd_plug(conn: libvirt.virConnect, name: str, interfaces: list[str]) -> None:
    """Move the running domain's NICs (matched by MAC) to the networks ``interfaces`` name."""
    with _mapped(conn.getURI(), f"connecting the NICs of {name!r}"):
        dom = conn.lookupByName(name)
        for xml in interfaces:
            dom.updateDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)


def thd_stop(conn: libvirt.virConnect, name: str, grace: float, token: CancelToken) -> str:
    """Shut the guest down (ACPI); power it off if it is still running after ``grace`` seconds."""
    dom = _find_domain(conn, name)
    if dom is None or not dom.isActive():
        return "not running"
    with _mapped(conn.getURI(), f"stopping {name!r}"):
        with suppress(libvirt.libvirtError):
            dom.shutdown()
        deadline = time.monotonic() + grace
        while dom.isActive() and time.monotonic() < deadline and not token.cancelled:
            with suppress(Exception):
                token.wait(0.5)
        if dom.isActive():
            dom.destroy()
            return "powered off"
    return "shut down"


class GuestRun:
    """The boot check's calls for one domain on one host (each its own connection)."""

    def __init__(self, host: LibvirtHost, name: str):
        self._host = host
        self.name = name

    async def create_network(self, xml: str) -> str:
        return await self._host._call("creating an isolated network", thd_create_network, xml)

    async def destroy_network(self, name: str) -> bool:
        return await self._host._call(f"removing network {name!r}", thd_destroy_network, name)

    async def start_paused(self, xml: str) -> str:
        return await self._host._call(f"starting domain {self.name!r}", thd_start_paused, xml)

    def watch(self, on_output: Callable[[bytes], None], on_agent: Optional[Callable[[], None]]) -> "Watching":
        """Read the console (and ping the agent) in a thread until ``stop()`` or the domain stops."""
        token = CancelToken()
        reactor = self._host.reactor

        def relay(data: bytes) -> None:
            reactor.callFromThread(on_output, data)

        def agent() -> None:
            reactor.callFromThread(on_agent)

        done = self._host._run(thd_watch, self.name, relay, token, agent if on_agent is not None else None)
        return Watching(done, token)

    async def plug(self, interfaces: list[str]) -> None:
        await self._host._call(f"connecting the NICs of {self.name!r}", thd_plug, self.name, interfaces)

    async def stop(self, grace: float) -> str:
        """Shut down, powering off after ``grace``; the thread ends by itself within ``grace``."""
        return await self._host._run(thd_stop, self.name, grace, CancelToken())


class Watching:
    def __init__(self, done: Deferred, token: CancelToken):
        self.done = done  # fires with why the watch ended, once its thread has let go of the console
        self._token = token

    def stop(self) -> Deferred:
        self._token.cancel()
        return self.done
