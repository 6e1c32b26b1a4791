"""How nbdkit reads each source disk: vCenter's /folder over HTTPS, or VDDK.

Secrets (the session cookie, the password for VDDK) go into private files in
the job's work directory, never on a command line.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from functools import partial
from typing import Callable

from ..config import Config
from ..vsphere.client import VSphere
from ..vsphere.connection import VCenterParams
from ..vsphere.datastore import datastore_file_url
from ..vsphere.model import VmInfo
from . import commands
from .conversion import ServerArgv
from .disks import DiskSource
from .workfiles import thd_write_private

DiskReader = Callable[[DiskSource], ServerArgv]


async def disk_readers(vsphere: VSphere, in_thread, *, params: VCenterParams, vm: VmInfo, work_dir: str, method: str,
                       config: Config) -> DiskReader:
    certificate = await vsphere.server_certificate(params) if params.scheme == "https" else b""
    if method == "vddk":
        password_file = os.path.join(work_dir, "password")
        await in_thread(thd_write_private, password_file, params.password)

        def vddk(disk: DiskSource) -> ServerArgv:
            return partial(commands.nbdkit_vddk, commands.VddkSource(
                libdir=config.vddk.libdir, server=params.host, port=params.port, user=params.username,
                password_file=password_file, thumbprint=sha1_fingerprint(certificate), vm_moref=vm.moref,
                file=disk.disk.file_name,
            ))

        return vddk
    cookie_file = os.path.join(work_dir, "cookie")
    await in_thread(thd_write_private, cookie_file, await vsphere.session_cookie(params))
    cainfo = params.ca_file
    if params.thumbprint and certificate:
        # curl cannot pin a fingerprint: it trusts the very certificate the pin accepted.
        cainfo = os.path.join(work_dir, "pinned-certificate.pem")
        await in_thread(thd_write_private, cainfo, ssl.DER_cert_to_PEM_cert(certificate))

    def https(disk: DiskSource) -> ServerArgv:
        return partial(commands.nbdkit_curl, commands.CurlSource(
            url=file_url(params, vm, disk.datastore, disk.path),
            cookie_file=cookie_file,
            sslverify=not params.insecure,
            cainfo=cainfo,
            offset=disk.offset,
            size=disk.size if disk.format == "raw" else None,
            timeout=int(config.pipeline.connect_timeout),
            max_bytes_per_second=config.pipeline.max_bytes_per_second,
        ))

    return https


def file_url(params: VCenterParams, vm: VmInfo, datastore: str, path: str) -> str:
    return datastore_file_url(params.scheme, params.host, params.port, vm.datacenter, datastore, path)


def sha1_fingerprint(der: bytes) -> str:
    """``AA:BB:...``: the form VDDK takes a certificate thumbprint in."""
    return ":".join(f"{b:02X}" for b in hashlib.sha1(der).digest())
