"""Make sure a real libvirtd (qemu:///system) is usable by integration tests.

Debian, no systemd, root: do what udev and systemd would (``/dev/kvm`` group
and mode, start virtlogd and libvirtd), then give tests a scratch directory
storage pool and a bridge. Every wait polls a condition with a deadline.

Needs (Debian): libvirt-daemon-system libvirt-clients qemu-system-x86
qemu-utils libxml2-utils dnsmasq-base iproute2; Python: libvirt-python.
libvirtd is left running after the tests (other test modules share it).
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import xml.etree.ElementTree as ET

import pytest

from tests.integration.polling import wait_for

URI = "qemu:///system"
SOCKET = "/var/run/libvirt/libvirt-sock"
VIRTLOGD_SOCKET = "/var/run/libvirt/virtlogd-sock"
LIBVIRTD = "/usr/sbin/libvirtd"
VIRTLOGD = "/usr/sbin/virtlogd"
BRIDGE = "br-test"
PACKAGES = (
    "libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils "
    "libxml2-utils dnsmasq-base iproute2"
)


def _socket_answers(path: str) -> bool:
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def fix_kvm_permissions() -> None:
    """What udev would do: without it libvirtd re-probes QEMU on every call (~40 s)."""
    if not os.path.exists("/dev/kvm"):
        return
    st = os.stat("/dev/kvm")
    try:
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        return
    if st.st_gid != kvm_gid or stat.S_IMODE(st.st_mode) & 0o060 != 0o060:
        os.chown("/dev/kvm", -1, kvm_gid)
        os.chmod("/dev/kvm", 0o660)


def ensure_libvirtd(deadline_s: float = 30.0) -> str:
    """Start virtlogd/libvirtd if their sockets don't answer; return the URI.

    Skips the calling test when not root or when the Debian packages are
    missing (the message names them): a failure, unless HYPERSDK_TEST_ALLOW_SKIP=1
    (tests/conftest.py).
    """
    if os.geteuid() != 0:
        pytest.skip("libvirt integration tests need root (qemu:///system)")
    for binary in (LIBVIRTD, VIRTLOGD, shutil.which("qemu-img") or "/usr/bin/qemu-img"):
        if not os.path.exists(binary):
            pytest.skip(f"{binary} missing: apt-get install -y --no-install-recommends {PACKAGES}")
    with _host_lock():  # test processes running at once (make test runs two) start them once
        fix_kvm_permissions()
        if not _socket_answers(VIRTLOGD_SOCKET):
            subprocess.run([VIRTLOGD, "-d"], check=True, timeout=30)
            wait_for(lambda: _socket_answers(VIRTLOGD_SOCKET), deadline_s, "virtlogd socket")
        if not _socket_answers(SOCKET):
            subprocess.run([LIBVIRTD, "-d"], check=True, timeout=30)
            wait_for(lambda: _socket_answers(SOCKET), deadline_s, "libvirtd socket")
    return URI


def ensure_bridge(name: str = BRIDGE) -> str:
    with _host_lock():
        if subprocess.run(["ip", "link", "show", name], capture_output=True).returncode != 0:
            subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True, timeout=10)
        subprocess.run(["ip", "link", "set", name, "up"], check=True, timeout=10)
    return name


@contextlib.contextmanager
def _host_lock():
    """One test process at a time sets up what the host's tests share (libvirtd, the bridge)."""
    with open("/tmp/hypersdk-tests-host.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_SCRATCH: list[str] = []  # every scratch_dir made, oldest first, until remove_scratch


def scratch_dir(prefix: str = "hypersdk-libvirt-") -> str:
    """A temp directory qemu (user libvirt-qemu) can reach: pytest's tmp_path is 0700. It is removed
    with the test or module that made it (tests/integration/conftest.py), or by ``remove_scratch``."""
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(path, 0o755)
    _SCRATCH.append(path)
    return path


@contextlib.contextmanager
def scratch_removed():
    """Remove the scratch directories made inside the block, whatever its outcome: a test run's disks
    would otherwise fill the machine's /tmp (gigabytes a run)."""
    made_before = len(_SCRATCH)
    try:
        yield
    finally:
        while len(_SCRATCH) > made_before:
            shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)


def create_dir_pool(conn, name: str, path: str):
    """Define and start dir pool ``name`` at ``path`` (replacing a leftover one)."""
    import libvirt

    remove_pool(conn, name)
    pool_el = ET.Element("pool", type="dir")
    ET.SubElement(pool_el, "name").text = name
    ET.SubElement(ET.SubElement(pool_el, "target"), "path").text = path
    pool = conn.storagePoolDefineXML(ET.tostring(pool_el, encoding="unicode"), 0)
    pool.create(0)
    assert pool.info()[0] == libvirt.VIR_STORAGE_POOL_RUNNING
    return pool


def remove_pool(conn, name: str) -> None:
    """Stop and undefine pool ``name`` (its volumes are left to the caller)."""
    import libvirt

    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        return
    if pool.isActive():
        pool.destroy()
    pool.undefine()


def qemu_img(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=60)


def qemu_io(fmt: str, path: str, *commands: str) -> None:
    argv = ["qemu-io", "-f", fmt]
    for command in commands:
        argv += ["-c", command]
    subprocess.run([*argv, path], check=True, capture_output=True, timeout=60)


def virt_xml_validate(xml: str, schema: str = "domain") -> subprocess.CompletedProcess:
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(xml)
        f.flush()
        return subprocess.run(
            ["virt-xml-validate", f.name, schema], capture_output=True, text=True, timeout=30
        )


def remove_domain(conn, name: str) -> None:
    """Stop and undefine a domain a test made, if it is there (``conn``: a libvirt connection or its URI)."""
    import libvirt  # (the module's other helpers do without the binding)

    own = isinstance(conn, str)
    connection = libvirt.open(conn) if own else conn
    try:
        domain = connection.lookupByName(name)
        if domain.isActive():
            domain.destroy()
        domain.undefine()
    except libvirt.libvirtError:
        pass
    finally:
        if own:
            connection.close()
