import socket

import pytest

from hypersdk.vsphere.connection import VCenterParams, thd_connect
from tests.integration import libvirtd
from tests.integration.vcsim import Vcsim


@pytest.fixture(autouse=True, scope="module")
def _module_scratch_removed():
    """What a module's fixtures made with libvirtd.scratch_dir goes when the module ends."""
    with libvirtd.scratch_removed():
        yield


@pytest.fixture(autouse=True)
def _test_scratch_removed():
    """What a test made with libvirtd.scratch_dir goes when the test ends."""
    with libvirtd.scratch_removed():
        yield


@pytest.fixture
def black_hole():
    """A vCenter address that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(100)
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture(scope="module")
def sim():
    """The vCenter simulator (user/pass), one per test module; modules needing other credentials override it."""
    with Vcsim.start() as s:
        yield s


@pytest.fixture(scope="module")
def si(sim):
    return thd_connect(VCenterParams.from_url(sim.info.url, "user", "pass", insecure=True), 30)


@pytest.fixture(scope="module")
def capped():
    """The simulator holding each datastore stream to 16 MiB/s, as one stream of a real host: a copy
    lasts long enough to be interrupted where a test wants."""
    from tests.integration.test_transfer import STREAM_RATE

    with Vcsim.start(args=["-stream-rate", str(STREAM_RATE)]) as s:
        yield s


@pytest.fixture(scope="module")
def capped_si(capped):
    return thd_connect(VCenterParams.from_url(capped.info.url, "user", "pass", insecure=True), 30)
