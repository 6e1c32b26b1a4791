"""The real daemon, started with twistd as a child process and driven over HTTP.

``Daemon(tmp_path, config).start()`` writes the config, runs
``twistd -n hypersdk --config FILE --listen tcp:0:interface=127.0.0.1`` and
reads the port from its log. Nothing sleeps to wait: every wait polls with a
deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import requests
import yaml

from tests.integration.polling import wait_for  # noqa: F401 (tests import it from here too)

REPO = Path(__file__).resolve().parents[2]
TWISTD = str(Path(sys.executable).parent / "twistd")
LISTENING = re.compile(r"hypersdk listening on [^ ]*:(\d+)")


class Daemon:
    def __init__(self, tmp_path: Path, config: Optional[dict] = None, env: Optional[dict] = None,
                 listen: str = "tcp:0:interface=127.0.0.1", scheme: str = "http", as_shipped: bool = False):
        self.dir = Path(tmp_path)
        config = dict(config or {})
        # As shipped: no libguestfs_force_tcg, the daemon finds out itself whether KVM runs the appliance;
        # as_shipped: etc/hypersdk.yaml itself (its relative paths land in the daemon's directory)
        self.config = yaml.safe_load((REPO / "etc" / "hypersdk.yaml").read_text()) if as_shipped else {
            "database": default_database(self.dir),
            "pipeline": {"work_dir": str(self.dir / "var" / "work"), "connect_timeout": 10,
                         **config.pop("pipeline", {})},
            **config,
        }
        self.config_path = self.dir / "hypersdk.yaml"
        self.log_path = self.dir / "daemon.log"
        self.env = env or {}
        self.listen = listen
        self.scheme = scheme
        self.process: Optional[subprocess.Popen] = None
        self.url = ""
        self._lines: list[str] = []
        self._reader: Optional[threading.Thread] = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> "Daemon":
        self.config_path.write_text(yaml.safe_dump(self.config))
        share_appliance(self.dir / self.config.get("pipeline", {}).get("work_dir", "var/work"))
        env = {**daemon_env(self.dir), **self.env}
        argv = [TWISTD, "--pidfile=", "-n", "hypersdk", "--config", str(self.config_path),
                "--listen", self.listen]
        self._lines = []
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.dir, env=env,
                                        start_new_session=True)
        self._reader = threading.Thread(target=self._read_output, args=(self.process,), daemon=True)
        self._reader.start()
        try:
            port = wait_for(lambda: self._port(), timeout, "the daemon to listen")
        except BaseException:
            self.close()  # never leave a daemon behind a failed start
            raise
        self.url = f"{self.scheme}://127.0.0.1:{port}"
        return self

    def _read_output(self, process: subprocess.Popen) -> None:
        with open(self.log_path, "a") as log:
            for raw in process.stdout:
                line = raw.decode("utf-8", "replace")
                self._lines.append(line)
                log.write(line)
                log.flush()

    def _port(self) -> Optional[int]:
        if self.process.poll() is not None and not any(LISTENING.search(line) for line in self._lines):
            raise AssertionError(f"the daemon exited with {self.process.returncode}:\n{self.output()[-3000:]}")
        for line in self._lines:
            match = LISTENING.search(line)
            if match:
                return int(match.group(1))
        return None

    def output(self) -> str:
        return "".join(self._lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        """Signal the daemon and wait for it to exit; returns its exit status."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            if self._reader is not None:
                self._reader.join(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    # -- HTTP --------------------------------------------------------------------------

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, body: Any = None, **kw) -> requests.Response:
        if body is not None:
            kw["json"] = body
        return requests.post(self.url + path, timeout=60, **kw)

    def job(self, job_id: str) -> dict:
        response = self.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def submit(self, definition: Any) -> str:
        response = self.post("/jobs/submit", definition)
        assert response.status_code == 201, response.text
        return response.json()["job_id"]

    def wait_job(self, job_id: str, condition: Callable[[dict], bool], timeout: float = 60.0, what: str = "") -> dict:
        return wait_for(lambda: (lambda j: j if condition(j) else None)(self.job(job_id)), timeout,
                        what or f"job {job_id}")

    def wait_finished(self, job_id: str, timeout: float = 120.0) -> dict:
        return self.wait_job(job_id, lambda j: j["status"] in ("completed", "failed", "cancelled"), timeout)

    def log_contains(self, text: str) -> bool:
        return text in self.output()


_postgres = {}  # the PostgreSQL server of HYPERSDK_TEST_STORE=postgresql runs, started once


def default_database(directory: Path) -> dict:
    """SQLite in the daemon's directory; with HYPERSDK_TEST_STORE=postgresql, a fresh database of a
    PostgreSQL server of the test run (to run the API suites on that store too)."""
    if os.environ.get("HYPERSDK_TEST_STORE") != "postgresql":
        return {"path": str(directory / "var" / "jobs.db")}
    if "server" not in _postgres:
        import atexit

        from tests.postgres import PostgresServer

        _postgres["server"] = PostgresServer.start()
        atexit.register(_postgres["server"].stop)
    return {"url": _postgres["server"].new_database(), "key_file": str(directory / "var" / "secrets.key")}


# The libguestfs appliance (~700 MB) that every daemon's probe and inspections start: built once per
# machine, not once per daemon (libguestfs locks the directory while it builds).
APPLIANCE_CACHE = Path("/var/cache/hypersdk-tests/libguestfs")


def share_appliance(work_dir: Path) -> None:
    """Point the daemon's appliance cache (``<work_dir>/.libguestfs-cache``) at the machine's."""
    link = work_dir / ".libguestfs-cache"
    if link.exists() or link.is_symlink():
        return
    APPLIANCE_CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    link.symlink_to(APPLIANCE_CACHE, target_is_directory=True)


def daemon_env(home: Path) -> dict:
    """What twistd needs to find the plugin in this checkout, and nothing else."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": f"{REPO / 'src'}:{REPO}", "HOME": str(home)}


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1)
