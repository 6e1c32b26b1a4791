"""Connections to webhook receivers: to the very addresses that were checked.

Resolving a receiver's name once to check it and again to connect leaves a
window for DNS rebinding: a name that answers a public address to the check
and ``127.0.0.1`` to the connection would reach the daemon's own host. Here
the name is resolved once per connection; the addresses are checked
(``deny_private_networks``) and the connection goes to one of them, while TLS
(SNI, the certificate's name) and the ``Host`` header keep the name.
"""

from __future__ import annotations

import socket
from typing import Awaitable, Callable

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.threads import deferToThreadPool
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from .rules import private_address

# host -> its IP addresses
Resolve = Callable[[str], Awaitable[list[str]]]
CONNECT_TIMEOUT = 30


class PrivateAddress(ConnectError):
    """The receiver resolved to an address that deny_private_networks refuses."""

    def __init__(self, host: str, address: str):
        self.reason = f"{host} is {address}, a private address (webhooks.deny_private_networks)"
        super().__init__(string=self.reason)

    def __str__(self) -> str:  # the sentence alone: a ConnectError would add its own prefix
        return self.reason


@implementer(IAgentEndpointFactory)
class CheckedEndpoints:
    def __init__(self, reactor, resolve: Resolve, *, deny_private_networks: bool, tls_policy=None,
                 connect_timeout: float = CONNECT_TIMEOUT):
        self._reactor = reactor
        self._resolve = resolve
        self._deny_private = deny_private_networks
        self._tls = tls_policy or BrowserLikePolicyForHTTPS()
        self._timeout = connect_timeout

    def endpointForURI(self, uri):
        host = uri.host.decode("idna")
        tls = self._tls.creatorForNetloc(uri.host, uri.port) if uri.scheme == b"https" else None
        return _CheckedEndpoint(self, host, uri.port, tls)

    async def connect(self, host: str, port: int, tls, factory):
        addresses = await self._resolve(host)
        if self._deny_private:
            for address in addresses:
                if private_address(address):
                    raise PrivateAddress(host, address)
        failure: Exception = ConnectError(string=f"{host} has no address")
        for address in addresses:  # the checked ones, in the resolver's order
            kind = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
            endpoint = kind(self._reactor, address, port, timeout=self._timeout)
            if tls is not None:
                endpoint = wrapClientTLS(tls, endpoint)
            try:
                return await endpoint.connect(factory)
            except ConnectError as e:
                failure = e
        raise failure


@implementer(IStreamClientEndpoint)
class _CheckedEndpoint:
    def __init__(self, endpoints: CheckedEndpoints, host: str, port: int, tls):
        self._endpoints, self._host, self._port, self._tls = endpoints, host, port, tls

    def connect(self, protocolFactory) -> Deferred:
        return Deferred.fromCoroutine(self._endpoints.connect(self._host, self._port, self._tls, protocolFactory))


def resolver(reactor) -> Resolve:
    """The receiver's addresses, looked up in the reactor's thread pool (bounded by each attempt's timeout)."""

    def lookup(host: str) -> list[str]:
        return list(dict.fromkeys(info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)))

    def resolve(host: str) -> Deferred:
        return deferToThreadPool(reactor, reactor.getThreadPool(), lookup, host)

    return resolve


def webhook_client(reactor, resolve: Resolve, *, deny_private_networks: bool, tls_policy=None) -> HTTPClient:
    """treq with a connection pool of its own (not treq's global one) and checked connections."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 2
    endpoints = CheckedEndpoints(reactor, resolve, deny_private_networks=deny_private_networks, tls_policy=tls_policy)
    return HTTPClient(Agent.usingEndpointFactory(reactor, endpoints, pool=pool))
