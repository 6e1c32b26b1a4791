"""How fast a disk moves from vCenter into a qcow2 through the daemon, against baselines run in the same process.

A. Uncapped: a 2 GiB flat VMDK holding 1 GiB of random data, the vCenter simulator over HTTPS.
   - curl reading the flat file over HTTPS to /dev/null (the source's own limit on this machine);
   - local `qemu-img convert` of the same VMDK (the disk's limit);
   - download then convert (the naive script);
   - one nbdkit-curl stream into `qemu-img convert` (what virt-v2v does without VDDK);
   - the daemon's job (transfer engine, parallel ranges), verification off and on.
   Goals (issue 17): job (verify off) <= 1.25 x curl's read; verification adds <= 20 %;
   job <= 0.5 x the naive script; the daemon's own CPU < 10 % of the job's wall time.
B. Each stream held to 64 MiB/s (one stream of a real host), a 1 GiB disk with 512 MiB of data:
   job <= 0.35 x one nbdkit-curl stream.
C. Resume: the bytes read again when the daemon is SIGKILLed at 60 % of a disk and restarted: what
   the simulator served of the disk over both runs (GET /served), less the disk's size once.
D. Checkpoints: the transfer worker alone, as the daemon runs it, on A's disk, into a raw file and
   into a qcow2 through qemu-nbd, its checkpoints flushed to the OS only (a kill cannot lose them, a
   power loss can: fdatasync once at the end, qemu-nbd --cache=unsafe) or synced (fdatasync of the
   raw file at each checkpoint; qemu-nbd --cache=writeback, so that an NBD FLUSH reaches the disk).
E. The worker's NBD client (libnbd's binding) alone: 1 GiB of random data in 8 MiB writes into
   qemu-nbd (qcow2), 4 threads with a connection each (the worker's pattern). It measured as fast
   as the worker's former own client (median of 7: 1.00 s against 1.03 s, each run 0.8-1.8 s).
F. An allocated-only copy (changed block tracking's allocated areas, a warm migration's first pass):
   the worker alone on a 2 GiB flat disk holding 1 GiB of data (every other 16 MiB), into a raw file
   and into a qcow2, given the areas where the extent holds data (SEEK_DATA, 64 KiB-aligned), against
   the full copy of the same disk in the same run: bytes the simulator served, seconds, their ratio.

G. The copy's CPU (issue 25), A's disk: the whole machine's busy CPU (/proc/stat: the simulator's TLS
   encryption is in both) during the job's copy stage (4 streams, verify off; qcow2 through qemu-nbd,
   and a raw file beside it) against curl's read of the same file to /dev/null, and the stage's wall
   time against curl's. Goals: CPU <= 1.5 x curl's, wall <= 1.6 x. B adds its copy stage: <= 0.30 x one
   nbdkit-curl stream.

Job times are the job's own (started_at to completed_at); a copy stage's is the job's
``result.stage_seconds.conversion`` from the stage's first history line. Medians over --runs runs.

Usage: PYTHONPATH=src:. .venv/bin/python benchmarks/transfer.py [--runs 3] [--parts ABCDEFG]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from hypersdk.pipeline import commands  # noqa: E402
from hypersdk.pipeline.transfer.engine import worker_argv, worker_env  # noqa: E402
from hypersdk.pipeline.transfer.nbd import NbdClient  # noqa: E402
from hypersdk.pipeline.transfer.plan import area_pieces, area_work, chunks  # noqa: E402
from hypersdk.vsphere.connection import VCenterParams, thd_connect  # noqa: E402
from hypersdk.vsphere.datastore import session_cookie  # noqa: E402
from tests.integration.daemon import Daemon, wait_for  # noqa: E402
from tests.integration.vcsim import Vcsim, create_vm  # noqa: E402

GiB = 1024**3
MiB = 1024**2


def timed(argv, **kw) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, timeout=3600, **kw)
    return time.monotonic() - started


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def when(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Bench:
    """A simulator with one VM ("bench") whose disk is a flat VMDK of ``size`` bytes with ``data`` random ones."""

    def __init__(self, work: Path, size: int, data: int, stream_rate: int = 0):
        self.sim = Vcsim.start(args=["-stream-rate", str(stream_rate)] if stream_rate else [])
        si = thd_connect(VCenterParams.from_url(self.sim.info.url, "user", "pass", insecure=True), 30)
        create_vm(si, "bench", firmware="bios", networks=("VM Network",), cdrom=False, disk_kb=size // 1024)
        self.descriptor = make_source_disk(self.sim.info.datastore_dir, "bench", size, data)
        self.extent = self.descriptor.with_name("bench-flat.vmdk")
        self.url = f"https://127.0.0.1:{self.sim.info.port}/folder/bench/bench-flat.vmdk?dcPath=DC0&dsName=LocalDS_0"
        self.cookie = session_cookie(si)
        self.work = work
        (work / "cookie").write_text(self.cookie)

    def definition(self, out: Path, name: str, verify) -> dict:
        return {
            "vm_path": "DC0/vm/bench",
            "source": {"type": "vsphere", "vcenter_url": self.sim.info.url, "username": "user", "password": "pass",
                       "insecure": True},
            "destination": {"type": "kvm", "libvirt_uri": "test:///default", "output_dir": str(out),
                            "domain_name": name},
            "options": {"network_mapping": {"*": "br0"}, "device_models": "source", "verify": verify},
        }

    def nbdkit_curl(self, target: Path) -> float:
        """One nbdkit-curl stream into qemu-img convert, as virt-v2v copies without VDDK."""
        socket, pidfile = self.work / "nbd.sock", self.work / "nbdkit.pid"
        pidfile.unlink(missing_ok=True)
        socket.unlink(missing_ok=True)  # a socket left by the run before: nbdkit would not bind
        argv = commands.nbdkit_curl(commands.CurlSource(url=self.url, cookie_file=str(self.work / "cookie"),
                                                        sslverify=False), str(socket), str(pidfile))
        started = time.monotonic()
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: pidfile.exists(), 30, "nbdkit")
            subprocess.run(commands.qemu_img_convert(commands.nbd_uri(str(socket)), "raw", str(target), "qcow2"),
                           check=True, capture_output=True, timeout=3600)
        finally:
            server.terminate()
            server.wait(30)
        return time.monotonic() - started

    def served(self) -> int:
        """Bytes of the disk's extent the simulator has sent so far, rereads included."""
        return self.sim.served_bytes("bench", self.extent.name)

    def close(self) -> None:
        self.sim.stop()


