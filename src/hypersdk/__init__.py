"""hypersdk: migrate VMs from VMware vSphere onto KVM/libvirt hosts."""

__version__ = "0.1.0"
