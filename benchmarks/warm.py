"""Warm migration against a cold one, for the same VM, through the daemon, in the same process.

The simulator holds each /folder stream to 16 MiB/s; the VM has a 2 GiB flat disk holding 1 GiB of
random data (every other 16 MiB). Then:
- cold: the VM off, Changed Block Tracking off: the whole job, and the bytes read;
- warm: the VM running; the first pass; the guest writer changes 32 MiB (32 writes of 1 MiB spread over
  the disk); the second pass; 32 MiB more; the cutover by API. Figures: the bytes the simulator served
  during the final pass against the bytes changed since the last pass (goal <= 1.25), the final pass's
  seconds against the first full pass's (goal <= 0.1), and the downtime (source off to target up)
  against the cold job's whole time.
The target is a real libvirt domain (qemu:///system, TCG), removed afterwards.

With --scattered N the changes before the cutover are N writes of 4 KiB instead (a busy guest's
pattern): each touches a 64 KiB tracking block, and the engine rebuilds the 8 MiB chunk around it.

Usage: PYTHONPATH=src:. .venv/bin/python benchmarks/warm.py [--scattered N]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]


from benchmarks.transfer import Bench, when  # noqa: E402
from hypersdk.vsphere.connection import VCenterParams, thd_connect  # noqa: E402
from tests.integration import libvirtd  # noqa: E402
from tests.integration.daemon import Daemon  # noqa: E402
from tests.integration.vcsim import wait_task  # noqa: E402

GiB = 1024**3
MiB = 1024**2
CHANGE = 32 * MiB


def scatter_writes(bench: Bench, seed: int, count: int = CHANGE // MiB, size: int = MiB) -> int:
    """``count`` writes of ``size`` bytes at random ``size``-aligned offsets of the disk (the guest
    writer): the bytes written."""
    picks = random.Random(seed).sample(range(2 * GiB // size), count)
    for n, block in enumerate(picks):
        bench.sim.guest_write("bench", 0, block * size, size, seed * 100000 + n)
    return count * size


def definition(bench: Bench, out: Path, uri: str, name: str, warm) -> dict:
    d = bench.definition(out, name, True)
    d["destination"].update(libvirt_uri=uri, domain_type="qemu")
    d["options"]["network_mapping"] = {"*": libvirtd.BRIDGE}
    if warm:
        d["options"]["warm"] = warm
    return d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scattered", type=int, default=0, help="4 KiB writes before the cutover instead")
    args = parser.parse_args()
    uri = libvirtd.ensure_libvirtd()
    libvirtd.ensure_bridge()
    work = Path(tempfile.mkdtemp(prefix="hypersdk-bench-warm-", dir="/var/tmp"))
    bench = Bench(work, 2 * GiB, 2 * GiB, stream_rate=16 * MiB)
    out = Path(libvirtd.scratch_dir("hypersdk-bench-out-"))  # (QEMU's user reads the started target there)
    (work / "d").mkdir()
    daemon = Daemon(work / "d", {}).start()
    try:
        si = thd_connect(VCenterParams.from_url(bench.sim.info.url, "user", "pass", insecure=True), 30)
        vm = si.RetrieveContent().searchIndex.FindByInventoryPath("DC0/vm/bench")

        before = bench.served()
        cold = daemon.wait_finished(daemon.submit(definition(bench, out, uri, "bench-cold", None)), 3600)
        assert cold["status"] == "completed", cold["error"]
        cold_seconds = when(cold["completed_at"]) - when(cold["started_at"])
        cold_read = bench.served() - before
        libvirtd.remove_domain(uri, "bench-cold")
        for leftover in out.iterdir():
            leftover.unlink()

        wait_task(vm.PowerOnVM_Task())
        job_id = daemon.submit(definition(bench, out, uri, "bench-warm", {"precopy_interval": "30s"}))
        daemon.wait_job(job_id, lambda j: len(j["progress"]["passes"]) >= 1, 3600, "the first pass")
        scatter_writes(bench, 1)
        daemon.wait_job(job_id, lambda j: len(j["progress"]["passes"]) >= 2, 600, "the second pass")
        written = scatter_writes(bench, 2, args.scattered, 4096) if args.scattered else scatter_writes(bench, 2)
        before_final = bench.served()
        assert daemon.post(f"/jobs/{job_id}/cutover").status_code == 202
        warm = daemon.wait_finished(job_id, 3600)
        assert warm["status"] == "completed", warm["error"]
        final_read = bench.served() - before_final
        passes = warm["result"]["passes"]
        first, final = passes[0], passes[-1]
        downtime = warm["result"]["downtime_seconds"]
        libvirtd.remove_domain(uri, "bench-warm")
    finally:
        daemon.close()
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    print("2 GiB flat disk with 1 GiB of data, each datastore stream held to 16 MiB/s")
    print(f"cold job (the VM off, no CBT)        {cold_seconds:8.1f} s, read {cold_read / MiB:6.0f} MiB")
    for p in passes:
        print(f"warm pass {p['number']} ({'full' if p['full'] else 'changes'}){'':15s}{p['seconds']:8.1f} s,"
              f" read {p['read_bytes'] / MiB:6.1f} MiB, changed {p['changed_bytes'] / MiB:6.1f} MiB,"
              f" asking vCenter {p['query_seconds']:.1f} s")
    print(f"final pass: served by the datastore  {final_read / MiB:8.1f} MiB for {written / MiB:.2f} MiB written"
          f" in {args.scattered or CHANGE // MiB} pieces ({final_read / written:.2f}, goal <= 1.25 for 1 MiB pieces)")
    print(f"final pass / first full pass         {final['seconds'] / first['seconds']:8.3f}  (goal <= 0.1)")
    own = final["seconds"] - final["query_seconds"]
    print(f"  without waiting for QueryChangedDiskAreas ({final['query_seconds']:.1f} s)"
          f"  {own / first['seconds']:.3f}")
    print(f"downtime (source off to target up)   {downtime:8.1f} s against the cold job's {cold_seconds:.1f} s"
          f" ({downtime / cold_seconds:.2f})")


if __name__ == "__main__":
    main()
