"""The migration pipeline: a vSphere VM becomes a libvirt domain, stage by stage.

connecting → discovery → preparation → conversion → import → verification.
Each stage reports itself; a failure names the stage (the job manager prefixes
it) and the cause. Whatever the job created on the destination is removed when
it fails or is cancelled: the ``undo`` list runs in reverse, each step bounded.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import ssl
import tempfile
from functools import partial
from typing import Any, Callable, Optional

from attrs import define, field
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from ..config import Config
from ..errors import Conflict, HyperSDKError
from ..jobs.definition import JobSpec
from ..jobs.progress import ProgressReporter
from ..threads import RemoteCallPool
from ..libvirt.domain_xml import DomainDisk, build_domain_xml, check_network_mapping, safe_domain_name, virtio_target
from ..libvirt.host import LibvirtHost
from ..vsphere.client import VSphere
from ..vsphere.connection import VCenterParams
from ..vsphere.datastore import datastore_file_url, parse_datastore_path
from ..vsphere.model import VmInfo
from . import commands
from .conversion import ServerArgv, ToolFailed, TransferProgress, convert, transfer_range, verify
from .destination import Destination, PlannedDisk
from .disks import HEAD_BYTES, DiskSource, UnsupportedDisk, resolve_source
from .process import ProcessRunner
from .progress import virt_v2v_event
from .tools import Tools

UNDO_TIMEOUT = 60.0


class SourceNotReady(HyperSDKError):
    code = "source_not_ready"


@define
class _Job:
    spec: JobSpec
    job_id: str
    reporter: ProgressReporter
    work_dir: str
    seconds: Callable[[], float]
    undo: list = field(factory=list)
    stage_seconds: dict = field(factory=dict)
    _stage_started: float = 0.0

    def stage(self, name: str, message: str = "") -> None:
        now = self.seconds()
        if self.reporter.stage not in ("queued", name) and self._stage_started:
            self.stage_seconds[self.reporter.stage] = round(now - self._stage_started, 3)
        self._stage_started = now
        self.reporter.stage_started(name, message)

    def on_failure(self, description: str, action: Callable[[], Any]) -> None:
        self.undo.append((description, action))


class MigrationPipeline:
    log = Logger()

    def __init__(self, reactor, config: Config, cwd: str, vsphere: VSphere, processes: Optional[ProcessRunner] = None):
        self._reactor = reactor
        self._config = config
        self._timeout = config.pipeline.connect_timeout
        self._work_root = os.path.join(cwd, config.pipeline.work_dir)
        self._processes = processes or ProcessRunner(reactor, config.pipeline.process_kill_grace)
        self._vsphere = vsphere
        self._threads = RemoteCallPool(minthreads=0, maxthreads=8, name="libvirt")
        self._tools = Tools(config.vddk.libdir)

    # -- service hooks -------------------------------------------------------------

    def start(self) -> None:
        self._threads.start()

    def stop(self) -> None:
        self._threads.stop()

    def method_problem(self, method: str) -> Optional[str]:
        return self._tools.method_problem(method)

    # -- the job ---------------------------------------------------------------------

    def run(self, spec: JobSpec, job_id: str, reporter: ProgressReporter) -> Deferred:
        return Deferred.fromCoroutine(self._migrate(spec, job_id, reporter))

    async def _migrate(self, spec: JobSpec, job_id: str, reporter: ProgressReporter) -> dict:
        job = _Job(spec, job_id, reporter, os.path.join(self._work_root, job_id), self._reactor.seconds)
        started = self._reactor.seconds()
        await self._thd(_thd_make_private_dir, job.work_dir)
        try:
            result = await self._stages(job)
        except BaseException:  # failure or cancellation: leave nothing behind
            await self._undo(job)
            raise
        finally:
            await self._thd(shutil.rmtree, job.work_dir, True)
        result["duration_seconds"] = round(self._reactor.seconds() - started, 3)
        return result

    async def _stages(self, job: _Job) -> dict:
        spec = job.spec
        params = await self._vsphere.params_for(spec.source)
        job.stage("connecting", f"connecting to vCenter {params.where}")
        await self._vsphere.login(params)

        job.stage("discovery", f"reading {spec.vm_path} from vCenter")
        vm: VmInfo = await self._vsphere.read_vm(params, spec.vm_path)
        _check_source(vm)
        check_network_mapping(vm, spec.options.network_mapping)
        domain = spec.destination.domain_name or safe_domain_name(vm.name)
        host = LibvirtHost(spec.destination.libvirt_uri, self._reactor, self._threads, timeout=self._timeout)
        destination = Destination(spec.destination, domain, host, self._threads, self._reactor, job.work_dir,
                                  job.on_failure)
        sizes = [disk.capacity_bytes for disk in vm.disks]
        await destination.check(sizes)
        sources = [await self._disk_source(job, params, vm, disk) for disk in vm.disks]

        job.stage("preparation", "checking the source VM's power state")
        prepared = await self._prepare_source(job, params, vm)

        job.stage("conversion", f"copying {len(sources)} disk(s), {sum(s.size for s in sources)} bytes")
        reader = await self._disk_readers(job, params, vm)
        guest_conversion = spec.options.conversion_method == "virt-v2v"
        planned = await destination.plan([s.size for s in sources], staged=guest_conversion)
        # virt-v2v changes the guest on purpose: there is nothing to compare with the source after it.
        copy_range, verify_range = transfer_range(spec.options.verify and not guest_conversion)
        progress = TransferProgress(job.reporter, [s.size for s in sources], self._reactor.seconds, copy_range)
        for disk, source in zip(planned, sources):
            progress.start_disk(disk.index)
            await convert(self._processes, reader(source), source, disk.target, progress.disk_percent)
        progress.start_disk(len(planned) - 1)
        progress.disk_percent(100)
        if guest_conversion:
            delivered = await self._convert_guest(job, vm, domain, planned)
        else:
            delivered = [disk.target.path if disk.staged else None for disk in planned]

        job.stage("import", f"defining domain {domain} on {spec.destination.libvirt_uri}")
        for disk, local_file in zip(planned, delivered):
            if local_file is not None:
                await destination.deliver(disk, local_file, _upload_message(job.reporter, disk.index, len(planned)))
        xml = build_domain_xml(vm, name=domain, disks=[d.domain_disk for d in planned],
                               network_mapping=spec.options.network_mapping, domain_type=spec.destination.domain_type,
                               vcenter=params.where)
        domain = await destination.define(xml)

        if verify_range is not None:
            job.stage("verification", "comparing every destination disk with the source")
            checking = TransferProgress(job.reporter, [s.size for s in sources], self._reactor.seconds, verify_range)
            for disk, source in zip(planned, sources):
                checking.start_disk(disk.index)
                await verify(self._processes, reader(source), source, disk.target, checking.disk_percent)
        if spec.destination.start:
            await destination.start(domain)
        job.stage("done", "migration complete")
        return _result(spec, domain, planned, sources, prepared, job.stage_seconds, verified=verify_range is not None)

    # -- stage helpers ---------------------------------------------------------------

    async def _disk_source(self, job: _Job, params: VCenterParams, vm: VmInfo, disk) -> DiskSource:
        datastore, path = parse_datastore_path(disk.file_name)
        if job.spec.options.conversion_method == "vddk":  # VDDK reads any layout itself
            return DiskSource(disk, datastore, path, "raw", size=disk.capacity_bytes)
        url = _url(params, vm, datastore, path)
        head = await self._vsphere.read_range(params, url, 0, HEAD_BYTES)
        return resolve_source(disk, head)

    async def _prepare_source(self, job: _Job, params: VCenterParams, vm: VmInfo) -> dict:
        options, done = job.spec.options, {"source_shut_down": False, "cdroms_removed": 0}
        if vm.power_state == "suspended":
            raise SourceNotReady(f"the source VM {vm.name} is suspended: resume and shut it down first")
        if vm.power_state == "poweredOn":
            if not options.shutdown_source:
                raise SourceNotReady(
                    f"the source VM {vm.name} is powered on: a running disk cannot be copied consistently; "
                    "shut it down first or set options.shutdown_source"
                )
            timeout = self._config.pipeline.shutdown_timeout
            job.reporter.update(message=f"shutting down the guest of {vm.name} (up to {timeout:g} s)")
            await self._vsphere.shutdown_guest(params, job.spec.vm_path)
            await self._vsphere.wait_powered_off(params, job.spec.vm_path, timeout)
            done["source_shut_down"] = True
        if options.remove_cdrom and vm.cdroms:
            done["cdroms_removed"] = await self._vsphere.remove_cdroms(params, job.spec.vm_path)
        return done

    async def _convert_guest(self, job: _Job, vm: VmInfo, domain: str, planned: list[PlannedDisk]) -> list[str]:
        """virt-v2v over the copied disks (virtio drivers, bootloader); returns the converted files."""
        spec = job.spec
        fmt = spec.destination.disk_format
        job.reporter.update(message="converting the guest with virt-v2v")
        source_xml = os.path.join(job.work_dir, "virt-v2v-source.xml")
        output_dir = os.path.join(job.work_dir, "virt-v2v")
        xml = build_domain_xml(vm, name=domain, disks=[DomainDisk.file(d.target.path, fmt, virtio_target(d.index))
                                                       for d in planned],
                               network_mapping=spec.options.network_mapping, domain_type=spec.destination.domain_type)
        await self._thd(_thd_write_private, source_xml, xml)
        await self._thd(_thd_make_private_dir, output_dir)
        cache = os.path.join(self._work_root, ".libguestfs-cache")  # the appliance, built once, kept
        await self._thd(_thd_make_private_dir, cache)
        # virt-v2v makes unix sockets in TMPDIR: it must be short (107 bytes per socket path)
        scratch = await self._thd(tempfile.mkdtemp, "", "hypersdk-v2v-")
        env = {"LIBGUESTFS_BACKEND": "direct", "TMPDIR": scratch, "HOME": job.work_dir, "LIBGUESTFS_CACHEDIR": cache}
        if self._config.pipeline.virt_v2v_force_tcg:
            env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
        messages = V2vMessages(job.reporter)
        try:
            result = await self._processes.run("virt-v2v", commands.virt_v2v(source_xml, output_dir, fmt, domain),
                                               env=env, on_output=messages.line)
        finally:
            await self._thd(shutil.rmtree, scratch, True)
        if not result.ok:
            raise ToolFailed(f"virt-v2v exited {result.exit_code}: {messages.error}" if messages.error
                             else result.describe("virt-v2v"))
        converted = sorted(await self._thd(glob.glob, os.path.join(output_dir, f"{glob.escape(domain)}-sd*")))
        if len(converted) != len(planned):
            raise ToolFailed(f"virt-v2v wrote {len(converted)} disk(s) for {len(planned)}")
        return converted

    async def _disk_readers(self, job: _Job, params: VCenterParams, vm: VmInfo) -> Callable[[DiskSource], ServerArgv]:
        """How nbdkit reads each disk; secrets go into private files, never on a command line."""
        certificate = await self._vsphere.server_certificate(params) if params.scheme == "https" else b""
        if job.spec.options.conversion_method == "vddk":
            password_file = os.path.join(job.work_dir, "password")
            await self._thd(_thd_write_private, password_file, params.password)

            def vddk(disk: DiskSource) -> ServerArgv:
                return partial(commands.nbdkit_vddk, commands.VddkSource(
                    libdir=self._config.vddk.libdir, server=params.host, port=params.port, user=params.username,
                    password_file=password_file, thumbprint=sha1_fingerprint(certificate), vm_moref=vm.moref,
                    file=disk.disk.file_name,
                ))

            return vddk
        cookie_file = os.path.join(job.work_dir, "cookie")
        await self._thd(_thd_write_private, cookie_file, await self._vsphere.session_cookie(params))
        cainfo = params.ca_file
        if params.thumbprint and certificate:
            # curl cannot pin a fingerprint: it trusts the very certificate the pin accepted.
            cainfo = os.path.join(job.work_dir, "pinned-certificate.pem")
            await self._thd(_thd_write_private, cainfo, ssl.DER_cert_to_PEM_cert(certificate))

        def https(disk: DiskSource) -> ServerArgv:
            return partial(commands.nbdkit_curl, commands.CurlSource(
                url=_url(params, vm, disk.datastore, disk.path),
                cookie_file=cookie_file,
                sslverify=not params.insecure,
                cainfo=cainfo,
                offset=disk.offset,
                size=disk.size if disk.format == "raw" else None,
                timeout=int(self._timeout),
                max_bytes_per_second=self._config.pipeline.max_bytes_per_second,
            ))

        return https

    async def _undo(self, job: _Job) -> None:
        for description, action in reversed(job.undo):
            try:
                d = ensureDeferred(action())
                d.addTimeout(UNDO_TIMEOUT, self._reactor)
                await d
                self.log.info("job {job_id}: cleaned up: {what}", job_id=job.job_id, what=description)
            except Exception as e:
                self.log.error("job {job_id}: could not {what}: {error}", job_id=job.job_id, what=description,
                               error=getattr(e, "message", None) or repr(e))

    def _thd(self, fn, *args) -> Deferred:
        return deferToThreadPool(self._reactor, self._threads, fn, *args)


def _check_source(vm: VmInfo) -> None:
    if vm.template:
        raise SourceNotReady(f"{vm.path} is a template, not a VM")
    if not vm.disks:
        raise UnsupportedDisk(f"the VM {vm.name} has no disks")
    if vm.snapshot_count:
        raise UnsupportedDisk(
            f"the VM {vm.name} has {vm.snapshot_count} snapshot(s): delete or consolidate them first "
            "(its disks are delta files on top of the base)"
        )
    names = {}
    for disk in vm.disks:
        if disk.file_name in names:
            raise Conflict(f"{disk.label} and {names[disk.file_name]} share the file {disk.file_name}")
        names[disk.file_name] = disk.label


class V2vMessages:
    """virt-v2v's --machine-readable messages as the job's progress message; keeps its error."""

    def __init__(self, reporter: ProgressReporter):
        self._reporter = reporter
        self.error: Optional[str] = None

    def line(self, stream: str, line: str) -> None:
        message = virt_v2v_event(line)
        if message is None or not isinstance(message.get("message"), str):
            return
        text = message["message"].strip()
        if message.get("type") == "error":
            self.error = " ".join(text.split())
        else:
            self._reporter.update(message=f"virt-v2v: {text.splitlines()[0]}")


def _upload_message(reporter: ProgressReporter, index: int, count: int) -> Callable[[int, int], None]:
    def progress(done: int, total: int) -> None:
        reporter.update(message=f"uploading disk {index + 1} of {count}: {done} of {total} bytes")

    return progress


def sha1_fingerprint(der: bytes) -> str:
    """``AA:BB:...``: the form VDDK takes a certificate thumbprint in."""
    return ":".join(f"{b:02X}" for b in hashlib.sha1(der).digest())


def _url(params: VCenterParams, vm: VmInfo, datastore: str, path: str) -> str:
    return datastore_file_url(params.scheme, params.host, params.port, vm.datacenter, datastore, path)


def _result(spec: JobSpec, domain: str, planned: list[PlannedDisk], sources: list[DiskSource], prepared: dict,
            stage_seconds: dict, verified: bool) -> dict:
    destination = spec.destination
    return {
        "domain_name": domain,
        "libvirt_uri": destination.libvirt_uri,
        "started": destination.start,
        "verified": verified,
        "disks": [
            {
                "source": source.disk.file_name,
                "format": destination.disk_format,
                "capacity_bytes": source.size,
                **({"path": disk.final_path or disk.target.path} if destination.output_dir else
                   {"storage_pool": destination.storage_pool, "volume": disk.name}),
            }
            for disk, source in zip(planned, sources)
        ],
        "bytes_copied": sum(s.size for s in sources),
        "stage_seconds": stage_seconds,
        **prepared,
    }


def _thd_make_private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)


def _thd_write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