def make_source_disk(datastore_dir: Path, vm_name: str, size: int, data: int) -> Path:
    """The VM's disk as a monolithicFlat VMDK: descriptor + extent with ``data`` random bytes, rest zeros."""
    directory = datastore_dir / vm_name
    directory.mkdir(parents=True, exist_ok=True)
    scratch = directory / "build.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(scratch), str(size)],
                   check=True)
    descriptor = directory / f"{vm_name}.vmdk"
    extent = directory / f"{vm_name}-flat.vmdk"
    (directory / "build-flat.vmdk").rename(extent)
    descriptor.write_text(scratch.read_text().replace('"build-flat.vmdk"', f'"{extent.name}"'))
    scratch.unlink()
    with open("/dev/urandom", "rb") as random, open(extent, "r+b") as out:
        chunk = random.read(16 * MiB)
        for offset in range(0, data, 2 * len(chunk)):  # data in every other 16 MiB: holes the copy must keep
            out.seek(offset)
            out.write(chunk)
            chunk = chunk[1:] + chunk[:1]  # distinct chunks: no dedup or compression shortcut
    return descriptor


def run_job(daemon: Daemon, definition: dict) -> tuple[float, float, dict]:
    """(the job's own seconds, the daemon's CPU seconds meanwhile, the job)."""
    cpu_before = cpu_seconds(daemon.process.pid)
    job = daemon.wait_finished(daemon.submit(definition), timeout=3600)
    assert job["status"] == "completed", job["error"]
    return when(job["completed_at"]) - when(job["started_at"]), cpu_seconds(daemon.process.pid) - cpu_before, job


