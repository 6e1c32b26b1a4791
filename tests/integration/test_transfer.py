"""The transfer engine through the real daemon: parallel streams, verification by chunk hashes,
resume after a stall, a stop and a SIGKILL, and a start over that keeps nothing of the old file. The
simulator holds each datastore stream to 16 MiB/s, as one stream of a real host, so a copy lasts long
enough to be interrupted where the test wants."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Optional


from tests.integration import libvirtd
from tests.integration.daemon import Daemon, wait_for
from tests.integration.filesystems import fill, ramfs, small_filesystem
from tests.integration.test_hyperctl import hyperctl
from tests.integration.test_migration import tool_processes
from tests.integration.vcsim import MiB, Write, create_vm_with_disk, destroy_vm

STREAM_RATE = 16 * MiB


class Source:
    """A VM with one flat disk of known content in the capped simulator."""

    def __init__(self, si, sim, tmp_path: Path, size: int, name: str = ""):
        self.name = name or f"tx-{uuid.uuid4().hex[:8]}"
        self.size = size
        writes = [Write(0, 2 * MiB, 0x11), Write(size // 3, 5 * MiB, 0x22), Write(size // 2, 64 * MiB, 0x33),
                  Write(size - 4096, 4096, 0x44)]
        self.path = create_vm_with_disk(si, sim, tmp_path, self.name, size, writes)
        self.raw = tmp_path / f"{self.name}.raw"
        self.flat = sim.info.datastore_dir / self.name / f"{self.name}-flat.vmdk"
        self.vm = si.RetrieveContent().searchIndex.FindByInventoryPath(self.path)

    def definition(self, sim, out: str, **options) -> dict:
        return {
            "vm_path": self.path,
            "source": {"type": "vsphere", "vcenter_url": sim.info.url, "username": "user", "password": "pass",
                       "insecure": True},
            "destination": {"type": "kvm", "libvirt_uri": "test:///default", "output_dir": out},
            "options": {"network_mapping": {"*": "br0"}, "device_models": "source", **options},
        }

    def copied_to(self, path: str, fmt: str = "qcow2") -> bool:
        result = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", fmt, str(self.raw), path],
                                capture_output=True, text=True, timeout=120)
        return result.returncode == 0


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections of process ``pid`` to ``port`` (its sockets, in /proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port, state, inode = int(fields[2].split(":")[1], 16), fields[3], fields[9]
        count += remote_port == port and state == "01" and inode in inodes
    return count


def worker_pids(job_id: str, mode: str = "") -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"hypersdk.pipeline.transfer.worker" in cmdline and job_id.encode() in cmdline:
            found.append(int(pid))
    return found


def output_file(out: Path, name: str) -> str:
    return str(out / f"{name}-disk1.qcow2")


@contextmanager
def copying(tmp_path, sim, si, size: int, config: Optional[dict] = None, out: Optional[Path] = None):
    """A daemon, a source VM of ``size`` bytes in the capped simulator, and an output directory (``out``,
    or a new one)."""
    out = out or Path(libvirtd.scratch_dir("hypersdk-tx-"))
    source = Source(si, sim, tmp_path, size)
    (tmp_path / "d").mkdir()
    d = Daemon(tmp_path / "d", config).start()
    try:
        yield d, source, out
    finally:
        d.close()
        destroy_vm(source.vm)


def test_the_simulator_counts_the_bytes_each_datastore_file_sent(tmp_path, capped, capped_si):
    """What "read again" is measured with: bytes the datastore sent, not bytes a job says it skipped."""
    source = Source(capped_si, capped, tmp_path, 192 * MiB)
    try:
        url = (f"{capped.info.scheme}://127.0.0.1:{capped.info.port}/folder/{source.name}/{source.flat.name}"
               "?dcPath=DC0&dsName=LocalDS_0")
        assert capped.served_bytes(source.name, source.flat.name) == 0
        for first, last in ((0, MiB - 1), (5 * MiB, 5 * MiB + 4095), (0, MiB - 1)):  # the first range twice
            request = urllib.request.Request(url, headers={"Range": f"bytes={first}-{last}"})
            with urllib.request.urlopen(request, timeout=30, context=capped.ssl_context()) as answer:
                assert answer.status == 206 and len(answer.read()) == last - first + 1
        assert capped.served_bytes(source.name, source.flat.name) == 2 * MiB + 4096
        assert capped.served_bytes(source.name, f"{source.name}.vmdk") == 0
    finally:
        destroy_vm(source.vm)


def test_a_disk_is_read_as_parallel_range_streams_with_progress_from_the_chunks(tmp_path, capped, capped_si):
    config = {"pipeline": {"streams_per_disk": 4}}
    with copying(tmp_path, capped, capped_si, 256 * MiB, config) as (d, source, out):
        job_id = d.submit(source.definition(capped, str(out)))
        d.wait_job(job_id, lambda j: j["progress"]["stage"] == "conversion" and worker_pids(job_id), 60)
        pid = worker_pids(job_id)[0]
        assert wait_for(lambda: connections_to(pid, capped.info.port) >= 4, 20, "four streams") is True
        running = d.wait_job(job_id, lambda j: j["progress"]["current_bytes"] > 0, 30)["progress"]
        assert running["disks"][0]["total_bytes"] == 256 * MiB and running["disk_count"] == 1
        job = d.wait_finished(job_id, 120)
        assert job["status"] == "completed", job["error"]
        assert job["result"]["verified"] is True and job["progress"]["disks"][0]["current_bytes"] == 256 * MiB
        assert source.copied_to(output_file(out, source.name))


def test_a_byte_changed_on_the_destination_before_verification_fails_the_job_naming_its_range(
        tmp_path, capped, capped_si):
    with copying(tmp_path, capped, capped_si, 256 * MiB) as (d, source, out):
        definition = source.definition(capped, str(out))
        definition["destination"]["disk_format"] = "raw"
        job_id = d.submit(definition)
        # Half the disk copied: the chunk at 16 MiB (zeros on the source, left a hole) is long done.
        d.wait_job(job_id, lambda j: j["progress"]["current_bytes"] >= 128 * MiB, 60)
        image = str(out / f"{source.name}-disk1.img")
        offset = 16 * MiB + 12345
        with open(image, "r+b") as f:
            f.seek(offset)
            f.write(b"\x5a")
        job = d.wait_finished(job_id, 120)
        chunk, label = offset // (8 * MiB), job["progress"]["disks"][0]["label"]
        assert job["status"] == "failed"
        assert job["error"] == (f"verification: {label} differs from the source at bytes"
                                f" {chunk * 8 * MiB}-{(chunk + 1) * 8 * MiB - 1}")
        assert not Path(image).exists()  # a failed verification removes what the job made


def test_a_silent_source_fails_the_job_resumably_and_resume_goes_on_from_the_checkpoints(tmp_path, capped, capped_si):
    config = {"pipeline": {"stall_timeout": 5}}
    with copying(tmp_path, capped, capped_si, 512 * MiB, config) as (d, source, out):
        job_id = d.submit(source.definition(capped, str(out)))
        d.wait_job(job_id, lambda j: j["progress"]["current_bytes"] >= 128 * MiB, 60)
        os.kill(capped.process.pid, signal.SIGSTOP)  # the simulator stops answering mid-copy
        try:
            stalled = d.wait_finished(job_id, 60)
            assert stalled["status"] == "failed" and stalled["result"]["resumable"] is True
            where = capped.info.url.split("//")[1].split("/")[0]
            assert stalled["error"].startswith(f"conversion: no data from vCenter {where} for 5 s while copying ")
            assert stalled["error"].endswith(f"(resumable: POST /jobs/{job_id}/resume)")
            wait_for(lambda: not tool_processes(job_id) and not tool_processes(str(out)), 10, "its children to go")
            assert Path(output_file(out, source.name)).exists()  # kept for the resume
        finally:
            os.kill(capped.process.pid, signal.SIGCONT)
        resumed = hyperctl("resume", job_id, "--watch", url=d.url, token=None, timeout=180)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert resumed.stdout.splitlines()[0] == f"{job_id}: pending: job resumed: it goes on from its checkpoints"
        assert "(resumed at " in resumed.stdout and f"{job_id}: completed: " in resumed.stdout
        job = d.job(job_id)
        assert job["status"] == "completed", job["error"]
        resumed = job["progress"]["resumed_at_bytes"]
        assert resumed >= 96 * MiB
        assert source.copied_to(output_file(out, source.name))
        assert "resuming from" in " ".join(h["message"] for h in job["history"])
        again = d.post(f"/jobs/{job_id}/resume")
        assert again.status_code == 409 and "completed" in again.json()["error"]


def test_a_destination_that_fills_up_mid_copy_fails_the_job_in_words_and_resumes_once_space_is_freed(
        tmp_path, capped, capped_si):
    size = 256 * MiB
    with small_filesystem(size + 32 * MiB, "hypersdk-tx-full-") as out:
        with copying(tmp_path, capped, capped_si, size, out=out) as (d, source, _):
            job_id = d.submit(source.definition(capped, str(out)))
            d.wait_job(job_id, lambda j: j["progress"]["current_bytes"] >= 32 * MiB, 60)
            filler = fill(out)  # another writer takes the rest: the data at 85 MiB and 128 MiB finds no room
            job = d.wait_finished(job_id, 60)
            assert job["status"] == "failed" and job["result"]["resumable"] is True
            error, image = job["error"], output_file(out, source.name)
            assert error.startswith(f"conversion: copying {job['progress']['disks'][0]['label']} from vCenter ")
            assert f": no space left on the destination's file system (writing {image}, bytes " in error \
                   or f": no space left on the destination's file system (syncing {image})" in error, error
            assert error.endswith("): free space there, then resume the job: the chunks copied so far are kept"
                                  f" (resumable: POST /jobs/{job_id}/resume)"), error
            assert "error 28" not in error and "No space left on device" not in error
            filler.unlink()  # space freed: the resume goes on from the checkpoints
            assert d.post(f"/jobs/{job_id}/resume").status_code == 202
            job = d.wait_finished(job_id, 120)
            assert job["status"] == "completed", job["error"]
            assert job["progress"]["resumed_at_bytes"] >= 32 * MiB
            assert source.copied_to(image)


def test_a_qcow2_on_a_file_system_without_o_direct_is_written_through_the_page_cache(tmp_path, capped, capped_si):
    with ramfs("hypersdk-tx-ramfs-") as out:
        with copying(tmp_path, capped, capped_si, 160 * MiB, out=out) as (d, source, _):
            job = d.wait_finished(d.submit(source.definition(capped, str(out))), 120)
            assert job["status"] == "completed", job["error"]
            assert source.copied_to(output_file(out, source.name))
            assert d.log_contains("its file system does not support O_DIRECT: qemu-nbd writes it through the page"
                                  " cache")


def test_a_killed_daemon_resumes_its_copy_after_restart_reading_little_again(tmp_path, capped, capped_si):
    size = 768 * MiB
    with copying(tmp_path, capped, capped_si, size) as (d, source, out):
        job_id = d.submit(source.definition(capped, str(out)))
        d.wait_job(job_id, lambda j: j["progress"]["current_bytes"] >= 0.6 * size, 120)
        d.kill()
        d.start()
        job = d.wait_finished(job_id, 180)
        assert job["status"] == "completed", job["error"]
        assert source.copied_to(output_file(out, source.name))
        served = capped.served_bytes(source.name, source.flat.name)  # both runs' reads, as the datastore sent them
        read_again = served - size
        print(f"\nSIGKILL at 60 %: {read_again / MiB:.0f} MiB of {size / MiB:.0f} MiB read again"
              f" ({100 * read_again / size:.1f} %; resumed at {job['progress']['resumed_at_bytes'] / MiB:.0f} MiB)")
        assert served >= size  # (every byte read at least once)
        assert read_again <= 0.45 * size
        messages = [h["message"] for h in job["history"]]
        assert "interrupted by a restart during conversion: resuming" in messages


def test_a_stopped_daemon_keeps_the_copy_queued_and_a_changed_source_starts_it_over(tmp_path, capped, capped_si):
    with copying(tmp_path, capped, capped_si, 256 * MiB) as (d, source, out):
        job_id = d.submit(source.definition(capped, str(out)))
        d.wait_job(job_id, lambda j: j["progress"]["current_bytes"] >= 64 * MiB, 60)
        assert d.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
        os.utime(source.flat)  # the source disk changed while the daemon was down
        d.start()
        job = d.wait_finished(job_id, 120)
        assert job["status"] == "completed", job["error"]
        messages = " ".join(h["message"] for h in job["history"])
        assert "suspended" in messages or "resumes at its next start" in messages
        assert "starting over: the source changed since the checkpoint: it was modified at" in messages
        assert job["progress"]["resumed_at_bytes"] == 0
        assert source.copied_to(output_file(out, source.name))


def test_a_copy_started_over_on_an_old_raw_file_keeps_none_of_its_bytes(tmp_path, capped, capped_si):
    with copying(tmp_path, capped, capped_si, 256 * MiB) as (d, source, out):
        definition = source.definition(capped, str(out), verify=False)  # nothing else would notice
        definition["destination"]["disk_format"] = "raw"
        job_id = d.submit(definition)
        d.wait_job(job_id, lambda j: j["progress"]["current_bytes"] >= 64 * MiB, 60)
        assert d.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
        image = out / f"{source.name}-disk1.img"
        with open(image, "r+b") as f:  # bytes where the source holds zeros, as an earlier copy may leave them
            for offset in (16 * MiB, 100 * MiB, 200 * MiB):
                f.seek(offset)
                f.write(b"\x5a" * 4096)
        os.utime(source.flat)  # the source changed: the copy starts over
        d.start()
        job = d.wait_finished(job_id, 120)
        assert job["status"] == "completed", job["error"]
        assert "starting over: the source changed" in " ".join(h["message"] for h in job["history"])
        assert source.copied_to(str(image), "raw")
