"""Connecting to a vCenter: URL parsing, TLS policy, login and error mapping.

pyvmomi's ``SmartConnect`` is not used: its API-version probe opens a socket
with no timeout, it silently disables certificate checks for 127.0.0.1 and
``localhost``, its thumbprint pin is only checked when CA verification fails
(and then turns verification off on the shared SSL context), and it stores
the session in a module global. Here the probe, the SOAP stub and the login
all run with a timeout on every socket operation and with the TLS policy the
caller asked for.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import re
import socket
import ssl
import urllib.parse
from contextlib import contextmanager
from typing import Iterator, Optional
from xml.etree import ElementTree

from attrs import field, frozen
from pyVmomi import SoapStubAdapter, vim, vmodl
from pyVmomi.VmomiSupport import GetServiceVersions, versionIdMap
from twisted.logger import Logger

from hypersdk import errors

log = Logger()

DEFAULT_PORT = 443
SDK_PATH = "/sdk"
# Idle pooled connections are dropped after this long: vCenter's reverse proxy
# closes idle keep-alive connections, and pyvmomi does not retry on a dead one.
POOL_IDLE_SECONDS = 30
# Used when the server publishes no vimServiceVersions.xml.
FALLBACK_VERSION = "vim.version.version9"

_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")


class VCenterSessionExpired(errors.UpstreamError):
    """The session cookie is no longer valid (vim.fault.NotAuthenticated)."""

    code = "vcenter_session_expired"


class ThumbprintMismatch(ssl.SSLError):
    """The server certificate does not match the pinned thumbprint."""


def normalize_thumbprint(text: str) -> str:
    """``"AA:bb:..."`` (SHA-1 or SHA-256, colons optional, any case) → lower-case hex."""
    digits = text.strip().replace(":", "").lower()
    if len(digits) not in (40, 64) or not _HEX_RE.match(digits):
        raise errors.InvalidField(
            "thumbprint", "must be a SHA-1 or SHA-256 fingerprint: 20 or 32 hex bytes, colons optional"
        )
    return digits


def _port(value: object) -> int:
    port = int(value)  # type: ignore[call-overload]
    if not 0 < port < 65536:
        raise ValueError(port)
    return port


def _thumbprint(value: Optional[str]) -> Optional[str]:
    return None if value is None or value == "" else normalize_thumbprint(value)


@frozen
class VCenterParams:
    """Where and how to log in. The password never appears in repr()."""

    host: str
    port: int = field(converter=_port)
    username: str
    password: str = field(repr=False)
    insecure: bool = False
    thumbprint: Optional[str] = field(default=None, converter=_thumbprint)  # normalized lower hex
    scheme: str = "https"  # "http" only for tests, see parse_vcenter_url(allow_http=True)
    path: str = SDK_PATH
    ca_file: Optional[str] = None  # extra CA bundle (PEM) trusted besides the system CAs

    @property
    def where(self) -> str:
        """``host:port`` for messages and logs (brackets around IPv6)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def from_url(
        cls,
        url: str,
        username: str,
        password: str,
        *,
        insecure: bool = False,
        thumbprint: Optional[str] = None,
        ca_file: Optional[str] = None,
        allow_http: bool = False,
    ) -> "VCenterParams":
        scheme, host, port, path = parse_vcenter_url(url, allow_http=allow_http)
        return cls(
            host, port, username, password,
            insecure=insecure, thumbprint=thumbprint, scheme=scheme, path=path, ca_file=ca_file,
        )


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME_RE.match(host))


