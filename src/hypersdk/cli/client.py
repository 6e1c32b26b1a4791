"""The daemon's REST API for hyperctl: one session, one timeout, errors as exceptions with exit codes."""

from __future__ import annotations

from typing import Any, Optional

import requests

OK, JOB_FAILED, USAGE, CONNECTION = 0, 1, 2, 3


class CliError(Exception):
    """A message for the user and the exit status that goes with it."""

    def __init__(self, message: str, exit_code: int = JOB_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


class ApiClient:
    def __init__(self, url: str, token: Optional[str], timeout: float = 30.0, cacert: Optional[str] = None):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # a proxy or CA bundle from the environment must not redirect us
        self.session.verify = cacert or True
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **params) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body=body)

    def call(self, method: str, path: str, body: Any = None, params: Optional[dict] = None) -> Any:
        try:
            response = self.session.request(method, self.url + path, json=body, params=params, timeout=self.timeout)
        except requests.exceptions.SSLError as e:
            raise CliError(f"cannot reach the daemon at {self.url}: TLS: {_reason(e)} (--cacert?)", CONNECTION)
        except requests.exceptions.ConnectionError as e:
            raise CliError(f"cannot reach the daemon at {self.url}: {_reason(e)}", CONNECTION)
        except requests.exceptions.Timeout:
            raise CliError(f"the daemon at {self.url} did not answer within {self.timeout:g} s", CONNECTION)
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema) as e:
            raise CliError(f"--url {self.url!r} is not a daemon address such as http://127.0.0.1:8080 ({e})", USAGE)
        except requests.exceptions.RequestException as e:
            raise CliError(f"cannot talk to the daemon at {self.url}: {_reason(e)}", CONNECTION)
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            error = data.get("error") if isinstance(data, dict) else response.text.strip()[:200]
            hint = " (set --token or HYPERSDK_TOKEN)" if response.status_code == 401 else ""
            raise CliError(f"{method} {path}: {response.status_code} {response.reason}: {error}{hint}")
        if data is None:
            raise CliError(f"{self.url} answered {method} {path} with something other than JSON: is it a hypersdk "
                           "daemon?", CONNECTION)
        return data

    def ws_url(self) -> str:
        base = "wss" + self.url[5:] if self.url.startswith("https") else "ws" + self.url[4:]
        return base + "/ws"


def _reason(e: Exception) -> str:
    text = str(e)
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host"):
        if marker in text:
            return marker.lower()
    return text.split(": ")[-1][:200]
