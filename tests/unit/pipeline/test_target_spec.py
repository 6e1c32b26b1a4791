"""How the transfer worker reaches a qcow2: qemu-nbd writing straight to the disk (O_DIRECT), or through
the page cache on a file system that refuses O_DIRECT; any other failure to serve said in words."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.defer import ensureDeferred

from hypersdk.pipeline.process import ProcessFailed
from hypersdk.pipeline.transfer.engine import TargetFile, target_spec
from tests.fakes.processes import FakeProcesses
from tests.helpers import result_of

NO_DIRECT = ("qemu-nbd: Failed to blk_new_open '/o/a.qcow2': Could not open '/o/a.qcow2': filesystem does not"
             " support O_DIRECT",)


def serving(refuses: tuple[str, ...] = ()):
    """qemu-nbd that ends saying ``refuses`` (its stderr) while it is given --cache=none, else serves."""
    def starting(child):
        if refuses and "--cache=none" in child.argv:
            child.exit(1, stderr=refuses)
        else:
            Path(child.argv[child.argv.index("--pid-file") + 1]).write_text("1")
    return FakeProcesses(starting)


def served(processes, path: str = "/o/a.qcow2") -> dict:
    async def enter():
        async with target_spec(processes, TargetFile(path, "qcow2", True), 1 << 20) as spec:
            return spec
    return result_of(ensureDeferred(enter()))


def caches(processes) -> list[str]:
    return [arg for child in processes.children for arg in child.argv if arg.startswith("--cache=")]


def test_qemu_nbd_writes_straight_to_the_disk_and_is_stopped_after():
    processes = serving()
    assert served(processes)["kind"] == "nbd"
    assert caches(processes) == ["--cache=none"] and processes.stopped == processes.children


def test_a_file_system_without_o_direct_is_written_through_the_page_cache():
    processes = serving(NO_DIRECT)
    assert served(processes)["kind"] == "nbd"
    assert caches(processes) == ["--cache=none", "--cache=writeback"]


def test_any_other_refusal_fails_in_words_with_no_second_try():
    processes = serving(("qemu-nbd: Failed to blk_new_open '/o/a.qcow2': Could not open '/o/a.qcow2': Permission"
                         " denied",))
    with pytest.raises(ProcessFailed) as failed:
        served(processes)
    assert str(failed.value) == ("permission denied (qemu-nbd opening /o/a.qcow2): give the daemon's user access to"
                                 " it, then submit the job again")
    assert caches(processes) == ["--cache=none"]
