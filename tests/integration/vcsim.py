"""The vCenter simulator for integration tests, and helpers to give its VMs real disks.

``Vcsim.start()`` builds ``tests/vcsim/`` once (cached as
``build/vcsim/vcsim``, rebuilt when any of its .go files is newer), starts it in its own
process group with a private TMPDIR, and reads the JSON line it prints. The
simulator exits when we close its stdin, when it gets SIGTERM, and when this
process dies (prctl PDEATHSIG): no orphan survives a killed test run.

Note: PDEATHSIG fires when the *thread* that started the child exits, so
start the simulator from a thread that outlives it (pytest fixtures do).

Everything here has a deadline; nothing sleeps to wait.

Warm migration (details in tests/vcsim/main.go's header): the simulator tracks changed blocks as
vSphere does. ReconfigVM ``changeTrackingEnabled`` gives each disk a tracking uuid; its
``backing.changeId`` (``"52 de ... 63/<seq>"``) is empty until the next stun point (snapshot create or
remove, power on/off, ShutdownGuest), each of which issues seq+1. ``vm.QueryChangedDiskAreas`` answers
64 KiB-block extents (``"*"``: non-zero data; else what differs since that changeId) as of a snapshot,
or of now for a powered-off VM, at most ``-cbt-max-extents`` per call; faults are vim.fault.FileFault
(unknown changeId, tracking off), vmodl.fault.InvalidArgument (startOffset at the capacity, a snapshot of
another VM), vim.fault.InvalidPowerState (no snapshot, VM running). A running VM's ``-flat.vmdk`` answers
500 over ``/folder`` until a snapshot freezes the base (the simulator's own VMs are exempt unless
``-lock-builtin-vms``); guest writes then go to the snapshot's delta, merged into the base at removal.
``Vcsim.guest_write`` / ``guest_read`` drive and read the guest, ``guest_pattern`` gives the bytes of a
seeded write, ``Vcsim.folder_get`` reads the datastore as a client would.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterable, Optional, Sequence

from attrs import field, frozen
from pyVmomi import vim, vmodl

from tests.integration.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIR = REPO / "tests" / "vcsim"
SOURCE = SOURCE_DIR / "main.go"
BUILD_DIR = REPO / "build" / "vcsim"
BINARY = BUILD_DIR / "vcsim"
GOPATH = "/usr/share/gocode"

MiB = 1024 * 1024


class VcsimError(RuntimeError):
    pass


def _go() -> str:
    found = shutil.which("go") or next((p for p in ("/usr/lib/go/bin/go", "/usr/bin/go") if os.path.exists(p)), None)
    if not found:
        raise VcsimError("Go is not installed: apt-get install -y golang-go golang-github-vmware-govmomi-dev")
    return found


def build_vcsim(timeout: float = 300.0) -> Path:
    """The simulator binary, built if missing or older than any tests/vcsim/*.go (serialized across processes)."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with open(BUILD_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        newest = max(p.stat().st_mtime for p in SOURCE_DIR.glob("*.go"))
        if BINARY.exists() and BINARY.stat().st_mtime >= newest:
            return BINARY
        if not Path(GOPATH, "src/github.com/vmware/govmomi/simulator").is_dir():
            raise VcsimError(f"govmomi sources missing under {GOPATH}: apt-get install -y golang-github-vmware-govmomi-dev")
        tmp = BUILD_DIR / f".vcsim.{os.getpid()}"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GOPATH": GOPATH,
            "GO111MODULE": "off",
            "GOFLAGS": "",
            "CGO_ENABLED": "0",
        }
        if os.environ.get("GOCACHE"):
            env["GOCACHE"] = os.environ["GOCACHE"]
        if os.environ.get("HOME"):
            env["HOME"] = os.environ["HOME"]
        else:
            env["GOCACHE"] = env.get("GOCACHE") or str(BUILD_DIR / "gocache")
        try:
            result = subprocess.run(
                [_go(), "build", "-o", str(tmp), "."],
                cwd=SOURCE_DIR, env=env, capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise VcsimError(f"building the simulator took longer than {timeout:g} s") from None
        if result.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise VcsimError(f"building the simulator failed:\n{result.stderr[-4000:]}")
        os.replace(tmp, BINARY)
        return BINARY


@frozen
class VcsimInfo:
    url: str
    scheme: str
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    datastore_dir: Path
    datastores: dict
    thumbprint_sha1: Optional[str]
    thumbprint_sha256: Optional[str]
    certificate_pem: Optional[str]  # the server certificate
    ca_pem: Optional[str]  # the CA that signed it
    pid: int


def _read_line(proc: subprocess.Popen, deadline: float) -> bytes:
    fd = proc.stdout.fileno()
    buf = b""
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise VcsimError("the simulator printed no JSON line in time")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            raise VcsimError(f"the simulator exited before it was ready (rc={proc.wait(5)})")
        buf += chunk
    return buf.split(b"\n", 1)[0]


class Vcsim:
    """A running simulator. Use as a context manager or call stop()."""

    def __init__(self, info: VcsimInfo, process: subprocess.Popen, tmpdir: Path, log_path: Path, own_tmp: bool):
        self.info = info
        self.process = process
        self.tmpdir = tmpdir
        self.log_path = log_path
        self._own_tmp = own_tmp

    @classmethod
    def start(
        cls,
        *,
        http: bool = False,
        args: Sequence[str] = (),
        username: str = "user",
        password: str = "pass",
        tmpdir: Optional[Path] = None,
        timeout: float = 30.0,
    ) -> "Vcsim":
        binary = build_vcsim()
        own_tmp = tmpdir is None
        tmp = Path(tempfile.mkdtemp(prefix="vcsim-")) if tmpdir is None else Path(tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        log_path = tmp / "vcsim.log"
        argv = [str(binary), "-parent-pid", str(os.getpid()), "-username", username, "-password", password, *args]
        if http:
            argv.append("-http")
        env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp), "HOME": str(tmp)}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                env=env, cwd=tmp, start_new_session=True, close_fds=True,
            )
        try:
            data = json.loads(_read_line(proc, time.monotonic() + timeout))
        except BaseException as e:
            cls._kill(proc)
            log_tail = log_path.read_text(errors="replace")[-2000:]
            if own_tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            raise VcsimError(f"{e}\n{log_tail}") from e
        info = VcsimInfo(
            url=data["url"], scheme=data["scheme"], host=data["host"], port=data["port"],
            username=data["username"], password=data["password"],
            datastore_dir=Path(data["datastore_dir"]), datastores=data["datastores"],
            thumbprint_sha1=data.get("thumbprint_sha1"), thumbprint_sha256=data.get("thumbprint_sha256"),
            certificate_pem=data.get("certificate_pem"), ca_pem=data.get("ca_pem"), pid=data["pid"],
        )
        return cls(info, proc, tmp, log_path, own_tmp)

    @staticmethod
    def _kill(proc: subprocess.Popen, grace: float = 5.0) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                continue
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    def stop(self, timeout: float = 10.0) -> int:
        """Close stdin (the simulator's stop signal), then SIGTERM/SIGKILL its group if it lingers."""
        proc = self.process
        if proc.poll() is None:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill(proc)
        if self._own_tmp:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        return proc.returncode

    def __enter__(self) -> "Vcsim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def ssl_context(self) -> Optional[ssl.SSLContext]:
        """A verifying context trusting only the simulator's CA (None over http)."""
        if self.info.scheme != "https":
            return None
        ctx = ssl.create_default_context(cadata=self.info.ca_pem)
        return ctx

    def served(self) -> dict[str, int]:
        """Body bytes the datastore's GETs sent so far, per file (``/folder/<vm>/<file>``): what clients
        really read from it, rereads included (the simulator counts them: GET /served)."""
        url = f"{self.info.scheme}://127.0.0.1:{self.info.port}/served"
        with urllib.request.urlopen(url, timeout=10, context=self.ssl_context()) as answer:
            return json.loads(answer.read())

    def served_bytes(self, vm_dir: str, file: str) -> int:
        return self.served().get(f"/folder/{vm_dir}/{file}", 0)

    # ---- the guest writer (warm migration) -------------------------------------------------------

    def _base_url(self) -> str:
        return f"{self.info.scheme}://127.0.0.1:{self.info.port}"

    def guest_write(self, vm_name: str, disk: int, offset: int, length: int, seed: Optional[int] = None, *,
                    byte: Optional[int] = None) -> None:
        """The running guest of ``vm_name`` writes ``length`` bytes at ``offset`` of its disk number ``disk``
        (0: the first disk in device order): ``guest_pattern(seed, length)``, or ``byte`` repeated. It lands
        in the base flat file when the VM has no snapshot, else in the newest snapshot's delta. Raises
        VcsimError with the simulator's status and reason (409: the VM is not powered on)."""
        if (seed is None) == (byte is None):
            raise ValueError("give exactly one of seed and byte")
        body = {"vm": vm_name, "disk": disk, "offset": offset, "length": length}
        body.update({"seed": seed} if seed is not None else {"byte": byte})
        request = urllib.request.Request(f"{self._base_url()}/guest/write", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        self._call(request)

    def guest_read(self, vm_name: str, disk: int, offset: int, length: int) -> bytes:
        """What the guest of ``vm_name`` sees at [offset, offset+length) of disk number ``disk``: the base
        flat file overlaid by the deltas of its snapshots (any power state)."""
        query = urllib.parse.urlencode({"vm": vm_name, "disk": disk, "offset": offset, "length": length})
        return self._call(urllib.request.Request(f"{self._base_url()}/guest/read?{query}"))

    def guest_tools(self, vm_name: str, running: bool) -> None:
        """Start or stop VMware Tools in the guest of ``vm_name`` (a quiesced snapshot needs them)."""
        request = urllib.request.Request(f"{self._base_url()}/guest/tools", method="POST",
                                         data=json.dumps({"vm": vm_name, "running": running}).encode(),
                                         headers={"Content-Type": "application/json"})
        self._call(request)

    def snapshots_created(self, vm_name: str) -> list[dict]:
        """Every snapshot created of ``vm_name`` since the simulator started, oldest first: {name, quiesced}
        (refused ones are not listed)."""
        query = urllib.parse.urlencode({"vm": vm_name})
        return json.loads(self._call(urllib.request.Request(f"{self._base_url()}/snapshots/created?{query}")))

    def folder_get(self, path: str, start: Optional[int] = None, length: Optional[int] = None,
                   datastore: str = "LocalDS_0") -> tuple[int, bytes]:
        """(status, body) of a GET of ``/folder/<path>`` (e.g. ``"vm1/vm1-flat.vmdk"``), a range when
        ``start`` is given; an error status is returned, not raised."""
        query = urllib.parse.urlencode({"dcPath": "DC0", "dsName": datastore})
        request = urllib.request.Request(f"{self._base_url()}/folder/{urllib.parse.quote(path)}?{query}")
        if start is not None:
            end = "" if length is None else str(start + length - 1)
            request.add_header("Range", f"bytes={start}-{end}")
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.ssl_context()) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _call(self, request: urllib.request.Request) -> bytes:
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.ssl_context()) as answer:
                return answer.read()
        except urllib.error.HTTPError as e:
            raise VcsimError(f"{request.get_method()} {request.full_url}: {e.code} {e.read().decode(errors='replace').strip()}") from None

    def ca_file(self) -> Path:
        """The simulator's CA certificate as a PEM file."""
        path = self.tmpdir / "vcsim-ca.pem"
        path.write_text(self.info.ca_pem or "")
        return path


def guest_pattern(seed: int, length: int) -> bytes:
    """The bytes ``Vcsim.guest_write(..., seed)`` writes: SHA-256(b"vcsim-guest" + seed + i) for i = 0, 1, ...
    (8-byte little-endian numbers), concatenated and cut to ``length``."""
    out = bytearray()
    prefix = b"vcsim-guest" + seed.to_bytes(8, "little")
    i = 0
    while len(out) < length:
        out += hashlib.sha256(prefix + i.to_bytes(8, "little")).digest()
        i += 1
    return bytes(out[:length])


# ---- polling -------------------------------------------------------------------------------------

def wait_task(task: vim.Task, timeout: float = 30.0) -> object:
    """Wait for a vSphere task (plain pyvmomi property reads); raise its fault if it failed."""
    def done():
        state = task.info.state
        return state if state in (vim.TaskInfo.State.success, vim.TaskInfo.State.error) else None

    wait_for(done, timeout, f"task {task._moId}")
    info = task.info
    if info.state == vim.TaskInfo.State.error:
        raise info.error
    return info.result


# ---- disks ---------------------------------------------------------------------------------------

@frozen
class Write:
    offset: int
    length: int
    byte: int


def default_pattern(size: int) -> tuple[Write, ...]:
    """Distinct bytes at the start, in the middle and at the very end; zeros elsewhere."""
    return (
        Write(0, min(MiB, size), 0xAB),
        Write(size // 2, min(64 * 1024, size // 4), 0xCD),
        Write(size - 4096, 4096, 0xEF),
    )


def expected_bytes(size: int, writes: Iterable[Write], offset: int, length: int) -> bytes:
    """What the disk holds at [offset, offset+length), given ``writes`` over zeros."""
    out = bytearray(length)
    for w in writes:
        lo, hi = max(offset, w.offset), min(offset + length, w.offset + w.length)
        if lo < hi:
            out[lo - offset:hi - offset] = bytes([w.byte]) * (hi - lo)
    return bytes(out)


@frozen
class Vmdk:
    subformat: str
    size: int
    descriptor: Path  # the .vmdk the VM's backing names
    extents: tuple[Path, ...]  # data files besides the descriptor (monolithicFlat: the -flat.vmdk)
    raw: Path  # the same content as a raw image, for qemu-img compare
    writes: tuple[Write, ...]

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.descriptor, *self.extents)


def _run(argv: Sequence[str], timeout: float = 120.0) -> str:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed (rc={result.returncode}): {result.stderr.strip()}")
    return result.stdout


def make_vmdk(
    directory: Path, name: str, size: int, subformat: str = "monolithicFlat",
    writes: Optional[Sequence[Write]] = None,
) -> Vmdk:
    """A VMDK ``<name>.vmdk`` of ``size`` bytes with known content, made by qemu-img/qemu-io.

    subformat: ``monolithicFlat`` (descriptor + ``<name>-flat.vmdk``), ``monolithicSparse``
    or ``streamOptimized`` (one file).
    """
    if subformat not in ("monolithicFlat", "monolithicSparse", "streamOptimized"):
        raise ValueError(subformat)
    if size % MiB:
        raise ValueError("size must be a multiple of 1 MiB")
    directory.mkdir(parents=True, exist_ok=True)
    writes = tuple(writes if writes is not None else default_pattern(size))
    raw = directory / f"{name}.raw"
    _run(["qemu-img", "create", "-q", "-f", "raw", str(raw), str(size)])
    commands = []
    for w in writes:
        commands += ["-c", f"write -q -P {w.byte:#x} {w.offset} {w.length}"]
    _run(["qemu-io", "-f", "raw", *commands, str(raw)])
    descriptor = directory / f"{name}.vmdk"
    _run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", f"subformat={subformat}", str(raw), str(descriptor)])
    extents = (directory / f"{name}-flat.vmdk",) if subformat == "monolithicFlat" else ()
    for path in extents:
        if not path.exists():
            raise RuntimeError(f"qemu-img did not create {path}")
    return Vmdk(subformat, size, descriptor, extents, raw, writes)


def vm_properties(si: vim.ServiceInstance, vm: vim.VirtualMachine, *paths: str) -> dict:
    pc = si.RetrieveContent().propertyCollector
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=vm)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine, pathSet=list(paths))],
    )
    [content] = pc.RetrieveContents([spec])
    return {p.name: p.val for p in content.propSet}


def first_disk(vm: vim.VirtualMachine, index: int = 0) -> vim.vm.device.VirtualDisk:
    disks = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    return disks[index]


def attach_vmdk(
    si: vim.ServiceInstance, vm: vim.VirtualMachine, vmdk: Vmdk, datastore_dir: Path,
    disk_index: int = 0, timeout: float = 30.0,
) -> str:
    """Put ``vmdk`` in place of the VM's disk ``disk_index``; returns its datastore path.

    The files are copied over the disk's backing file (``[LocalDS_0] VM/disk1.vmdk``
    and its ``-flat.vmdk``) in the datastore directory, then ReconfigVM_Task sets the
    disk's capacity to the VMDK's size.
    """
    disk = first_disk(vm, disk_index)
    file_name = disk.backing.fileName
    datastore, _, rel = file_name.partition("] ")
    target = datastore_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    flat_target = target.with_name(target.name[: -len(".vmdk")] + "-flat.vmdk")
    shutil.copyfile(vmdk.descriptor, target)
    if vmdk.subformat == "monolithicFlat":
        # The descriptor names its extent: keep the name it was written with.
        extent_target = target.parent / vmdk.extents[0].name
        shutil.copyfile(vmdk.extents[0], extent_target)
        if extent_target != flat_target:
            _rewrite_extent_name(target, vmdk.extents[0].name, flat_target.name)
            extent_target.rename(flat_target)
    elif not flat_target.exists():
        # Simulator quirk: an "edit" of a disk fails with FileNotFound unless <name>-flat.vmdk exists.
        flat_target.touch()
    disk.capacityInKB = vmdk.size // 1024
    disk.capacityInBytes = vmdk.size
    spec = vim.vm.ConfigSpec(deviceChange=[
        vim.vm.device.VirtualDeviceSpec(operation=vim.vm.device.VirtualDeviceSpec.Operation.edit, device=disk),
    ])
    wait_task(vm.ReconfigVM_Task(spec=spec), timeout)
    if vmdk.subformat != "monolithicFlat":
        flat_target.unlink(missing_ok=True)  # a stale empty extent would only confuse readers
    return file_name


def _rewrite_extent_name(descriptor: Path, old: str, new: str) -> None:
    text = descriptor.read_text()
    descriptor.write_text(text.replace(f'"{old}"', f'"{new}"'))


# ---- extra VMs -----------------------------------------------------------------------------------

def _find(si: vim.ServiceInstance, path: str):
    found = si.RetrieveContent().searchIndex.FindByInventoryPath(path)
    if found is None:
        raise LookupError(path)
    return found


def ensure_folder(si: vim.ServiceInstance, parent_path: str, name: str) -> vim.Folder:
    parent = _find(si, parent_path)
    existing = si.RetrieveContent().searchIndex.FindChild(parent, name)
    return existing or parent.CreateFolder(name)


def create_vm(
    si: vim.ServiceInstance,
    name: str,
    *,
    datacenter: str = "DC0",
    folder: Optional[str] = None,
    host_path: str = "DC0/host/DC0_H0",
    datastore: str = "LocalDS_0",
    num_cpu: int = 2,
    cores_per_socket: int = 1,
    memory_mb: int = 64,
    firmware: str = "efi",
    secure_boot: bool = False,
    guest_id: str = "ubuntu64Guest",
    disk_kb: int = 4096,
    networks: Sequence[str] = ("VM Network", "DC0_DVPG0"),
    cdrom: bool = True,
    power_on: bool = False,
    timeout: float = 30.0,
) -> vim.VirtualMachine:
    """A VM with a SATA CD-ROM, an LSI Logic SAS disk and one NIC per network.

    ``networks`` names standard networks ("VM Network": network backing) or
    distributed portgroups ("DC0_DVPG0": DVS port backing). NICs alternate
    vmxnet3 / e1000e.
    """
    dc = _find(si, datacenter)
    vm_folder = dc.vmFolder if folder is None else ensure_folder(si, f"{datacenter}/vm", folder)
    host = _find(si, host_path)
    pool = host.parent.resourcePool if isinstance(host, vim.HostSystem) else host.resourcePool
    dev = vim.vm.device
    changes = []
    scsi = dev.VirtualLsiLogicSASController(key=-100, busNumber=0, sharedBus="noSharing")
    changes.append(dev.VirtualDeviceSpec(operation="add", device=scsi))
    disk = dev.VirtualDisk(
        key=-101, controllerKey=-100, unitNumber=0, capacityInKB=disk_kb, capacityInBytes=disk_kb * 1024,
        backing=dev.VirtualDisk.FlatVer2BackingInfo(
            fileName=f"[{datastore}] {name}/{name}.vmdk", diskMode="persistent", thinProvisioned=True,
        ),
    )
    changes.append(dev.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk))
    if cdrom:
        sata = dev.VirtualAHCIController(key=-200, busNumber=0)
        changes.append(dev.VirtualDeviceSpec(operation="add", device=sata))
        cd = dev.VirtualCdrom(
            key=-201, controllerKey=-200, unitNumber=0,
            backing=dev.VirtualCdrom.RemotePassthroughBackingInfo(deviceName="", exclusive=False),
        )
        changes.append(dev.VirtualDeviceSpec(operation="add", device=cd))
    portgroups = _portgroups(si, dc)
    for i, net_name in enumerate(networks):
        nic_type = dev.VirtualVmxnet3 if i % 2 == 0 else dev.VirtualE1000e
        if net_name in portgroups:
            pg_key, switch_uuid = portgroups[net_name]
            backing = dev.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
                port=vim.dvs.PortConnection(portgroupKey=pg_key, switchUuid=switch_uuid))
        else:
            backing = dev.VirtualEthernetCard.NetworkBackingInfo(deviceName=net_name)
        nic = nic_type(key=-300 - i, backing=backing, addressType="generated")
        changes.append(dev.VirtualDeviceSpec(operation="add", device=nic))
    spec = vim.vm.ConfigSpec(
        name=name, guestId=guest_id, numCPUs=num_cpu, numCoresPerSocket=cores_per_socket, memoryMB=memory_mb,
        firmware=firmware, files=vim.vm.FileInfo(vmPathName=f"[{datastore}]"), deviceChange=changes,
        bootOptions=vim.vm.BootOptions(efiSecureBootEnabled=secure_boot) if firmware == "efi" else None,
    )
    vm = wait_task(vm_folder.CreateVM_Task(config=spec, pool=pool, host=host if isinstance(host, vim.HostSystem) else None), timeout)
    if power_on:
        wait_task(vm.PowerOnVM_Task(), timeout)
    return vm


def _portgroups(si: vim.ServiceInstance, dc: vim.Datacenter) -> dict:
    """{portgroup name: (key, switch uuid)} for the datacenter's distributed portgroups."""
    out = {}
    for net in dc.network:
        if isinstance(net, vim.dvs.DistributedVirtualPortgroup):
            out[net.name] = (net.key, net.config.distributedVirtualSwitch.uuid)
    return out


def destroy_vm(vm: vim.VirtualMachine, timeout: float = 30.0) -> None:
    if vm.runtime.powerState != vim.VirtualMachinePowerState.poweredOff:
        wait_task(vm.PowerOffVM_Task(), timeout)
    wait_task(vm.Destroy_Task(), timeout)


def create_vm_with_disk(si: vim.ServiceInstance, sim: "Vcsim", directory: Path, name: str, size: int,
                        writes: Sequence[Write]) -> str:
    """A one-NIC VM ("VM Network", no CD-ROM) whose disk is a real flat VMDK with ``writes``; its path."""
    vm = create_vm(si, name, networks=("VM Network",), cdrom=False)
    attach_vmdk(si, vm, make_vmdk(directory, name, size, "monolithicFlat", list(writes)), sim.info.datastore_dir)
    return f"DC0/vm/{name}"
