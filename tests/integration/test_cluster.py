"""Daemons on one PostgreSQL: one queue, one view, a node's jobs taken over when it dies or is cut
off (one writer per job at every moment), and one key for all of them.

The nodes share the database, the secrets key file and the host's file system; each has its own
API port and node_name. Their lease is short (3 s) so that a killed node is noticed quickly.
"""

from __future__ import annotations

import json
import os
import select
import signal
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.integration import libvirtd
from tests.integration.daemon import Daemon, wait_for
from tests.integration.receiver import Receiver
from tests.integration.test_live import start_ws_client
from tests.integration.test_transfer import Source, output_file
from tests.integration.vcsim import MiB, Write, create_vm_with_disk, destroy_vm
from tests.postgres import PostgresServer
from tests.tcpproxy import TcpProxy

CLUSTER = {"heartbeat_interval": "0.5s", "lease": "3s"}


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer.start()
    yield server
    server.stop()


def node(tmp_path: Path, number: int, url: str, key_file: str = "shared.key", **config) -> Daemon:
    directory = tmp_path / f"n{number}"
    directory.mkdir(exist_ok=True)
    return Daemon(directory, {"node_name": f"n{number}", "cluster": CLUSTER,
                              "database": {"url": url, "key_file": str(tmp_path / key_file)}, **config})


def start_nodes(tmp_path: Path, url: str, count: int = 3, **config) -> list[Daemon]:
    nodes = []
    try:
        for i in range(1, count + 1):
            nodes.append(node(tmp_path, i, url, **config).start())
    except BaseException:
        for started in nodes:
            started.close()
        raise
    return nodes


