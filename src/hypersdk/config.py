"""The daemon's configuration: frozen values and their pure validation.

The YAML file is read once at start-up. Every key is declared here with its type,
default and check; an unknown key, a wrong type or a bad value raises ConfigError
with one line naming the file and the key (``etc/x.yaml: log.format: must be one
of json, text``). Nothing else in the daemon reads the file.
"""

from __future__ import annotations

import os
import re
import typing
from typing import Any, Literal, Optional

import attrs
import yaml
from attrs import field, frozen

from .errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def _check(predicate, problem):
    """Field metadata: a value check and the message when it fails."""
    return {"check": (predicate, problem)}


def _positive(v):
    return v > 0


@frozen
class LogConfig:
    level: Literal["debug", "info", "warn", "error", "critical"] = "info"
    format: Literal["text", "json"] = "text"


@frozen
class DatabaseConfig:
    path: str = field(default="var/hypersdk.db", metadata=_check(bool, "must not be empty"))  # SQLite
    # PostgreSQL, shared by several daemons: postgresql://user@host:port/db (no password in it)
    url: Optional[str] = field(default=None, metadata=_check(
        lambda u: u.startswith(("postgresql://", "postgres://")), "must be a postgresql://user@host:port/db URL"))
    password_file: Optional[str] = None  # the PostgreSQL user's password
    key_file: Optional[str] = None  # with url: the key every node seals secrets with (created 0600 if missing)
    connections: int = field(default=4, metadata=_check(lambda n: 1 <= n <= 64, "must be 1..64"))


@frozen
class ClusterConfig:
    """Nodes sharing a PostgreSQL database (with SQLite, the one node keeps the same heartbeat)."""

    heartbeat_interval: float = field(default=5.0, metadata={"duration": True, **_check(_positive, "must be > 0")})
    # A node silent this long is lost: the others take its jobs over
    lease: float = field(default=30.0, metadata={"duration": True, **_check(_positive, "must be > 0")})


@frozen
class MetricsConfig:
    enabled: bool = False
    port: Optional[int] = field(
        default=None, metadata=_check(lambda p: p is None or 0 < p < 65536, "must be a TCP port")
    )
    # A port of its own asks for the API's tokens; this serves it without (refused on other hosts' reach otherwise)
    allow_anonymous: bool = False


@frozen
class LimitsConfig:
    requests_per_second: Optional[float] = field(default=None, metadata=_check(_positive, "must be > 0"))
    burst: int = field(default=20, metadata=_check(_positive, "must be > 0"))
    jobs_per_vcenter: Optional[int] = field(default=None, metadata=_check(_positive, "must be > 0"))
    streams_per_vcenter: int = field(default=8, metadata=_check(lambda n: 1 <= n <= 256, "must be 1..256"))
    max_body_bytes: int = field(default=1024 * 1024, metadata=_check(_positive, "must be > 0"))
    websocket_clients: int = field(default=1000, metadata=_check(lambda n: 1 <= n <= 100_000, "must be 1..100000"))
    # WebSocket pings, and how long a client may leave one unanswered before it is closed
    websocket_ping_interval: float = field(default=30.0, metadata={"duration": True, **_check(_positive, "must be > 0")})
    websocket_ping_timeout: float = field(default=60.0, metadata={"duration": True, **_check(_positive, "must be > 0")})
    # unsent messages a WebSocket client may hold before it is dropped as too slow
    websocket_send_buffer_bytes: int = field(default=1024 * 1024, metadata=_check(lambda n: n >= 4096, "must be >= 4096"))


@frozen
class WebhookConfig:
    _aliases = {"retry": "retry_count"}

    url: str = field(
        metadata=_check(lambda u: u.startswith(("http://", "https://")), "must be an http(s) URL")
    )
    events: tuple[str, ...] = ()
    enabled: bool = True
    timeout: float = field(default=30.0, metadata={"duration": True, **_check(_positive, "must be > 0")})
    retry_count: int = field(default=3, metadata=_check(lambda n: 0 <= n <= 20, "must be 0..20"))
    headers: dict[str, str] = field(factory=dict)
    secret: Optional[str] = None


@frozen
class WebhookSettings:
    """How deliveries are made: ``webhooks`` given as a mapping (``endpoints:`` holds the list)."""

    deny_private_networks: bool = False  # refuse receivers on private, loopback and link-local addresses
    queue_size: int = field(default=1000, metadata=_check(lambda n: 1 <= n <= 1_000_000, "must be 1..1000000"))
    keep_deliveries: int = field(default=50, metadata=_check(lambda n: 1 <= n <= 10_000, "must be 1..10000"))


