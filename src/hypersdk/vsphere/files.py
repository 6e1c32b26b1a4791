"""Blocking reads of datastore files over vCenter's /folder interface.

Only the small things the pipeline inspects itself (a disk's descriptor or
sparse header, a file's size and modification time, the server certificate);
disk data is streamed by the transfer worker or nbdkit.
"""

from __future__ import annotations

import http.client
import socket
import urllib.parse
from typing import Optional

from .. import errors
from .connection import VCenterParams, ssl_context, upstream_errors


def thd_read_range(params: VCenterParams, url: str, cookie: str, start: int, length: int, timeout: float) -> bytes:
    """Bytes ``start .. start+length-1`` of a datastore file (fewer at its end)."""
    response, body = _thd_request(params, url, "GET", {"Cookie": cookie, "Range": f"bytes={start}-{start + length - 1}"},
                                  timeout, length)
    _check_status(params, url, response)
    return body


def thd_file_identity(params: VCenterParams, url: str, cookie: str, timeout: float) -> tuple[int, Optional[str]]:
    """(size, Last-Modified) of a datastore file: what says it is the same file as before."""
    response, _ = _thd_request(params, url, "HEAD", {"Cookie": cookie}, timeout, 0)
    _check_status(params, url, response)
    return int(response.getheader("Content-Length") or 0), response.getheader("Last-Modified")


def _thd_request(params: VCenterParams, url: str, method: str, headers: dict, timeout: float, length: int):
    parts = urllib.parse.urlsplit(url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    with upstream_errors(params.where, timeout):
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=ssl_context(params))
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.request(method, target, headers=headers)
            response = conn.getresponse()
            body = response.read(length) if response.status in (200, 206) and length else b""
        finally:
            conn.close()
    return response, body


def _check_status(params: VCenterParams, url: str, response) -> None:
    parts = urllib.parse.urlsplit(url)
    if response.status == 404:
        raise errors.NotFound(f"datastore file not found on {params.where}: {urllib.parse.unquote(parts.path)}")
    if response.status in (401, 403):
        raise errors.UpstreamError(f"vCenter {params.where} refused access to {urllib.parse.unquote(parts.path)} (HTTP {response.status})")
    if response.status not in (200, 206):
        raise errors.UpstreamError(f"vCenter {params.where} answered HTTP {response.status} for {urllib.parse.unquote(parts.path)}")


def thd_server_certificate(params: VCenterParams, timeout: float) -> bytes:
    """vCenter's certificate (DER), checked as the control connection checks it: against the
    pinned thumbprint, the trusted CAs, or not at all when ``insecure``. For tools that cannot
    pin a fingerprint themselves (curl trusts it as its CA; VDDK wants its SHA-1)."""
    with upstream_errors(params.where, timeout):
        with socket.create_connection((params.host, params.port), timeout=timeout) as sock:
            with ssl_context(params).wrap_socket(sock, server_hostname=params.host) as tls:
                return tls.getpeercert(binary_form=True) or b""
