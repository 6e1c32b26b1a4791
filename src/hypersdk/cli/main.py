"""hyperctl: drive a hypersdk daemon from the shell.

Exit status: 0 done, 1 the job (or the request) failed, 2 usage, 3 the daemon cannot be reached,
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from typing import Any, Optional

import yaml

from .. import __version__
from .client import JOB_FAILED, OK, USAGE, ApiClient, CliError
from .completion import bash_completion
from .render import JOB_HEADERS, job_row, outcome, table
from .watch import watch

STATUSES = ("pending", "running", "completed", "failed", "cancelled")


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: 0 for --help, 2 for usage errors
        return int(e.code or 0)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return USAGE
    client = ApiClient(args.url, args.token, args.timeout, args.cacert)
    try:
        return args.run(client, args) or OK
    except CliError as e:
        print(f"hyperctl: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130  # the shell's code for "stopped by Ctrl-C"
    except BrokenPipeError:  # `hyperctl jobs | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hyperctl", description="Drive a hypersdk daemon (vSphere to KVM migrations).",
                                epilog="Exit status: 0 done, 1 failed, 2 usage, 3 daemon unreachable.")
    p.add_argument("--url", default=os.environ.get("HYPERSDK_URL", "http://127.0.0.1:8080"),
                   help="the daemon (env HYPERSDK_URL; default http://127.0.0.1:8080)")
    p.add_argument("--token", default=os.environ.get("HYPERSDK_TOKEN"), help="API token (env HYPERSDK_TOKEN)")
    p.add_argument("--cacert", default=os.environ.get("HYPERSDK_CACERT"), help="CA file for an https:// daemon")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    p.add_argument("--version", action="version", version=f"hyperctl {__version__}")
    sub = p.add_subparsers(metavar="COMMAND")

    c = sub.add_parser("status", help="job counts and workers")
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=cmd_status)

    c = sub.add_parser("submit", help="submit jobs from a YAML/JSON file (- for stdin) or from flags")
    c.add_argument("file", nargs="?", help="job definition(s): one, a list, or {jobs: [...]}")
    c.add_argument("--vm-path")
    _add_vcenter_options(c)
    c.add_argument("--libvirt-uri", default="qemu:///system")
    c.add_argument("--storage-pool")
    c.add_argument("--output-dir")
    c.add_argument("--disk-format", choices=("qcow2", "raw"))
    c.add_argument("--map", action="append", default=[], metavar="NETWORK=BRIDGE",
                   help="network mapping (repeat; * for the default; network:NAME for a libvirt network)")
    c.add_argument("--method", choices=("https", "vddk", "virt-v2v"))
    c.add_argument("--shutdown-source", action="store_true")
    c.add_argument("--remove-cdrom", action="store_true")
    c.add_argument("--no-verify", action="store_true")
    c.add_argument("--device-models", choices=("auto", "source", "virtio"),
                   help="the domain's disk and NIC models (default auto: what the guest has drivers for)")
    c.add_argument("--boot-check", action="store_true", help="start the domain isolated and wait for it to boot")
    c.add_argument("--start", action="store_true", help="start the domain after import")
    c.add_argument("--watch", action="store_true", help="then watch the jobs until they end")
    c.set_defaults(run=cmd_submit)

    c = sub.add_parser("jobs", help="list jobs, newest first")
    c.add_argument("--status", action="append", choices=STATUSES)
    c.add_argument("--limit", type=int, default=50)
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=cmd_jobs)

    c = sub.add_parser("job", help="one job, with its history")
    c.add_argument("id")
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=cmd_job)

    c = sub.add_parser("cancel", help="cancel jobs by id and/or status")
    c.add_argument("ids", nargs="*")
    c.add_argument("--status", action="append", choices=("pending", "running"))
    c.set_defaults(run=cmd_cancel)

    c = sub.add_parser("resume", help="queue a failed job again whose copy was kept: it goes on from its checkpoints")
    c.add_argument("id")
    c.add_argument("--watch", action="store_true", help="then watch it until it ends")
    c.set_defaults(run=cmd_resume)

    c = sub.add_parser("cutover", help="cut a warm job over now: the source is shut down, the last changes copied,"
                                       " the target started")
    c.add_argument("id")
    c.add_argument("--watch", action="store_true", help="then watch it until it ends")
    c.set_defaults(run=cmd_cutover)

    c = sub.add_parser("discard", help="remove what a failed or cancelled job kept (its partial copy, a domain that"
                                       " did not boot); it can no longer be resumed")
    c.add_argument("id")
    c.set_defaults(run=cmd_discard)

    c = sub.add_parser("watch", help="live progress until the jobs end (all active jobs when no id is given)")
    c.add_argument("ids", nargs="*")
    c.set_defaults(run=lambda client, args: watch(client, args.ids, cacert=args.cacert))

    vms = sub.add_parser("vms", help="VMs on a vCenter").add_subparsers(metavar="ACTION")
    for action, helptext in (("list", "list VMs"), ("info", "one VM's hardware"), ("shutdown", "guest shutdown"),
                             ("poweroff", "power off"), ("remove-cdrom", "remove CD-ROM devices")):
        c = vms.add_parser(action, help=helptext)
        if action == "list":
            c.add_argument("--folder")
        else:
            c.add_argument("vm_path")
        _add_vcenter_options(c)
        c.add_argument("--json", action="store_true")
        c.set_defaults(run=cmd_vms, action=action)

    sch = sub.add_parser("schedules", help="cron schedules").add_subparsers(metavar="ACTION")
    c = sch.add_parser("list")
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=cmd_schedules_list)
    c = sch.add_parser("stats")
    c.set_defaults(run=lambda client, args: _print_json(client.get("/schedules/stats")))
    c = sch.add_parser("create", help="from a YAML/JSON file: id, schedule, timezone, job_template, ...")
    c.add_argument("file")
    c.set_defaults(run=lambda client, args: _print_json(client.post("/schedules", _load(args.file))["schedule"]))
    c = sch.add_parser("update", help="partial update from a YAML/JSON file")
    c.add_argument("id")
    c.add_argument("file")
    c.set_defaults(run=lambda client, args: _print_json(
        client.call("PUT", f"/schedules/{args.id}", _load(args.file))["schedule"]))
    for action in ("get", "delete", "enable", "disable", "trigger"):
        c = sch.add_parser(action)
        c.add_argument("id")
        c.set_defaults(run=cmd_schedule_action, action=action)

    wh = sub.add_parser("webhooks", help="webhooks").add_subparsers(metavar="ACTION")
    c = wh.add_parser("list")
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=cmd_webhooks_list)
    c = wh.add_parser("add")
    c.add_argument("hook_url", metavar="URL")  # not "url": that is the daemon's (--url)
    c.add_argument("--event", action="append", default=[], help="repeat; none means every event")
    c.add_argument("--secret-file", help="file holding the HMAC key")
    c.add_argument("--header", action="append", default=[], metavar="NAME=VALUE")
    c.add_argument("--timeout", dest="hook_timeout", type=float)
    c.add_argument("--retry-count", type=int)
    c.set_defaults(run=cmd_webhooks_add)
    c = wh.add_parser("delete")
    c.add_argument("index", type=int)
    c.set_defaults(run=lambda client, args: print(client.call("DELETE", f"/webhooks/{args.index}")["message"]))
    c = wh.add_parser("deliveries")
    c.add_argument("index", type=int)
    c.set_defaults(run=lambda client, args: _print_json(client.get(f"/webhooks/{args.index}/deliveries")))
    c = wh.add_parser("test")
    c.add_argument("hook_url", metavar="URL")
    c.add_argument("--event", default="test")
    c.set_defaults(run=cmd_webhooks_test)

    c = sub.add_parser("completion", help="print a shell completion script: eval \"$(hyperctl completion bash)\"")
    c.add_argument("shell", choices=("bash",))
    c.set_defaults(run=lambda client, args: print(bash_completion(build_parser())))
    return p


# -- commands ---------------------------------------------------------------------------


def cmd_status(client: ApiClient, args) -> int:
    s = client.get("/status")
    if args.json:
        return _print_json(s)
    print(f"hypersdk {s.get('version', '?')} up {s.get('uptime_seconds', 0):.0f} s: {s['running_jobs']} running, "
          f"{s.get('pending_jobs', 0)} pending, {s['completed_jobs']} completed, {s['failed_jobs']} failed, "
          f"{s.get('cancelled_jobs', 0)} cancelled; workers {s['active_workers']}/{s['worker_count']}")
    return OK


def cmd_submit(client: ApiClient, args) -> int:
    if args.file:
        body = _load(args.file)
    else:
        body = _definition_from_flags(args)
    answer = client.post("/jobs/submit", body)
    for job_id in answer["job_ids"]:
        print(job_id)
    if args.watch:
        return watch(client, answer["job_ids"], cacert=args.cacert)
    return OK


def _definition_from_flags(args) -> dict:
    if not args.vm_path:
        raise CliError("submit needs a job file or --vm-path (with --vcenter, or --vcenter-url and --username)",
                       USAGE)
    source: dict[str, Any] = {"type": "vsphere", **_vcenter_credentials(args)}
    destination = {"type": "kvm", "libvirt_uri": args.libvirt_uri, "storage_pool": args.storage_pool,
                   "output_dir": args.output_dir, "disk_format": args.disk_format, "start": args.start or None}
    mapping = {}
    for item in args.map:
        network, sep, target = item.partition("=")
        if not sep:
            raise CliError(f"--map {item!r}: use NETWORK=BRIDGE", USAGE)
        mapping[network] = target
    options = {"conversion_method": args.method, "network_mapping": mapping or None,
               "shutdown_source": args.shutdown_source or None, "remove_cdrom": args.remove_cdrom or None,
               "verify": False if args.no_verify else None, "device_models": args.device_models,
               "boot_check": True if args.boot_check else None}
    clean = lambda d: {k: v for k, v in d.items() if v is not None}  # noqa: E731
    return {"vm_path": args.vm_path, "source": clean(source), "destination": clean(destination),
            "options": clean(options)}


def cmd_jobs(client: ApiClient, args) -> int:
    answer = client.post("/jobs/query", {"status": args.status, "limit": args.limit} if args.status
                         else {"limit": args.limit})
    if args.json:
        return _print_json(answer)
    print(table([job_row(j) for j in answer["jobs"]], JOB_HEADERS))
    print(f"{len(answer['jobs'])} of {answer['total']} job(s)")
    return OK


def cmd_job(client: ApiClient, args) -> int:
    job = client.get(f"/jobs/{args.id}")
    if args.json:
        return _print_json(job)
    p = job["progress"]
    print(f"{job['id']}  {job['definition']['vm_path']}\n  status {job['status']}, stage {p['stage']}, "
          f"{p['percent_complete']:.1f}%\n  created {job['created_at']}, started {job['started_at'] or '-'}, "
          f"ended {job['completed_at'] or '-'}")
    for entry in job.get("history", []):
        print(f"  {entry['at']}  {entry['status']:9s} {entry['stage']:12s} {entry['message']}")
    print(outcome(job))
    return JOB_FAILED if job["status"] in ("failed", "cancelled") else OK


def cmd_cancel(client: ApiClient, args) -> int:
    if not args.ids and not args.status:
        raise CliError("cancel needs job ids or --status", USAGE)
    body: dict[str, Any] = {"job_ids": args.ids}
    if args.status:
        body["status"] = args.status
    answer = client.post("/jobs/cancel", body)
    for job_id in answer["cancelled"]:
        print(f"{job_id}: cancelled")
    for job_id, why in answer["errors"].items():
        print(f"{job_id}: not cancelled: {why}", file=sys.stderr)
    return JOB_FAILED if answer["errors"] else OK


def cmd_resume(client: ApiClient, args) -> int:
    return _job_action(client, args, "resume")


def cmd_cutover(client: ApiClient, args) -> int:
    return _job_action(client, args, "cutover")


def _job_action(client: ApiClient, args, action: str) -> int:
    """POST /jobs/{id}/<action>, said in a line, then watched with --watch."""
    answer = client.post(f"/jobs/{urllib.parse.quote(args.id, safe='')}/{action}", {})
    print(f"{answer['job_id']}: {answer['status']}: {answer['message']}")
    return watch(client, [answer["job_id"]], cacert=args.cacert) if args.watch else OK


def cmd_discard(client: ApiClient, args) -> int:
    answer = client.post(f"/jobs/{urllib.parse.quote(args.id, safe='')}/discard", {})
    print(f"{answer['job_id']}: {answer['message']}")
    for what in answer["removed"]:
        print(f"  removed {what['kind']} {what.get('path') or what.get('name')}")
    return OK


def cmd_vms(client: ApiClient, args) -> int:
    values = _vcenter_credentials(args)
    if args.action == "list":
        params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in values.items()}
        answer = client.get("/vms/list", folder=args.folder, **params)
        if args.json:
            return _print_json(answer)
        rows = [[v["path"], v["power_state"], v["num_cpu"], v["memory_mb"], v["guest_os"]] for v in answer["vms"]]
        print(table(rows, ["PATH", "POWER", "CPU", "MEMORY_MB", "GUEST"]))
        return OK
    body = {**values, "vm_path": args.vm_path}
    path = "/vms/info" if args.action == "info" else f"/vms/{args.action}"
    answer = client.post(path, body)
    if args.json or args.action == "info":
        return _print_json(answer)
    print(answer["message"] + (f" ({answer['count']})" if "count" in answer else ""))
    return OK


def cmd_schedules_list(client: ApiClient, args) -> int:
    answer = client.get("/schedules")
    if args.json:
        return _print_json(answer)
    rows = [[s["id"], s["schedule"], s["timezone"], "yes" if s["enabled"] else "no", s["next_run"] or "-",
             s["run_count"]] for s in answer["schedules"]]
    print(table(rows, ["ID", "SCHEDULE", "TIMEZONE", "ENABLED", "NEXT RUN", "RUNS"]))
    return OK


def cmd_schedule_action(client: ApiClient, args) -> int:
    if args.action == "get":
        return _print_json(client.get(f"/schedules/{args.id}"))
    if args.action == "delete":
        print(client.call("DELETE", f"/schedules/{args.id}")["message"])
        return OK
    answer = client.post(f"/schedules/{args.id}/{args.action}")
    print(answer["message"])
    for job_id in answer.get("job_ids", []):
        print(job_id)
    return OK


def cmd_webhooks_list(client: ApiClient, args) -> int:
    answer = client.get("/webhooks")
    if args.json:
        return _print_json(answer)
    rows = [[i, w["url"], ",".join(w["events"]) or "*", "yes" if w["enabled"] else "no", w.get("source", ""),
             " ".join(f"{k}={v}" for k, v in (w.get("deliveries") or {}).items())]
            for i, w in enumerate(answer["webhooks"])]
    print(table(rows, ["INDEX", "URL", "EVENTS", "ENABLED", "SOURCE", "DELIVERIES"]))
    return OK


def cmd_webhooks_add(client: ApiClient, args) -> int:
    headers = {}
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--header {item!r}: use NAME=VALUE", USAGE)
        headers[name] = value
    body: dict[str, Any] = {"url": args.hook_url, "events": args.event, "headers": headers}
    if args.secret_file:
        body["secret"] = _read_file(args.secret_file)
    if args.hook_timeout is not None:
        body["timeout"] = args.hook_timeout
    if args.retry_count is not None:
        body["retry_count"] = args.retry_count
    print(client.post("/webhooks", body)["message"])
    return OK


def cmd_webhooks_test(client: ApiClient, args) -> int:
    answer = client.post("/webhooks/test", {"url": args.hook_url, "event": args.event})
    print(f"delivered: {answer['delivered']}  status: {answer['status_code']}  {answer['duration_ms']} ms"
          + (f"  error: {answer['error']}" if answer.get("error") else ""))
    return OK if answer["delivered"] else JOB_FAILED


# -- helpers -----------------------------------------------------------------------------


def _load(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}", USAGE)
    try:
        return yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as e:
        raise CliError(f"{path} is not valid YAML or JSON: {e}", USAGE)


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}", USAGE)


def _add_vcenter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vcenter", help="a vCenter named in the daemon's configuration")
    parser.add_argument("--vcenter-url")
    parser.add_argument("--username")
    parser.add_argument("--password-file", help="file holding the vCenter password (or env HYPERSDK_VC_PASSWORD)")
    parser.add_argument("--insecure", action="store_true", help="do not verify vCenter's certificate")


def _vcenter_credentials(args) -> dict[str, Any]:
    """A named vCenter, or a URL with a user and a password (from a file or the environment)."""
    values: dict[str, Any] = {}
    if args.vcenter:
        values["vcenter"] = args.vcenter
    else:
        values.update(vcenter_url=args.vcenter_url, username=args.username, password=_password(args.password_file))
    if args.insecure:
        values["insecure"] = True
    return values


def _password(path: Optional[str]) -> Optional[str]:
    if path:
        return _read_file(path)
    return os.environ.get("HYPERSDK_VC_PASSWORD")


def _print_json(data: Any) -> int:
    print(json.dumps(data, indent=2))
    return OK
