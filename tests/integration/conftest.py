import socket

import pytest

from hypersdk.vsphere.connection import VCenterParams, thd_connect
from tests.integration.vcsim import Vcsim


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
