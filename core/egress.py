"""The egress guard: every outbound HTTP call the portal makes on a tenant's behalf goes through it.

A tenant may name any URL (the agent HTTP tool's allowlist, webhooks), so a URL alone says nothing about where the
call lands. The guard resolves the host once, refuses unless every address is a public unicast one, and connects to
exactly the address it checked (the Host header and TLS SNI keep the name), so DNS rebinding between the check and
the connection does not help. Refused are loopback, private, link-local (with the 169.254.169.254 metadata
service), shared (100.64/10), multicast, reserved, unspecified and unique-local IPv6 addresses, and IPv4 hidden in
IPv6 (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64), in every spelling: the host is handed to the system
resolver, which reads decimal (``2130706433``), octal (``0177.0.0.1``), hex (``0x7f.1``) and short (``127.1``) forms
to the address they mean, and that address is what is checked. Redirects are never followed.

Internal hosts are reachable only when the platform lists them in ``EGRESS_ALLOWED_INTERNAL`` (host names, addresses
or networks such as ``10.20.0.0/16``); no tenant form can add to it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_BLOCKED_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_BLOCKED_SUFFIXES = (".localhost", ".internal", ".local", ".home.arpa")


class EgressRefused(Exception):
    """The destination is not allowed; ``message`` says why in words a person understands."""

    code = "egress_refused"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class Destination:
    host: str  # the name as written (lower case, no trailing dot)
    port: int
    address: str  # the checked address the connection goes to


def _allowed_internal() -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    names: set[str] = set()
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in getattr(settings, "EGRESS_ALLOWED_INTERNAL", []) or []:
        entry = str(entry).strip().lower().rstrip(".")
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry)
    return names, networks


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or address in _NAT64_LOCAL or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_is_public(address: IPAddress) -> bool:
    """A public unicast address (IPv4 inside IPv6 is judged by the IPv4 address it carries)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return False
        inner = _embedded_ipv4(address)
        if inner is not None:
            return address_is_public(inner)
    return bool(
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_link_local
        and not address.is_loopback
        and not address.is_private
        and not address.is_unspecified
    )


def _why(address: IPAddress) -> str:
    if isinstance(address, ipaddress.IPv6Address) and (inner := _embedded_ipv4(address)) is not None:
        return _why(inner)
    if str(address) in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"):
        return "a cloud metadata service"
    if address.is_loopback:
        return "this machine (loopback)"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_private or not address.is_global:
        return "a private or internal network"
    return "a reserved address"


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise EgressRefused(f"The host {host} could not be resolved.") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]
        address = ipaddress.ip_address(text)
        if isinstance(address, ipaddress.IPv6Address) and len(sockaddr) >= 4 and sockaddr[3]:
            address = ipaddress.ip_address(f"{text}%{sockaddr[3]}")
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise EgressRefused(f"The host {host} could not be resolved.")
    return addresses


def _host_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise EgressRefused("Only http and https URLs are allowed.")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise EgressRefused("The URL has no host.")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise EgressRefused("The URL's port is not valid.") from None
    return host, port


def _internal_allowed(host: str, addresses: Iterable[IPAddress]) -> bool:
    names, networks = _allowed_internal()
    if host in names:
        return True
    listed = list(addresses)
    return bool(listed) and all(any(a in n for n in networks) for a in listed)


def egress_check_host(*, host: str, port: int) -> Destination:
    """Resolve ``host`` once and return the address to connect to, or ``EgressRefused``."""
    host = host.lower().rstrip(".").strip("[]")
    if host in _BLOCKED_NAMES or host.endswith(_BLOCKED_SUFFIXES):
        names, _ = _allowed_internal()
        if host not in names:
            raise EgressRefused(f"{host} is an internal host name; calls to internal services are not allowed.")
    addresses = _resolve(host, port)
    if _internal_allowed(host, addresses):
        return Destination(host=host, port=port, address=str(addresses[0]))
    for address in addresses:  # every answer must be public: a name with one internal answer is refused
        if not address_is_public(address):
            raise EgressRefused(
                f"{host} resolves to {_why(address)}; calls to internal addresses are not allowed."
                if not _is_literal(host)
                else f"{host} is {_why(address)}; calls to internal addresses are not allowed."
            )
    return Destination(host=host, port=port, address=str(addresses[0]))


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(host)  # decimal, octal, hex and short IPv4 spellings
        return True
    except OSError:
        return False


def egress_check_url(url: str) -> Destination:
    """The checked destination of an http(s) URL (resolved now), or ``EgressRefused``."""
    host, port = _host_of(url)
    return egress_check_host(host=host, port=port)


def egress_validate_url(url: str) -> None:
    """For forms that store a URL (allowlists, webhooks): refuse what is internal now. A public name that does not
    resolve yet is accepted; each call checks again when it is made."""
    host, port = _host_of(url)
    try:
        egress_check_host(host=host, port=port)
    except EgressRefused as refused:
        if "could not be resolved" in refused.message and not _is_literal(host):
            return
        raise


class GuardedTransport(httpx.HTTPTransport):
    """An httpx transport that checks each request's destination and connects to the checked address."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        destination = egress_check_host(host=request.url.host, port=request.url.port or _default_port(request.url))
        if destination.address != destination.host:
            # Host header was set from the name when the request was built; TLS verifies the certificate by name
            request.extensions = {**request.extensions, "sni_hostname": destination.host}
            request.url = request.url.copy_with(host=destination.address)
        return super().handle_request(request)


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


def egress_client(*, timeout: float, **kwargs: Any) -> httpx.Client:
    """An httpx client for calls on a tenant's behalf: guarded, no redirects, no proxies from the environment."""
    return httpx.Client(
        transport=GuardedTransport(trust_env=False),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        **kwargs,
    )
