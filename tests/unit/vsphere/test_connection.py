"""vCenter URL parsing, TLS policy and error mapping: no sockets."""

from __future__ import annotations

import http.client
import socket
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyVmomi import vim, vmodl

from hypersdk import errors
from hypersdk.vsphere.connection import (
    VCenterParams,
    VCenterSessionExpired,
    normalize_thumbprint,
    parse_vcenter_url,
    ssl_context,
    upstream_errors,
)

SHA1 = "2C:11:ED:D7:13:87:7D:B5:74:18:B8:1C:42:C2:56:1F:0D:B9:5B:B9"
SHA256 = "44:8F:62:8A:8A:65:AA:18:56:0E:53:A8:0C:53:AC:B3:8C:51:B4:27:DF:03:34:08:23:49:14:11:47:DC:9B:F6"


@pytest.mark.parametrize(
    "url, expected",
    [
        ("vcenter.example.com", ("https", "vcenter.example.com", 443, "/sdk")),
        ("  vcenter.example.com  ", ("https", "vcenter.example.com", 443, "/sdk")),
        ("vcenter.example.com:8443", ("https", "vcenter.example.com", 8443, "/sdk")),
        ("https://vc.example.com", ("https", "vc.example.com", 443, "/sdk")),
        ("https://vc.example.com/", ("https", "vc.example.com", 443, "/sdk")),
        ("https://vc.example.com:9443/sdk", ("https", "vc.example.com", 9443, "/sdk")),
        ("HTTPS://VC.example.com/sdk/", ("https", "vc.example.com", 443, "/sdk")),
        ("10.0.0.5", ("https", "10.0.0.5", 443, "/sdk")),
        ("https://[fd00::5]:8443/sdk", ("https", "fd00::5", 8443, "/sdk")),
        ("fd00::5", ("https", "fd00::5", 443, "/sdk")),
        ("[fd00::5]:444", ("https", "fd00::5", 444, "/sdk")),
    ],
)
def test_parse_vcenter_url_accepts_host_names_and_https_urls(url, expected):
    assert parse_vcenter_url(url) == expected


def test_plain_http_is_refused_unless_explicitly_allowed():
    with pytest.raises(errors.InvalidField) as e:
        parse_vcenter_url("http://127.0.0.1:8989/sdk")
    assert e.value.field == "vcenter_url"
    assert "http" in e.value.message
    assert parse_vcenter_url("http://127.0.0.1:8989/sdk", allow_http=True) == ("http", "127.0.0.1", 8989, "/sdk")
    assert parse_vcenter_url("http://vc", allow_http=True) == ("http", "vc", 80, "/sdk")


@pytest.mark.parametrize(
    "url",
    [
        "", "   ", "ftp://vc.example.com", "https://", "https://vc.example.com:0", "https://vc.example.com:70000",
        "https://vc.example.com:port", "https://vc.example.com/ui", "https://vc.example.com/sdk?x=1",
        "https://vc.example.com/#frag", "https://bad_host!.example.com", "https://-bad-.example..com",
    ],
)
def test_parse_vcenter_url_rejects_malformed_urls_naming_the_field(url):
    with pytest.raises(errors.InvalidField) as e:
        parse_vcenter_url(url)
    assert e.value.field == "vcenter_url"
    assert e.value.status == 400


def test_url_with_credentials_is_rejected_without_echoing_them():
    with pytest.raises(errors.InvalidField) as e:
        parse_vcenter_url("https://admin:S3cret!@vc.example.com/sdk")
    assert "S3cret" not in str(e.value)
    assert "admin" not in str(e.value)


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(_label, min_size=1, max_size=4).map(".".join)
ports = st.integers(min_value=1, max_value=65535)


@given(host=hostnames, port=ports, form=st.sampled_from(["bare", "https", "https-sdk", "https-slash"]))
def test_parse_vcenter_url_recovers_host_and_port(host, port, form):
    url = {
        "bare": f"{host}:{port}",
        "https": f"https://{host}:{port}",
        "https-sdk": f"https://{host}:{port}/sdk",
        "https-slash": f"https://{host}:{port}/",
    }[form]
    assert parse_vcenter_url(url) == ("https", host, port, "/sdk")


@given(host=hostnames, port=ports)
def test_from_url_builds_params_that_log_in_where_the_url_says(host, port):
    params = VCenterParams.from_url(f"https://{host}:{port}/sdk", "administrator@vsphere.local", "pw")
    assert (params.scheme, params.host, params.port, params.path) == ("https", host, port, "/sdk")
    assert params.where == f"{host}:{port}"


def test_params_repr_never_shows_the_password():
    params = VCenterParams("vc", 443, "admin", "hunter2-secret")
    assert "hunter2-secret" not in repr(params)
    assert "hunter2-secret" not in str(params)


@pytest.mark.parametrize(
    "text, expected",
    [
        (SHA1, SHA1.replace(":", "").lower()),
        (SHA1.lower(), SHA1.replace(":", "").lower()),
        (SHA1.replace(":", ""), SHA1.replace(":", "").lower()),
        (SHA256, SHA256.replace(":", "").lower()),
        (f"  {SHA256.lower()} ", SHA256.replace(":", "").lower()),
    ],
)
def test_thumbprints_are_normalized_whatever_their_case_and_colons(text, expected):
    assert normalize_thumbprint(text) == expected
    assert VCenterParams("vc", 443, "u", "p", thumbprint=text).thumbprint == expected


