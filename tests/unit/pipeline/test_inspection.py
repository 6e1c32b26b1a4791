"""The inspection stage's reading of the guest inspector: one appliance start, errors in our words."""

import json

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from hypersdk.pipeline.inspection import InspectionFailed, NoOperatingSystem, inspect_guest
from tests.fakes.processes import FakeProcesses

ENV = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_CACHEDIR": "/w/.libguestfs-cache"}


def inspect(processes, env=ENV, files_for=lambda facts: []):
    return Deferred.fromCoroutine(inspect_guest(
        processes, lambda fn, *args: succeed(fn(*args)), Clock(), drives=[("/w/disk1.qcow2", "qcow2")],
        work_dir="/nonexistent/job", files_for=files_for, env=env, timeout=600))


def failure_of(d):
    box = []
    d.addErrback(box.append)
    assert box, "the inspection has not failed"
    return box[0].value


def test_a_disk_with_no_operating_system_starts_the_appliance_once():
    processes = FakeProcesses()
    d = inspect(processes)
    processes.children[0].say(json.dumps({"error": "no operating system was found on the guest's disks",
                                          "no_os": True}))
    assert isinstance(failure_of(d), NoOperatingSystem)
    assert len(processes.children) == 1


@pytest.mark.parametrize("env, advice", [
    (ENV, "set pipeline.libguestfs_force_tcg: true"),
    ({**ENV, "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}, "did not start, even under TCG"),
])
def test_an_appliance_that_does_not_start_fails_saying_what_to_try_and_what_qemu_said(env, advice):
    processes = FakeProcesses()
    d = inspect(processes, env)
    processes.children[0].say(json.dumps({
        "error": "guestfs_launch failed.", "launch_failed": True,
        "log": ["qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69"]}))
    error = failure_of(d)
    assert type(error) is InspectionFailed
    assert error.message.startswith("inspecting the copied guest: the libguestfs appliance")
    assert advice in error.message
    assert error.message.endswith("libguestfs said: qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69")
