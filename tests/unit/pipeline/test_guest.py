"""virt-v2v-in-place converts the copied disks where they are, and says clearly why when it cannot."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock

from hypersdk.jobs.definition import parse_definition
from hypersdk.jobs.model import Progress
from hypersdk.jobs.progress import ProgressReporter
from hypersdk.libvirt.domain_xml import DomainDisk
from hypersdk.pipeline.conversion import Target, ToolFailed
from hypersdk.pipeline.destination import PlannedDisk
from hypersdk.pipeline.guest import convert_guest
from tests.fakes.processes import FakeProcesses
from tests.helpers import definition, result_of
from tests.unit.libvirt.test_domain_xml import make_vm

ERROR = ('{ "message": "inspection could not detect the source guest.\\n\\nNo root device found.",'
         ' "timestamp": "2026-11-30T11:32:57Z", "type": "error" }')
LAUNCH = ('{ "message": "libguestfs error: guestfs_launch failed.\\nsee the guestfs FAQ", "timestamp":'
          ' "2026-11-30T11:32:57Z", "type": "error" }')


class Processes(FakeProcesses):
    """Each child answers with ``lines`` on stdout, then exits ``code``."""

    def __init__(self, lines=(), code=0):
        super().__init__()
        self.lines, self.code, self.envs = lines, code, []

    async def run(self, name, argv, env=(), on_output=None, cwd=None):
        child = self.spawn(name, argv, env, on_output, cwd)
        self.envs.append(dict(env))
        for line in self.lines:
            child.say(line)
        child.exit(self.code)
        return await self.wait(child)


class World:
    def __init__(self, tmp_path, lines=(), code=0, installed=True, fmt="qcow2"):
        self.processes = Processes(lines, code)
        self.work = tmp_path / "work"
        self.work.mkdir()
        self.out = tmp_path / "out"
        self.out.mkdir()
        self.installed = installed
        self.reporter = ProgressReporter(Progress(stage="conversion"), Clock().seconds,
                                         lambda p, note: None)
        self.spec = parse_definition(definition(
            destination={"type": "kvm", "libvirt_uri": "qemu:///system", "output_dir": str(self.out),
                         "disk_format": fmt},
            options={"conversion_method": "virt-v2v", "network_mapping": {"*": "br0"}}))
        self.disks = [PlannedDisk(i, 1 << 30, f"web-disk{i + 1}.{fmt}", Target(str(self.out / f"web-disk{i + 1}"), fmt),
                                  DomainDisk.file(str(self.out / f"web-disk{i + 1}"), fmt, f"vd{'ab'[i]}"))
                      for i in range(2)]

    def in_thread(self, fn, *args):
        if fn.__name__ == "which":
            return succeed("/usr/bin/virt-v2v-in-place" if self.installed else None)
        if fn.__name__ == "mkdtemp":
            return succeed(str(self.work / "scratch"))
        try:
            return succeed(fn(*args))
        except Exception as e:
            return fail(e)

    def convert(self, force_tcg=True):
        return result_of(convert_guest(self.processes, self.in_thread, vm=make_vm(), domain="web", disks=self.disks,
                                       spec=self.spec, work_dir=str(self.work), cache_dir=str(self.work / "cache"),
                                       force_tcg=force_tcg, reporter=self.reporter))


def test_the_copied_disks_are_converted_where_they_are_and_nothing_else_is_written(tmp_path):
    w = World(tmp_path, lines=['{ "message": "Inspecting the source", "timestamp": "2026-11-30T11:32:56Z",'
                               ' "type": "message" }'])
    w.convert()
    [child] = w.processes.children
    xml_file = child.argv[-1]
    assert child.argv == ["virt-v2v-in-place", "--machine-readable", "-i", "libvirtxml", xml_file]
    sources = [(d.find("source").get("file"), d.find("driver").get("type"))
               for d in ET.parse(xml_file).getroot().iter("disk")]
    assert sources == [(str(tmp_path / "out" / "web-disk1"), "qcow2"), (str(tmp_path / "out" / "web-disk2"), "qcow2")]
    assert sorted(os.listdir(w.work)) == ["cache", "virt-v2v-source.xml"]  # no converted copies anywhere
    assert os.listdir(w.out) == []
    assert w.processes.envs[0]["LIBGUESTFS_BACKEND_SETTINGS"] == "force_tcg"
    assert w.reporter.progress.message == "virt-v2v: Inspecting the source"


def test_without_forced_tcg_the_appliance_may_use_kvm(tmp_path):
    w = World(tmp_path)
    w.convert(force_tcg=False)
    assert "LIBGUESTFS_BACKEND_SETTINGS" not in w.processes.envs[0]


def test_virt_v2v_own_error_names_the_tool_and_the_reason(tmp_path):
    w = World(tmp_path, lines=[ERROR], code=1)
    with pytest.raises(ToolFailed) as e:
        w.convert()
    assert e.value.message == ("virt-v2v-in-place exited 1: inspection could not detect the source guest."
                               " No root device found.")


def test_an_appliance_that_does_not_start_gets_its_advice(tmp_path):
    w = World(tmp_path, lines=[LAUNCH], code=1)
    with pytest.raises(ToolFailed) as e:
        w.convert()
    assert e.value.message.startswith("virt-v2v-in-place exited 1: the libguestfs appliance")
    assert "even under TCG" in e.value.message and "guestfs_launch failed" in e.value.message


def test_a_host_without_virt_v2v_in_place_is_told_what_to_install(tmp_path):
    w = World(tmp_path, installed=False)
    with pytest.raises(ToolFailed) as e:
        w.convert()
    assert "virt-v2v-in-place is not installed" in e.value.message and w.processes.children == []
