"""Small helpers shared by unit tests."""

from __future__ import annotations

import copy

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure


def result_of(d):
    """The result of a Deferred (or coroutine) that must already have fired."""
    if not isinstance(d, Deferred):
        d = ensureDeferred(d)
    box = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


VALID_DEFINITION = {
    "vm_path": "DC0/vm/web-1",
    "source": {
        "type": "vsphere",
        "vcenter_url": "vcenter.example.com",
        "username": "admin@vsphere.local",
        "password": "s3cret-Pa55",
        "datacenter": "DC0",
    },
    "destination": {"type": "kvm", "libvirt_uri": "qemu:///system", "storage_pool": "default"},
    "options": {"conversion_method": "https", "network_mapping": {"VM Network": "br0"}},
}


def definition(**changes):
    """A valid job definition with top-level fields replaced."""
    d = copy.deepcopy(VALID_DEFINITION)
    d.update(changes)
    return d
