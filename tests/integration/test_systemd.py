"""Running under systemd: the notify protocol on a socket the test listens on, and the shipped unit."""

import shutil
import signal
import socket
import subprocess

import pytest

from tests.integration.jobs import UNREACHABLE_JOB
from tests.integration.daemon import REPO, Daemon, wait_for

JOB = UNREACHABLE_JOB


class NotifySocket:
    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        try:
            while True:
                self.messages.append(self.sock.recv(4096).decode())
        except socket.timeout:
            return self.messages

    def seen(self, text: str):
        return any(text in m for m in self.drain())


def test_ready_status_watchdog_and_stopping(tmp_path):
    notify = NotifySocket(tmp_path / "notify.sock")
    d = Daemon(tmp_path, env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"}).start()
    try:
        wait_for(lambda: notify.seen("READY=1"), 10, "READY=1")
        ready = next(m for m in notify.messages if "READY=1" in m)
        assert "STATUS=0 running, 0 pending, 0 completed, 0 failed" in ready and f"MAINPID={d.process.pid}" in ready
        wait_for(lambda: sum(m == "WATCHDOG=1" for m in notify.drain()) >= 3, 5, "the watchdog to be fed")
        d.submit(JOB)
        wait_for(lambda: notify.seen("0 completed, 1 failed"), 10, "STATUS with the failed job")
        d.stop(signal.SIGTERM)
        assert notify.seen("STOPPING=1")
    finally:
        d.close()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_shipped_unit_verifies(tmp_path):
    twistd = tmp_path / "twistd"
    twistd.write_text("#!/bin/sh\n")
    twistd.chmod(0o755)
    unit = tmp_path / "hypersdk.service"  # the unit as shipped, its ExecStart pointing at a file that exists here
    unit.write_text((REPO / "etc" / "hypersdk.service").read_text().replace("/opt/hypersdk/bin/twistd", str(twistd)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    text = unit.read_text()
    for setting in ("Type=notify", "WatchdogSec=", "User=hypersdk", "NoNewPrivileges=true", "ProtectSystem=strict",
                    "PrivateTmp=true", "CapabilityBoundingSet="):
        assert setting in text
