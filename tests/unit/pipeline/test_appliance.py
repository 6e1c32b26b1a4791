"""The libguestfs appliance probe: started once, bounded, off the reactor; jobs wait for its answer."""

import json

from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from hypersdk.pipeline.appliance import PROBE_TIMEOUT, ApplianceProbe, appliance_failure
from tests.fakes.processes import FakeProcesses
from tests.helpers import result_of

MSR = "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69"


class Pool:
    def __init__(self):
        self.running = False

    def start(self):
        self.running = True

    def stop(self):
        self.running = False


class World:
    def __init__(self, forced=False, problem=None):
        self.clock = Clock()
        self.processes = FakeProcesses()
        self.files = []
        self.pool = Pool()
        self.probe = ApplianceProbe(self.processes, self.clock, self._in_thread, python="/usr/bin/python3",
                                    inspector="/x/inspector.py", work_root="/var/work", forced=forced,
                                    problem=lambda: problem, threads=self.pool)

    def _in_thread(self, fn, *args):
        assert self.pool.running, f"{fn.__name__} sent to a stopped thread pool"
        self.files.append(fn.__name__)
        return succeed(None if fn.__name__ != "mkdtemp" else "/tmp/hypersdk-gfs-x")

    @property
    def child(self):
        return self.processes.children[0]

    def answers(self, **reply):
        self.child.say(json.dumps(reply))
        self.child.exit(0 if reply.get("started") or "no_kvm" in reply else 1)


def outcome(d):
    box = []
    d.addBoth(lambda result: box.append(result) or result)
    return box[0] if box else None


def test_forced_tcg_answers_at_once_without_starting_anything():
    w = World(forced=True)
    w.probe.start()
    assert w.processes.children == []
    assert result_of(w.probe.backend()).force_tcg
    assert w.probe.describe() == {"backend": "tcg", "why": "pipeline.libguestfs_force_tcg is set"}


def test_jobs_wait_for_the_probe_and_kvm_is_kept_when_the_appliance_starts():
    w = World()
    w.probe.start()
    waiting = w.probe.backend()
    assert outcome(waiting) is None and w.probe.describe()["backend"] == "probing"
    assert w.child.argv == ["/usr/bin/python3", "/x/inspector.py", "--probe"]
    w.answers(started=True)
    assert outcome(waiting).name == "kvm" and not outcome(waiting).force_tcg
    assert w.probe.describe()["backend"] == "kvm"
    assert "rmtree" in w.files  # its scratch directory goes


def test_the_probe_runs_without_forcing_tcg_in_the_jobs_cache():
    w = World()
    seen = {}
    w.processes.spawn = lambda name, argv, env=(), on_output=None, cwd=None: (
        seen.update(env), FakeProcesses.spawn(w.processes, name, argv, env, on_output))[1]
    w.probe.start()
    assert "LIBGUESTFS_BACKEND_SETTINGS" not in seen
    assert seen["LIBGUESTFS_CACHEDIR"] == "/var/work/.libguestfs-cache"


def test_an_appliance_that_fails_under_kvm_means_tcg_and_says_why():
    w = World()
    w.probe.start()
    w.answers(error="guestfs_launch failed.", launch_failed=True, log=[MSR, "qemu: Assertion failed."])
    backend = result_of(w.probe.backend())
    assert backend.force_tcg
    assert backend.why == "the appliance failed under KVM: qemu: Assertion failed."


def test_an_appliance_that_hangs_under_kvm_is_stopped_at_the_bound_and_tcg_is_used():
    w = World()
    w.probe.start()
    w.clock.advance(PROBE_TIMEOUT - 1)
    assert w.processes.stopped == [] and w.probe.describe()["backend"] == "probing"
    w.clock.advance(1)
    assert w.processes.stopped == [w.child]
    backend = result_of(w.probe.backend())
    assert backend.force_tcg and f"within {PROBE_TIMEOUT:g} s" in backend.why


def test_no_usable_dev_kvm_means_tcg():
    w = World()
    w.probe.start()
    w.answers(no_kvm="/dev/kvm cannot be opened (No such file or directory)")
    assert result_of(w.probe.backend()).why.startswith("/dev/kvm cannot be opened")


def test_without_libguestfs_nothing_is_probed():
    w = World(problem="guest inspection needs libguestfs")
    w.probe.start()
    assert w.processes.children == []
    assert w.probe.describe() == {"backend": "unknown", "why": "not probed: guest inspection needs libguestfs"}


def test_stopping_the_daemon_stops_a_probe_still_running_then_its_thread():
    w = World()
    w.probe.start()
    stopped = w.probe.stop()
    assert w.processes.stopped == [w.child]
    assert w.files[-1] == "rmtree"  # its scratch directory went before the thread stopped
    assert outcome(stopped) is None and not w.pool.running
    assert w.probe.describe()["backend"] == "probing"  # no answer was made up


def test_stopping_after_the_answer_stops_the_thread():
    w = World()
    w.probe.start()
    w.answers(started=True)
    w.probe.stop()
    assert not w.pool.running


def test_a_failed_start_says_what_to_try_and_what_libguestfs_said():
    kvm = appliance_failure({"LIBGUESTFS_BACKEND": "direct"}, "/w/.libguestfs-cache", [MSR])
    assert "set pipeline.libguestfs_force_tcg: true" in kvm and "libguestfs-test-tool" in kvm
    assert kvm.endswith(f"libguestfs said: {MSR}")
    tcg = appliance_failure({"LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}, "/w/.libguestfs-cache",
                            [f"line {i}" for i in range(9)])
    assert "even under TCG" in tcg and "/w/.libguestfs-cache" in tcg and "memory" in tcg
    assert tcg.endswith("libguestfs said: line 4; line 5; line 6; line 7; line 8")  # the last lines