@frozen
class TokenConfig:
    name: str = field(metadata=_check(bool, "must not be empty"))
    role: Literal["read", "admin"] = "read"
    token: Optional[str] = field(default=None, repr=False)
    token_file: Optional[str] = None  # e.g. a systemd credential: $CREDENTIALS_DIRECTORY/...


@frozen
class AuthConfig:
    tokens: tuple[TokenConfig, ...] = ()  # none: no authentication
    allow_anonymous: bool = False  # no tokens on a non-loopback listener: refused unless this says so


@frozen
class InhibitConfig:
    enabled: bool = True
    what: str = field(default="shutdown:sleep", metadata=_check(
        lambda w: all(p in ("shutdown", "sleep", "idle", "handle-power-key", "handle-suspend-key",
                            "handle-hibernate-key", "handle-lid-switch") for p in w.split(":")),
        "must be a colon-separated list of logind lock types such as shutdown:sleep"))
    mode: Literal["delay", "block"] = "delay"


@frozen
class DBusConfig:
    enabled: bool = False
    bus: str = field(default="system", metadata=_check(bool, "must be system, session or a D-Bus address"))
    inhibit: InhibitConfig = field(factory=InhibitConfig)  # a logind lock while migrations run


@frozen
class VCenterConfig:
    url: str
    username: str
    password: Optional[str] = field(default=None, repr=False)
    password_file: Optional[str] = None
    insecure: bool = False
    thumbprint: Optional[str] = None


@frozen
class VddkConfig:
    libdir: Optional[str] = None


@frozen
class BootCheckConfig:
    """Defaults of options.boot_check."""

    timeout: float = field(default=300.0, metadata={"duration": True, **_check(
        lambda t: 10 <= t <= 86400, "must be 10 s to 24 h")})
    on_failure: Literal["keep", "remove"] = "keep"  # the domain that did not come up: kept to look at, or removed
    shutdown_timeout: float = field(default=120.0, metadata={"duration": True, **_check(_positive, "must be > 0")})


@frozen
class PipelineConfig:
    _aliases = {"virt_v2v_force_tcg": "libguestfs_force_tcg"}

    work_dir: str = "var/work"
    connect_timeout: float = field(default=30.0, metadata={"duration": True, **_check(_positive, "must be > 0")})
    shutdown_timeout: float = field(default=300.0, metadata={"duration": True, **_check(_positive, "must be > 0")})
    process_kill_grace: float = field(default=5.0, metadata={"duration": True, **_check(_positive, "must be > 0")})
    max_bytes_per_second: Optional[int] = field(default=None, metadata=_check(_positive, "must be > 0"))
    streams_per_disk: int = field(default=4, metadata=_check(lambda n: 1 <= n <= 64, "must be 1..64"))
    # a disk whose source sends nothing this long is stopped (resumable)
    stall_timeout: float = field(default=120.0, metadata={"duration": True, **_check(_positive, "must be > 0")})
    # TCG for the libguestfs appliance (virt-v2v, inspection) without the start-up probe of KVM (appliance.py)
    libguestfs_force_tcg: bool = False
    inspection_timeout: float = field(default=600.0, metadata={"duration": True, **_check(_positive, "must be > 0")})
    virtio_win: Optional[str] = None  # virtio-win drivers (ISO or directory) virt-v2v installs into Windows guests
    # what a failed job keeps to be resumed (its partial copy) is removed this long after it failed
    keep_resumable_for: float = field(default=7 * 86400.0, metadata={"duration": True,
                                                                      **_check(_positive, "must be > 0")})


