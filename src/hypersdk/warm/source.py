"""The source VM of a warm job, as its passes and cutover use it: the vSphere client bound to one VM."""

from __future__ import annotations

from typing import Optional

from ..vsphere.client import VSphere
from ..vsphere.connection import VCenterParams


class VCenterVM:
    def __init__(self, vsphere: VSphere, params: VCenterParams, vm_path: str):
        self._vsphere = vsphere
        self._params = params
        self._path = vm_path

    def create_snapshot(self, name: str, quiesce: bool):
        return self._vsphere.create_snapshot(self._params, self._path, name, quiesce)

    def remove_snapshots(self, name: str):
        return self._vsphere.remove_snapshots(self._params, self._path, name)

    def changed_areas(self, snapshot: Optional[str], device_key: int, capacity: int, change_id: str):
        return self._vsphere.changed_areas(self._params, self._path, snapshot, device_key, capacity, change_id)

    def shutdown_guest(self):
        return self._vsphere.shutdown_guest(self._params, self._path)

    def wait_powered_off(self, timeout: float):
        return self._vsphere.wait_powered_off(self._params, self._path, timeout)

    def power_off(self):
        return self._vsphere.power_off(self._params, self._path)

    def power_on(self):
        return self._vsphere.power_on(self._params, self._path)
