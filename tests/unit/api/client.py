"""The real root resource and site, driven in memory through treq's StubTreq."""

from __future__ import annotations

import json

from treq.testing import StubTreq

from hypersdk.api.jobs import JobsAPI
from hypersdk.api.site import APISite, build_resource
from hypersdk.api.status import StatusAPI
from tests.helpers import result_of
from tests.unit.jobs.test_manager import Harness


class Response:
    def __init__(self, raw, body: bytes):
        self.code = raw.code
        self.headers = raw.headers
        self.length = raw.length  # the Content-Length (twisted's client takes it out of the headers)
        self.body = body

    def header(self, name: str):
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def json(self):
        assert self.header("Content-Type") == "application/json", self.body
        return json.loads(self.body)


class APIClient:
    def __init__(self, harness: Harness = None, max_body_bytes=1024 * 1024, extra_areas=()):
        self.h = harness or Harness().start()
        root = build_resource(
            StatusAPI(self.h.manager, self.h.store, self.h.clock, started_at=self.h.clock.seconds()),
            JobsAPI(self.h.manager),
            *extra_areas,
        )
        self._stub = StubTreq(root)
        # StubTreq builds a plain Site; serve through ours (body limit, request ids).
        agent = self._stub._agent
        agent._serverFactory = APISite(root, agent._memoryReactor, max_body_bytes)

    def request(self, method, path, body=None, headers=None, raw=None):
        headers = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        d = self._stub.request(method, "http://localhost" + path, data=data, headers=headers)
        self._stub.flush()
        response = result_of(d)
        content = self._stub.content(response)
        self._stub.flush()
        return Response(response, result_of(content))

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)
