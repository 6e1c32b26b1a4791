"""Job definitions: complete validation at submit, and the typed spec the pipeline runs.

``parse_definition`` is pure. It rejects what a user would regret (unknown
fields, wrong types, bad enums, malformed network mappings) with an InvalidField
naming the field, and returns a JobSpec. ``spec_to_definition`` writes the
normalized JSON shape back (defaults filled in, secrets as "***"): that shape
is what is stored and what the API shows.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Optional

from attrs import fields, frozen

from ..config import parse_duration
from ..errors import InvalidField
from ..timefmt import duration_setting, parse_rfc3339, rfc3339
from ..vsphere.connection import parse_vcenter_url

REDACTED = "***"
USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DOMAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
BRIDGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$")
NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
THUMBPRINT = re.compile(r"^(?:[0-9A-Fa-f]{2}:){19}[0-9A-Fa-f]{2}$|^(?:[0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$")
CONVERSION_METHODS = ("https", "vddk", "virt-v2v")
DEVICE_MODELS = ("auto", "source", "virtio")
BOOT_CHECK_FAILURE = ("keep", "remove")
BOOT_CHECK_SECONDS = (10, 86400)
PRECOPY_INTERVAL = (1.0, 7 * 86400.0)  # seconds between warm passes: bounds
DEFAULT_PRECOPY_INTERVAL = 3600.0
DISK_FORMATS = ("qcow2", "raw")
DOMAIN_TYPES = ("kvm", "qemu")
SECRET_FIELDS = (("source", "password"),)


@frozen
class SourceSpec:
    type: str
    vcenter_url: Optional[str]
    username: Optional[str]
    password: Optional[str]
    datacenter: Optional[str]
    insecure: bool
    thumbprint: Optional[str]
    vcenter: Optional[str]  # name of a vCenter from the config file


SOURCE_FIELDS = tuple(f.name for f in fields(SourceSpec))  # what a source (or a /vms request) may hold


@frozen
class DestinationSpec:
    type: str
    libvirt_uri: str
    storage_pool: Optional[str]
    output_dir: Optional[str]
    disk_format: str
    domain_name: Optional[str]
    domain_type: str
    start: bool


@frozen
class BootCheckOption:
    """options.boot_check as given; None fields take the config's boot_check defaults."""

    ready_pattern: Optional[str] = None  # a regex for a console line; None: a login prompt or the guest agent
    timeout: Optional[float] = None
    on_failure: Optional[str] = None  # "keep" | "remove"


@frozen
class WarmOption:
    """options.warm: copy while the source runs, then cut over."""

    precopy_interval: float = DEFAULT_PRECOPY_INTERVAL  # seconds between passes
    cutover_at: Optional[float] = None  # epoch seconds; None: on POST /jobs/{id}/cutover
    quiesce: bool = False  # the passes' snapshots quiesce the guest's file systems (VMware Tools)
    force_off: bool = False  # power the source off when the guest does not shut down in time


@frozen
class OptionsSpec:
    conversion_method: str
    network_mapping: dict[str, str]
    shutdown_source: bool
    remove_cdrom: bool
    verify: object  # True (chunk hashes), "full" (a second read of the source) or False
    device_models: str = "auto"  # "auto" | "source" | "virtio" (virt-v2v: always virtio)
    boot_check: Optional[BootCheckOption] = None
    warm: Optional[WarmOption] = None


@frozen
class JobSpec:
    id: Optional[str]
    name: Optional[str]
    vm_path: str
    source: SourceSpec
    destination: DestinationSpec
    options: OptionsSpec
    metadata: dict[str, Any]

    @property
    def datacenter(self) -> str:
        return self.source.datacenter or self.vm_path.split("/")[0]


@frozen
class SubmitContext:
    """What validation needs to know about this daemon."""

    vcenter_urls: Mapping[str, str] = {}  # the config file's vCenters: name -> URL
    # conversion method -> None when usable here, else the reason it is not
    method_problem: Callable[[str], Optional[str]] = lambda method: None
    # None when copied guests can be inspected here (device_models: auto), else why not
    inspection_problem: Callable[[], Optional[str]] = lambda: None

    @property
    def vcenter_names(self) -> frozenset[str]:
        return frozenset(self.vcenter_urls)