@frozen
class Config:
    listen: str = field(default="tcp:8080:interface=127.0.0.1", metadata=_check(bool, "must not be empty"))
    worker_count: int = field(default=4, metadata=_check(lambda n: 1 <= n <= 256, "must be 1..256"))
    # This daemon's name among the nodes sharing the database; None: the host name
    node_name: Optional[str] = field(default=None, metadata=_check(
        lambda n: n is None or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", n) is not None,
        "must be 1..63 letters, digits, '.', '_' or '-'"))
    cluster: ClusterConfig = field(factory=ClusterConfig)
    log: LogConfig = field(factory=LogConfig)
    auth: AuthConfig = field(factory=AuthConfig)
    database: DatabaseConfig = field(factory=DatabaseConfig)
    limits: LimitsConfig = field(factory=LimitsConfig)
    metrics: MetricsConfig = field(factory=MetricsConfig)
    webhooks: tuple[WebhookConfig, ...] = ()
    dbus: DBusConfig = field(factory=DBusConfig)
    webhook_settings: WebhookSettings = field(factory=WebhookSettings, metadata={"not_a_key": True})
    vcenters: dict[str, VCenterConfig] = field(factory=dict)
    vddk: VddkConfig = field(factory=VddkConfig)
    pipeline: PipelineConfig = field(factory=PipelineConfig)
    boot_check: BootCheckConfig = field(factory=BootCheckConfig)


class _Invalid(Exception):
    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")


def load_config(path: str) -> Config:
    """Read and validate the YAML file at ``path``; raise ConfigError naming file and key."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read configuration: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    try:
        config = parse_config({} if data is None else data)
        _check_references(config)
    except _Invalid as e:
        raise ConfigError(f"{path}: {e}") from None
    return config


def parse_config(data: Any) -> Config:
    """Validate an already-parsed mapping (raises _Invalid naming the key).

    ``webhooks`` is the API document's list, or a mapping of delivery settings
    whose ``endpoints`` key holds that list.
    """
    if isinstance(data, dict) and isinstance(data.get("webhooks"), dict):
        settings = dict(data["webhooks"])
        endpoints = settings.pop("endpoints", [])
        config = _build(Config, {**data, "webhooks": endpoints}, "")
        return attrs.evolve(config, webhook_settings=_build(WebhookSettings, settings, "webhooks."))
    return _build(Config, data, "")


def _check_references(config: Config) -> None:
    from .webhooks.rules import WebhookProblem, check_events, check_url  # pure; imports nothing of this module

    for i, hook in enumerate(config.webhooks):
        for name, check, value in (("url", check_url, hook.url), ("events", check_events, hook.events)):
            try:
                check(value)
            except WebhookProblem as e:
                raise _Invalid(f"webhooks[{i}].{name}", str(e)) from None
    names = [t.name for t in config.auth.tokens]
    for i, token in enumerate(config.auth.tokens):
        if (token.token is None) == (token.token_file is None):
            raise _Invalid(f"auth.tokens[{i}]", "give exactly one of token, token_file")
        if token.token_file is not None and not os.access(token.token_file, os.R_OK):
            raise _Invalid(f"auth.tokens[{i}].token_file", f"cannot read {token.token_file}")
        if names.count(token.name) > 1:
            raise _Invalid(f"auth.tokens[{i}].name", f"{token.name!r} is used twice")
    database = config.database
    if database.url is not None:
        import urllib.parse

        if urllib.parse.urlsplit(database.url).password is not None:
            raise _Invalid("database.url", "must not hold a password: put it in database.password_file")
        if database.key_file is None:
            raise _Invalid("database.key_file", "is required with database.url: every node seals secrets with"
                                                " the same key, so give each the same file")
        if database.password_file is not None and not os.access(database.password_file, os.R_OK):
            raise _Invalid("database.password_file", f"cannot read {database.password_file}")
    if config.cluster.lease < 4 * config.cluster.heartbeat_interval:  # half of it must outlast a slow heartbeat
        raise _Invalid("cluster.lease", "must be at least 4 times cluster.heartbeat_interval (a node whose lease is"
                                        " not renewed for half of it stops its copies)")
    for name, vc in config.vcenters.items():
        if (vc.password is None) == (vc.password_file is None):
            raise _Invalid(f"vcenters.{name}", "give exactly one of password, password_file")
        if vc.password_file is not None and not os.access(vc.password_file, os.R_OK):
            raise _Invalid(f"vcenters.{name}.password_file", f"cannot read {vc.password_file}")


def _build(cls, data: Any, prefix: str):
    if not isinstance(data, dict):
        raise _Invalid(prefix.rstrip(".") or "(top level)", "must be a mapping")
    aliases = getattr(cls, "_aliases", {})
    data = {aliases.get(k, k): v for k, v in data.items()}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    for key in data:
        if not isinstance(key, str) or key not in fields or fields[key].metadata.get("not_a_key"):
            raise _Invalid(f"{prefix}{key}", "unknown key")
    values = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name not in data or f.metadata.get("not_a_key"):
            if f.default is attrs.NOTHING:
                raise _Invalid(key, "is required")
            continue
        value = _convert(hints[name], data[name], key, f.metadata)
        check = f.metadata.get("check")
        if check and value is not None and not check[0](value):
            raise _Invalid(key, check[1])
        values[f.alias] = value
    return cls(**values)


def _convert(hint, value, key: str, metadata):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _convert(args[0], value, key, metadata)
    if origin is Literal:
        if value not in args:
            raise _Invalid(key, f"must be one of {', '.join(sorted(map(str, args)))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise _Invalid(key, "must be a list")
        return tuple(_convert(args[0], v, f"{key}[{i}]", {}) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _Invalid(key, "must be a mapping")
        return {str(k): _convert(args[1], v, f"{key}.{k}", {}) for k, v in value.items()}
    if attrs.has(hint):
        return _build(hint, value, f"{key}.")
    if hint is float and metadata.get("duration") and isinstance(value, str):
        seconds = parse_duration(value)
        if seconds is None:
            raise _Invalid(key, "must be a number of seconds or a duration such as 30s")
        return seconds
    if hint is bool:
        if not isinstance(value, bool):
            raise _Invalid(key, "must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(key, "must be an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(key, "must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _Invalid(key, "must be a string")
        return value
    raise AssertionError(f"unsupported config type {hint!r}")  # a bug in this module


def parse_duration(text: str) -> Optional[float]:
    """Seconds from "30", "30s", "500ms", "5m", "1h" or "7d"; None when it is none of those."""
    m = _DURATION.match(text)
    return None if m is None else float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def read_secret(value: Optional[str], path: Optional[str]) -> str:
    """A secret given inline, else read from its file (stripped)."""
    if value is not None:
        return value
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def read_token(token: TokenConfig) -> str:
    return read_secret(token.token, token.token_file)


def check_exposure(config: Config, listen: str) -> None:
    """A listener other than loopback without authentication is refused, unless explicitly allowed:
    the API's, and the metrics listener of its own."""
    if not (config.auth.tokens or config.auth.allow_anonymous or _loopback_only(listen)):
        raise ConfigError(
            f"listen {listen!r} is reachable from other hosts and auth has no tokens: add auth.tokens,"
            " or set auth.allow_anonymous: true to serve it without authentication"
        )
    metrics = metrics_listen(config, listen)
    if metrics is not None and not (config.auth.tokens or config.metrics.allow_anonymous or _loopback_only(metrics)):
        raise ConfigError(
            f"metrics.port {config.metrics.port} is reachable from other hosts and auth has no tokens: add"
            " auth.tokens (the metrics port then asks for a read or admin token), or set"
            " metrics.allow_anonymous: true to serve metrics without authentication"
        )