class MachineCPU:
    """The machine's busy CPU seconds (all but idle and iowait, /proc/stat) sampled every 10 ms in a
    thread, for the CPU of an interval known only afterwards (a job's stage, from its history)."""

    def __init__(self):
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def busy() -> float:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self._samples.append((time.time(), self.busy()))

    def __enter__(self) -> "MachineCPU":
        self._samples.append((time.time(), self.busy()))
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, moment: float) -> float:
        """Busy seconds at ``moment`` (wall clock), interpolated between samples."""
        for (t0, b0), (t1, b1) in zip(self._samples, self._samples[1:]):
            if t0 <= moment <= t1:
                return b0 + (b1 - b0) * (moment - t0) / (t1 - t0 or 1)
        raise ValueError(f"no sample around {moment}")

    def between(self, start: float, end: float) -> float:
        return self.at(end) - self.at(start)


def copy_stage(job: dict) -> tuple[float, float]:
    """(start, end) of the job's copy stage ("conversion"), wall clock."""
    start = min(when(h["at"]) for h in job["history"] if h["stage"] == "conversion")
    return start, start + job["result"]["stage_seconds"]["conversion"]


def out_and_daemon(work: Path, part: str) -> tuple[Path, Daemon]:
    """An empty output directory and a daemon running one job at a time, for ``part``."""
    out = work / f"out-{part}"
    out.mkdir()
    (work / f"d{part}").mkdir()
    return out, Daemon(work / f"d{part}", {"worker_count": 1}).start()


def empty(directory: Path) -> None:
    for f in directory.iterdir():
        f.unlink()


def figures_a(work: Path, runs: int) -> dict:
    bench = Bench(work, 2 * GiB, 1 * GiB)
    out, daemon = out_and_daemon(work, "a")
    f: dict[str, list[float]] = {k: [] for k in ("read", "local", "naive", "nbdkit", "job", "job_verify", "cpu")}
    try:
        for run in range(runs):
            subprocess.run(["cat", str(bench.extent)], stdout=subprocess.DEVNULL, check=True)  # warm cache for everyone
            f["read"].append(timed(["curl", "-sSfk", "-H", f"Cookie: {bench.cookie}", "-o", "/dev/null", bench.url]))
            target = work / "local.qcow2"
            f["local"].append(timed(["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", str(bench.descriptor),
                                     str(target)]))
            target.unlink()
            raw, target = work / "download.raw", work / "naive.qcow2"
            started = time.monotonic()
            subprocess.run(["curl", "-sSfk", "-H", f"Cookie: {bench.cookie}", "-o", str(raw), bench.url], check=True)
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(target)], check=True)
            f["naive"].append(time.monotonic() - started)
            raw.unlink()
            target.unlink()
            f["nbdkit"].append(bench.nbdkit_curl(work / "nbdkit.qcow2"))
            (work / "nbdkit.qcow2").unlink()
            seconds, cpu, _ = run_job(daemon, bench.definition(out, f"a-{run}-off", False))
            f["job"].append(seconds)
            f["cpu"].append(cpu / seconds)
            empty(out)
            seconds, _, _ = run_job(daemon, bench.definition(out, f"a-{run}-on", True))
            f["job_verify"].append(seconds)
            empty(out)
            print(f"A run {run + 1}: curl read {f['read'][-1]:.2f} s, local convert {f['local'][-1]:.2f} s, naive"
                  f" {f['naive'][-1]:.2f} s, nbdkit-curl {f['nbdkit'][-1]:.2f} s, job {f['job'][-1]:.2f} s,"
                  f" with verification {f['job_verify'][-1]:.2f} s, daemon CPU {f['cpu'][-1]:.1%}", flush=True)
    finally:
        daemon.close()
        bench.close()
    return {k: statistics.median(v) for k, v in f.items()}