@pytest.mark.parametrize("text", ["AA:BB", SHA1 + ":00", "ZZ" * 20, "md5:" + "00" * 16])
def test_malformed_thumbprints_are_rejected(text):
    with pytest.raises(errors.InvalidField) as e:
        normalize_thumbprint(text)
    assert e.value.field == "thumbprint"


def test_empty_thumbprint_means_no_pin():
    assert VCenterParams("vc", 443, "u", "p", thumbprint="").thumbprint is None


def test_default_tls_policy_verifies_certificate_and_host_name():
    ctx = ssl_context(VCenterParams("vc", 443, "u", "p"))
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True


def test_localhost_gets_no_exemption_from_verification():
    # pyvmomi's SmartConnect silently skips verification for 127.0.0.1 and localhost.
    for host in ("127.0.0.1", "localhost", "::1"):
        ctx = ssl_context(VCenterParams(host, 443, "u", "p"))
        assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_insecure_disables_verification():
    ctx = ssl_context(VCenterParams("vc", 443, "u", "p", insecure=True))
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.check_hostname is False


def test_thumbprint_pins_instead_of_ca_verification():
    ctx = ssl_context(VCenterParams("vc", 443, "u", "p", thumbprint=SHA256))
    assert ctx.verify_mode == ssl.CERT_NONE  # the pin is checked after the handshake
    assert ctx.pin == SHA256.replace(":", "").lower()


def test_plain_http_has_no_tls_context():
    assert ssl_context(VCenterParams("vc", 80, "u", "p", scheme="http")) is None


def _mapped(exc: BaseException) -> errors.HyperSDKError:
    with pytest.raises(errors.HyperSDKError) as e:
        with upstream_errors("vc.example.com:443", timeout=7):
            raise exc
    return e.value


def test_errors_map_to_the_hypersdk_vocabulary():
    assert isinstance(_mapped(socket.gaierror(-2, "Name or service not known")), errors.UpstreamUnreachable)
    refused = _mapped(ConnectionRefusedError(111, "Connection refused"))
    assert isinstance(refused, errors.UpstreamUnreachable)
    assert "vc.example.com:443" in refused.message
    timeout = _mapped(socket.timeout("timed out"))
    assert isinstance(timeout, errors.UpstreamTimeout) and "7 s" in timeout.message
    assert isinstance(_mapped(TimeoutError()), errors.UpstreamTimeout)
    assert isinstance(_mapped(ssl.SSLCertVerificationError(1, "certificate verify failed")), errors.VCenterTLSError)
    assert isinstance(_mapped(ssl.SSLError(1, "WRONG_VERSION_NUMBER")), errors.VCenterTLSError)
    assert isinstance(_mapped(http.client.RemoteDisconnected("closed")), errors.UpstreamUnreachable)
    assert isinstance(_mapped(http.client.BadStatusLine("x")), errors.UpstreamError)


def test_invalid_login_fault_is_login_failed():
    e = _mapped(vim.fault.InvalidLogin(msg="Login failure"))
    assert isinstance(e, errors.VCenterLoginFailed)
    assert e.message.startswith("vCenter login failed")
    assert e.status == 502


def test_not_authenticated_fault_is_session_expired():
    e = _mapped(vim.fault.NotAuthenticated(msg=""))
    assert isinstance(e, VCenterSessionExpired)


def test_other_faults_are_upstream_errors_naming_the_fault():
    e = _mapped(vmodl.fault.ManagedObjectNotFound(msg="gone"))
    assert type(e) is errors.UpstreamError
    assert "ManagedObjectNotFound" in e.message and "gone" in e.message


def test_hypersdk_errors_pass_through_unchanged():
    original = errors.VMNotFound("VM x not found")
    assert _mapped(original) is original


SIMULATOR_VERSIONS = b"""<?xml version="1.0" encoding="UTF-8"?>
<namespaces version="1.0">
 <namespace>
  <name>urn:vim25</name>
  <version>6.5</version>
  <priorVersions>
   <version>6.0</version>
   <version>5.5</version>
  </priorVersions>
 </namespace>
</namespaces>
"""

VCENTER8_VERSIONS = b"""<?xml version="1.0" encoding="UTF-8" ?>
<namespaces version="1.0">
  <namespace>
    <name>urn:vim25</name>
    <version>8.0.3.0</version>
    <priorVersions>
      <version>8.0.2.0</version>
      <version>7.0.3.0</version>
      <version>6.7</version>
    </priorVersions>
  </namespace>
  <namespace>
    <name>urn:vim2</name>
    <version>99.0</version>
  </namespace>
</namespaces>
"""


def test_api_version_is_the_newest_the_server_offers_for_vim25():
    from pyVmomi.VmomiSupport import versionIdMap

    from hypersdk.vsphere.connection import choose_api_version

    assert versionIdMap[choose_api_version(SIMULATOR_VERSIONS)] == "6.5"
    assert versionIdMap[choose_api_version(VCENTER8_VERSIONS)] == "8.0.3.0"
    assert choose_api_version(b"<html>not a vCenter</html>") is None
    assert choose_api_version(b"\x00garbage") is None


def test_unreadable_ca_file_is_a_tls_error_naming_the_file(tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(errors.VCenterTLSError) as e:
        ssl_context(VCenterParams("vc", 443, "u", "p", ca_file=str(missing)))
    assert str(missing) in e.value.message
