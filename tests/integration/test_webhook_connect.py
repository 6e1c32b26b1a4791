"""Webhook connections with the real reactor and real receivers: the connection goes to the address
that was checked, and TLS and the Host header keep the receiver's name."""

import datetime
import ipaddress
import ssl

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, reactor
from twisted.internet._resolver import SimpleResolverComplexifier
from twisted.internet.ssl import Certificate
from twisted.web.client import BrowserLikePolicyForHTTPS

from hypersdk.webhooks.connect import PrivateAddress, webhook_client
from tests.integration.receiver import Receiver

PUBLIC = "93.184.216.34"


class Answers:
    """A DNS that answers each lookup with the next address of its script (the last one repeats)."""

    def __init__(self, *addresses):
        self.script = list(addresses)
        self.asked = []

    def next(self, host):
        self.asked.append(host)
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def resolve(self, host):
        return defer.succeed([self.next(host)])

    def getHostByName(self, name, timeout=None):  # IResolverSimple, for the reactor's own lookups
        return defer.succeed(self.next(name))


class ReactorAnswering:
    """The real reactor, whose own name lookups (HostnameEndpoint) go to the same scripted DNS."""

    def __init__(self, answers):
        self.nameResolver = SimpleResolverComplexifier(answers)

    def __getattr__(self, name):
        return getattr(reactor, name)


@pytest_twisted.ensureDeferred
async def test_a_name_that_rebinds_to_loopback_after_the_check_never_reaches_loopback():
    answers = Answers(PUBLIC, "127.0.0.1")  # public to the check, loopback to any later lookup
    with Receiver() as receiver:
        client = webhook_client(ReactorAnswering(answers), answers.resolve, deny_private_networks=True)
        attempt = client.post(f"http://rebind.test:{receiver.port}/hook", data=b"{}")
        attempt.addTimeout(3, reactor)
        with pytest.raises(Exception):
            await attempt  # PUBLIC is not reachable from here: the attempt fails or times out
        assert receiver.received == []
    assert answers.asked == ["rebind.test"]  # one lookup: the address checked is the one connected to


@pytest_twisted.ensureDeferred
async def test_a_private_answer_is_refused_before_connecting():
    answers = Answers("127.0.0.1")
    with Receiver() as receiver:
        client = webhook_client(ReactorAnswering(answers), answers.resolve, deny_private_networks=True)
        with pytest.raises(PrivateAddress, match="rebind.test is 127.0.0.1, a private address"):
            await client.post(f"http://rebind.test:{receiver.port}/hook", data=b"{}")
        assert receiver.received == []


def _certificates(name):
    """A CA and a server certificate for ``name`` only (not for 127.0.0.1)."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, issuer, key, signer, ca, sans=None):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook test CA")])
    ca = cert(ca_name, ca_name, ca_key, ca_key, True)
    leaf = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), ca_name, key, ca_key, False,
                [x509.DNSName(name)])
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), leaf.public_bytes(pem), key_pem


@pytest_twisted.ensureDeferred
async def test_tls_and_the_host_header_keep_the_receivers_name(tmp_path):
    ca_pem, cert_pem, key_pem = _certificates("hooks.test")
    (tmp_path / "cert.pem").write_bytes(cert_pem + key_pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem")
    names = []
    server.sni_callback = lambda sock, name, ctx: names.append(name)
    answers = Answers("127.0.0.1")
    with Receiver(tls=server) as receiver:
        client = webhook_client(ReactorAnswering(answers), answers.resolve, deny_private_networks=False,
                                tls_policy=BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(ca_pem)))
        response = await client.post(f"https://hooks.test:{receiver.port}/hook", data=b'{"event": "test"}')
        assert response.code == 200
        await response.content()
    assert names == ["hooks.test"]  # SNI, and the certificate was checked for this name
    assert receiver.received[0]["headers"]["host"] == f"hooks.test:{receiver.port}"
    assert ipaddress.ip_address(answers.script[0]).is_loopback