class FieldReader:
    """Reads one JSON object field by field and rejects what is left over."""

    def __init__(self, data: Any, path: str):
        if not isinstance(data, dict):
            raise InvalidField(path or "definition", "must be a JSON object")
        self.data, self.path, self.seen = data, path, set()

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind, required: bool = False, default=None):
        self.seen.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise InvalidField(self._name(key), "is required")
            return default
        value = self.data[key]
        ok = isinstance(value, kind) and (kind is bool or bool in _tuple(kind) or not isinstance(value, bool))
        if not ok:
            raise InvalidField(self._name(key), f"must be {_KIND_NAMES[kind]}")
        return value

    def text(self, key: str, required: bool = False, default=None, pattern=None, hint=""):
        value = self.get(key, str, required, default)
        if value is not None:
            if not value.strip():
                raise InvalidField(self._name(key), "must not be empty")
            if pattern is not None and not pattern.match(value):
                raise InvalidField(self._name(key), hint)
        return value

    def choice(self, key: str, choices, default=None, required: bool = False):
        value = self.get(key, str, required, default)
        if value is not None and value not in choices:
            raise InvalidField(self._name(key), f"must be one of {', '.join(choices)}")
        return value

    def child(self, key: str, required: bool = False) -> "FieldReader":
        self.seen.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise InvalidField(self._name(key), "is required")
            return FieldReader({}, self._name(key))
        return FieldReader(self.data[key], self._name(key))

    def done(self) -> None:
        for key in self.data:
            if key not in self.seen:
                raise InvalidField(self._name(key), "unknown field")


_KIND_NAMES = {str: "a string", bool: "true or false", dict: "a JSON object", int: "an integer", list: "a list",
               (bool, dict): "true, false or a JSON object", (int, float): "a number",
               (bool, str): 'true, false or "full"'}


def _tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def parse_definition(data: Any, context: SubmitContext = SubmitContext()) -> JobSpec:
    top = FieldReader(data, "")
    spec = JobSpec(
        id=top.text("id", pattern=USER_ID, hint="must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"),
        name=top.text("name"),
        vm_path=_vm_path(top),
        source=_source(top.child("source", required=True), context),
        destination=_destination(top.child("destination", required=True)),
        options=_options(top.child("options"), context),
        metadata=top.get("metadata", dict, default={}),
    )
    top.done()
    return spec


def _vm_path(top: FieldReader) -> str:
    path = top.text("vm_path", required=True)
    parts = path.split("/")
    if len(parts) < 3 or any(not p.strip() for p in parts):
        raise InvalidField("vm_path", "must be an inventory path such as Datacenter/vm/folder/name")
    return path


def parse_source(data: Any, context: SubmitContext = SubmitContext(), path: str = "source") -> SourceSpec:
    """A vCenter and how to log in to it: a job's ``source``, or the credentials of a /vms request."""
    return _source(FieldReader(data, path), context)


def _source(o: FieldReader, context: SubmitContext) -> SourceSpec:
    o.choice("type", ("vsphere",), required=True)
    vcenter = o.text("vcenter")
    if vcenter is not None and vcenter not in context.vcenter_names:
        known = ", ".join(sorted(context.vcenter_names)) or "none are configured"
        raise InvalidField(o._name("vcenter"), f"unknown vCenter {vcenter!r} ({known})")
    needed = vcenter is None  # a named vCenter brings its own URL and credentials
    url = o.text("vcenter_url", required=needed)
    if url is not None:
        try:
            parse_vcenter_url(url)
        except InvalidField as e:
            raise InvalidField(o._name("vcenter_url"), e.problem) from None
    spec = SourceSpec(
        type="vsphere",
        vcenter_url=url,
        username=o.text("username", required=needed),
        password=o.get("password", str, required=needed),
        datacenter=o.text("datacenter"),
        insecure=o.get("insecure", bool, default=False),
        thumbprint=o.text("thumbprint", pattern=THUMBPRINT, hint="must be a SHA-1 or SHA-256 fingerprint as AA:BB:..."),
        vcenter=vcenter,
    )
    o.done()
    return spec


