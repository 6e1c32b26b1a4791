"""Guest conversion by virt-v2v (virtio drivers, bootloader, initramfs), in place.

As Forklift does after its final sync, the disks the transfer engine wrote (and verified) are
converted where they are by ``virt-v2v-in-place``: no second copy of every disk. The domain is
built by our own domain XML code afterwards, as for the https method (virt-v2v-in-place writes no
domain XML, and virt-v2v's own was wrong here anyway).
"""

from __future__ import annotations

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
from .process import BASE_ENV, ProcessRunner
from .progress import virt_v2v_event
from .workfiles import thd_make_private_dir, thd_write_private

TOOL = "virt-v2v-in-place"


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
                        reporter: ProgressReporter, virtio_win: Optional[str] = None) -> None:
    """Convert the guest on the copied disks (``disk.target``: the final file or volume, or a staged
    work file that import uploads) in place, with virt-v2v-in-place."""
    if await in_thread(shutil.which, TOOL, os.X_OK, BASE_ENV["PATH"]) is None:
        raise ToolFailed(f"{TOOL} is not installed on the conversion host (Debian: package virt-v2v >= 2.2)")
    reporter.update(message=f"converting the guest in place with {TOOL}")
    source_xml = os.path.join(work_dir, "virt-v2v-source.xml")
    xml = build_domain_xml(vm, name=domain, disks=[DomainDisk.file(d.target.path, d.target.format,
                                                                   virtio_target(d.index)) for d in disks],
                           network_mapping=spec.options.network_mapping, domain_type=spec.destination.domain_type)
    await in_thread(thd_write_private, source_xml, xml)
    await in_thread(thd_make_private_dir, cache_dir)  # the appliance, built once and kept
    # virt-v2v makes unix sockets in TMPDIR: it must be short (107 bytes per socket path)
    scratch = await in_thread(tempfile.mkdtemp, "", "hypersdk-v2v-")
    env = commands.libguestfs_env(cache_dir=cache_dir, scratch=scratch, home=work_dir, force_tcg=force_tcg,
                                  virtio_win=virtio_win)
    messages = V2vMessages(reporter)
    try:
        result = await processes.run(TOOL, commands.virt_v2v_in_place(source_xml), env=env, on_output=messages.line)
    finally:
        await in_thread(shutil.rmtree, scratch, True)
    if not result.ok and "guestfs_launch failed" in (messages.error or ""):
        raise ToolFailed(f"{TOOL} exited {result.exit_code}: "
                         + appliance_failure(env, cache_dir, [*result.stderr_tail, messages.error]))
    if not result.ok:
        raise ToolFailed(f"{TOOL} exited {result.exit_code}: {messages.error}" if messages.error
                         else result.describe(TOOL))
