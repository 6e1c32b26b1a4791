"""Routes of the VM Discovery API: list, info, shutdown, poweroff, remove-cdrom.

Credentials come with each request (query parameters for GET, the JSON body for
POST) or as ``vcenter=<name>`` of the configuration file. The calls share the
pipeline's vSphere sessions and thread pool. Query strings never reach a log:
the access log writes the path alone.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from ..errors import InvalidField, InvalidRequest
from ..jobs.definition import SOURCE_FIELDS, SourceSpec, SubmitContext, parse_source
from ..vsphere.client import VSphere
from ..vsphere.model import VmInfo, VmSummary
from .http import read_json, respond

# Every /vms endpoint takes a job source's fields (its "type" is implied): one definition for all.
CREDENTIAL_FIELDS = tuple(name for name in SOURCE_FIELDS if name != "type")
POWEROFF_TIMEOUT = 60.0


class VmsAPI:
    log = Logger()

    def __init__(self, vsphere: VSphere, context: SubmitContext = SubmitContext()):
        self._vsphere = vsphere
        self._context = context

    def register(self, app) -> None:
        app.route("/vms/list", methods=["GET"])(self.list_vms)
        app.route("/vms/info", methods=["GET"], endpoint="info_get")(self.info_get)
        app.route("/vms/info", methods=["POST"], endpoint="info_post")(self.info_post)
        app.route("/vms/shutdown", methods=["POST"])(self.shutdown)
        app.route("/vms/poweroff", methods=["POST"])(self.poweroff)
        app.route("/vms/remove-cdrom", methods=["POST"])(self.remove_cdrom)

    async def list_vms(self, request):
        values = _query_values(request.args)
        folder = values.pop("folder", None)
        source = self._source(values)
        vms = await self._vsphere.list_vms(await self._vsphere.params_for(source), source.datacenter, folder)
        return respond(request, {"vms": [summary_json(vm) for vm in vms], "total": len(vms)})

    async def info_get(self, request):
        return await self._info(request, _query_values(request.args))

    async def info_post(self, request):
        return await self._info(request, _body(request))

    async def _info(self, request, values: dict) -> bytes:
        vm_path, params = await self._vm_and_params(values)
        return respond(request, info_json(await self._vsphere.read_vm(params, vm_path)))

    async def shutdown(self, request):
        vm_path, params = await self._vm_and_params(_body(request))
        await self._recorded(request, "guest shutdown", vm_path, params, self._vsphere.shutdown_guest(params, vm_path))
        return respond(request, {"message": "VM shutdown initiated"}, 202)

    async def poweroff(self, request):
        vm_path, params = await self._vm_and_params(_body(request))
        await self._recorded(request, "power off", vm_path, params,
                             self._vsphere.power_off(params, vm_path, POWEROFF_TIMEOUT))
        return respond(request, {"message": "VM powered off"})

    async def remove_cdrom(self, request):
        vm_path, params = await self._vm_and_params(_body(request))
        count = await self._recorded(request, "CD-ROM removal", vm_path, params,
                                     self._vsphere.remove_cdroms(params, vm_path))
        return respond(request, {"message": "CD-ROM devices removed", "count": count})

    async def _vm_and_params(self, values: dict):
        """The VM's inventory path and the login parameters of a request."""
        vm_path = _vm_path(values)
        source = self._source(values)
        if source.datacenter is not None and not vm_path.startswith(source.datacenter.rstrip("/") + "/"):
            raise InvalidField("vm_path", f"{vm_path!r} is not in datacenter {source.datacenter!r}")
        return vm_path, await self._vsphere.params_for(source)

    def _source(self, values: dict) -> SourceSpec:
        unknown = sorted(set(values) - set(CREDENTIAL_FIELDS))
        if unknown:
            raise InvalidField(unknown[0], "unknown field")
        return parse_source({"type": "vsphere", **values}, self._context, path="")

    async def _recorded(self, request, action: str, vm_path: str, params, operation) -> Any:
        """Run a power operation, logging who asked for it and how it ended."""
        client = getattr(request.getClientAddress(), "host", "-")
        try:
            result = await operation
        except Exception as e:
            self.log.warn("{action} of {vm} on {vcenter} asked by {client}: failed: {error}", action=action, vm=vm_path,
                          vcenter=params.where, client=client, error=getattr(e, "message", None) or repr(e))
            raise
        self.log.info("{action} of {vm} on {vcenter} asked by {client}: done", action=action, vm=vm_path,
                      vcenter=params.where, client=client)
        return result


def _query_values(args: dict[bytes, list[bytes]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for raw_key, raw_values in args.items():
        key = raw_key.decode("utf-8", "replace")
        value = raw_values[-1].decode("utf-8", "replace")
        values["vcenter_url" if key == "server" else key] = value  # "server": an older client's name
    if "insecure" in values:
        flag = values["insecure"].lower()
        if flag not in ("true", "false", "1", "0", "yes", "no"):
            raise InvalidField("insecure", "must be true or false")
        values["insecure"] = flag in ("true", "1", "yes")
    return values


def _body(request) -> dict[str, Any]:
    body = read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object with vm_path and the vCenter credentials")
    if "server" in body and "vcenter_url" not in body:
        body["vcenter_url"] = body.pop("server")
    return body


def _vm_path(values: dict) -> str:
    vm_path = values.pop("vm_path", None)
    if not isinstance(vm_path, str) or not vm_path.strip():
        raise InvalidField("vm_path", "is required: the VM's inventory path, such as Datacenter/vm/folder/name")
    return vm_path


def summary_json(vm: VmSummary) -> dict[str, Any]:
    return {
        "name": vm.name,
        "path": vm.path,
        "power_state": vm.power_state,
        "num_cpu": vm.num_cpu,
        "memory_mb": vm.memory_mb,
        "storage": vm.storage_bytes,
        "guest_os": vm.guest_full_name,
        "ip_address": vm.ip_address,
        "uuid": vm.uuid,
        "storage_bytes": vm.storage_bytes,
        "template": vm.template,
        "datacenter": vm.datacenter,
    }


def info_json(vm: VmInfo) -> dict[str, Any]:
    return {
        "name": vm.name,
        "path": vm.path,
        "uuid": vm.uuid,
        "instance_uuid": vm.instance_uuid,
        "power_state": vm.power_state,
        "hardware": {
            "num_cpu": vm.num_cpu,
            "cores_per_socket": vm.cores_per_socket,
            "memory_mb": vm.memory_mb,
            "num_virtual_disks": len(vm.disks),
        },
        "disks": [
            {
                "label": d.label,
                "capacity_kb": d.capacity_bytes // 1024,
                "capacity_bytes": d.capacity_bytes,
                "file_path": d.file_name,
                "datastore": d.datastore,
                "controller": d.controller_type,
                "controller_model": d.controller_model,
                "bus": d.controller_bus,
                "unit": d.unit_number,
                "thin": d.thin,
            }
            for d in vm.disks
        ],
        "nics": [{"label": n.label, "network": n.network, "mac": n.mac, "adapter": n.adapter_type,
                  "pci_slot": n.pci_slot} for n in vm.nics],
        "cdroms": len(vm.cdroms),
        "firmware": vm.firmware,
        "secure_boot": vm.secure_boot,
        "guest_id": vm.guest_id,
        "guest_os": vm.guest_full_name,
        "snapshots": vm.snapshot_count,
        "tools_status": vm.tools_status,
        "ip_address": vm.ip_address,
        "template": vm.template,
    }
