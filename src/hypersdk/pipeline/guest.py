"""Guest conversion by virt-v2v (virtio drivers, bootloader) of disks copied into the work directory."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from typing import Optional

from ..jobs.definition import JobSpec
from ..jobs.progress import ProgressReporter
from ..libvirt.domain_xml import DomainDisk, build_domain_xml, virtio_target
from ..vsphere.model import VmInfo
from . import commands
from .appliance import appliance_failure
from .conversion import ToolFailed
from .destination import PlannedDisk
from .process import ProcessRunner
from .progress import virt_v2v_event
from .workfiles import thd_make_private_dir, thd_write_private


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


async def convert_guest(processes: ProcessRunner, in_thread, *, vm: VmInfo, domain: str, disks: list[PlannedDisk],
                        spec: JobSpec, work_dir: str, cache_dir: str, force_tcg: bool,
                        reporter: ProgressReporter, virtio_win: Optional[str] = None) -> list[str]:
    """Run virt-v2v over the staged disks; return its converted files, in disk order."""
    fmt = spec.destination.disk_format
    reporter.update(message="converting the guest with virt-v2v")
    source_xml = os.path.join(work_dir, "virt-v2v-source.xml")
    output_dir = os.path.join(work_dir, "virt-v2v")
    xml = build_domain_xml(vm, name=domain, disks=[DomainDisk.file(d.target.path, fmt, virtio_target(d.index))
                                                   for d in disks],
                           network_mapping=spec.options.network_mapping, domain_type=spec.destination.domain_type)
    await in_thread(thd_write_private, source_xml, xml)
    await in_thread(thd_make_private_dir, output_dir)
    await in_thread(thd_make_private_dir, cache_dir)  # the appliance, built once and kept
    # virt-v2v makes unix sockets in TMPDIR: it must be short (107 bytes per socket path)
    scratch = await in_thread(tempfile.mkdtemp, "", "hypersdk-v2v-")
    env = commands.libguestfs_env(cache_dir=cache_dir, scratch=scratch, home=work_dir, force_tcg=force_tcg,
                                  virtio_win=virtio_win)
    messages = V2vMessages(reporter)
    try:
        result = await processes.run("virt-v2v", commands.virt_v2v(source_xml, output_dir, fmt, domain), env=env,
                                     on_output=messages.line)
    finally:
        await in_thread(shutil.rmtree, scratch, True)
    if not result.ok and "guestfs_launch failed" in (messages.error or ""):
        raise ToolFailed(f"virt-v2v exited {result.exit_code}: "
                         + appliance_failure(env, cache_dir, [*result.stderr_tail, messages.error]))
    if not result.ok:
        raise ToolFailed(f"virt-v2v exited {result.exit_code}: {messages.error}" if messages.error
                         else result.describe("virt-v2v"))
    converted = sorted(await in_thread(glob.glob, os.path.join(output_dir, f"{glob.escape(domain)}-sd*")))
    if len(converted) != len(disks):
        raise ToolFailed(f"virt-v2v wrote {len(converted)} disk(s) for {len(disks)}")
    return converted
