"""What a `conversion_method: virt-v2v` job costs, before and after converting the copied disks in place.

Before: the transfer engine staged every disk in the job's work directory, then `virt-v2v -i
libvirtxml -o local` read those copies and wrote new converted ones, which import moved into place
(verification off: virt-v2v changes the guest). After: the engine writes the final file in
output_dir, verifies it by its chunk hashes, and `virt-v2v-in-place` converts it where it is.

Both run as the daemon runs them, on the real test guest (tests/guest: Debian 12 on a 1 GiB disk, a
pvscsi controller, vmxnet3) from the vCenter simulator into a qcow2 in output_dir, with no boot
check. "Before" is the daemon of an older commit, checked out in a temporary git worktree (by
default the parent of the commit that brought virt-v2v-in-place into pipeline/guest.py); "after" is
this checkout. One simulator, one VM, the runs one after the other.

Figures per run:
- guest conversion: from virt-v2v's first message (the job's progress, polled) to the next stage;
- copy (+ verification) to the end of the guest conversion: the conversion and verification stages;
- bytes written: `write_bytes` of the daemon's /proc/<pid>/io across the job (the children it reaps,
  and theirs, are added to it by the kernel: qemu-img, the transfer workers, virt-v2v and its
  appliance), plus this process's own: it is the subreaper of what virt-v2v leaves orphaned (the
  nbdkit and qemu-nbd that write its output), otherwise lost with init;
- peak disk space: the most the job's files took at once (allocated blocks in its work directory, in
  output_dir and in the virt-v2v scratch directories under /tmp, sampled every 0.25 s), and what is
  left at the end (the migrated disk).

Usage: PYTHONPATH=src:. .venv/bin/python benchmarks/v2v.py [--before REV] [--runs after|before|both]
Under TCG (these machines) each run takes 3-5 minutes.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

import libvirt  # noqa: E402

from hypersdk.vsphere.connection import VCenterParams, thd_connect  # noqa: E402
from tests.guest.build import guest_image  # noqa: E402
from tests.integration import libvirtd  # noqa: E402
from tests.integration.daemon import Daemon  # noqa: E402
from tests.integration.guest_vms import create_guest_vm  # noqa: E402
from tests.integration.vcsim import Vcsim  # noqa: E402

MiB = 1024**2
VM = "bench-v2v"


def when(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


class Orphans(threading.Thread):
    """Makes this process the subreaper of the daemon's descendants and reaps those orphaned: the
    processes virt-v2v leaves to die (its nbdkit, qemu-nbd) are counted in this process's
    /proc/self/io once reaped, instead of being lost with init."""

    def __init__(self, keep: set):
        super().__init__(daemon=True)
        self.keep = keep  # our own children, waited for by their Popen
        self.done = threading.Event()
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER

    def run(self):
        while not self.done.wait(0.05):
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                continue
            if info is not None and info.si_pid not in self.keep:
                os.waitpid(info.si_pid, 0)


def allocated(paths) -> int:
    total = 0
    for top in paths:
        for directory, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if d != ".libguestfs-cache"]  # the shared appliance, not the job's
            for name in files:
                try:
                    total += os.lstat(os.path.join(directory, name)).st_blocks * 512
                except FileNotFoundError:
                    pass
    return total


class Watch(threading.Thread):
    """Samples the job's disk usage and the time of virt-v2v's first message until ``done`` is set."""

    def __init__(self, daemon: Daemon, job_id: str, dirs):
        super().__init__(daemon=True)
        self.daemon_, self.job_id, self.dirs = daemon, job_id, dirs
        self.done = threading.Event()
        self.peak = 0
        self.v2v_started = None

    def run(self):
        while not self.done.is_set():
            self.peak = max(self.peak, allocated([*self.dirs, *glob.glob("/tmp/hypersdk-v2v-*")]))
            if self.v2v_started is None:
                message = self.daemon_.job(self.job_id)["progress"]["message"]
                if "virt-v2v" in message and not message.startswith("copying"):
                    self.v2v_started = time.time()
            self.done.wait(0.25)


def run_job(label: str, src_tree: Path, sim: Vcsim, path: str, uri: str, verify) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"hypersdk-bench-{label}-"))
    out = Path(libvirtd.scratch_dir("hypersdk-bench-out-"))
    daemon = Daemon(home, {"pipeline": {"connect_timeout": 30}},
                    env={"PYTHONPATH": f"{src_tree / 'src'}:{src_tree}"}).start(timeout=60)
    conn = libvirt.open(uri)
    try:
        options = {"conversion_method": "virt-v2v", "network_mapping": {"*": libvirtd.ensure_bridge()}}
        if verify is not None:
            options["verify"] = verify
        orphans = Orphans({daemon.process.pid})
        orphans.start()
        before, before_self = write_bytes(daemon.process.pid), write_bytes(os.getpid())
        job_id = daemon.submit({
            "vm_path": path,
            "source": {"type": "vsphere", "vcenter_url": sim.info.url, "username": "user", "password": "pass",
                       "insecure": True},
            "destination": {"type": "kvm", "libvirt_uri": uri, "output_dir": str(out), "domain_type": "qemu",
                            "domain_name": f"{VM}-{label}"},
            "options": options,
        })
        watch = Watch(daemon, job_id, [home / "var" / "work", out])
        watch.start()
        job = daemon.wait_finished(job_id, timeout=1800)
        watch.done.set()
        watch.join()
        written = write_bytes(daemon.process.pid) - before + write_bytes(os.getpid()) - before_self
        orphans.done.set()
        orphans.join()
        assert job["status"] == "completed", job["error"]
        entered = [(h["stage"], when(h["at"])) for h in job["history"] if h["status"] == "running"]
        start = next(at for stage, at in entered if stage == "conversion")
        end = next(at for stage, at in entered if at > start and stage not in ("conversion", "verification"))
        return {
            "label": label,
            "copy_and_conversion_s": end - start,
            "guest_conversion_s": end - watch.v2v_started,
            "job_s": job["result"]["duration_seconds"],
            "written": written,
            "peak": watch.peak,
            "final": allocated([out]),
            "verified": job["result"]["verified"],
        }
    finally:
        daemon.stop()
        try:
            dom = conn.lookupByName(f"{VM}-{label}")
            dom.undefine()
        except libvirt.libvirtError:
            pass
        conn.close()
        shutil.rmtree(out, True)
        shutil.rmtree(home, True)


def before_rev() -> str:
    brought = subprocess.run(["git", "log", "-1", "--format=%H", "-S", "virt-v2v-in-place", "--",
                              "src/hypersdk/pipeline/guest.py"], cwd=REPO, check=True, capture_output=True,
                             text=True).stdout.strip()
    if not brought:
        raise SystemExit("no commit brings virt-v2v-in-place into pipeline/guest.py yet: pass --before REV")
    return f"{brought}^"


def show(runs: list[dict]) -> None:
    print(f"{'':8} {'guest conv s':>12} {'copy+conv s':>12} {'job s':>7} {'written MiB':>12} {'peak MiB':>9}"
          f" {'final MiB':>10} verified")
    for r in runs:
        print(f"{r['label']:8} {r['guest_conversion_s']:12.1f} {r['copy_and_conversion_s']:12.1f} {r['job_s']:7.1f}"
              f" {r['written'] / MiB:12.0f} {r['peak'] / MiB:9.0f} {r['final'] / MiB:10.0f} {r['verified']}")
    if len(runs) == 2:
        old, new = runs
        for key, what in (("guest_conversion_s", "guest conversion"), ("copy_and_conversion_s", "copy+conversion"),
                          ("written", "bytes written"), ("peak", "peak disk space")):
            print(f"after / before, {what}: {new[key] / old[key]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", help="the commit of the old path (default: see the docstring)")
    parser.add_argument("--runs", choices=("both", "before", "after"), default="both")
    parser.add_argument("--verify", choices=("default", "true", "false"), default="default",
                        help="options.verify of the jobs (the old path ignored it for virt-v2v)")
    args = parser.parse_args()
    verify = None if args.verify == "default" else args.verify == "true"
    image = guest_image()
    uri = libvirtd.ensure_libvirtd()
    worktree = None
    runs = []
    with Vcsim.start() as sim:
        si = thd_connect(VCenterParams.from_url(sim.info.url, "user", "pass", insecure=True), 30)
        path = create_guest_vm(si, sim, VM, image, mac="00:50:56:3a:7f:01")
        try:
            if args.runs in ("both", "before"):
                rev = args.before or before_rev()
                worktree = Path(tempfile.mkdtemp(prefix="hypersdk-before-"))
                subprocess.run(["git", "worktree", "add", "--detach", str(worktree), rev], cwd=REPO, check=True,
                               capture_output=True)
                described = subprocess.run(["git", "log", "-1", "--format=%h %s", rev], cwd=REPO, capture_output=True,
                                           text=True).stdout.strip()
                print(f"before: {described[:100]}", flush=True)
                runs.append(run_job("before", worktree, sim, path, uri, verify))
                show(runs)
            if args.runs in ("both", "after"):
                runs.append(run_job("after", REPO, sim, path, uri, verify))
        finally:
            if worktree is not None:
                subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, capture_output=True)
    show(runs)


if __name__ == "__main__":
    main()
