"""Job values: what the store returns and the API serializes."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from attrs import field, frozen

from ..vsphere.connection import parse_vcenter_url
from .definition import SourceSpec

PENDING = "pending"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"

STATUSES = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED)
ACTIVE = (PENDING, RUNNING)
TERMINAL = (COMPLETED, FAILED, CANCELLED)

STAGES = (
    "queued",
    "connecting",
    "discovery",
    "preparation",
    "precopy",  # warm: passes while the source runs
    "cutover",  # warm: the source switched off, the last changes copied
    "conversion",
    "verification",
    "inspection",
    "import",
    "boot_check",
    "done",
)


@frozen
class Progress:
    stage: str = "queued"
    percent_complete: float = 0.0
    current_bytes: int = 0
    total_bytes: int = 0
    disk_index: int = 0
    disk_count: int = 0
    disk_current_bytes: int = 0  # of the disk being copied (disk_index)
    disk_total_bytes: int = 0
    rate_bytes_per_second: float = 0.0
    eta_seconds: Optional[float] = None
    message: str = ""
    disks: tuple = field(default=(), converter=tuple)  # per disk: {"index", "label", "current_bytes", "total_bytes"}
    resumed_at_bytes: int = 0  # bytes already on the destination when this run (a resume) began
    passes: tuple = field(default=(), converter=tuple)  # warm: each pass (warm/precopy.py Pass.to_json)
    next_pass_at: Optional[float] = None  # warm: when the next pass starts


@frozen
class Job:
    id: str
    definition: dict[str, Any]  # the normalized definition, secrets already "***"
    status: str
    progress: Progress
    created_at: float
    updated_at: float
    started_at: Optional[float] = None
    completed_at: Optional[float] = None
    result: Optional[dict[str, Any]] = None
    error: Optional[str] = None
    vcenter_key: str = ""  # see vcenter_key(): not shown, counted by limits.jobs_per_vcenter
    node: Optional[str] = None  # the node that runs or ran it

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@frozen
class NewJob:
    """A validated job ready to be stored."""

    id: str
    definition: dict[str, Any]  # redacted: secrets replaced by "***"
    secrets: dict[str, str]  # "source.password" -> value; encrypted by the store
    created_at: float
    vcenter_key: str = ""


@frozen
class HistoryEntry:
    at: float
    status: str
    stage: str
    message: str


def vcenter_key(source: SourceSpec, named_urls: Mapping[str, str]) -> str:
    """The vCenter a job reads from, one spelling per server (limits.jobs_per_vcenter):
    ``vc.example.com``, ``https://VC.example.com:443/sdk/`` and a configured name for it all give
    ``vc.example.com:443``."""
    url = named_urls.get(source.vcenter) if source.vcenter is not None else source.vcenter_url
    if url is None:  # a name no longer configured: it still counts as one vCenter
        return f"vcenter:{source.vcenter}"
    _scheme, host, port, _path = parse_vcenter_url(url, allow_http=True)
    host = host.lower().rstrip(".")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
