"""How each source disk is read: by the transfer worker in ranges over HTTPS, or by nbdkit
(its curl plugin for VMDKs qemu-img must parse, or VDDK).

Secrets (the session cookie, the password for VDDK) go into private files in the job's work
directory, never on a command line. The cookie file is replaced whole when the session is renewed,
so a reader never sees half a cookie.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from functools import partial
from typing import Optional

from ..config import Config
from ..vsphere.client import VSphere
from ..vsphere.connection import VCenterParams
from ..vsphere.datastore import datastore_file_url
from ..vsphere.model import VmInfo
from . import commands
from .conversion import ServerArgv
from .disks import DiskSource
from .transfer.engine import StreamSource
from .workfiles import thd_write_private


class DiskReaders:
    def __init__(self, vsphere: VSphere, in_thread, params: VCenterParams, vm: VmInfo, config: Config,
                 method: str, cookie_file: Optional[str], cainfo: Optional[str], pin: Optional[str],
                 vddk_password_file: Optional[str] = None, certificate: bytes = b""):
        self._vsphere = vsphere
        self._thd = in_thread
        self._params = params
        self._vm = vm
        self._config = config
        self._method = method
        self._cookie_file = cookie_file
        self._cainfo = cainfo
        self._pin = pin  # a thumbprint the worker checks itself (curl cannot)
        self._vddk_password_file = vddk_password_file
        self._certificate = certificate

    def in_ranges(self, disk: DiskSource) -> bool:
        """Whether the transfer engine can read this disk: raw data (a flat extent) over /folder."""
        return self._method in ("https", "virt-v2v") and disk.format == "raw"

    def url(self, disk: DiskSource) -> str:
        return file_url(self._params, self._vm, disk.datastore, disk.path)

    def stream(self, disk: DiskSource) -> StreamSource:
        params = self._params
        tls = {"verify": not params.insecure, "cafile": params.ca_file, "pin": params.thumbprint}
        return StreamSource(url=self.url(disk), cookie_file=self._cookie_file, tls=tls, offset=disk.offset,
                            size=disk.size, where=params.where)

    def nbdkit(self, disk: DiskSource) -> ServerArgv:
        """The nbdkit argv builder that serves ``disk`` (qemu-img reads it)."""
        params, config = self._params, self._config
        if self._method == "vddk":
            return partial(commands.nbdkit_vddk, commands.VddkSource(
                libdir=config.vddk.libdir, server=params.host, port=params.port, user=params.username,
                password_file=self._vddk_password_file, thumbprint=sha1_fingerprint(self._certificate),
                vm_moref=self._vm.moref, file=disk.disk.file_name,
            ))
        return partial(commands.nbdkit_curl, commands.CurlSource(
            url=self.url(disk), cookie_file=self._cookie_file, sslverify=not params.insecure, cainfo=self._cainfo,
            offset=disk.offset, size=disk.size if disk.format == "raw" else None,
            timeout=int(config.pipeline.connect_timeout), max_bytes_per_second=config.pipeline.max_bytes_per_second,
        ))

    async def renew_cookie(self) -> None:
        """A fresh login's cookie, for one the datastore refused."""
        await self._write_cookie(await self._vsphere.new_session_cookie(self._params))

    async def refresh_cookie(self) -> None:
        """The session kept alive through a long copy (and its cookie, should it have changed)."""
        await self._write_cookie(await self._vsphere.session_cookie(self._params))

    async def _write_cookie(self, cookie: str) -> None:
        await self._thd(thd_replace_private, self._cookie_file, cookie)


async def disk_readers(vsphere: VSphere, in_thread, *, params: VCenterParams, vm: VmInfo, work_dir: str, method: str,
                       config: Config) -> DiskReaders:
    certificate = await vsphere.server_certificate(params) if params.scheme == "https" else b""
    if method == "vddk":
        password_file = os.path.join(work_dir, "password")
        await in_thread(thd_write_private, password_file, params.password)
        return DiskReaders(vsphere, in_thread, params, vm, config, method, None, None, None, password_file,
                           certificate)
    cookie_file = os.path.join(work_dir, "cookie")
    await in_thread(thd_write_private, cookie_file, await vsphere.session_cookie(params))
    cainfo = params.ca_file
    if params.thumbprint and certificate:
        # curl cannot pin a fingerprint: it trusts the very certificate the pin accepted.
        cainfo = os.path.join(work_dir, "pinned-certificate.pem")
        await in_thread(thd_write_private, cainfo, ssl.DER_cert_to_PEM_cert(certificate))
    return DiskReaders(vsphere, in_thread, params, vm, config, method, cookie_file, cainfo, params.thumbprint)


def thd_replace_private(path: str, text: str) -> None:
    """Write ``text`` beside ``path`` and rename it over: readers see the old file or the new one."""
    thd_write_private(path + ".new", text)
    os.replace(path + ".new", path)


def file_url(params: VCenterParams, vm: VmInfo, datastore: str, path: str) -> str:
    return datastore_file_url(params.scheme, params.host, params.port, vm.datacenter, datastore, path)


def sha1_fingerprint(der: bytes) -> str:
    """``AA:BB:...``: the form VDDK takes a certificate thumbprint in."""
    return ":".join(f"{b:02X}" for b in hashlib.sha1(der).digest())
