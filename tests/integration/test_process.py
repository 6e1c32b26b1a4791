"""The process runner with real child processes and the real reactor."""

import os
import subprocess
import sys
import time

import pytest_twisted
from twisted.internet import defer, reactor

from hypersdk.pipeline.process import ProcessRunner


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def group_members(pgid):
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


@pytest_twisted.ensureDeferred
async def test_output_is_split_on_carriage_returns_and_newlines():
    lines = []
    result = await ProcessRunner(reactor).run(
        "demo", ["sh", "-c", 'printf "    (1.00/100%%)\\r    (2.00/100%%)\\rdone\\n"; echo broken >&2; exit 3'],
        on_output=lambda stream, line: lines.append((stream, line)),
    )
    assert ("stdout", "    (1.00/100%)") in lines and ("stdout", "done") in lines
    assert result.exit_code == 3 and not result.ok
    assert result.describe("demo") == "demo exited 3: broken"


@pytest_twisted.ensureDeferred
async def test_child_leads_its_own_process_group_with_an_explicit_environment():
    lines = []
    child = ProcessRunner(reactor).spawn("env", ["sh", "-c", "ps -o pgid= -p $$; env"], env={"HYPERSDK_TEST": "1"},
                                         on_output=lambda s, line: lines.append(line.strip()))
    await child.ended()
    assert lines[0] == str(child.pid)
    assert "HYPERSDK_TEST=1" in lines and not any(line.startswith("HOME=") for line in lines)


@pytest_twisted.ensureDeferred
async def test_cancel_kills_the_whole_group_quickly():
    runner = ProcessRunner(reactor, kill_grace=5.0)
    child = runner.spawn("sleepers", ["sh", "-c", "sleep 30 & sleep 30"])
    d = defer.Deferred.fromCoroutine(runner.wait(child))
    deadline = time.monotonic() + 5
    while len(group_members(child.pid)) < 3 and time.monotonic() < deadline:
        await deferLater(0.02)
    assert len(group_members(child.pid)) == 3
    started = time.monotonic()
    d.cancel()
    try:
        await d
    except defer.CancelledError:
        pass
    else:
        raise AssertionError("cancel did not raise CancelledError")
    assert time.monotonic() - started < 2
    deadline = time.monotonic() + 2
    while group_members(child.pid) and time.monotonic() < deadline:
        await deferLater(0.02)
    assert group_members(child.pid) == []


@pytest_twisted.ensureDeferred
async def test_a_child_that_ignores_sigterm_is_killed_after_the_grace():
    runner = ProcessRunner(reactor, kill_grace=0.3)
    child = runner.spawn("stubborn", ["sh", "-c", "trap '' TERM; echo ready; sleep 30 & wait"],
                         on_output=lambda s, line: None)
    await deferLater(0.2)
    result = await runner.stop(child)
    assert result.signal == 9 or result.exit_code != 0
    assert not alive(child.pid)


DAEMON = r"""
import os, signal, sys, time
from twisted.internet import reactor
from hypersdk.pipeline.process import ProcessRunner
def go():
    child = ProcessRunner(reactor).spawn("sleep", ["sleep", "60"])
    print(child.pid, flush=True)
    # once setpriv has handed over to sleep (before that, nothing can outlive us anyway)
    deadline = time.monotonic() + 5
    while os.readlink(f"/proc/{child.pid}/exe") != "/usr/bin/sleep" and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(os.getpid(), signal.SIGKILL)
reactor.callWhenRunning(go)
reactor.run()
"""


def test_children_die_when_the_daemon_is_killed():
    out = subprocess.run([sys.executable, "-c", DAEMON], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(pid)


def deferLater(seconds):
    from twisted.internet.task import deferLater as later

    return later(reactor, seconds, lambda: None)
