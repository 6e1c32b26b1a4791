"""Blocking reads of datastore files over vCenter's /folder interface.

Only the small things the pipeline inspects itself (a disk's descriptor or
sparse header, the server certificate); disk data is streamed by nbdkit.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import ssl
import urllib.parse

from .. import errors
from .connection import VCenterParams, ssl_context, upstream_errors


def thd_read_range(params: VCenterParams, url: str, cookie: str, start: int, length: int, timeout: float) -> bytes:
    """Bytes ``start .. start+length-1`` of a datastore file (fewer at its end)."""
    parts = urllib.parse.urlsplit(url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    with upstream_errors(params.where, timeout):
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=ssl_context(params))
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.request("GET", target, headers={"Cookie": cookie, "Range": f"bytes={start}-{start + length - 1}"})
            response = conn.getresponse()
            body = response.read(length) if response.status in (200, 206) else b""
        finally:
            conn.close()
    if response.status == 404:
        raise errors.NotFound(f"datastore file not found on {params.where}: {urllib.parse.unquote(parts.path)}")
    if response.status in (401, 403):
        raise errors.UpstreamError(f"vCenter {params.where} refused access to {urllib.parse.unquote(parts.path)} (HTTP {response.status})")
    if response.status not in (200, 206):
        raise errors.UpstreamError(f"vCenter {params.where} answered HTTP {response.status} for {urllib.parse.unquote(parts.path)}")
    return body


def thd_pinned_certificate_pem(params: VCenterParams, timeout: float) -> str:
    """The server certificate (PEM) after checking it against the pinned thumbprint,
    for tools (curl) that cannot pin by fingerprint but can trust one certificate."""
    with upstream_errors(params.where, timeout):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection((params.host, params.port), timeout=timeout) as sock:
            with ctx.wrap_socket(sock, server_hostname=params.host) as tls:
                der = tls.getpeercert(binary_form=True) or b""
    algorithm = hashlib.sha1 if len(params.thumbprint or "") == 40 else hashlib.sha256
    if algorithm(der).hexdigest() != params.thumbprint:
        raise errors.VCenterTLSError(f"TLS certificate of {params.where} does not match the pinned thumbprint")
    return ssl.DER_cert_to_PEM_cert(der)