def metrics_listen(config: Config, listen: str) -> Optional[str]:
    """The endpoint of a metrics listener of its own (on the API's interface), or None when metrics
    are off or served on the API port."""
    port = config.metrics.port
    api_port = re.match(r"^(?:tcp6?|ssl):(?:port=)?(\d+)", listen)
    if not config.metrics.enabled or port is None or (api_port is not None and int(api_port.group(1)) == port):
        return None
    if listen.startswith("unix:"):
        return f"tcp:{port}:interface=127.0.0.1"
    interface = listen_interface(listen)
    kind = "tcp6" if listen.startswith("tcp6:") else "tcp"
    return f"{kind}:{port}" + (f":interface={interface}" if interface is not None else "")


def _loopback_only(listen: str) -> bool:
    if listen.startswith("unix:"):
        return True
    interface = listen_interface(listen)
    return interface is not None and is_loopback_host(interface.replace("\\", ""))  # None: every interface


def listen_interface(listen: str) -> Optional[str]:
    """The interface= of a Twisted endpoint string, colons still escaped (\\:) as endpoint strings write them."""
    match = re.search(r"(?<![A-Za-z])interface=((?:\\:|[^:])+)", listen)
    return None if match is None else match.group(1)


def is_loopback_host(name: str) -> bool:
    """localhost, 127.x.y.z or ::1 (with or without brackets)."""
    name = name.strip("[]")
    return name == "localhost" or name == "::1" or name.startswith("127.")


def read_vcenter_password(vc: VCenterConfig) -> str:
    return read_secret(vc.password, vc.password_file)
