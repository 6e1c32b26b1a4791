import socket

import pytest


@pytest.fixture
def black_hole():
    """A vCenter address that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(100)
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