def through(proxy: TcpProxy, url: str) -> str:
    """``url`` with its port replaced by the proxy's."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=f"{parts.username}@{parts.hostname}:{proxy.port}").geturl()


class Writers:
    """Watches the processes that write a job's disk (its transfer workers, and qemu-nbd serving the
    target file) every few milliseconds: the most of each kind alive at one moment."""

    def __init__(self, job_id: str, target: str):
        self._marks = {"worker": ("hypersdk.pipeline.transfer.worker", job_id), "qemu-nbd": ("qemu-nbd", target)}
        self.most = dict.fromkeys(self._marks, 0)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(0.01):
            alive = Counter()
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                except OSError:
                    continue
                for kind, (program, mark) in self._marks.items():
                    if any(program in arg for arg in argv) and mark in argv:
                        alive[kind] += 1
            for kind, count in alive.items():
                self.most[kind] = max(self.most[kind], count)

    def stop(self) -> dict:
        self._done.set()
        self._thread.join()
        return self.most


def definition(sim, vm_path: str, out: Path) -> dict:
    return {
        "vm_path": vm_path,
        "source": {"type": "vsphere", "vcenter_url": sim.info.url, "username": "user", "password": "pass",
                   "insecure": True},
        "destination": {"type": "kvm", "libvirt_uri": "test:///default", "output_dir": str(out)},
        "options": {"network_mapping": {"*": "br0"}, "device_models": "source"},
    }


def test_thirty_jobs_submitted_to_three_nodes_each_run_once_and_every_node_sees_them_all(
        tmp_path, postgres, sim, si):
    names = [f"cl-{uuid.uuid4().hex[:6]}-{i}" for i in range(30)]
    vms = [create_vm_with_disk(si, sim, tmp_path, name, 4 * MiB, [Write(0, MiB, 0x40 + i)])
           for i, name in enumerate(names)]
    with Receiver() as receiver:
        nodes = start_nodes(tmp_path, postgres.new_database(), worker_count=2, metrics={"enabled": True},
                            webhooks=[{"url": receiver.url, "events": ["job.submitted", "job.completed"]}])
        watcher = start_ws_client(nodes[0].url, "--until-status", "none", "--seconds", "300")
        try:
            wait_for(lambda: nodes[0].get("/status").json().get("nodes", []) and
                     len(nodes[0].get("/status").json()["nodes"]) == 3, 10, "three nodes")
            out = Path(libvirtd.scratch_dir("hypersdk-cluster-"))
            job_ids = [nodes[i % 3].submit(definition(sim, vm, out)) for i, vm in enumerate(vms)]
            for job_id in job_ids:
                job = nodes[2].wait_finished(job_id, 180)
                assert job["status"] == "completed", (job["node"], job["error"])
            jobs = [nodes[1].job(job_id) for job_id in job_ids]
            # each ran once: one "started" line each, on one node
            assert all([h["message"] for h in job["history"]].count("started") == 1 for job in jobs)
            ran_on = Counter(job["node"] for job in jobs)
            print(f"\njobs per node: {dict(sorted(ran_on.items()))}")
            assert set(ran_on) == {"n1", "n2", "n3"}
            for job, name in zip(jobs, names):
                assert Path(out / f"{name}-disk1.qcow2").exists() and job["result"]["verified"] is True

            status = nodes[2].get("/status").json()
            assert (status["total_jobs"], status["completed_jobs"], status["node"]) == (30, 30, "n3")

            def nodes_idle():  # as of each node's last heartbeat
                listed = nodes[2].get("/status").json()["nodes"]
                return sorted((n["name"], n["state"], n["running_jobs"]) for n in listed) == [
                    ("n1", "up", 0), ("n2", "up", 0), ("n3", "up", 0)]
            wait_for(nodes_idle, 5, "/status to list three idle nodes")
            metrics = nodes[1].get("/metrics").text
            assert 'hypersdk_jobs_total{status="completed"} 30.0' in metrics

            # the WebSocket client on n1 saw every job complete, wherever it ran
            completed = set()

            def ws_completed():
                while select.select([watcher.stdout], [], [], 0)[0]:
                    line = watcher.stdout.readline()
                    if not line:
                        break
                    message = json.loads(line)
                    if message["type"] == "job_update" and message["data"]["status"] == "completed":
                        completed.add(message["data"]["id"])
                return completed >= set(job_ids)
            wait_for(ws_completed, 20, "the WebSocket client on n1 to see every job complete")

            # the webhook got each job's events once, from the node where each happened
            def delivered():
                events = Counter((r["body"]["event"], r["body"]["data"]["id"]) for r in receiver.received)
                return all(events[(e, j)] >= 1 for e in ("job.submitted", "job.completed") for j in job_ids)
            wait_for(delivered, 30, "every job's webhook events")
            events = Counter((r["body"]["event"], r["body"]["data"]["id"]) for r in receiver.received)
            assert set(events.values()) == {1}, [k for k, v in events.items() if v > 1]
        finally:
            watcher.kill()
            for node in nodes:
                node.close()
            for name in names:
                destroy_vm(si.RetrieveContent().searchIndex.FindByInventoryPath(f"DC0/vm/{name}"))


def test_a_killed_node_s_copy_finishes_on_another_node_and_the_node_may_come_back(
        tmp_path, postgres, capped, capped_si):
    size = 512 * MiB
    source = Source(capped_si, capped, tmp_path, size)
    out = Path(libvirtd.scratch_dir("hypersdk-cluster-"))
    nodes = start_nodes(tmp_path, postgres.new_database(), count=2)
    try:
        job_id = nodes[0].submit(source.definition(capped, str(out)))
        job = nodes[1].wait_job(job_id, lambda j: j["progress"]["current_bytes"] >= 0.3 * size, 120, "30 % copied")
        victim = next(node for node in nodes if node.config["node_name"] == job["node"])
        survivor = next(node for node in nodes if node is not victim)
        victim.kill()
        job = survivor.wait_finished(job_id, 240)
        assert job["status"] == "completed", job["error"]
        assert job["node"] == survivor.config["node_name"]
        assert source.copied_to(output_file(out, source.name))
        messages = [h["message"] for h in job["history"]]
        lost = [m for m in messages if m.startswith(f"node {victim.config['node_name']} was lost")]
        assert lost and lost[0].endswith("resuming from its checkpoints on another node"), messages
        assert job["progress"]["resumed_at_bytes"] >= 0.25 * size
        victim.start()  # killed on this host: it need not wait for its old lease to take its name back
        status = victim.get("/status").json()
        assert {n["name"]: n["state"] for n in status["nodes"]}[victim.config["node_name"]] == "up"
        assert victim.job(job_id)["status"] == "completed"
    finally:
        for node in nodes:
            node.close()
        destroy_vm(source.vm)


def test_postgresql_stopped_for_ten_seconds_during_copies_answers_503_fences_the_copies_and_loses_nothing(
        tmp_path, capped, capped_si):
    server = PostgresServer.start()  # a server of its own: this test stops it
    sources = [Source(capped_si, capped, tmp_path, 768 * MiB) for _ in range(2)]
    out = Path(libvirtd.scratch_dir("hypersdk-cluster-"))
    nodes = start_nodes(tmp_path, server.new_database(), count=2, worker_count=1)
    try:
        job_ids = [node.submit(source.definition(capped, str(out))) for node, source in zip(nodes, sources)]
        for job_id in job_ids:
            nodes[0].wait_job(job_id, lambda j: j["progress"]["current_bytes"] >= 0.1 * j["progress"]["total_bytes"] > 0,
                              120, "10 % copied")
        server.pause()
        stopped = time.monotonic()
        try:
            answer = nodes[0].get(f"/jobs/{job_ids[0]}")
            assert answer.status_code == 503, answer.text
            assert "the job database (PostgreSQL) cannot be reached" in answer.json()["error"]
            refused = nodes[1].post("/jobs/submit", sources[0].definition(capped, str(out)))
            assert refused.status_code == 503 and "cannot be reached" in refused.json()["error"]
            assert nodes[1].get("/status").status_code == 200  # from memory
            time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
        finally:
            server.resume()
        for node in nodes:
            wait_for(lambda: node.get("/health").status_code == 200, 15, "the nodes to see PostgreSQL again")
        for job_id, source in zip(job_ids, sources):
            job = nodes[1].wait_finished(job_id, 240)
            assert job["status"] == "completed", job["error"]
            assert source.copied_to(output_file(out, source.name))
            messages = [h["message"] for h in job["history"]]
            # each node fenced itself half a lease into the outage: its copy stopped, kept, and went
            # back to the queue once the database answered; no node took another's job over
            assert messages[:2] == ["submitted", "started"] and messages.count("completed") == 1, messages
            stopped = [m for m in messages if "could not renew its lease" in m]
            assert len(stopped) == 1 and stopped[0].endswith("resumes from its checkpoints"), messages
            assert not any("was lost" in m or "interrupted" in m for m in messages), messages
            assert job["progress"]["resumed_at_bytes"] >= 0.1 * source.size
            stages = [h["stage"] for h in job["history"]]
            assert {"conversion", "verification", "import", "done"} <= set(stages), stages
        assert all(node.log_contains("PostgreSQL is reachable again") for node in nodes)
        assert all(node.log_contains("fenced:") for node in nodes)
    finally:
        for node in nodes:
            node.close()
        server.stop()
        for source in sources:
            destroy_vm(source.vm)


def test_a_job_running_on_one_node_is_cancelled_through_another(tmp_path, postgres, capped, capped_si):
    source = Source(capped_si, capped, tmp_path, 512 * MiB)
    out = Path(libvirtd.scratch_dir("hypersdk-cluster-"))
    nodes = start_nodes(tmp_path, postgres.new_database(), count=2)
    try:
        job_id = nodes[0].submit(source.definition(capped, str(out)))
        job = nodes[0].wait_job(job_id, lambda j: j["progress"]["current_bytes"] > 0, 60, "copying")
        other = next(node for node in nodes if node.config["node_name"] != job["node"])
        answer = other.post("/jobs/cancel", {"job_ids": [job_id]}).json()
        assert answer["cancelled"] == [job_id] and answer["count"] == 1, answer
        assert other.job(job_id)["status"] == "cancelled"
        assert not Path(output_file(out, source.name)).exists()  # the node that ran it cleaned up
    finally:
        for node in nodes:
            node.close()
        destroy_vm(source.vm)


def test_a_node_cut_off_from_postgresql_fences_itself_and_the_other_node_finishes_its_copy_one_writer_at_a_time(
        tmp_path, postgres, capped, capped_si):
    """n1 reaches PostgreSQL through a proxy that the test pauses, so its connections hang as on a lost
    network. It stops its copy half a lease later; n2 takes the job over after the lease and finishes
    it; when the network heals, n1 learns it lost the job and leaves the disk alone."""
    size = 512 * MiB
    source = Source(capped_si, capped, tmp_path, size)
    out = Path(libvirtd.scratch_dir("hypersdk-cluster-"))
    target = output_file(out, source.name)
    url = postgres.new_database()
    proxy = TcpProxy("127.0.0.1", postgres.port)
    n1 = node(tmp_path, 1, through(proxy, url)).start()
    n2 = None
    writers = None
    try:
        job_id = n1.submit(source.definition(capped, str(out)))
        writers = Writers(job_id, target)
        n1.wait_job(job_id, lambda j: j["progress"]["current_bytes"] >= 0.2 * size, 120, "20 % copied on n1")
        n2 = node(tmp_path, 2, url).start()
        proxy.pause()
        cut = time.monotonic()
        wait_for(lambda: n1.log_contains("fenced:"), 10, "n1 to fence itself")
        fenced = time.monotonic() - cut
        assert n1.get("/status").json()["fenced"] is True  # (from memory: it answers while cut off)
        job = n2.wait_job(job_id, lambda j: j["node"] == "n2" and j["status"] == "running", 60, "n2 to take the job over")
        taken = time.monotonic() - cut
        print(f"\nn1 fenced {fenced:.1f} s after the cut; n2 ran the job {taken:.1f} s after it")
        assert fenced < taken
        job = n2.wait_finished(job_id, 240)
        assert job["status"] == "completed", job["error"]
        proxy.resume()
        wait_for(lambda: n1.log_contains("lease is renewed again"), 60, "n1 to reach PostgreSQL again")
        assert n1.get("/status").json()["fenced"] is False
        assert writers.stop() == {"worker": 1, "qemu-nbd": 1}  # never two at once
        assert source.copied_to(target)  # intact: n1 neither wrote nor removed anything after it lost the job
        job = n1.job(job_id)
        messages = [h["message"] for h in job["history"]]
        assert job["status"] == "completed" and messages.count("completed") == 1, messages
        assert any(m.startswith("node n1 was lost") and m.endswith("resuming from its checkpoints on another node")
                   for m in messages), messages
        assert job["progress"]["resumed_at_bytes"] >= 0.15 * size

        # A daemon whose database hangs still stops within its stop timeout (systemd's is 40 s;
        # twistd's own wait for the service 30 s).
        n2.stop()
        second = Source(capped_si, capped, tmp_path, size)
        job_id = n1.submit(second.definition(capped, str(out)))
        n1.wait_job(job_id, lambda j: j["progress"]["current_bytes"] > 0, 60, "copying on n1")
        proxy.pause()
        stopping = time.monotonic()
        assert n1.stop(timeout=60) == -signal.SIGTERM  # (twistd ends by the signal it was stopped with)
        assert time.monotonic() - stopping < 30, n1.output()[-3000:]
        assert n1.log_contains("hypersdk stopped")
        destroy_vm(second.vm)
    finally:
        if writers is not None:
            writers.stop()
        proxy.close()
        for daemon in (n1, n2):
            if daemon is not None:
                daemon.close()
        destroy_vm(source.vm)


def test_a_stopped_node_s_copy_left_running_is_settled_by_a_node_started_later(tmp_path, postgres, capped, capped_si):
    """A node whose stop timed out leaves its jobs running and itself marked stopped. That state is made
    here directly (n1 killed mid-copy, then marked stopped as its stop would have): a node started
    afterwards takes the copy over once n1's lease has expired, and it finishes."""
    import psycopg

    size = 256 * MiB
    source = Source(capped_si, capped, tmp_path, size)
    out = Path(libvirtd.scratch_dir("hypersdk-cluster-"))
    url = postgres.new_database()
    n1 = node(tmp_path, 1, url).start()
    n2 = None
    try:
        job_id = n1.submit(source.definition(capped, str(out)))
        n1.wait_job(job_id, lambda j: j["progress"]["current_bytes"] >= 0.2 * size, 120, "20 % copied")
        n1.kill()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE nodes SET state = 'stopped', last_heartbeat = extract(epoch from clock_timestamp())"
                         " WHERE name = 'n1'")
        n2 = node(tmp_path, 2, url).start()
        job = n2.wait_finished(job_id, 240)
        assert job["status"] == "completed", job["error"]
        assert job["node"] == "n2" and source.copied_to(output_file(out, source.name))
        messages = [h["message"] for h in job["history"]]
        assert any(m.startswith("node n1 stopped (no heartbeat for") for m in messages), messages
        status = {n["name"]: n["state"] for n in n2.get("/status").json()["nodes"]}
        assert status == {"n1": "stopped", "n2": "up"}
    finally:
        for daemon in (n1, n2):
            if daemon is not None:
                daemon.close()
        destroy_vm(source.vm)


