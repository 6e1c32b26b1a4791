"""Plain-text rendering for hyperctl: tables, sizes, durations, progress bars."""

from __future__ import annotations

from typing import Any, Optional, Sequence

TERMINAL = ("completed", "failed", "cancelled")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def size(n: Optional[float]) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def bar(percent: float, width: int = 28) -> str:
    filled = int(round(width * max(0.0, min(100.0, percent)) / 100))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def job_row(job: dict) -> list:
    p = job["progress"]
    return [job["id"], job["status"], p["stage"], f"{p['percent_complete']:.0f}%", job["definition"]["vm_path"],
            job["created_at"]]


JOB_HEADERS = ["ID", "STATUS", "STAGE", "DONE", "VM", "CREATED"]


def progress_lines(job: dict) -> list[str]:
    """The job's bar, and the disk being copied with its bytes, rate and ETA."""
    p = job["progress"]
    name = job["definition"].get("name") or job["definition"]["vm_path"]
    lines = [f"{job['id'][:8]}  {name}  {bar(p['percent_complete'])} {p['percent_complete']:5.1f}%  "
             f"{job['status']}/{p['stage']}"]
    if p["stage"] not in ("conversion", "verification"):  # no bytes to count: what the stage is doing
        if p.get("message") and job["status"] == "running":
            lines.append(f"          {p['message'][:120]}")
    elif p.get("disks"):  # every disk in flight, each with its bar
        for disk in p["disks"]:
            total = disk["total_bytes"] or 0
            percent = 100.0 * disk["current_bytes"] / total if total else 0.0
            lines.append(f"          disk {disk['index'] + 1}/{len(p['disks'])} {bar(percent, 20)} "
                         f"{size(disk['current_bytes'])} of {size(total)}")
        lines.append(f"          {size(p['rate_bytes_per_second'])}/s  ETA {duration(p['eta_seconds'])}"
                     + (f"  (resumed at {size(p['resumed_at_bytes'])})" if p.get("resumed_at_bytes") else ""))
    elif p.get("disk_count"):
        disk_total = p.get("disk_total_bytes") or 0
        disk_percent = 100.0 * p.get("disk_current_bytes", 0) / disk_total if disk_total else 0.0
        lines.append(f"          disk {p['disk_index'] + 1}/{p['disk_count']} {bar(disk_percent, 20)} "
                     f"{size(p.get('disk_current_bytes'))} of {size(disk_total)}  "
                     f"{size(p['rate_bytes_per_second'])}/s  ETA {duration(p['eta_seconds'])}")
    return lines


def outcome(job: dict) -> str:
    if job["status"] == "completed":
        result = job.get("result") or {}
        disks = ", ".join(d.get("path") or f"{d.get('storage_pool')}/{d.get('volume')}" for d in result.get("disks", []))
        checked = result.get("boot_check") or {}
        return (f"{job['id']}: completed: domain {result.get('domain_name', '?')} on {result.get('libvirt_uri', '?')}"
                + (f", disks {disks}" if disks else "")
                + (f", {size(result['bytes_copied'])} copied" if result.get("bytes_copied") else "")
                + (f", booted in {checked['seconds']:g} s" if checked.get("passed") else ""))
    return f"{job['id']}: {job['status']}" + (f": {job['error']}" if job.get("error") else "")