def _destination(o: FieldReader) -> DestinationSpec:
    o.choice("type", ("kvm",), required=True)
    pool = o.text("storage_pool")
    output_dir = o.text("output_dir")
    if pool is not None and output_dir is not None:
        raise InvalidField(f"{o.path}.output_dir", "give either storage_pool or output_dir, not both")
    if output_dir is not None and not output_dir.startswith("/"):
        raise InvalidField(f"{o.path}.output_dir", "must be an absolute path")
    spec = DestinationSpec(
        type="kvm",
        libvirt_uri=o.text("libvirt_uri", default="qemu:///system"),
        storage_pool=pool if pool is not None or output_dir is not None else "default",
        output_dir=output_dir,
        disk_format=o.choice("disk_format", DISK_FORMATS, default="qcow2"),
        domain_name=o.text("domain_name", pattern=DOMAIN_NAME, hint="must be letters, digits, '.', '_' or '-' (at most 64)"),
        domain_type=o.choice("domain_type", DOMAIN_TYPES, default="kvm"),
        start=o.get("start", bool, default=False),
    )
    o.done()
    return spec


def _options(o: FieldReader, context: SubmitContext) -> OptionsSpec:
    method = o.choice("conversion_method", CONVERSION_METHODS, default="https")
    problem = context.method_problem(method)
    if problem:
        raise InvalidField(f"{o.path}.conversion_method", problem)
    spec = OptionsSpec(
        conversion_method=method,
        network_mapping=_network_mapping(o.get("network_mapping", dict, default={}), f"{o.path}.network_mapping"),
        shutdown_source=o.get("shutdown_source", bool, default=False),
        remove_cdrom=o.get("remove_cdrom", bool, default=False),
        verify=_verify(o),
        device_models=_device_models(o, method, context),
        boot_check=_boot_check(o),
        warm=_warm(o, method),
    )
    o.done()
    return spec


def _warm(o: FieldReader, method: str) -> Optional[WarmOption]:
    name = f"{o.path}.warm"
    value = o.get("warm", (bool, dict), default=False)
    if value is False:
        return None
    if method == "vddk":
        raise InvalidField(name, "warm passes read the datastore over HTTPS: use conversion_method https or virt-v2v")
    if value is True:
        return WarmOption()
    warm = FieldReader(value, name)
    interval_text = warm.text("precopy_interval")
    interval = DEFAULT_PRECOPY_INTERVAL
    if interval_text is not None:
        interval = parse_duration(interval_text)
        low, high = PRECOPY_INTERVAL
        if interval is None or not low <= interval <= high:
            raise InvalidField(f"{name}.precopy_interval", 'must be a duration such as "30m", "1h" or "2d",'
                                                           " from 1 s to 7 d")
    cutover_text = warm.text("cutover_at")
    cutover_at = None
    if cutover_text is not None:
        cutover_at = parse_rfc3339(cutover_text)
        if cutover_at is None:
            raise InvalidField(f"{name}.cutover_at", "must be an RFC 3339 time with its offset, such as"
                                                     " 2026-12-24T22:00:00Z")
    option = WarmOption(interval, cutover_at, warm.get("quiesce", bool, default=False),
                        warm.get("force_off", bool, default=False))
    warm.done()
    return option


def _warm_json(option: Optional[WarmOption]):
    if option is None:
        return False
    return {"precopy_interval": duration_setting(option.precopy_interval), "cutover_at": rfc3339(option.cutover_at),
            "quiesce": option.quiesce, "force_off": option.force_off}


def _verify(o: FieldReader) -> object:
    value = o.get("verify", (bool, str), default=True)
    if isinstance(value, str) and value != "full":
        raise InvalidField(f"{o.path}.verify", 'must be true, false or "full"')
    return value


def _device_models(o: FieldReader, method: str, context: SubmitContext) -> str:
    name = f"{o.path}.device_models"
    if method == "virt-v2v":
        if o.choice("device_models", DEVICE_MODELS, default="virtio") != "virtio":
            raise InvalidField(name, "virt-v2v converts the guest to virtio: leave device_models out or set virtio")
        return "virtio"
    models = o.choice("device_models", DEVICE_MODELS, default="auto")
    problem = context.inspection_problem() if models == "auto" else None
    if problem:
        raise InvalidField(name, f"auto reads the copied guest's drivers, but {problem}; or choose source or virtio")
    return models