def figures_g(work: Path, runs: int) -> dict:
    bench = Bench(work, 2 * GiB, 1 * GiB)
    out, daemon = out_and_daemon(work, "g")
    f: dict[str, list[float]] = {k: [] for k in ("read", "read_cpu", "qcow2", "qcow2_cpu", "raw", "raw_cpu")}
    try:
        with MachineCPU() as cpu:
            for run in range(runs):
                subprocess.run(["cat", str(bench.extent)], stdout=subprocess.DEVNULL, check=True)  # warm cache
                started = time.time()
                subprocess.run(["curl", "-sSfk", "-H", f"Cookie: {bench.cookie}", "-o", "/dev/null", bench.url],
                               check=True, timeout=600)
                ended = time.time()
                time.sleep(0.05)  # (a sample after it)
                f["read"].append(ended - started)
                f["read_cpu"].append(cpu.between(started, ended))
                for disk_format in ("qcow2", "raw"):
                    definition = bench.definition(out, f"g-{run}-{disk_format}", False)
                    definition["destination"]["disk_format"] = disk_format
                    _, _, job = run_job(daemon, definition)
                    job = daemon.get(f"/jobs/{job['id']}").json()  # (with its history)
                    time.sleep(0.05)
                    start, end = copy_stage(job)
                    f[disk_format].append(end - start)
                    f[f"{disk_format}_cpu"].append(cpu.between(start, end))
                    empty(out)
                print(f"G run {run + 1}: curl read {f['read'][-1]:.2f} s, {f['read_cpu'][-1]:.2f} CPU s; copy stage"
                      f" qcow2 {f['qcow2'][-1]:.2f} s, {f['qcow2_cpu'][-1]:.2f} CPU s; raw {f['raw'][-1]:.2f} s,"
                      f" {f['raw_cpu'][-1]:.2f} CPU s", flush=True)
    finally:
        daemon.close()
        bench.close()
    return {k: statistics.median(v) for k, v in f.items()}


def figures_bc(work: Path, runs: int) -> dict:
    bench = Bench(work, 1 * GiB, 512 * MiB, stream_rate=64 * MiB)
    out, daemon = out_and_daemon(work, "b")
    f: dict[str, list[float]] = {"nbdkit": [], "job": [], "copy": [], "reread": []}
    try:
        for run in range(runs):
            f["nbdkit"].append(bench.nbdkit_curl(work / "nbdkit.qcow2"))
            (work / "nbdkit.qcow2").unlink()
            seconds, _, job = run_job(daemon, bench.definition(out, f"b-{run}", False))
            f["job"].append(seconds)
            f["copy"].append(job["result"]["stage_seconds"]["conversion"])
            empty(out)
            print(f"B run {run + 1}: nbdkit-curl {f['nbdkit'][-1]:.2f} s, job {f['job'][-1]:.2f} s, its copy stage"
                  f" {f['copy'][-1]:.2f} s", flush=True)
        for run in range(runs):  # C: SIGKILL at 60 %, restart, how much is read again
            served_before = bench.served()
            job_id = daemon.submit(bench.definition(out, f"c-{run}", False))
            daemon.wait_job(job_id, lambda j: j["progress"]["current_bytes"] >= 0.6 * GiB, 600)
            daemon.kill()
            daemon.start()
            job = daemon.wait_finished(job_id, 600)
            assert job["status"] == "completed", job["error"]
            f["reread"].append((bench.served() - served_before - GiB) / GiB)
            empty(out)
            print(f"C run {run + 1}: read again {f['reread'][-1]:.1%} of the disk (resumed at"
                  f" {job['progress']['resumed_at_bytes'] / GiB:.1%})", flush=True)
    finally:
        daemon.close()
        bench.close()
    return {k: statistics.median(v) for k, v in f.items()}


# The worker as it is (checkpoints synced), or with checkpoints flushed to the OS only, as it was:
# a raw file synced once at the end, qemu-nbd's FLUSH left unsynced (--cache=unsafe).
FLUSHED_ONLY = """
import os, sys
from hypersdk.pipeline.transfer import worker

def checkpoint(self, client=None):
    if client is not None:
        client.flush()

def main():
    code = worker.main()
    if code == 0:  # the image, on disk for good
        fd = os.open(sys.argv[1], os.O_RDONLY)
        os.fdatasync(fd)
        os.close(fd)
    return code

worker.Target.checkpoint = checkpoint
sys.exit(main())
"""


