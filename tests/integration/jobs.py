"""Job definitions the integration tests share."""

# Fails at once at "connecting": nothing listens on port 9 (submitted, started, progress, failed).
UNREACHABLE_JOB = {
    "vm_path": "DC0/vm/x",
    "source": {"type": "vsphere", "vcenter_url": "https://127.0.0.1:9", "username": "u", "password": "p"},
    "destination": {"type": "kvm", "libvirt_uri": "test:///default", "output_dir": "/tmp"},
    "options": {"network_mapping": {"*": "br0"}},
}


def job_for_vcenter(address: str) -> dict:
    """UNREACHABLE_JOB against another vCenter address (a black hole that never answers, say)."""
    return {**UNREACHABLE_JOB, "source": {**UNREACHABLE_JOB["source"], "vcenter_url": f"https://{address}"}}
