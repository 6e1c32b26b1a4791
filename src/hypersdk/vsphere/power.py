"""Power operations and CD-ROM removal, blocking, bounded in time, cancellable.

Waits poll with one small RetrievePropertiesEx per round, backing off from
0.1 s to 1 s, and wait on the cancel token instead of sleeping.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from pyVmomi import vim, vmodl

from hypersdk import errors
from hypersdk.cancel import CancelToken
from hypersdk.vsphere.collector import thd_properties
from hypersdk.vsphere.connection import upstream_errors, where

POLL_FIRST = 0.1
POLL_MAX = 1.0


def vm_name(vm: vim.VirtualMachine, props: dict[str, Any]) -> str:
    return props.get("name") or vm._moId


@contextmanager
def vm_faults(vm_name: str, action: str) -> Iterator[None]:
    """Map the faults that mean 'not in this state' to Conflict, a vanished VM to VMNotFound."""
    try:
        yield
    except vmodl.fault.ManagedObjectNotFound:
        raise errors.VMNotFound(f"cannot {action} VM {vm_name}: it no longer exists") from None
    except vim.fault.InvalidPowerState as e:
        state = e.existingState or "in another power state"
        raise errors.Conflict(f"cannot {action} VM {vm_name}: it is {state}") from None
    except vim.fault.ToolsUnavailable:
        raise errors.Conflict(f"cannot {action} VM {vm_name}: VMware Tools are not running in the guest") from None
    except vim.fault.InvalidState as e:
        raise errors.Conflict(f"cannot {action} VM {vm_name}: {e.msg or 'invalid state'}") from None
    except vmodl.fault.NotSupported as e:
        raise errors.Conflict(f"cannot {action} VM {vm_name}: vCenter does not support it"
                              + (f" ({e.msg})" if e.msg else "")) from None


def _wait(
    poll: Callable[[], Optional[Any]],
    timeout: float,
    token: Optional[CancelToken],
    on_timeout: Callable[[], Exception],
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """Call ``poll`` until it returns non-None, the deadline passes or the token is cancelled."""
    deadline = clock() + timeout
    delay = POLL_FIRST
    sleeper = token or CancelToken()
    while True:
        if token is not None:
            token.raise_if_cancelled()
        result = poll()
        if result is not None:
            return result
        remaining = deadline - clock()
        if remaining <= 0:
            raise on_timeout()
        sleeper.wait(min(delay, remaining))
        delay = min(delay * 2, POLL_MAX)


def thd_wait_task(
    si: vim.ServiceInstance, task: vim.Task, timeout: float, token: Optional[CancelToken] = None,
    what: str = "task",
) -> Any:
    """The task's result once it succeeded; its fault raised if it failed; UpstreamTimeout after ``timeout``."""

    def poll() -> Optional[dict[str, Any]]:
        # (not the whole info: its entity, for a snapshot's task, is a type some servers get wrong)
        info = thd_properties(si, task, "info.state", "info.error", "info.result")
        if info.get("info.state") in (vim.TaskInfo.State.success, vim.TaskInfo.State.error):
            return info
        return None

    info = _wait(poll, timeout, token, lambda: errors.UpstreamTimeout(
        f"vCenter {where(si)} did not finish the {what} within {timeout:g} s"))
    if info["info.state"] == vim.TaskInfo.State.error:
        raise info["info.error"]
    return info.get("info.result")


def vm_properties(si: vim.ServiceInstance, vm: vim.VirtualMachine, *paths: str) -> dict[str, Any]:
    try:
        return thd_properties(si, vm, "name", *paths)
    except vmodl.fault.ManagedObjectNotFound:
        raise errors.VMNotFound(f"VM {vm._moId} no longer exists") from None


def _power_state(si: vim.ServiceInstance, vm: vim.VirtualMachine) -> dict[str, Any]:
    return vm_properties(si, vm, "runtime.powerState")


def thd_shutdown_guest(si: vim.ServiceInstance, vm: vim.VirtualMachine) -> None:
    """Ask the guest OS to shut down (needs VMware Tools); returns at once."""
    with upstream_errors(where(si)):
        props = _power_state(si, vm)
        name = vm_name(vm, props)
        if props.get("runtime.powerState") != vim.VirtualMachinePowerState.poweredOn:
            raise errors.Conflict(f"cannot shut down VM {name}: it is {props.get('runtime.powerState')}")
        with vm_faults(name, "shut down"):
            vm.ShutdownGuest()


def thd_power_off(si: vim.ServiceInstance, vm: vim.VirtualMachine, timeout: float = 60.0) -> None:
    """Power the VM off (hard) and wait for the task, at most ``timeout`` seconds."""
    with upstream_errors(where(si)):
        props = _power_state(si, vm)
        name = vm_name(vm, props)
        if props.get("runtime.powerState") == vim.VirtualMachinePowerState.poweredOff:
            raise errors.Conflict(f"cannot power off VM {name}: it is already powered off")
        with vm_faults(name, "power off"):
            task = vm.PowerOffVM_Task()
            thd_wait_task(si, task, timeout, what=f"power-off of VM {name}")


def thd_wait_powered_off(
    si: vim.ServiceInstance, vm: vim.VirtualMachine, timeout: float, token: Optional[CancelToken] = None,
) -> None:
    """Return once the VM is powered off; UpstreamTimeout after ``timeout``; CancelledError on cancel."""
    with upstream_errors(where(si)):
        names: list[str] = []

        def poll() -> Optional[bool]:
            props = _power_state(si, vm)
            names[:] = [vm_name(vm, props)]
            return True if props.get("runtime.powerState") == vim.VirtualMachinePowerState.poweredOff else None

        _wait(poll, timeout, token, lambda: errors.UpstreamTimeout(
            f"VM {names[0] if names else vm._moId} did not power off within {timeout:g} s"))


def thd_power_on(si: vim.ServiceInstance, vm: vim.VirtualMachine, timeout: float) -> bool:
    """Power the VM on and wait for the task; False if it was on already."""
    with upstream_errors(where(si)):
        props = _power_state(si, vm)
        if props.get("runtime.powerState") == vim.VirtualMachinePowerState.poweredOn:
            return False
        name = vm_name(vm, props)
        with vm_faults(name, "power on"):
            thd_wait_task(si, vm.PowerOnVM_Task(), timeout, what=f"power-on of VM {name}")
        return True


def thd_remove_cdroms(si: vim.ServiceInstance, vm: vim.VirtualMachine, timeout: float = 60.0) -> int:
    """Remove every CD-ROM device of the VM in one reconfiguration; the number removed."""
    with upstream_errors(where(si)):
        props = vm_properties(si, vm, "config.hardware.device")
        name = vm_name(vm, props)
        cdroms = [d for d in props.get("config.hardware.device") or [] if isinstance(d, vim.vm.device.VirtualCdrom)]
        if not cdroms:
            return 0
        spec = vim.vm.ConfigSpec(deviceChange=[
            vim.vm.device.VirtualDeviceSpec(operation=vim.vm.device.VirtualDeviceSpec.Operation.remove, device=d)
            for d in cdroms
        ])
        with vm_faults(name, "remove the CD-ROM drives of"):
            task = vm.ReconfigVM_Task(spec=spec)
            thd_wait_task(si, task, timeout, what=f"reconfiguration of VM {name}")
        return len(cdroms)