def run_worker(bench: Bench, target: dict, synced: bool) -> tuple[float, dict]:
    """(wall seconds, the worker's last line)."""
    spec = {"mode": "copy", "url": bench.url, "cookie_file": str(bench.work / "cookie"), "tls": {"verify": False},
            "source_offset": 0, "streams": 4, "fresh": True, "target": target, "timeout": 60,
            "chunks": [[c.index, c.offset, c.length] for c in chunks(bench.extent.stat().st_size)]}
    argv = worker_argv("bench") if synced else [worker_argv("bench")[0], "-c", FLUSHED_ONLY, target["path"]]
    started = time.monotonic()
    done = subprocess.run(argv, input=json.dumps(spec) + "\n", capture_output=True, text=True, check=True,
                          env={**os.environ, **worker_env()}, timeout=3600)
    return time.monotonic() - started, json.loads(done.stdout.splitlines()[-1])


def qemu_nbd(image: Path, socket: Path, cache: str) -> subprocess.Popen:
    socket.unlink(missing_ok=True)
    server = subprocess.Popen(["qemu-nbd", "--format=qcow2", "--shared=32", "--persistent", f"--cache={cache}",
                               "--discard=unmap", "--socket", str(socket), str(image)])
    wait_for(lambda: socket.exists(), 30, "qemu-nbd")
    return server


def figures_d(work: Path, runs: int) -> dict:
    bench = Bench(work, 2 * GiB, 1 * GiB)
    f: dict[str, list[float]] = {k: [] for k in ("raw", "raw_synced", "qcow2", "qcow2_synced")}
    try:
        for run in range(runs):
            for synced in (False, True):
                raw = work / "d.raw"
                seconds, last = run_worker(bench, {"kind": "file", "path": str(raw), "size": 2 * GiB}, synced)
                assert last.get("done"), last
                f["raw_synced" if synced else "raw"].append(seconds)
                raw.unlink()
                image, socket = work / "d.qcow2", work / "d.sock"
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(2 * GiB)], check=True)
                server = qemu_nbd(image, socket, "writeback" if synced else "unsafe")
                try:
                    seconds, last = run_worker(bench, {"kind": "nbd", "socket": str(socket), "path": str(image)},
                                               synced)
                    assert last.get("done"), last
                finally:
                    server.terminate()
                    server.wait(30)
                f["qcow2_synced" if synced else "qcow2"].append(seconds)
                image.unlink()
            print(f"D run {run + 1}: raw {f['raw'][-1]:.2f} s, synced {f['raw_synced'][-1]:.2f} s; qcow2"
                  f" {f['qcow2'][-1]:.2f} s, synced {f['qcow2_synced'][-1]:.2f} s", flush=True)
    finally:
        bench.close()
    return {k: statistics.median(v) for k, v in f.items()}


def nbd_writes(socket: Path, connect, total: int = GiB, size: int = 8 * MiB, threads: int = 4) -> float:
    """Seconds for ``threads`` connections to write ``total`` bytes of random data in ``size`` writes."""
    data = os.urandom(size)
    offsets = list(range(0, total, size))
    clients = [connect(str(socket)) for _ in range(threads)]

    def write(client, mine):
        for offset in mine:
            client.pwrite(data, offset)
        client.flush()

    started = time.monotonic()
    workers = [threading.Thread(target=write, args=(c, offsets[i::threads])) for i, c in enumerate(clients)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return time.monotonic() - started


def figures_e(work: Path, runs: int) -> dict:
    f: dict[str, list[float]] = {"writes": []}
    for run in range(runs):
        image, socket = work / "e.qcow2", work / "e.sock"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(GiB)], check=True)
        server = qemu_nbd(image, socket, "writeback")
        try:
            f["writes"].append(nbd_writes(socket, NbdClient))
        finally:
            server.terminate()
            server.wait(30)
        image.unlink()
        print(f"E run {run + 1}: {f['writes'][-1]:.2f} s", flush=True)
    return {k: statistics.median(v) for k, v in f.items()}


def allocated_areas(path: Path, align: int = 64 * 1024) -> list[tuple[int, int]]:
    """Where the file holds data (as changed block tracking reports a disk's allocated areas), aligned."""
    areas, fd = [], os.open(path, os.O_RDONLY)
    try:
        size, offset = os.fstat(fd).st_size, 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            start, end = start // align * align, min(size, -(-end // align) * align)
            if areas and areas[-1][0] + areas[-1][1] >= start:
                start = areas.pop()[0]
            areas.append((start, end - start))
            offset = end
    finally:
        os.close(fd)
    return areas