def parse_vcenter_url(url: str, *, allow_http: bool = False) -> tuple[str, str, int, str]:
    """``"vc.example.com"``, ``"vc:8443"``, ``"https://vc[:port][/sdk]"`` → (scheme, host, port, path).

    Plain ``http://`` is refused unless ``allow_http`` (tests, explicit opt-in).
    Errors never echo the URL: it could carry credentials.
    """
    text = url.strip() if isinstance(url, str) else ""
    if not text:
        raise errors.InvalidField("vcenter_url", "must be a host name or an https:// URL")
    if "://" not in text:
        if text.count(":") > 1 and not text.startswith("["):
            text = f"[{text}]"  # bare IPv6 address
        text = "https://" + text
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise errors.InvalidField("vcenter_url", "has an invalid host or port") from None
    scheme = parts.scheme.lower()
    if scheme == "http" and not allow_http:
        raise errors.InvalidField("vcenter_url", "plain http:// is not allowed: use https://")
    if scheme not in ("http", "https"):
        raise errors.InvalidField("vcenter_url", "scheme must be https://")
    if parts.username is not None or parts.password is not None:
        raise errors.InvalidField("vcenter_url", "must not contain credentials: use username and password")
    if parts.query or parts.fragment:
        raise errors.InvalidField("vcenter_url", "must not contain a query or fragment")
    if not host or not _valid_host(host):
        raise errors.InvalidField("vcenter_url", "has an invalid host name")
    if port is None:
        port = 80 if scheme == "http" else DEFAULT_PORT
    if port == 0:
        raise errors.InvalidField("vcenter_url", "has an invalid port")
    if parts.path not in ("", "/", SDK_PATH, SDK_PATH + "/"):
        raise errors.InvalidField("vcenter_url", "path must be empty or /sdk")
    return scheme, host, port, SDK_PATH


class _PinnedContext(ssl.SSLContext):
    """Accepts exactly the certificate whose SHA-1/SHA-256 digest is pinned, on every connection."""

    pin: str = ""

    def wrap_socket(self, sock, *args, **kwargs):  # type: ignore[override]
        tls = super().wrap_socket(sock, *args, **kwargs)
        if not kwargs.get("do_handshake_on_connect", True):
            tls.do_handshake()
        der = tls.getpeercert(binary_form=True) or b""
        algorithm = hashlib.sha1 if len(self.pin) == 40 else hashlib.sha256
        if algorithm(der).hexdigest() != self.pin:
            tls.close()
            raise ThumbprintMismatch("server certificate does not match the pinned thumbprint")
        return tls