def _boot_check(o: FieldReader) -> Optional[BootCheckOption]:
    name = f"{o.path}.boot_check"
    value = o.get("boot_check", (bool, dict), default=False)
    if value is False:
        return None
    if value is True:
        return BootCheckOption()
    check = FieldReader(value, name)
    pattern = check.text("ready_pattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as e:
            raise InvalidField(f"{name}.ready_pattern", f"is not a valid regular expression: {e}") from None
    timeout = check.get("timeout", (int, float))
    low, high = BOOT_CHECK_SECONDS
    if timeout is not None and not low <= timeout <= high:
        raise InvalidField(f"{name}.timeout", f"must be {low} to {high} seconds")
    option = BootCheckOption(pattern, None if timeout is None else float(timeout),
                             check.choice("on_failure", BOOT_CHECK_FAILURE))
    check.done()
    return option


def _network_mapping(mapping: dict, path: str) -> dict[str, str]:
    for source, target in mapping.items():
        name = f"{path}[{source!r}]"
        if not source.strip():
            raise InvalidField(path, "network names must not be empty")
        if not isinstance(target, str):
            raise InvalidField(name, "must be a bridge name or network:<libvirt network>")
        if target.startswith("network:"):
            if not NETWORK_NAME.match(target[len("network:"):]):
                raise InvalidField(name, "must name a libvirt network after 'network:'")
        elif not BRIDGE_NAME.match(target):
            raise InvalidField(name, "must be a bridge name (at most 15 letters, digits, '.', '_', '-') or network:<libvirt network>")
    return dict(mapping)


def spec_to_definition(spec: JobSpec) -> dict[str, Any]:
    """The normalized JSON shape of a definition, secrets redacted."""
    s, d, o = spec.source, spec.destination, spec.options
    definition: dict[str, Any] = {
        "id": spec.id,
        "name": spec.name,
        "vm_path": spec.vm_path,
        "source": {
            "type": s.type,
            "vcenter_url": s.vcenter_url,
            "username": s.username,
            "password": REDACTED if s.password is not None else None,
            "datacenter": spec.datacenter,
            "insecure": s.insecure,
            "thumbprint": s.thumbprint,
            "vcenter": s.vcenter,
        },
        "destination": {
            "type": d.type,
            "libvirt_uri": d.libvirt_uri,
            "storage_pool": d.storage_pool,
            "output_dir": d.output_dir,
            "disk_format": d.disk_format,
            "domain_name": d.domain_name,
            "domain_type": d.domain_type,
            "start": d.start,
        },
        "options": {
            "conversion_method": o.conversion_method,
            "network_mapping": dict(o.network_mapping),
            "shutdown_source": o.shutdown_source,
            "remove_cdrom": o.remove_cdrom,
            "verify": o.verify,
            "device_models": o.device_models,
            "boot_check": _boot_check_json(o.boot_check),
            "warm": _warm_json(o.warm),
        },
        "metadata": spec.metadata,
    }
    return _drop_nones(definition)


def _boot_check_json(option: Optional[BootCheckOption]):
    if option is None:
        return False
    given = {"ready_pattern": option.ready_pattern, "timeout": option.timeout, "on_failure": option.on_failure}
    return {k: v for k, v in given.items() if v is not None} or True


def _drop_nones(d: dict) -> dict:
    return {k: _drop_nones(v) if isinstance(v, dict) and k != "metadata" else v for k, v in d.items() if v is not None}


def secrets_of(spec: JobSpec) -> dict[str, str]:
    return {"source.password": spec.source.password} if spec.source.password is not None else {}


def with_secrets(definition: dict[str, Any], secrets: dict[str, str]) -> dict[str, Any]:
    """Put the decrypted secrets back into a stored definition (for the pipeline)."""
    restored = {k: dict(v) if isinstance(v, dict) else v for k, v in definition.items()}
    for dotted, value in secrets.items():
        section, key = dotted.split(".", 1)
        restored[section][key] = value
    return restored