def copy_of(bench: Bench, target: dict, areas) -> tuple[float, int]:
    """(seconds, bytes the simulator served) for the worker copying the disk, or only ``areas`` of it."""
    size = bench.extent.stat().st_size
    plan = chunks(size)
    spec = {"mode": "copy", "url": bench.url, "cookie_file": str(bench.work / "cookie"), "tls": {"verify": False},
            "source_offset": 0, "streams": 4, "fresh": True, "target": target, "timeout": 60,
            "chunks": [[c.index, c.offset, c.length] for c in plan]}
    if areas is not None:  # as JobCopier runs it: the chunks no area touches are only recorded as zeros
        work = area_work(plan, {}, area_pieces(plan, areas), fresh=True)
        spec["chunks"] = [[c.index, c.offset, c.length] for c in work.copy]
        spec["areas"] = {str(c.index): {"pieces": [list(p) for p in work.pieces[c.index]],
                                        "outside": work.outside[c.index]} for c in work.copy}
    served = bench.served()
    started = time.monotonic()
    done = subprocess.run(worker_argv("bench"), input=json.dumps(spec) + "\n", capture_output=True, text=True,
                          check=True, env={**os.environ, **worker_env()}, timeout=3600)
    seconds = time.monotonic() - started
    assert json.loads(done.stdout.splitlines()[-1]).get("done"), done.stdout[-500:]
    return seconds, bench.served() - served


