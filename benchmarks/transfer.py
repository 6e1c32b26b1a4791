"""How fast a disk moves from vCenter into a qcow2 through the daemon, against two baselines.

Prints, in one run on this machine:
  - the daemon's job wall time for a VM with one 4 GiB flat disk holding 2 GiB of data
    (vCenter simulator over HTTPS → nbdkit → qemu-img → qcow2), with and without verification;
  - `qemu-img convert` of the same VMDK from local disk (this machine's limit);
  - the naive way a user would script it: download the flat file over HTTPS, then convert it;
  - the daemon process's own CPU time during the job, as a share of the job's wall time.
Goals (issue 3): job ≤ 1.5 x local convert, ≤ 0.5 x naive, daemon CPU < 10 % of wall time.
It also prints how long curl alone takes to read the file over HTTPS: no streaming design
can beat the source.

Usage: PYTHONPATH=src:. .venv/bin/python benchmarks/transfer.py [--size-gib 4] [--data-gib 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from hypersdk.vsphere.connection import VCenterParams, thd_connect  # noqa: E402
from hypersdk.vsphere.datastore import session_cookie  # noqa: E402
from tests.integration.daemon import Daemon  # noqa: E402
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
        for offset in range(0, data, len(chunk)):  # distinct chunks: no dedup or compression shortcut
            out.seek(offset)
            out.write(chunk[: min(len(chunk), data - offset)])
            chunk = chunk[1:] + chunk[:1]
    return descriptor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=4)
    parser.add_argument("--data-gib", type=float, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size, data = int(args.size_gib * GiB), int(args.data_gib * GiB)
    work = Path(tempfile.mkdtemp(prefix="hypersdk-bench-", dir="/var/tmp"))
    sim = Vcsim.start()
    daemon = None
    try:
        params = VCenterParams.from_url(sim.info.url, "user", "pass", insecure=True)
        si = thd_connect(params, 30)
        create_vm(si, "bench", firmware="bios", networks=("VM Network",), cdrom=False, disk_kb=size // 1024)
        descriptor = make_source_disk(sim.info.datastore_dir, "bench", size, data)
        extent = descriptor.with_name("bench-flat.vmdk")
        print(f"source: {size / GiB:g} GiB flat VMDK with {data / GiB:g} GiB of random data, simulator over HTTPS")

        out = work / "out"
        out.mkdir()
        daemon = Daemon(work / "daemon", {"worker_count": 1})
        (work / "daemon").mkdir()
        daemon.start()
        definition = {
            "vm_path": "DC0/vm/bench",
            "source": {"type": "vsphere", "vcenter_url": sim.info.url, "username": "user", "password": "pass",
                       "insecure": True},
            "destination": {"type": "kvm", "libvirt_uri": "test:///default", "output_dir": str(out)},
            "options": {"network_mapping": {"*": "br0"}, "device_models": "source"},  # no guest on these disks
        }
        url = f"https://127.0.0.1:{sim.info.port}/folder/bench/bench-flat.vmdk?dcPath=DC0&dsName=LocalDS_0"
        cookie = session_cookie(si)
        figures: dict[str, list[float]] = {k: [] for k in ("local", "read", "naive", "job", "job_verify", "conversion", "cpu")}
        for run in range(args.runs):
            subprocess.run(["cat", str(extent)], stdout=subprocess.DEVNULL, check=True)  # warm cache for everyone
            target = work / "local.qcow2"
            figures["local"].append(timed(["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", str(descriptor), str(target)]))
            target.unlink()

            # The source's own speed: curl reading the flat file over HTTPS into nothing.
            figures["read"].append(timed(["curl", "-sSfk", "-H", f"Cookie: {cookie}", "-o", "/dev/null", url]))

            raw, target = work / "download.raw", work / "naive.qcow2"
            started = time.monotonic()
            subprocess.run(["curl", "-sSfk", "-H", f"Cookie: {cookie}", "-o", str(raw), url], check=True, timeout=3600)
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(target)], check=True)
            figures["naive"].append(time.monotonic() - started)
            raw.unlink()
            target.unlink()

            for verify in (False, True):
                definition["options"]["verify"] = verify
                definition["destination"]["domain_name"] = f"bench-{run}-{int(verify)}"
                cpu_before = cpu_seconds(daemon.process.pid)
                started = time.monotonic()
                job = daemon.wait_finished(daemon.submit(definition), timeout=3600)
                wall = time.monotonic() - started
                cpu = cpu_seconds(daemon.process.pid) - cpu_before
                assert job["status"] == "completed", job["error"]
                figures["job_verify" if verify else "job"].append(wall)
                if not verify:
                    figures["conversion"].append(job["result"]["stage_seconds"]["conversion"])
                    figures["cpu"].append(cpu / wall)
                for f in out.iterdir():
                    f.unlink()
            print(f"run {run + 1}: local {figures['local'][-1]:.2f} s, HTTPS read {figures['read'][-1]:.2f} s, "
                  f"naive {figures['naive'][-1]:.2f} s, "
                  f"job {figures['job'][-1]:.2f} s (conversion {figures['conversion'][-1]:.2f} s), "
                  f"job with verification {figures['job_verify'][-1]:.2f} s, daemon CPU {figures['cpu'][-1]:.1%}")

        med = {k: statistics.median(v) for k, v in figures.items()}
        print("\nmedians over", args.runs, "runs")
        print(f"  local qemu-img convert      {med['local']:7.2f} s")
        print(f"  curl HTTPS read to nowhere  {med['read']:7.2f} s   (the source's own limit)")
        print(f"  naive download + convert    {med['naive']:7.2f} s")
        print(f"  daemon job (verify off)     {med['job']:7.2f} s   conversion stage {med['conversion']:.2f} s")
        print(f"  daemon job (verify on)      {med['job_verify']:7.2f} s")
        print(f"  daemon CPU / job wall time  {med['cpu']:7.1%}")
        goals = [
            ("job / local convert", med["job"] / med["local"], 1.5),
            ("job / naive", med["job"] / med["naive"], 0.5),
            ("daemon CPU share", med["cpu"], 0.10),
        ]
        print("\ngoals")
        for name, value, limit in goals:
            print(f"  {name:22s} {value:6.2f}  (goal <= {limit})  {'PASS' if value <= limit else 'MISS'}")
    finally:
        if daemon is not None:
            daemon.close()
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
