"""The migration pipeline: a vSphere VM becomes a libvirt domain, stage by stage.

connecting → discovery → preparation → conversion → verification → inspection
→ import → boot_check. Each stage reports itself; a failure names the stage (the
job manager prefixes it) and the cause. Whatever the job created on the
destination is removed when it fails or is cancelled: the ``undo`` list runs in
reverse, each step bounded (a boot check that failed may keep it to look at).

Before each side effect on the destination (creating disks and copying into them,
changing the guest, defining or starting the domain, and the clean-up) the job
confirms that this node still holds its lease and the job (``confirm``, from
cluster/fence.py): a job another node has taken over is left alone, its files
included, since they are the new owner's now.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Awaitable, Callable, Optional

from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from ..config import Config
from ..errors import Conflict, HyperSDKError, InvalidField, JobLost, JobNotFound
from ..jobs.definition import JobSpec, SubmitContext, parse_source, with_secrets
from ..jobs.progress import ProgressReporter
from ..guest.devices import choose_devices
from ..guest.names import NamePlan, names_to_pin, not_read_warnings
from ..guest.support import v2v_problem
from ..libvirt.domain_xml import (build_domain_xml, check_network_mapping, on_buses, safe_domain_name, throwaway_disks,
                                  volumes_of)
from ..libvirt.guestrun import GuestRun
from ..libvirt.host import LibvirtHost
from ..store.leftovers import LeftoverStore
from ..threads import RemoteCallPool
from ..vsphere.client import VSphere
from ..vsphere.connection import VCenterParams
from ..vsphere.datastore import parse_datastore_path
from ..vsphere.model import VmInfo
from .bootcheck import boot_check, boot_check_spec
from .appliance import unprobed
from .commands import libguestfs_env
from .copying import Copying
from .destination import Destination, PlannedDisk
from .disks import HEAD_BYTES, DiskSource, UnsupportedDisk, resolve_source
from .guest import convert_guest
from .inspection import Adapted, NoOperatingSystem, inspect_guest
from .leftovers import SOURCE_OFF, JobLeftovers, Leftover, Remover
from .process import ProcessRunner
from .readers import disk_readers, file_url
from .transfer.copier import JobCopier
from .transfer.plan import DEFAULT_CHUNK as CHUNK_SIZE
from .transfer.streams import StreamPool
from .tools import Tools
from .workfiles import thd_make_private_dir, thd_remove_secrets
from ..vsphere.snapshots import snapshot_name
from ..jobs.slots import HeldSlot, JobSlot
from ..warm.precopy import Precopy, WarmDisk
from ..warm.run import WarmRun
from ..warm.source import VCenterVM

UNDO_TIMEOUT = 60.0
PREFLIGHT_SECONDS = 15.0  # what a submit may wait for vCenter to describe the VM
RESUMABLE_STAGES = ("precopy", "conversion", "verification")  # a copy interrupted there goes on from its checkpoints


class SourceNotReady(HyperSDKError):
    code = "source_not_ready"


class UnsupportedGuest(HyperSDKError):
    code = "unsupported_guest"


class Suspended(HyperSDKError):
    """A copy stopped from outside (the daemon's stop, the node fencing itself), its destination and
    checkpoints kept: the job waits in the queue."""

    code = "suspended"
    requeue = True


@define
class _Job:
    spec: JobSpec
    job_id: str
    reporter: ProgressReporter
    work_dir: str
    seconds: Callable[[], float]
    leftovers: JobLeftovers
    slot: JobSlot = field(factory=HeldSlot)  # its worker slot: given back between warm passes
    stage_seconds: dict = field(factory=dict)
    copying: Optional[Copying] = None
    suspending: Optional[str] = None  # why it is stopped from outside: a copy with checkpoints is kept to resume
    resumes: str = ""  # how a copy so stopped resumes ("resumes at its next start")
    warm: Optional[WarmRun] = None  # a warm job's passes and cutover
    _stage_started: float = 0.0

    def stage(self, name: str, message: str = "") -> None:
        now = self.seconds()
        if self.reporter.stage not in ("queued", name) and self._stage_started:  # (a stage may come back: conversion)
            stage = self.reporter.stage
            self.stage_seconds[stage] = round(self.stage_seconds.get(stage, 0) + now - self._stage_started, 3)
        self._stage_started = now
        self.reporter.stage_started(name, message)


class MigrationPipeline:
    log = Logger()

    def __init__(self, reactor, config: Config, cwd: str, vsphere: VSphere, store,
                 processes: Optional[ProcessRunner] = None, confirm: Optional[Callable[..., Awaitable]] = None,
                 remover: Optional[Remover] = None, appliance=None):
        self._reactor = reactor
        self._config = config
        self._store = store  # transfer checkpoints
        self._streams = StreamPool(store, reactor, config.limits.streams_per_vcenter)
        self._confirm = confirm or _owned_alone  # raises JobLost for a job this node no longer holds
        self._jobs: dict[str, _Job] = {}
        self._timeout = config.pipeline.connect_timeout
        self._work_root = os.path.join(cwd, config.pipeline.work_dir)
        self._processes = processes or ProcessRunner(reactor, config.pipeline.process_kill_grace)
        self._vsphere = vsphere
        self._threads = RemoteCallPool(minthreads=0, maxthreads=8, name="libvirt")
        self._tools = Tools(config.vddk.libdir)
        self._appliance = appliance or unprobed(config.pipeline.libguestfs_force_tcg)  # KVM or TCG: probed at start
        self._leftovers = LeftoverStore(store)  # what jobs made, recorded before they made it
        self._remover = remover or Remover(self._reactor, self._threads, self._thd, self._timeout,
                                           on_vcenter=self._undo_on_vcenter)
        self._vcenter_urls = {name: vc.url for name, vc in config.vcenters.items()}

    # -- service hooks -------------------------------------------------------------

    def start(self) -> None:
        self._threads.start()

    def stop(self) -> None:
        self._threads.stop()

    def method_problem(self, method: str) -> Optional[str]:
        return self._tools.method_problem(method)

    def inspection_problem(self) -> Optional[str]:
        return self._tools.inspection_problem()

    async def preflight(self, spec: JobSpec) -> None:
        """At submit: a virt-v2v job for a guest it cannot convert here is refused (400), a warm job for a
        VM that is off or has snapshots of its own too (409). What vCenter says decides; when vCenter
        cannot tell in time, discovery checks again."""
        if spec.options.conversion_method != "virt-v2v" and spec.options.warm is None:
            return
        try:
            params = await self._vsphere.params_for(spec.source)
            reading = self._vsphere.read_vm(params, spec.vm_path)
            reading.addTimeout(PREFLIGHT_SECONDS, self._reactor)
            vm = await reading
        except Exception:  # unreachable, unknown VM, too slow: the job says so when it runs
            return
        if spec.options.conversion_method == "virt-v2v":
            problem = v2v_problem(vm.name, vm.guest_id, vm.guest_full_name, self._config.pipeline.virtio_win)
            if problem:
                raise InvalidField("options.conversion_method", problem)
        if spec.options.warm is not None:
            problem = warm_problem(vm) or snapshots_problem(vm)
            if problem:
                raise Conflict(f"options.warm: {problem}")

    # -- the job ---------------------------------------------------------------------

    def run(self, spec: JobSpec, job_id: str, reporter: ProgressReporter, slot: JobSlot) -> Deferred:
        return Deferred.fromCoroutine(self._migrate(spec, job_id, reporter, slot))

    def suspend(self, job_id: str, why: str, then: str = "") -> None:
        """The job is stopped from outside for ``why``: a copy with checkpoints keeps what it wrote, to
        resume as ``then`` says."""
        if job_id in self._jobs:
            self._jobs[job_id].suspending = why
            self._jobs[job_id].resumes = then

    async def _migrate(self, spec: JobSpec, job_id: str, reporter: ProgressReporter, slot: JobSlot) -> dict:
        job = _Job(spec, job_id, reporter, os.path.join(self._work_root, job_id), self._reactor.seconds,
                   JobLeftovers(self._leftovers, job_id, self._reactor.seconds), slot)
        self._jobs[job_id] = job
        started = self._reactor.seconds()
        await self._thd(thd_make_private_dir, job.work_dir)
        keep = False
        try:
            result = await self._stages(job)
        except BaseException as e:  # failure or cancellation: leave nothing behind (unless asked to keep it)
            resumable = job.copying is not None and job.copying.resumable and job.reporter.stage in RESUMABLE_STAGES
            suspended = isinstance(e, CancelledError) and job.suspending is not None and resumable
            keep = getattr(e, "keep_destination", False) or suspended
            if not keep:
                keep = not await self._undo(job)
            elif not isinstance(e, JobLost) and not suspended:  # kept on purpose: the job's result lists what
                await self._keep(job, e)
            if suspended:
                raise Suspended(f"{job.suspending}: {job.resumes}" if job.resumes else job.suspending) from None
            raise
        else:
            await job.leftovers.forget()  # what it made is its result now
        finally:
            del self._jobs[job_id]
            await self._thd(thd_remove_secrets, job.work_dir)  # on every outcome
            if not keep:  # (kept: the staged copies in it are resumed)
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
        _check_source(vm, snapshot_name(job.job_id))
        check_network_mapping(vm, spec.options.network_mapping)
        if spec.options.conversion_method == "virt-v2v":
            problem = v2v_problem(vm.name, vm.guest_id, vm.guest_full_name, self._config.pipeline.virtio_win)
            if problem:
                raise UnsupportedGuest(problem)
        if spec.options.device_models != "auto":  # the models are known now: refuse what QEMU lacks before copying
            choose_devices(vm.disks, vm.nics, spec.options.device_models)
        domain = spec.destination.domain_name or safe_domain_name(vm.name)
        host = LibvirtHost(spec.destination.libvirt_uri, self._reactor, self._threads, timeout=self._timeout)
        # the files and volumes an interrupted run of this job wrote: a resume goes on with them
        reuse = frozenset(info["target"] for info, _ in (await self._store.transfers(job.job_id)).values())
        reuse |= {os.path.basename(path) for path in reuse}  # pool volumes go by name
        destination = Destination(spec.destination, domain, host, self._thd, job.work_dir, job.leftovers, reuse)
        sizes = [disk.capacity_bytes for disk in vm.disks]
        await destination.check(sizes, vm.uuid)
        sources = [await self._disk_source(job, params, vm, disk) for disk in vm.disks]

        job.stage("preparation", "checking the source VM's power state")
        warm = spec.options.warm
        prepared = await (self._prepare_warm(job, params, vm, sources) if warm else
                          self._prepare_source(job, params, vm))

        job.stage("precopy" if warm else "conversion",
                  f"copying {len(sources)} disk(s), {sum(s.size for s in sources)} bytes"
                  + (" while the source runs" if warm else ""))
        await self._still_ours(job)
        readers = await disk_readers(self._vsphere, self._thd, params=params, vm=vm, work_dir=job.work_dir,
                                     method=spec.options.conversion_method, config=self._config)
        planned = await destination.plan([s.size for s in sources])
        copying = job.copying = self._copying(job, params, readers, spec.options.verify)
        if not warm:
            await copying.copy(planned, sources, await self._allocated(job, params, vm, sources, copying))
            delivered = await self._deliver(job, vm, params, host, destination, domain, planned, sources, copying)
            return self._result(job, delivered, planned, sources, prepared, copying)
        run = job.warm = self._warm_run(job, params, vm, copying, planned, sources)
        await run.precopy()
        job.stage("cutover", f"switching {vm.name} off and copying what changed since the last pass")
        await self._still_ours(job)
        try:
            await run.switch_off()
            await run.final_pass()
            delivered = await self._deliver(job, vm, params, host, destination, domain, planned, sources, copying)
        except BaseException as e:  # the source was (being) switched off: it comes back, whatever happened
            if isinstance(e, (JobLost, Suspended)):
                raise
            rolled_back = await run.roll_back(e, job.suspending)  # (a cutover stopped from outside does not resume)
            if isinstance(e, CancelledError) and job.suspending is None and rolled_back.powered_on:
                job.reporter.note(rolled_back.message)  # the user's cancel, with the source back: still a cancel
                raise
            raise rolled_back from e
        return {**self._result(job, delivered, planned, sources, prepared, copying),
                "downtime_seconds": run.downtime(), "passes": run.listed()}

    async def _deliver(self, job: _Job, vm: VmInfo, params: VCenterParams, host: LibvirtHost,
                       destination: Destination, domain: str, planned: list[PlannedDisk],
                       sources: list[DiskSource], copying: Copying) -> tuple[str, Adapted, Optional[dict]]:
        """From the copied disks to the domain: verification, conversion, inspection, import, boot
        check, start. The domain's name, what inspection decided, the boot check's result."""
        spec = job.spec
        guest_conversion = spec.options.conversion_method == "virt-v2v"
        if copying.verify_range is not None:
            job.stage("verification", "comparing every copied disk with the source")
            await copying.verify(planned, sources)
        if guest_conversion:  # the verified copy is converted where it is: virt-v2v changes the guest on purpose
            if job.reporter.stage != "conversion":
                job.stage("conversion", "converting the guest in place with virt-v2v-in-place")
            await self._still_ours(job)
            if copying.resumable:  # from now on the copy differs from its checkpoints: nothing to resume
                copying.resumable = False
                await self._store.forget_transfers(job.job_id)
            await convert_guest(
                self._processes, self._thd, vm=vm, domain=domain, disks=planned, spec=spec, work_dir=job.work_dir,
                cache_dir=os.path.join(self._work_root, ".libguestfs-cache"),
                force_tcg=(await self._appliance.backend()).force_tcg, reporter=job.reporter,
                virtio_win=self._config.pipeline.virtio_win,
            )
        delivered = [disk.target.path if disk.staged else None for disk in planned]

        adapted = await self._inspection(job, vm, [(path or disk.target.path, spec.destination.disk_format)
                                                   for disk, path in zip(planned, delivered)])
        for warning in adapted.warnings:  # (in the result too)
            job.reporter.note(f"warning: {warning}")

        job.stage("import", f"defining domain {domain} on {spec.destination.libvirt_uri}")
        await self._still_ours(job)
        for disk, local_file in zip(planned, delivered):
            if local_file is not None:
                await destination.deliver(disk, local_file, _upload_message(job.reporter, disk.index, len(planned)))
        devices = adapted.devices
        disks = on_buses([d.domain_disk for d in planned], [(m.bus, m.controller) for m in devices.disks])
        xml = build_domain_xml(vm, name=domain, disks=disks, network_mapping=spec.options.network_mapping,
                               domain_type=spec.destination.domain_type, vcenter=params.where,
                               machine=devices.machine, nic_models=[n.model for n in devices.nics])
        domain = await destination.define(xml)

        checked = None
        starts = spec.destination.start or spec.options.warm is not None  # a cutover leaves the target up
        if spec.options.boot_check is not None:
            checked = await self._boot_check(job, host, domain, xml, starts)
        elif starts:
            await self._still_ours(job)
            await destination.start(domain)
        return domain, adapted, checked

    def _result(self, job: _Job, delivered, planned, sources, prepared: dict, copying: Copying) -> dict:
        domain, adapted, checked = delivered
        spec = job.spec
        job.stage("done", "migration complete")
        return {**_result(spec, domain, planned, sources, prepared, job.stage_seconds,
                          verified=copying.verify_range is not None and ("full" if spec.options.verify == "full" else True)),
                **({"retried_chunks": copying.retried_chunks} if copying.retried_chunks else {}),
                **adapted.describe(), **({"boot_check": checked} if checked is not None else {})}

    # -- stage helpers ---------------------------------------------------------------

    async def _inspection(self, job: _Job, vm: VmInfo, drives: list[tuple[str, str]]) -> Adapted:
        """Read the copied guest (its drivers decide the device models in ``auto``) and pin its
        interface names; skipped when there is nothing to decide or to pin."""
        mode = job.spec.options.device_models
        # names to pin: from vCenter's slots, or else (source: the guest is not looked at) from the guest's own
        pins_wanted = any(nic.pci_slot is not None for nic in vm.nics) or (bool(vm.nics) and mode != "source")
        problem = self._tools.inspection_problem()  # (auto was refused at submit then)
        if problem or (mode != "auto" and not pins_wanted):
            return Adapted(choose_devices(vm.disks, vm.nics, mode),
                           note=f"the guest was not read: {problem}" if problem and pins_wanted else "",
                           unread=not_read_warnings(vm.nics, problem or f"device_models: {mode}"))
        job.stage("inspection", "reading the copied guest's drivers and network settings")
        await self._still_ours(job)  # (it writes into the guest's disk)
        plans: list[NamePlan] = []

        def files_for(facts):
            plans.append(names_to_pin(vm.nics, facts))
            return [(pin.path, pin.link_file()) for pin in plans[-1].pinned]

        scratch = await self._thd(tempfile.mkdtemp, "", "hypersdk-gfs-")
        # libguestfs ignores its whole environment (force_tcg included) when the cache directory is missing
        await self._thd(thd_make_private_dir, os.path.join(self._work_root, ".libguestfs-cache"))
        try:
            facts, written = await inspect_guest(
                self._processes, self._thd, self._reactor, drives=drives, work_dir=job.work_dir, files_for=files_for,
                env=await self._libguestfs_env(scratch, job.work_dir), timeout=self._config.pipeline.inspection_timeout)
        except NoOperatingSystem:  # a VM of data disks: nothing to boot, nothing to adapt
            return Adapted(choose_devices(vm.disks, vm.nics, mode),
                           note="no operating system was found on the copied disks: the source's device models are"
                                " kept" if mode == "auto" else "no operating system was found on the copied disks")
        finally:
            await self._thd(shutil.rmtree, scratch, True)
        return Adapted(choose_devices(vm.disks, vm.nics, mode, facts), facts, plans[-1] if plans else None,
                       tuple(written))

    async def _boot_check(self, job: _Job, host: LibvirtHost, domain: str, xml: str, starts: bool) -> dict:
        spec = job.spec
        checking = boot_check_spec(spec.options.boot_check, self._config.boot_check)
        job.stage("boot_check", f"starting {domain} with its NICs on an isolated network"
                                f" (up to {checking.timeout:g} s)")
        await self._still_ours(job)
        network = Leftover.network(spec.destination.libvirt_uri, f"hypersdk-check-{job.job_id[:8]}")
        await job.leftovers.record(network)
        if not starts:  # the disks stay as they were verified: the guest boots overlays of them
            xml = throwaway_disks(xml, await self._volume_paths(host, xml))
        return await boot_check(GuestRun(host, domain), self._reactor, job.reporter, final_xml=xml, spec=checking,
                                keep_running=starts, network_name=network.name,
                                shutdown_grace=self._config.boot_check.shutdown_timeout,
                                network_gone=lambda: job.leftovers.forget(network))

    async def _volume_paths(self, host: LibvirtHost, xml: str) -> dict:
        """Where the domain's pool volumes are, on their host: {(pool, volume): path}."""
        paths = {}
        for pool, volume in volumes_of(xml):
            paths[(pool, volume)] = await host.volume_path(pool, volume)
        return paths

    async def _libguestfs_env(self, scratch: str, home: str) -> dict:
        pipeline, backend = self._config.pipeline, await self._appliance.backend()
        return libguestfs_env(cache_dir=os.path.join(self._work_root, ".libguestfs-cache"), scratch=scratch,
                              home=home, force_tcg=backend.force_tcg, virtio_win=pipeline.virtio_win)

    def _copying(self, job: _Job, params: VCenterParams, readers, verify_mode) -> Copying:
        pipeline = self._config.pipeline
        copier = JobCopier(
            processes=self._processes, clock=self._reactor, store=self._store, pool=self._streams.for_job(job.job_id),
            vcenter=params.where.lower(), job_id=job.job_id, in_thread=self._thd, renew_cookie=readers.renew_cookie,
            refresh_cookie=readers.refresh_cookie, streams_per_disk=pipeline.streams_per_disk,
            stall_timeout=pipeline.stall_timeout, chunk_size=CHUNK_SIZE,
            max_bytes_per_second=pipeline.max_bytes_per_second, note=job.reporter.note)
        return Copying(processes=self._processes, clock=self._reactor, copier=copier, readers=readers,
                       reporter=job.reporter, verify_mode=verify_mode,
                       identity=lambda url: self._vsphere.file_identity(params, url), note=job.reporter.note)

    async def _disk_source(self, job: _Job, params: VCenterParams, vm: VmInfo, disk) -> DiskSource:
        datastore, path = parse_datastore_path(disk.file_name)
        if job.spec.options.conversion_method == "vddk":  # VDDK reads any layout itself
            return DiskSource(disk, datastore, path, "raw", size=disk.capacity_bytes)
        url = file_url(params, vm, datastore, path)
        head = await self._vsphere.read_range(params, url, 0, HEAD_BYTES)
        return resolve_source(disk, head)

    async def _prepare_warm(self, job: _Job, params: VCenterParams, vm: VmInfo, sources: list[DiskSource]) -> dict:
        """A warm job's source runs, has no snapshot of its own, flat disks only, and Changed Block
        Tracking (turned on here if it is off: the first pass's snapshot makes it take effect)."""
        problem = warm_problem(vm)
        if problem:
            raise SourceNotReady(problem)
        layered = [s for s in sources if s.format != "raw"]
        if layered:
            raise UnsupportedDisk(f"{layered[0].disk.label} of {vm.name} is not a flat disk ({layered[0].format}):"
                                  " warm passes read flat disks only; migrate it without options.warm")
        if not vm.change_tracking:
            await self._vsphere.enable_change_tracking(params, job.spec.vm_path)
            job.reporter.note(f"changed block tracking turned on for {vm.name}: the first pass's snapshot makes"
                              " it take effect")
        return {"source_shut_down": False, "cdroms_removed": 0, "change_tracking_enabled": not vm.change_tracking}

    def _warm_run(self, job: _Job, params: VCenterParams, vm: VmInfo, copying: Copying,
                  planned: list[PlannedDisk], sources: list[DiskSource]) -> WarmRun:
        source_vm = VCenterVM(self._vsphere, params, job.spec.vm_path)
        option = job.spec.options.warm
        precopy = Precopy(vm=source_vm, copier=copying, ready=lambda: copying.ready(planned, sources),
                          leftovers=job.leftovers,
                          snapshot=Leftover.snapshot(params.where, job.spec.vm_path, snapshot_name(job.job_id)),
                          disks=[WarmDisk(i, s.disk.key, s.disk.label, s.size) for i, s in enumerate(sources)],
                          seconds=self._reactor.seconds, note=job.reporter.note, quiesce=option.quiesce)
        return WarmRun(clock=self._reactor, precopy=precopy, vm=source_vm, vm_name=vm.name, option=option,
                       shutdown_timeout=self._config.pipeline.shutdown_timeout, reporter=job.reporter,
                       note=job.reporter.note, leftovers=job.leftovers, slot=job.slot,
                       source_off=Leftover.source_off(params.where, job.spec.vm_path))

    async def _allocated(self, job: _Job, params: VCenterParams, vm: VmInfo, sources: list[DiskSource],
                         copying: Copying) -> Optional[dict[int, list[tuple[int, int]]]]:
        """Where a powered-off VM's disks hold data, when Changed Block Tracking can say (by disk index):
        the copy reads only that. None (everything is read) when it cannot."""
        if not (vm.change_tracking and vm.power_state == "poweredOff" and copying.by_engine(sources)
                and all(s.disk.change_id for s in sources)):
            return None
        try:
            areas = {i: await self._vsphere.changed_areas(params, job.spec.vm_path, None, s.disk.key, s.size, "*")
                     for i, s in enumerate(sources)}
        except HyperSDKError as e:
            job.reporter.note(f"changed block tracking could not say where the disks hold data ({e.message}):"
                              " every byte is read")
            return None
        allocated = sum(length for spans in areas.values() for _, length in spans)
        job.reporter.note(f"changed block tracking: reading the {allocated} bytes that hold data, of"
                          f" {sum(s.size for s in sources)}")
        return areas

    def cutover(self, job_id: str) -> bool:
        """Start a warm job's cutover now (POST /jobs/{id}/cutover); False if it is not in precopy here."""
        job = self._jobs.get(job_id)
        if job is None or job.warm is None or job.reporter.stage != "precopy" or job.warm.cutover_requested:
            return False
        job.warm.request_cutover()
        return True

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

    async def _undo(self, job: _Job) -> bool:
        """Remove what the job made (recorded in the store, by this run or an interrupted one), newest
        first; False when this node cannot confirm the job is still its own (taken over, or the
        database cannot say before the daemon stops): then nothing is touched."""
        try:
            await self._still_ours(job)  # (first: once the daemon stops, it does not wait for a hung database)
            made = await job.leftovers.made()
            if made:
                await self._store.forget_transfers(job.job_id)  # a takeover now fails it: nothing to resume into
        except Exception as e:
            self.log.warn("job {job_id}: its destination is left as it is: {why}", job_id=job.job_id,
                          why=getattr(e, "message", None) or repr(e))
            return False
        await self.remove(job.job_id, reversed(made))
        return True

    async def remove(self, job_id: str, leftovers) -> list[dict]:
        """Remove each, bounded, forgetting each one removed (or found gone): what was removed."""
        removed = []
        for leftover in leftovers:
            try:
                d = ensureDeferred(self._remover.remove(leftover, job_id))
                d.addTimeout(UNDO_TIMEOUT, self._reactor)
                if await d:
                    removed.append(leftover.to_json())
                await self._leftovers.forget(job_id, leftover.to_json())
                self.log.info("job {job_id}: cleaned up: {what}", job_id=job_id, what=leftover.describe())
            except Exception as e:
                self.log.error("job {job_id}: could not remove {what}: {error}", job_id=job_id, what=leftover.describe(),
                               error=getattr(e, "message", None) or repr(e))
        return removed

    async def _undo_on_vcenter(self, job_id: str, leftover: Leftover) -> bool:
        """A warm pass's snapshot removed, a switched-off source powered on: with the job's own
        credentials (whichever run made it)."""
        job = await self._store.get(job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} is gone: the {leftover.describe()} stays")
        source = with_secrets(job.definition, await self._store.secrets(job_id))["source"]
        params = await self._vsphere.params_for(parse_source(source, SubmitContext(self._vcenter_urls)))
        if leftover.kind == SOURCE_OFF:
            return bool(await self._vsphere.power_on(params, leftover.path))
        return bool(await self._vsphere.remove_snapshots(params, leftover.path, leftover.name))

    async def clean_up(self, job_id: str, kept_too: bool = False) -> list[dict]:
        """Remove what an ended job still has: what a crash left between making it and removing it, and
        with ``kept_too`` what it kept on purpose (its work directory too): what was removed."""
        made = [Leftover.from_json(row) for row in await self._leftovers.of(job_id, kept_too)]
        removed = await self.remove(job_id, reversed(made))
        if kept_too:
            await self._thd(shutil.rmtree, os.path.join(self._work_root, job_id), True)
        return removed

    async def sweep_work_dirs(self, in_use) -> list[str]:
        """Remove the work directories of jobs for which ``in_use(job_id)`` fires False (ended, and
        nothing to resume from): which were removed."""
        names = await self._thd(_thd_job_dirs, self._work_root)
        swept = []
        for name in names:
            if not await in_use(name):
                await self._thd(shutil.rmtree, os.path.join(self._work_root, name), True)
                swept.append(name)
        return swept

    async def _keep(self, job: _Job, error: BaseException) -> None:
        kept = await job.leftovers.keep()
        if kept and isinstance(error, HyperSDKError):
            error.result = {**(getattr(error, "result", None) or {}), "kept": kept}

    async def _still_ours(self, job: _Job) -> None:
        """Before a side effect on the destination: this node still holds the job (JobLost if not), and
        the database knows which stage it is in."""
        await self._confirm(job.job_id, job.reporter.progress)

    def _thd(self, fn, *args) -> Deferred:
        return deferToThreadPool(self._reactor, self._threads, fn, *args)


def _thd_job_dirs(work_root: str) -> list[str]:
    """The jobs' work directories (not the shared ones, such as .libguestfs-cache)."""
    try:
        return [name for name in os.listdir(work_root) if not name.startswith(".")]
    except FileNotFoundError:
        return []


async def _owned_alone(job_id: str, progress) -> None:
    """Without a fence (tests of the pipeline alone), every job is this node's."""


def warm_problem(vm: VmInfo) -> Optional[str]:
    """Why this VM cannot be migrated warm (None: it can)."""
    if vm.power_state != "poweredOn":
        return (f"warm migration copies a running VM, and {vm.name} is {vm.power_state or 'not running'}: power it"
                " on, or migrate it without options.warm")
    for disk in vm.disks:
        if disk.disk_mode.startswith("independent") or disk.raw_mapping:
            kind = "a raw device mapping" if disk.raw_mapping else disk.disk_mode.replace("_", " ")
            return (f"{disk.label} of {vm.name} is {kind}: snapshots do not cover it, so it cannot be copied"
                    " warm; migrate it without options.warm")
    return None


def snapshots_problem(vm: VmInfo, ours: str = "") -> Optional[str]:
    """The VM's snapshots other than ``ours`` (this job's warm snapshot, which an interrupted pass may
    have left: the next pass removes it), named; None when it has none."""
    theirs = [name for name in vm.snapshot_names if name != ours]
    if not theirs:
        return None
    return (f"the VM {vm.name} has {len(theirs)} snapshot(s) ({', '.join(theirs)}): delete or consolidate them"
            " first (its disks are delta files on top of the base)")


def _check_source(vm: VmInfo, ours: str) -> None:
    if vm.template:
        raise SourceNotReady(f"{vm.path} is a template, not a VM")
    if not vm.disks:
        raise UnsupportedDisk(f"the VM {vm.name} has no disks")
    problem = snapshots_problem(vm, ours)
    if problem:
        raise UnsupportedDisk(problem)
    names = {}
    for disk in vm.disks:
        if disk.file_name in names:
            raise Conflict(f"{disk.label} and {names[disk.file_name]} share the file {disk.file_name}")
        names[disk.file_name] = disk.label


def _upload_message(reporter: ProgressReporter, index: int, count: int) -> Callable[[int, int], None]:
    def progress(done: int, total: int) -> None:
        reporter.update(message=f"uploading disk {index + 1} of {count}: {done} of {total} bytes")

    return progress


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