def test_a_node_with_another_key_file_is_refused_at_start_and_no_job_fails(tmp_path, postgres, sim, si):
    names = [f"key-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
    vms = [create_vm_with_disk(si, sim, tmp_path, name, 4 * MiB, [Write(0, MiB, 0x50 + i)])
           for i, name in enumerate(names)]
    url = postgres.new_database()
    n1 = node(tmp_path, 1, url, worker_count=1).start()
    try:
        out = Path(libvirtd.scratch_dir("hypersdk-cluster-"))
        job_ids = [n1.submit(definition(sim, vm, out)) for vm in vms]
        other = node(tmp_path, 2, url, key_file="other.key")
        (tmp_path / "other.key").write_bytes(Fernet.generate_key() + b"\n")
        with pytest.raises(AssertionError, match="exited with 1") as refused:
            other.start()
        assert str(tmp_path / "other.key") in str(refused.value)
        assert "give this daemon the key file the database was first used with" in str(refused.value)
        missing = node(tmp_path, 3, url, key_file="missing.key")
        with pytest.raises(AssertionError, match="does not exist"):
            missing.start()
        assert not (tmp_path / "missing.key").exists()
        for job_id in job_ids:
            job = n1.wait_finished(job_id, 120)
            assert (job["status"], job["node"]) == ("completed", "n1"), job["error"]
        assert [n["name"] for n in n1.get("/status").json()["nodes"]] == ["n1"]
    finally:
        n1.close()
        for name in names:
            destroy_vm(si.RetrieveContent().searchIndex.FindByInventoryPath(f"DC0/vm/{name}"))


def warm_pair(tmp_path, postgres, capped, capped_si) -> tuple[str, Source, Path, list[Daemon]]:
    """Two nodes, a running source VM with a 160 MiB disk, and an output directory QEMU can reach."""
    from tests.integration.test_warm import powered_on

    uri = libvirtd.ensure_libvirtd()
    libvirtd.ensure_bridge()
    source = powered_on(Source(capped_si, capped, tmp_path, 160 * MiB))
    out = Path(libvirtd.scratch_dir("hypersdk-cluster-"))
    return uri, source, out, start_nodes(tmp_path, postgres.new_database(), count=2)


def test_a_warm_job_whose_node_is_lost_during_a_pass_goes_on_from_its_change_id_on_the_other_node(
        tmp_path, postgres, capped, capped_si):
    from tests.integration.test_warm import guest_disk, passes, same_disk, snapshots_of, warm_definition

    uri, source, out, nodes = warm_pair(tmp_path, postgres, capped, capped_si)
    snapshot = None
    try:
        job_id = nodes[0].submit(warm_definition(source, capped, out, uri, precopy_interval="3s"))
        snapshot = f"hypersdk-{job_id}"
        nodes[1].wait_job(job_id, lambda j: len(passes(j)) >= 1, 120, "the first pass")
        capped.guest_write(source.name, 0, 20 * MiB, 64 * MiB, 7)  # the second pass reads 64 MiB: 4 s at 16 MiB/s
        wait_for(lambda: snapshots_of(capped_si, source) and len(passes(nodes[1].job(job_id))) == 1, 30,
                 "the second pass under way")
        victim = next(node for node in nodes if node.config["node_name"] == nodes[1].job(job_id)["node"])
        survivor = next(node for node in nodes if node is not victim)
        victim.kill()
        assert snapshots_of(capped_si, source) == [snapshot]  # what the lost node left
        job = survivor.wait_job(job_id, lambda j: j["node"] == survivor.config["node_name"] and len(passes(j)) >= 2,
                                120, "the pass resumed on the other node")
        resumed = passes(job)[1]
        assert resumed["full"] is False and resumed["changed_bytes"] >= 64 * MiB, passes(job)  # from the changeId
        assert any(h["message"].startswith(f"removed 1 snapshot(s) {snapshot} an interrupted pass left")
                   for h in survivor.job(job_id)["history"]), survivor.job(job_id)["history"]
        assert survivor.post(f"/jobs/{job_id}/cutover").status_code == 202
        job = survivor.wait_finished(job_id, 120)
        assert job["status"] == "completed" and job["node"] == survivor.config["node_name"], job["error"]
        assert snapshots_of(capped_si, source) == []
        assert same_disk(guest_disk(capped, source, tmp_path / "guest.raw"), output_file(out, source.name))
    finally:
        for each in nodes:
            each.close()
        libvirtd.remove_domain(uri, source.name)
        destroy_vm(source.vm)


def test_a_warm_job_whose_node_is_lost_during_the_cutover_has_its_source_powered_on_by_the_node_that_takes_it(
        tmp_path, postgres, capped, capped_si):
    from tests.integration.test_warm import in_the_boot_check_after_the_cutover

    uri, source, out, nodes = warm_pair(tmp_path, postgres, capped, capped_si)
    try:
        job_id = in_the_boot_check_after_the_cutover(nodes[0], nodes[1], source, capped, out, uri)
        victim = next(node for node in nodes if node.config["node_name"] == nodes[1].job(job_id)["node"])
        survivor = next(node for node in nodes if node is not victim)
        victim.kill()
        job = survivor.wait_finished(job_id, 120)
        assert job["status"] == "failed", job
        cleaned = wait_for(lambda: [h["message"] for h in survivor.job(job_id)["history"]
                                    if h["message"].startswith("cleaned up after its node was lost: removed ")], 60,
                           "the clean-up by the node that took the job over")
        assert f"source VM {source.path} switched off" in cleaned[0], cleaned
        assert source.vm.runtime.powerState == "poweredOn"
        assert f"domain {source.name}" in cleaned[0], cleaned
    finally:
        for each in nodes:
            each.close()
        libvirtd.remove_domain(uri, source.name)
        destroy_vm(source.vm)