def ssl_context(params: VCenterParams) -> Optional[ssl.SSLContext]:
    """The TLS policy of ``params``; None for plain http.

    thumbprint → pinned (CA and host name not checked); insecure → no checks;
    else system CAs (plus ``ca_file``) and host name verification.
    """
    if params.scheme == "http":
        return None
    if params.thumbprint:
        ctx = _PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.pin = params.thumbprint
        return ctx
    if params.insecure:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context()
    if params.ca_file:
        try:
            ctx.load_verify_locations(cafile=params.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise errors.VCenterTLSError(
                f"cannot load the CA certificates in {params.ca_file}: {getattr(e, 'strerror', None) or e}"
            ) from None
    return ctx


@contextmanager
def upstream_errors(where: str, timeout: Optional[float] = None) -> Iterator[None]:
    """Map pyvmomi, socket and TLS failures to the hypersdk error vocabulary."""
    try:
        yield
    except errors.HyperSDKError:
        raise
    except vim.fault.InvalidLogin as e:
        raise errors.VCenterLoginFailed(f"vCenter login failed: {where}: {e.msg or 'invalid user name or password'}") from None
    except vim.fault.NotAuthenticated:
        raise VCenterSessionExpired(f"vCenter session on {where} expired") from None
    except vmodl.MethodFault as e:
        name = type(e).__name__.rsplit(".", 1)[-1]
        raise errors.UpstreamError(f"vCenter {where} answered with an error: {name}: {e.msg or ''}".rstrip(": ")) from None
    except ThumbprintMismatch:
        raise errors.VCenterTLSError(f"TLS certificate of {where} does not match the pinned thumbprint") from None
    except ssl.SSLCertVerificationError as e:
        raise errors.VCenterTLSError(
            f"TLS certificate of {where} is not trusted: {getattr(e, 'verify_message', None) or getattr(e, 'reason', None) or e}"
            " (pin its thumbprint, or set insecure to skip verification)"
        ) from None
    except ssl.SSLError as e:
        raise errors.VCenterTLSError(f"TLS handshake with {where} failed: {getattr(e, 'reason', None) or e}") from None
    except socket.gaierror:
        raise errors.UpstreamUnreachable(f"cannot resolve vCenter host {where}") from None
    except (socket.timeout, TimeoutError):
        after = f" within {timeout:g} s" if timeout else " in time"
        raise errors.UpstreamTimeout(f"vCenter {where} did not answer{after}") from None
    except ConnectionRefusedError:
        raise errors.UpstreamUnreachable(f"vCenter {where} refused the connection") from None
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        raise errors.UpstreamUnreachable(f"vCenter {where} closed the connection") from None
    except OSError as e:
        raise errors.UpstreamUnreachable(f"cannot reach vCenter {where}: {e.strerror or e}") from None
    except http.client.HTTPException as e:
        raise errors.UpstreamError(f"vCenter {where} answered with an unexpected HTTP response: {e}") from None


def _connection(params: VCenterParams, ctx: Optional[ssl.SSLContext], timeout: float) -> http.client.HTTPConnection:
    if params.scheme == "http":
        return http.client.HTTPConnection(params.host, params.port, timeout=timeout)
    return http.client.HTTPSConnection(params.host, params.port, timeout=timeout, context=ctx)


def _thd_api_version(params: VCenterParams, ctx: Optional[ssl.SSLContext], timeout: float) -> str:
    """The newest API version both pyvmomi and the server know (vimServiceVersions.xml)."""
    conn = _connection(params, ctx, timeout)
    try:
        conn.request("GET", params.path + "/vimServiceVersions.xml")
        response = conn.getresponse()
        body = response.read(1 << 20)  # the real document is a few hundred bytes
    finally:
        conn.close()
    if response.status == 404:
        return FALLBACK_VERSION
    if response.status != 200:
        raise errors.UpstreamError(
            f"vCenter {params.where} answered HTTP {response.status} on {params.path}: is this a vSphere API endpoint?"
        )
    version = choose_api_version(body)
    if version is None:
        raise errors.UpstreamError(
            f"vCenter {params.where} did not answer like a vSphere API endpoint, or offers no API version"
            " this client supports"
        )
    return version


def choose_api_version(document: bytes) -> Optional[str]:
    """The newest pyvmomi version offered for urn:vim25 by a vimServiceVersions.xml; None if none."""
    try:
        root = ElementTree.fromstring(document)
    except ElementTree.ParseError:
        return None
    namespaces = [ns for ns in root.iter("namespace") if ns.findtext("name") == "urn:vim25"] or [root]
    offered = {v.text.strip() for ns in namespaces for v in ns.iter("version") if v.text}
    for version in GetServiceVersions("vim25"):
        if versionIdMap.get(version) in offered:
            return version
    return None


def thd_connect(params: VCenterParams, timeout: float = 30.0) -> vim.ServiceInstance:
    """Log in and return a ServiceInstance; every socket operation is bounded by ``timeout``."""
    ctx = ssl_context(params)
    stub = None
    try:
        with upstream_errors(params.where, timeout):
            version = _thd_api_version(params, ctx, timeout)
            stub = SoapStubAdapter(
                host=params.host,
                port=params.port if params.scheme == "https" else -params.port,
                path=params.path,
                version=version,
                sslContext=ctx,
                httpConnectionTimeout=timeout,
                connectionPoolTimeout=POOL_IDLE_SECONDS,
            )
            si = vim.ServiceInstance("ServiceInstance", stub)
            content = si.RetrieveContent()
            try:
                content.sessionManager.Login(params.username, params.password, None)
            except vim.fault.InvalidLogin as e:
                log.info("vCenter login refused for {user} on {vcenter}", user=params.username, vcenter=params.where)
                raise errors.VCenterLoginFailed(
                    f"vCenter login failed: {params.username}@{params.where}: "
                    f"{e.msg or 'invalid user name or password'}"
                ) from None
    except BaseException:
        if stub is not None:
            stub.DropConnections()
        raise
    stub._hypersdk_content = content  # static per connection: saves a round trip per call
    stub._hypersdk_where = params.where
    log.info("logged in to vCenter {vcenter} as {user}", vcenter=params.where, user=params.username)
    return si


def service_content(si: vim.ServiceInstance) -> vim.ServiceInstanceContent:
    stub = si._stub
    content = getattr(stub, "_hypersdk_content", None)
    if content is None:
        content = si.RetrieveContent()
        stub._hypersdk_content = content
    return content


def where(si: vim.ServiceInstance) -> str:
    """``host:port`` of the vCenter behind ``si``, for messages."""
    stub = si._stub
    return getattr(stub, "_hypersdk_where", None) or getattr(stub, "host", "vCenter")


def thd_disconnect(si: vim.ServiceInstance) -> None:
    """Log out (best effort) and close pooled connections."""
    try:
        service_content(si).sessionManager.Logout()
    except Exception:  # already expired, unreachable: nothing left to release
        pass
    finally:
        si._stub.DropConnections()
