"""Figures for several nodes on one PostgreSQL (issue 18), against baselines run in the same process.

1. Queue throughput: N pending jobs claimed (claim_next, FOR UPDATE SKIP LOCKED) by 1 node, then by
   3 nodes at once; each node claims one job after another, as its job manager does. Jobs per second
   and the ratio 3 nodes / 1 node. Every job must be claimed exactly once.
2. Store latency at 100,000 jobs, PostgreSQL against SQLite: the store calls behind GET /jobs/{id}
   (get + history) and POST /jobs/query {"status": "failed", "limit": 100}; medians and p99 over
   random jobs. The HTTP layer above them is the same for both engines (benchmarks/api.py measures
   it on SQLite). Goal: medians under 20 ms.
3. 12 migrations of 256 MiB disks from the vCenter simulator with each stream held to 16 MiB/s, by
   1 daemon and then by 3 daemons sharing the database (all on this host, default settings: 4 jobs
   and 8 vCenter streams per node). Wall time from the first submit to the last completion.
   Goal: 3 nodes <= 0.45 x 1 node.

The server is a throw-away PostgreSQL started as the postgres user (tests/postgres.py), on this host.

Usage: PYTHONPATH=src:. .venv/bin/python benchmarks/cluster.py [--claims 3000] [--jobs 100000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from hypersdk.jobs.model import COMPLETED, FAILED, NewJob, Progress  # noqa: E402
from hypersdk.store.engine import SQLiteEngine  # noqa: E402
from hypersdk.store.jobs import JobStore, this_node  # noqa: E402
from hypersdk.store.postgres import PostgresEngine  # noqa: E402
from tests.fakes.runner import ImmediateRunner  # noqa: E402
from tests.helpers import result_of  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402

GOAL_MEDIAN_MS = 20.0


def say(text: str) -> None:
    print(text, flush=True)


def pg_store(url: str, name: str) -> JobStore:
    store = JobStore(PostgresEngine(url, ImmediateRunner(), connections=2), None, node=this_node(name))
    result_of(store.open())
    return store


def new_jobs(count: int, first: int, created: float) -> list[NewJob]:
    return [NewJob(id=f"job-{first + k:07d}", definition={"id": f"job-{first + k:07d}", "vm_path": f"DC0/vm/vm{k}"},
                   secrets={"source.password": "pw"}, created_at=created + first + k, vcenter_key="vc:443")
            for k in range(count)]


def claims_per_second(url: str, nodes: int, count: int) -> float:
    stores = [pg_store(url, f"node{i}") for i in range(nodes)]
    for first in range(0, count, 500):
        result_of(stores[0].insert(new_jobs(min(500, count - first), first, 1000.0)))
    claimed: list[list[str]] = [[] for _ in stores]

    def claim(i: int) -> None:
        while (job := result_of(stores[i].claim_next(2000.0))) is not None:
            claimed[i].append(job.id)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(nodes)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    every = [job_id for ids in claimed for job_id in ids]
    assert len(every) == len(set(every)) == count, "a job was claimed twice or not at all"
    for store in stores:
        result_of(store.close())
    say(f"   {nodes} node(s): {count} jobs in {seconds:.2f} s = {count / seconds:,.0f} jobs/s"
        f" (per node: {', '.join(str(len(ids)) for ids in claimed)})")
    return count / seconds


def fill(store: JobStore, jobs: int) -> list[str]:
    """``jobs`` jobs, each claimed and ended (7 in 8 completed) with four history lines."""
    rng = random.Random(7)
    ids = []
    batch = 1000
    for first in range(0, jobs, batch):
        new = new_jobs(min(batch, jobs - first), first, 1_000_000.0)
        result_of(store.insert(new))
        for job in new:
            claimed = result_of(store.claim_next(job.created_at + 1))
            result_of(store.save_progress(claimed.id, Progress(stage="conversion"), job.created_at + 2, "copying"))
            status = FAILED if rng.random() < 0.125 else COMPLETED
            result_of(store.finish(claimed.id, status, job.created_at + 3, from_statuses=("running",),
                                   error="boom" if status == FAILED else None))
            ids.append(claimed.id)
    return ids


def latencies(store: JobStore, ids: list[str], samples: int) -> dict[str, list[float]]:
    rng = random.Random(11)
    figures: dict[str, list[float]] = {"get": [], "query": []}
    for _ in range(samples):
        job_id = rng.choice(ids)
        started = time.perf_counter()
        assert result_of(store.get(job_id)) is not None
        result_of(store.history(job_id))
        figures["get"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        jobs, _ = result_of(store.query([FAILED], None, 100, 0, count=False))
        assert len(jobs) == 100
        figures["query"].append((time.perf_counter() - started) * 1000)
    return figures


def summary(name: str, values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    median, p99 = statistics.median(values), values[int(0.99 * (len(values) - 1))]
    say(f"   {name}: median {median:.2f} ms, p99 {p99:.2f} ms")
    return median, p99


def migrations_seconds(server, nodes: int, sim, si, workdir: Path) -> float:
    from tests.integration import libvirtd
    from tests.integration.test_cluster import start_nodes
    from tests.integration.test_transfer import Source
    from tests.integration.vcsim import MiB, destroy_vm

    base = Path(tempfile.mkdtemp(prefix=f"nodes{nodes}-", dir=workdir))
    sources = [Source(si, sim, base, 256 * MiB) for _ in range(12)]
    out = Path(libvirtd.scratch_dir("hypersdk-bench-"))
    daemons = start_nodes(base, server.new_database(), count=nodes)
    try:
        started = time.monotonic()
        job_ids = [daemons[i % nodes].submit(source.definition(sim, str(out))) for i, source in enumerate(sources)]
        for job_id in job_ids:
            job = daemons[0].wait_finished(job_id, 900)
            assert job["status"] == "completed", job["error"]
        seconds = time.monotonic() - started
    finally:
        for daemon in daemons:
            daemon.close()
        for source in sources:
            destroy_vm(source.vm)
        shutil.rmtree(out, ignore_errors=True)
    say(f"   {nodes} node(s): 12 migrations in {seconds:.1f} s")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--claims", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--skip", nargs="*", default=[], choices=["queue", "latency", "migrations"])
    args = parser.parse_args()
    server = PostgresServer.start()
    ok = True
    try:
        if "queue" not in args.skip:
            say(f"1. queue throughput, {args.claims} pending jobs")
            one = claims_per_second(server.new_database(), 1, args.claims)
            three = claims_per_second(server.new_database(), 3, args.claims)
            say(f"   3 nodes / 1 node: {three / one:.2f}x")
        if "latency" not in args.skip:
            ok &= store_latency(server, args)
        if "migrations" not in args.skip:
            from hypersdk.vsphere.connection import VCenterParams, thd_connect
            from tests.integration.test_transfer import STREAM_RATE
            from tests.integration.vcsim import Vcsim

            say("3. 12 capped migrations")
            with Vcsim.start(args=["-stream-rate", str(STREAM_RATE)]) as sim, \
                    tempfile.TemporaryDirectory() as workdir:
                si = thd_connect(VCenterParams.from_url(sim.info.url, "user", "pass", insecure=True), 30)
                one = migrations_seconds(server, 1, sim, si, Path(workdir))
                three = migrations_seconds(server, 3, sim, si, Path(workdir))
            met = three <= 0.45 * one
            ok &= met
            say(f"   3 nodes / 1 node: {three / one:.2f}x (goal <= 0.45): {'PASS' if met else 'MISS'}")
    finally:
        server.stop()
    return 0 if ok else 1


def store_latency(server, args) -> bool:
    ok = True
    say(f"2. store latency at {args.jobs:,} jobs")
    medians = {}
    with tempfile.TemporaryDirectory() as directory:
        for engine, store in (
                ("sqlite", JobStore(SQLiteEngine(f"{directory}/jobs.db", ImmediateRunner()), None)),
                ("postgresql", JobStore(PostgresEngine(server.new_database(), ImmediateRunner()), None))):
            result_of(store.open())
            started = time.perf_counter()
            ids = fill(store, args.jobs)
            say(f"   {engine}: filled in {time.perf_counter() - started:.0f} s")
            figures = latencies(store, ids, args.samples)
            medians[engine] = {name: summary(f"{engine} {name}", values)[0] for name, values in figures.items()}
            result_of(store.close())
    for name in ("get", "query"):
        ratio = medians["postgresql"][name] / medians["sqlite"][name]
        met = medians["postgresql"][name] < GOAL_MEDIAN_MS
        ok &= met
        say(f"   {name}: PostgreSQL / SQLite {ratio:.2f}x; PostgreSQL median < {GOAL_MEDIAN_MS:g} ms:"
            f" {'PASS' if met else 'MISS'}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
