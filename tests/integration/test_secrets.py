"""Known secrets go in (vCenter password, API token, webhook header and HMAC key, a schedule's
password); after a real migration, a schedule run and webhook deliveries, none of them is found
in any API response, WebSocket message, webhook payload, log line, metric or the database files."""

import json
import subprocess
import sys
import threading
import uuid

import requests

from hypersdk.vsphere.connection import VCenterParams, thd_connect
from tests.integration.daemon import Daemon, wait_for
from tests.integration.receiver import Receiver
from tests.integration.test_live import WS_CLIENT
from tests.integration.vcsim import MiB, Vcsim, Write, create_vm_with_disk

VC_PASSWORD = "vc-Pa55-" + uuid.uuid4().hex
TOKEN = "tok-" + uuid.uuid4().hex
HEADER = "Bearer hdr-" + uuid.uuid4().hex
HMAC_KEY = "hmac-" + uuid.uuid4().hex
SECRETS = (VC_PASSWORD, TOKEN, HEADER, HMAC_KEY)


def test_no_secret_leaks_anywhere(tmp_path):
    with Vcsim.start(password=VC_PASSWORD) as sim, Receiver() as receiver:
        si = thd_connect(VCenterParams.from_url(sim.info.url, "user", VC_PASSWORD, insecure=True), 30)
        create_vm_with_disk(si, sim, tmp_path, "secret-vm", 16 * MiB, [Write(0, MiB, 0x5A)])
        config = {
            "metrics": {"enabled": True},
            "auth": {"tokens": [{"name": "ops", "token": TOKEN, "role": "admin"}]},
            "webhooks": [{"url": receiver.url, "secret": HMAC_KEY, "headers": {"Authorization": HEADER}}],
            "log": {"level": "debug"},
        }
        (tmp_path / "d").mkdir()
        d = Daemon(tmp_path / "d", config).start()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        seen: list[str] = []

        def call(method, path, body=None):
            response = requests.request(method, d.url + path, json=body, headers=auth, timeout=60)
            seen.append(f"{method} {path} -> {response.status_code} {response.headers} {response.text}")
            return response

        watcher = subprocess.Popen([sys.executable, WS_CLIENT, d.url.replace("http", "ws") + f"/ws?token={TOKEN}",
                                    "--until-status", "none", "--seconds", "120"], stdout=subprocess.PIPE, text=True)
        ws_messages: list[str] = []
        threading.Thread(target=lambda: ws_messages.extend(watcher.stdout), daemon=True).start()
        try:
            (tmp_path / "out").mkdir()
            definition = {
                "vm_path": "DC0/vm/secret-vm",
                "source": {"type": "vsphere", "vcenter_url": sim.info.url, "username": "user",
                           "password": VC_PASSWORD, "insecure": True},
                "destination": {"type": "kvm", "libvirt_uri": "test:///default", "output_dir": str(tmp_path / "out")},
                "options": {"network_mapping": {"*": "br0"}, "device_models": "source"},  # no guest on these disks
            }
            job_id = call("POST", "/jobs/submit", definition).json()["job_id"]
            wait_for(lambda: call("GET", f"/jobs/{job_id}").json()["status"] == "completed", 120, "the migration")
            template = {**definition, "destination": {**definition["destination"], "output_dir": str(tmp_path)}}
            call("POST", "/schedules", {"id": "nightly", "schedule": "@daily", "job_template": template})
            run_jobs = call("POST", "/schedules/nightly/trigger").json()["job_ids"]
            wait_for(lambda: call("GET", f"/jobs/{run_jobs[0]}").json()["status"] in ("completed", "failed"), 120,
                     "the scheduled job")
            call("POST", "/webhooks", {"url": receiver.url, "secret": HMAC_KEY, "headers": {"X-Key": HEADER}})
            call("POST", "/webhooks/test", {"url": receiver.url})
            wait_for(lambda: "job.completed" in receiver.events(), 30, "the webhook deliveries")
            for path in ("/jobs/query", f"/jobs/{job_id}", "/schedules", "/schedules/nightly", "/schedules/stats",
                         "/webhooks", "/webhooks/0/deliveries", "/webhooks/1/deliveries", "/status", "/metrics",
                         "/openapi.json", f"/vms/list?vcenter_url={sim.info.url}&username=user&insecure=true"):
                call("GET", path)
            wait_for(lambda: any('"job_update"' in m for m in ws_messages), 10, "WebSocket messages")
        finally:
            watcher.kill()
            d.stop()
        payloads = [r["raw"].decode() for r in receiver.received]
        log = (tmp_path / "d" / "daemon.log").read_text()
        database = b"".join(p.read_bytes() for p in (tmp_path / "d" / "var").glob("jobs.db*") if p.is_file())
    assert len(seen) > 15 and len(ws_messages) > 5 and len(payloads) > 5
    assert "#debug]" in log  # the most talkative log level was searched
    places = {"API responses": "\n".join(seen), "WebSocket messages": "".join(ws_messages),
              "webhook payloads": "\n".join(payloads), "the log": log,
              "metrics": next(s for s in seen if s.startswith("GET /metrics"))}
    for secret in SECRETS:
        for place, text in places.items():
            assert secret not in text, f"a secret is in {place}"
        assert secret.encode() not in database, "a secret is in the database file"
    assert json.loads(payloads[0])["event"]  # the payloads checked are the real ones
