"""What a job makes outside the database, and how each thing is removed again.

Every file, volume, domain and network a job makes is recorded in the store *before* it is made
(``Leftovers.made``), so that whatever happens next (a failure, a cancel, a SIGKILL) it can be found
and removed: by the job's own clean-up, or at the daemon's next start. What a job keeps on purpose
(a copy to resume, a domain to look at) is listed in its result until it is discarded or swept.
"""

from __future__ import annotations

import os
from typing import Awaitable, Callable, Optional

from attrs import asdict, frozen
from twisted.logger import Logger

from ..libvirt.guestrun import GuestRun
from ..libvirt.host import LibvirtHost

FILE, VOLUME, DOMAIN, NETWORK = "file", "volume", "domain", "network"
SNAPSHOT, SOURCE_OFF = "snapshot", "source_off"  # on the source's vCenter: a warm pass's snapshot, a switched-off VM
ON_VCENTER = (SNAPSHOT, SOURCE_OFF)


@frozen
class Leftover:
    kind: str
    path: str = ""  # a file; a snapshot's VM (its inventory path)
    uri: str = ""  # where a volume, domain or network lives (libvirt); a snapshot's vCenter
    pool: str = ""
    name: str = ""

    @classmethod
    def file(cls, path: str) -> "Leftover":
        return cls(FILE, path=path)

    @classmethod
    def volume(cls, uri: str, pool: str, name: str) -> "Leftover":
        return cls(VOLUME, uri=uri, pool=pool, name=name)

    @classmethod
    def domain(cls, uri: str, name: str) -> "Leftover":
        return cls(DOMAIN, uri=uri, name=name)

    @classmethod
    def network(cls, uri: str, name: str) -> "Leftover":
        return cls(NETWORK, uri=uri, name=name)

    @classmethod
    def snapshot(cls, vcenter: str, vm_path: str, name: str) -> "Leftover":
        return cls(SNAPSHOT, uri=vcenter, path=vm_path, name=name)

    @classmethod
    def source_off(cls, vcenter: str, vm_path: str) -> "Leftover":
        """A source VM the cutover switches off: powered on again unless the job completes."""
        return cls(SOURCE_OFF, uri=vcenter, path=vm_path)

    @classmethod
    def from_json(cls, data: dict) -> "Leftover":
        return cls(**{k: v for k, v in data.items() if k in ("kind", "path", "uri", "pool", "name")})

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v}

    def describe(self) -> str:
        if self.kind == FILE:
            return f"file {self.path}"
        if self.kind == VOLUME:
            return f"volume {self.name} of pool {self.pool} on {self.uri}"
        if self.kind == SNAPSHOT:
            return f"snapshot {self.name} of VM {self.path} on vCenter {self.uri}"
        if self.kind == SOURCE_OFF:
            return f"source VM {self.path} switched off on vCenter {self.uri} (powered on again)"
        return f"{self.kind} {self.name} on {self.uri}"


class Remover:
    """Removes leftovers: files here, snapshots through vCenter, the rest through libvirt (a domain is
    stopped first)."""

    log = Logger()

    def __init__(self, reactor, threads, in_thread, timeout: float,
                 on_vcenter: Optional[Callable[[str, "Leftover"], Awaitable[bool]]] = None):
        self._reactor = reactor
        self._threads = threads  # the libvirt pool
        self._thd = in_thread
        self._timeout = timeout
        self._on_vcenter = on_vcenter  # (job id, leftover): undone with the job's own credentials

    def _host(self, uri: str) -> LibvirtHost:
        return LibvirtHost(uri, self._reactor, self._threads, timeout=self._timeout)

    async def remove(self, leftover: Leftover, job_id: str) -> bool:
        """Remove it; False if it was not there (any more)."""
        if leftover.kind == FILE:
            return await self._thd(_thd_remove_file, leftover.path)
        if leftover.kind in ON_VCENTER:
            if self._on_vcenter is None:
                raise ValueError(f"{leftover.describe()}: vCenter cannot be reached from here")
            return await self._on_vcenter(job_id, leftover)
        host = self._host(leftover.uri)
        if leftover.kind == VOLUME:
            return await host.delete_volume(leftover.pool, leftover.name)
        if leftover.kind == DOMAIN:
            return await host.undefine_domain(leftover.name)  # (stopped first when it runs)
        if leftover.kind == NETWORK:
            return await GuestRun(host, leftover.name).destroy_network(leftover.name)
        raise ValueError(f"unknown leftover kind {leftover.kind!r}")


def _thd_remove_file(path: str) -> bool:
    try:
        os.remove(path)
    except FileNotFoundError:
        return False
    return True


class JobLeftovers:
    """One job's leftovers, as its pipeline records and reads them (``store``: a LeftoverStore)."""

    def __init__(self, store, job_id: str, seconds):
        self._store = store
        self._job_id = job_id
        self._seconds = seconds

    def record(self, leftover: Leftover):
        return self._store.record(self._job_id, leftover.to_json(), self._seconds())

    def forget(self, leftover: Optional[Leftover] = None):
        """One of them (removed, or never made after all), or all (they are the job's result)."""
        return self._store.forget(self._job_id, None if leftover is None else leftover.to_json())

    async def made(self, kept_too: bool = False) -> list[Leftover]:
        return [Leftover.from_json(row) for row in await self._store.of(self._job_id, kept_too)]

    async def keep(self) -> list[dict]:
        """All of them are kept on purpose: how the job's result lists them."""
        return await self._store.keep(self._job_id)
