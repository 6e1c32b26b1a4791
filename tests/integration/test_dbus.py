"""org.hypersdk.Daemon1 on a private D-Bus, and the logind inhibitor lock checked against a stand-in logind."""

import json
import shutil
import subprocess
import tempfile
import threading
import sys
from pathlib import Path

import pytest

from tests.integration.daemon import REPO, Daemon, wait_for
from tests.integration.jobs import UNREACHABLE_JOB, job_for_vcenter

HERE = Path(__file__).parent
JOB_FAILS = UNREACHABLE_JOB


class Lines:
    """A child process whose stdout lines (JSON) are collected as they come."""

    def __init__(self, argv, **kw):
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, **kw)
        self.lines: list = []
        threading.Thread(target=lambda: [self.lines.append(json.loads(line)) for line in self.process.stdout],
                         daemon=True).start()

    def kill(self):
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def private_bus():
    bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1", "--nopidfile"],
                           stdout=subprocess.PIPE, text=True)
    address = bus.stdout.readline().strip()
    yield address
    bus.kill()
    bus.wait(10)


CLIENT = """
import json, sys
from twisted.internet import reactor, task
from twisted.internet.defer import ensureDeferred
from txdbus import client

async def main(reactor, address, job):
    conn = await client.connect(reactor, address)
    daemon = await conn.getRemoteObject("org.hypersdk.Daemon1", "/org/hypersdk/Daemon1")
    changes = []
    daemon.notifyOnSignal("JobChanged", lambda job_id, status, body: changes.append((job_id, status, json.loads(body))))
    status = json.loads(await daemon.callRemote("GetStatus"))
    submitted = json.loads(await daemon.callRemote("SubmitJob", job))
    try:
        await daemon.callRemote("SubmitJob", '{"vm_path": 1}')
        bad = None
    except Exception as e:
        bad = str(e)
    for _ in range(100):
        if any(s == "failed" for _, s, _ in changes):
            break
        await task.deferLater(reactor, 0.1, lambda: None)
    listed = json.loads(await daemon.callRemote("ListJobs", '{"status": "failed"}'))
    cancel = json.loads(await daemon.callRemote("CancelJob", submitted["job_ids"][0]))
    print(json.dumps({"status": status, "submitted": submitted, "bad": bad, "changes": changes,
                      "listed": [j["id"] for j in listed["jobs"]], "cancel": cancel}))

task.react(lambda reactor: ensureDeferred(main(reactor, sys.argv[1], sys.argv[2])))
"""


def test_the_interface_and_its_signal(tmp_path, private_bus):
    d = Daemon(tmp_path, {"dbus": {"enabled": True, "bus": private_bus, "inhibit": {"enabled": False}}}).start()
    try:
        run = subprocess.run([sys.executable, "-c", CLIENT, private_bus, json.dumps(JOB_FAILS)], capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        got = json.loads(run.stdout.strip().splitlines()[-1])
        assert got["status"]["worker_count"] == 4
        (job_id,) = got["submitted"]["job_ids"]
        assert got["bad"].startswith("org.hypersdk.Error.InvalidField: vm_path: must be a string")
        statuses = [status for changed, status, _ in got["changes"] if changed == job_id]
        assert statuses[0] in ("pending", "running") and statuses[-1] == "failed"
        assert got["changes"][-1][2]["error"].startswith("connecting: ")
        assert job_id in got["listed"]
        assert got["cancel"]["errors"] == {job_id: "job already failed"}
        assert d.get(f"/jobs/{job_id}").json()["status"] == "failed"  # the same job through HTTP
    finally:
        d.close()


def test_a_logind_lock_is_held_while_jobs_run_and_released_when_idle(tmp_path, private_bus, black_hole):
    logind = Lines([sys.executable, str(HERE / "fake_logind.py"), private_bus],
                   env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    try:
        wait_for(lambda: {"ready": True} in logind.lines, 20, "the stand-in logind")
        config = {"dbus": {"enabled": True, "bus": private_bus, "inhibit": {"what": "shutdown:sleep",
                                                                            "mode": "delay"}},
                  "pipeline": {"connect_timeout": 30}}
        d = Daemon(tmp_path, config).start()
        try:
            assert not any("inhibit" in m for m in logind.lines)  # idle: no lock
            stuck = job_for_vcenter(black_hole)
            first, second = d.submit(stuck), d.submit(stuck)
            wait_for(lambda: any("inhibit" in m for m in logind.lines), 10, "Inhibit() to be called")
            calls = [m for m in logind.lines if "inhibit" in m]
            assert calls == [{"inhibit": ["shutdown:sleep", "hypersdk", "VM migrations are running", "delay"],
                              "lock": 1}]  # one lock for both jobs
            d.post("/jobs/cancel", {"job_ids": [first]})
            assert not any("released" in m for m in logind.lines)  # a job still runs
            d.post("/jobs/cancel", {"job_ids": [second]})
            wait_for(lambda: {"released": 1} in logind.lines, 10, "the lock to be released")
        finally:
            d.close()
    finally:
        logind.kill()


def test_the_shipped_bus_policy_is_accepted_by_dbus_daemon(tmp_path):
    config = tmp_path / "bus.conf"
    config.write_text(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>custom</type><listen>unix:dir={tmp_path}</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/></policy>
<include>{REPO / "etc" / "dbus-org.hypersdk.Daemon1.conf"}</include></busconfig>""")
    bus = subprocess.Popen(["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1", "--nopidfile"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert bus.stdout.readline().startswith("unix:"), bus.stderr.read()
    finally:
        bus.kill()
        bus.wait(10)


def test_the_policy_lets_anyone_read_the_status_but_only_its_group_submit(tmp_path):
    sockets = Path(tempfile.mkdtemp(prefix="hypersdk-bus-"))  # pytest's directories are private to root
    sockets.chmod(0o755)  # the unprivileged caller must reach the socket
    config = tmp_path / "bus.conf"
    config.write_text(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>custom</type><listen>unix:dir={sockets}</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow send_destination="*"/><allow receive_sender="*"/></policy>
<include>{REPO / "etc" / "dbus-org.hypersdk.Daemon1.conf"}</include></busconfig>""")
    bus = subprocess.Popen(["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1", "--nopidfile"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    address = bus.stdout.readline().strip()
    d = Daemon(tmp_path / "d", {"dbus": {"enabled": True, "bus": address, "inhibit": {"enabled": False}}})
    (tmp_path / "d").mkdir()
    try:
        d.start()

        def call_as_nobody(member, *args):
            return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "dbus-send",
                                   f"--bus={address}", "--print-reply", "--dest=org.hypersdk.Daemon1",
                                   "/org/hypersdk/Daemon1", f"org.hypersdk.Daemon1.{member}", *args],
                                  capture_output=True, text=True, timeout=30)

        status = call_as_nobody("GetStatus")
        assert status.returncode == 0 and "worker_count" in status.stdout, status.stderr
        submit = call_as_nobody("SubmitJob", f"string:{json.dumps(JOB_FAILS)}")
        assert submit.returncode != 0 and "AccessDenied" in submit.stderr
        assert d.get("/status").json()["total_jobs"] == 0  # nothing was submitted
    finally:
        d.close()
        bus.kill()
        bus.wait(10)
        shutil.rmtree(sockets, ignore_errors=True)