def figures_f(work: Path, runs: int) -> dict:
    bench = Bench(work, 2 * GiB, 2 * GiB)  # (data in every other 16 MiB of the first 2 GiB: 1 GiB of it)
    areas = allocated_areas(bench.extent)
    f: dict[str, list[float]] = {k: [] for k in ("raw_full", "raw_areas", "qcow2_full", "qcow2_areas",
                                                 "read_full", "read_areas")}
    try:
        for run in range(runs):
            subprocess.run(["cat", str(bench.extent)], stdout=subprocess.DEVNULL, check=True)  # warm cache
            for kind in ("full", "areas"):
                raw = work / "f.raw"
                seconds, served = copy_of(bench, {"kind": "file", "path": str(raw), "size": 2 * GiB},
                                          None if kind == "full" else areas)
                f[f"raw_{kind}"].append(seconds)
                f[f"read_{kind}"].append(served)
                raw.unlink()
                image, socket = work / "f.qcow2", work / "f.sock"
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(2 * GiB)], check=True)
                server = qemu_nbd(image, socket, "writeback")
                try:
                    seconds, _ = copy_of(bench, {"kind": "nbd", "socket": str(socket), "path": str(image)},
                                         None if kind == "full" else areas)
                finally:
                    server.terminate()
                    server.wait(30)
                f[f"qcow2_{kind}"].append(seconds)
                image.unlink()
            print(f"F run {run + 1}: raw full {f['raw_full'][-1]:.2f} s, areas {f['raw_areas'][-1]:.2f} s; qcow2 full"
                  f" {f['qcow2_full'][-1]:.2f} s, areas {f['qcow2_areas'][-1]:.2f} s; read full"
                  f" {f['read_full'][-1] / MiB:.0f} MiB, areas {f['read_areas'][-1] / MiB:.0f} MiB", flush=True)
    finally:
        bench.close()
    figures = {k: statistics.median(v) for k, v in f.items()}
    figures["areas"] = sum(n for _s, n in areas)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parts", default="ABCDEFG", help="which figures: A and B/C need each other's goals")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hypersdk-bench-", dir="/var/tmp"))
    try:
        a = figures_a(work, args.runs) if "A" in args.parts else None
        bc = figures_bc(work, args.runs) if "B" in args.parts or "C" in args.parts else None
        d = figures_d(work, args.runs) if "D" in args.parts else None
        e = figures_e(work, args.runs) if "E" in args.parts else None
        f = figures_f(work, args.runs) if "F" in args.parts else None
        g = figures_g(work, args.runs) if "G" in args.parts else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmedians over {args.runs} runs")
    if d:
        print("D. the worker alone, 2 GiB flat disk with 1 GiB of data: checkpoints flushed / synced")
        print(f"  raw file                     {d['raw']:7.2f} s / {d['raw_synced']:.2f} s"
              f"  ({d['raw_synced'] / d['raw'] - 1:+.1%})")
        print(f"  qcow2 through qemu-nbd       {d['qcow2']:7.2f} s / {d['qcow2_synced']:.2f} s"
              f"  ({d['qcow2_synced'] / d['qcow2'] - 1:+.1%})")
    if e:
        print("E. the worker's NBD client: 1 GiB in 8 MiB writes into qemu-nbd, 4 connections")
        print(f"  {'writes, then a flush':28s} {e['writes']:7.2f} s  ({GiB / MiB / e['writes']:.0f} MiB/s)")
    if f:
        print(f"F. allocated-only copy against the full copy, 2 GiB flat disk, {f['areas'] / GiB:.2f} GiB allocated")
        print(f"  read from the source         {f['read_areas'] / MiB:7.0f} MiB / {f['read_full'] / MiB:.0f} MiB"
              f"  ({f['read_areas'] / f['read_full']:.2f})")
        for name in ("raw", "qcow2"):
            print(f"  {name + ' file':28s} {f[name + '_areas']:7.2f} s / {f[name + '_full']:.2f} s"
                  f"  ({f[name + '_areas'] / f[name + '_full']:.2f})")
    if g:
        print("G. the copy stage's CPU, 2 GiB flat disk with 1 GiB of data, HTTPS, uncapped (machine CPU)")
        print(f"  curl HTTPS read to nowhere   {g['read']:7.2f} s, {g['read_cpu']:.2f} CPU s")
        for name in ("qcow2", "raw"):
            print(f"  copy stage, {name:16s} {g[name]:7.2f} s, {g[name + '_cpu']:.2f} CPU s  (x {g[name] / g['read']:.2f}"
                  f" and x {g[name + '_cpu'] / g['read_cpu']:.2f} curl's)")
        print("\ngoals")
        for name, value, limit in (("G copy CPU / curl's", g["qcow2_cpu"] / g["read_cpu"], 1.5),
                                   ("G copy / curl read", g["qcow2"] / g["read"], 1.6)):
            print(f"  {name:24s} {value:6.2f}  (goal <= {limit})  {'PASS' if value <= limit else 'MISS'}")
    if bc and "B" in args.parts:
        print(f"B. capped: copy stage / one nbdkit-curl stream {bc['copy'] / bc['nbdkit']:.2f}  (goal <= 0.3)"
              f"  {'PASS' if bc['copy'] / bc['nbdkit'] <= 0.3 else 'MISS'}")
    if not (a and bc):
        return
    print("A. uncapped, 2 GiB flat disk with 1 GiB of data, HTTPS")
    for name, key in (("curl HTTPS read to nowhere", "read"), ("local qemu-img convert", "local"),
                      ("download then convert", "naive"), ("one nbdkit-curl stream", "nbdkit"),
                      ("job, verify off", "job"), ("job, verify on", "job_verify")):
        print(f"  {name:28s} {a[key]:7.2f} s")
    print(f"  daemon CPU / job wall time   {a['cpu']:7.1%}")
    print("B. each stream capped at 64 MiB/s, 1 GiB disk with 512 MiB of data")
    print(f"  one nbdkit-curl stream       {bc['nbdkit']:7.2f} s")
    print(f"  job, verify off              {bc['job']:7.2f} s")
    print("C. SIGKILL at 60 % of the disk, then restart")
    print(f"  read again                   {bc['reread']:7.1%} of the disk")
    goals = [
        ("A job / curl read", a["job"] / a["read"], 1.25),
        ("A verification's cost", a["job_verify"] / a["job"] - 1, 0.20),
        ("A job / naive", a["job"] / a["naive"], 0.5),
        ("A daemon CPU share", a["cpu"], 0.10),
        ("B job / nbdkit-curl", bc["job"] / bc["nbdkit"], 0.35),
        ("C read again", bc["reread"], 0.45),
    ]
    print("\ngoals")
    for name, value, limit in goals:
        print(f"  {name:24s} {value:6.2f}  (goal <= {limit})  {'PASS' if value <= limit else 'MISS'}")


if __name__ == "__main__":
    main()
