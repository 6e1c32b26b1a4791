"""What holds for every test: no skip hides a gap, and no test hangs the run.

- A skip is a failure, with its reason, unless ``HYPERSDK_TEST_ALLOW_SKIP=1`` (README, "Running the
  tests"): on a machine where ``make test`` installed everything, a suite that cannot run is a gap.
- A test marked ``sqlite_only`` (it reads the SQLite file itself) is not collected on a run with
  ``HYPERSDK_TEST_STORE=postgresql``: it is not a test of that store, rather than a skip.
- Each test has a deadline (pytest-timeout's ``timeout``, pyproject.toml; ``@pytest.mark.timeout(N)``
  or ``LONGER`` below where a test needs more). pytest-timeout's SIGALRM fails a blocking test; but
  every test runs inside the reactor's greenlet (pytest-twisted), and an alarm that lands while the
  reactor waits for a Deferred kills the reactor and with it every later test. So a test returning a
  Deferred (``@pytest_twisted.ensureDeferred`` or ``inlineCallbacks``) is cancelled, the Twisted way,
  at its deadline (its ``finally`` blocks run, its children are stopped), and SIGALRM stays a backstop
  a little later.

This file is self-contained (tests/unit/test_test_policy.py runs it in pytest sessions of its own).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
from hypothesis import settings

# Hypothesis' 200 ms per example fails a property test on a busy machine (make test runs two test
# processes beside the daemons they start); the deadline above bounds a test that hangs.
settings.register_profile("hypersdk", deadline=None)
settings.load_profile("hypersdk")

ALLOW_SKIP = "HYPERSDK_TEST_ALLOW_SKIP"
# Modules whose tests need longer than the default deadline: the boot tests' first test builds the
# Debian guest (debootstrap, grub from the appliance: about 400 s on a fresh machine), then boots it.
LONGER = {"test_boot.py": 1800}
BACKSTOP = 30  # seconds after a Twisted test's cancellation before SIGALRM interrupts it anyway


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: reads the SQLite database file (not collected on PostgreSQL)")


def skips_allowed() -> bool:
    return os.environ.get(ALLOW_SKIP) == "1"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("HYPERSDK_TEST_STORE") == "postgresql":
        other = [item for item in items if item.get_closest_marker("sqlite_only")]
        if other:
            config.hook.pytest_deselected(items=other)
            items[:] = [item for item in items if not item.get_closest_marker("sqlite_only")]
    from pytest_timeout import _get_item_settings  # the deadline as pytest-timeout reads it (pinned)

    for item in items:
        longer = LONGER.get(Path(str(item.fspath)).name)
        if longer is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(longer))
        seconds = _get_item_settings(item).timeout or 0
        if seconds > 0 and isinstance(item, pytest.Function) and _twisted_mark(item.obj):
            item.obj = _cancelled_after(item.obj, seconds)
            item.add_marker(pytest.mark.timeout(seconds + BACKSTOP))


def _twisted_mark(function):
    return getattr(function, "_pytest_twisted_mark", None) in ("async_test", "inline_callbacks_test")


def _cancelled_after(test, seconds: float):
    """The test, its Deferred cancelled after ``seconds`` (it then fails, saying so)."""
    from twisted.internet import defer, reactor
    from twisted.python.failure import Failure

    @functools.wraps(test)
    def run(**kwargs):
        if test._pytest_twisted_mark == "async_test":
            d = defer.ensureDeferred(test(**kwargs))
        else:
            d = test(**kwargs)
        return d.addTimeout(seconds, reactor, onTimeoutCancel=timed_out)

    def timed_out(result, timeout):
        if isinstance(result, Failure) and result.check(defer.CancelledError):
            pytest.fail(f"Timeout (>{timeout:g}s): the test's Deferred was cancelled", pytrace=False)
        return result

    run._pytest_twisted_mark = "inline_callbacks_test"  # pytest-twisted waits for the Deferred it returns
    return run


def _refuse_skip(report, where: str) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (f"{where} skipped ({reason.removeprefix('Skipped: ')}): a skip is a failure here, where"
                       f" `make test` installs everything; set {ALLOW_SKIP}=1 to allow skips (README)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and not skips_allowed():
        _refuse_skip(report, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not skips_allowed():
        _refuse_skip(report, collector.nodeid or "the collection")


def pytest_terminal_summary(terminalreporter):
    """The run's slowest modules and its total (set-up, call and tear-down of every test, summed: with
    two test processes the wall time is about half of it)."""
    per_module: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) in ("setup", "call", "teardown") and hasattr(report, "duration"):
                module = report.nodeid.split("::")[0]
                per_module[module] = per_module.get(module, 0.0) + report.duration
    if not per_module:
        return
    terminalreporter.section("slowest modules")
    for module, seconds in sorted(per_module.items(), key=lambda item: -item[1])[:10]:
        terminalreporter.write_line(f"{seconds:8.1f} s  {module}")
    terminalreporter.write_line(f"{sum(per_module.values()):8.1f} s  in all tests")
