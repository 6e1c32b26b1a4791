"""The suite's own rules (tests/conftest.py), each tried in a pytest session of its own: a skip fails
unless HYPERSDK_TEST_ALLOW_SKIP=1 allows it (and then it is listed with its reason), a test of the
SQLite file is not collected on PostgreSQL, and a test whose child hangs fails alone at its deadline,
Twisted tests included, while the tests after it run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SKIPPING = '''
import shutil
import pytest

def test_needs_libvirtd():
    pytest.skip("/usr/sbin/libvirtd missing: apt-get install -y libvirt-daemon-system")

@pytest.mark.skipif(shutil.which("sh") is not None, reason="chromium is not installed")
def test_needs_chromium():
    pass

def test_runs():
    pass
'''

SQLITE_ONLY = '''
import pytest

@pytest.mark.sqlite_only
def test_reads_the_sqlite_file():
    pass

def test_any_store():
    pass
'''

HANGING = '''
import subprocess
import sys
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from hypersdk.pipeline.process import ProcessRunner

HANG = [sys.executable, "-c", "import time; time.sleep(300)", "{mark}"]  # its mark: to find it if left

def test_a_child_that_never_ends():
    subprocess.run(HANG)

@pytest_twisted.ensureDeferred
async def test_a_supervised_child_that_never_ends():
    await ProcessRunner(reactor, kill_grace=1).run("sleeper", HANG)

def test_after_them():
    pass

@pytest_twisted.ensureDeferred
async def test_after_them_on_the_reactor():
    await deferLater(reactor, 0.01, lambda: None)
'''


SCRATCH = '''
import json
import pytest
from pathlib import Path
from tests.integration import libvirtd
from tests.integration.conftest import _module_scratch_removed, _test_scratch_removed

MADE = Path("made.json")

def note(**paths):
    MADE.write_text(json.dumps({**(json.loads(MADE.read_text()) if MADE.exists() else {}), **paths}))

@pytest.fixture(scope="module")
def shared():
    path = libvirtd.scratch_dir("hypersdk-policy-module-")
    note(module=path)
    return path

def test_a_failing_test_s_disk(shared, tmp_path):
    note(failing=libvirtd.scratch_dir("hypersdk-policy-failing-"), failing_tmp=str(tmp_path))
    assert False

def test_a_passing_test_s_disk(shared, tmp_path):
    note(passing=libvirtd.scratch_dir("hypersdk-policy-passing-"), passing_tmp=str(tmp_path))

def test_after_them(shared):
    made = json.loads(MADE.read_text())
    assert Path(made["module"]).is_dir()  # still the module's
    assert not Path(made["failing"]).exists() and not Path(made["passing"]).exists()
'''


def session(tmp_path: Path, test: str, *args: str, env: dict = {}, ini: str = "", timeout: float = 120,
            pythonpath: str = str(REPO / "src")):
    """pytest on one test module, with this suite's conftest.py; (exit code, output)."""
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text(f"[pytest]\naddopts = -p no:cacheprovider\n{ini}")
    (tmp_path / "test_inner.py").write_text(test)
    clean = {k: v for k, v in os.environ.items() if k not in ("HYPERSDK_TEST_ALLOW_SKIP", "HYPERSDK_TEST_STORE")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", *args, "test_inner.py"], cwd=tmp_path,
                            env={**clean, "PYTHONPATH": pythonpath, "COLUMNS": "250", **env},
                            capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def test_a_skip_is_a_failure_that_says_why_and_how_to_allow_it(tmp_path):
    code, out = session(tmp_path, SKIPPING, "-rs")
    assert code == 1, out
    assert "1 failed, 1 passed, 1 error" in out  # (a skip at set-up, as skipif's, fails the set-up)
    assert re.search(r"test_needs_libvirtd skipped \(/usr/sbin/libvirtd missing: apt-get install -y"
                     r" libvirt-daemon-system\): a skip is a failure here, where `make test` installs everything;"
                     r" set HYPERSDK_TEST_ALLOW_SKIP=1 to allow skips", out), out
    assert "test_needs_chromium skipped (chromium is not installed)" in out


def test_skips_allowed_by_the_variable_are_listed_with_their_reasons(tmp_path):
    code, out = session(tmp_path, SKIPPING, "-rs", env={"HYPERSDK_TEST_ALLOW_SKIP": "1"})
    assert code == 0, out
    assert "1 passed, 2 skipped" in out
    assert "SKIPPED [1] test_inner.py:6: /usr/sbin/libvirtd missing" in out
    assert "chromium is not installed" in out


def test_a_test_of_the_sqlite_file_is_not_collected_on_postgresql(tmp_path):
    code, out = session(tmp_path, SQLITE_ONLY, env={"HYPERSDK_TEST_STORE": "postgresql"})
    assert code == 0 and "1 passed, 1 deselected" in out and "skipped" not in out, out
    code, out = session(tmp_path, SQLITE_ONLY)
    assert code == 0 and "2 passed" in out, out


def test_a_hung_child_fails_its_own_test_at_the_deadline_and_the_next_tests_run(tmp_path):
    mark = f"hypersdk-hung-{os.getpid()}-{time.monotonic_ns()}"  # names the children, to find any left
    started = time.monotonic()
    code, out = session(tmp_path, HANGING.format(mark=mark),
                        ini="timeout = 2\ntimeout_method = signal\n", timeout=120)
    took = time.monotonic() - started
    assert code == 1, out
    assert "2 failed, 2 passed" in out, out
    assert "FAILED test_inner.py::test_a_child_that_never_ends - Failed: Timeout (>2.0s)" in out
    assert "FAILED test_inner.py::test_a_supervised_child_that_never_ends - Failed: Timeout (>2s): the test's" \
           " Deferred was cancelled" in out, out
    assert took < 60, f"the session took {took:.0f} s"
    left = processes_naming(mark)
    for pid in left:
        os.kill(pid, 9)
    assert left == []  # both children went with their tests


def test_a_run_leaves_no_disks_behind_but_a_failed_test_s_own_directory(tmp_path):
    retention = "\n".join(line for line in (REPO / "pyproject.toml").read_text().splitlines()
                          if line.startswith("tmp_path_retention"))  # the suite's own settings
    base = tmp_path / "base"
    code, out = session(tmp_path, SCRATCH, f"--basetemp={base}", ini=retention.replace('"', ""),
                        pythonpath=f"{REPO / 'src'}:{REPO}")
    assert code == 1 and "1 failed, 2 passed" in out, out
    made = json.loads((tmp_path / "made.json").read_text())
    assert [name for name in ("module", "failing", "passing") if Path(made[name]).exists()] == []
    assert Path(made["failing_tmp"]).is_dir()  # kept for a look at what failed
    assert not Path(made["passing_tmp"]).exists()


def processes_naming(mark: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if mark.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                found.append(int(pid))
        except OSError:
            continue
    return found
