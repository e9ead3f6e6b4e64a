"""The egress guard (core.egress) and the outbound calls that go through it: the agent HTTP tool, its allowlist and
webhooks. Internal addresses are refused in every spelling, the connection goes to the address that was checked
(no second lookup), internal hosts come only from the platform setting."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from agents.models import AgentEvent, HttpToolRule, WebhookEndpoint
from agents.services import http_tool_rule_create, webhook_endpoint_create
from agents.tests.conftest import make_definition, start_run
from agents.tests.test_events import emit
from agents.tools import HTTP, ToolContext, ToolError
from agents.webhooks import webhook_deliver
from core.egress import EgressRefused, egress_check_url, egress_client
from core.errors import InvalidInput
from tenants.models import Role

INTERNAL_URLS = [
    "http://127.0.0.1/",
    "http://127.0.0.1:8000/metrics",
    "http://2130706433/",  # decimal
    "http://0177.0.0.1/",  # octal
    "http://017700000001/",
    "http://0x7f.1/",  # hex, short form
    "http://0x7f000001/",
    "http://127.1/",  # short form
    "http://0/",
    "http://0.0.0.0/",
    "http://localhost:6379/",
    "http://LOCALHOST./",
    "http://metrics.localhost/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[::ffff:7f00:1]/",
    "http://[::127.0.0.1]/",  # IPv4-compatible
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://0xa9fea9fe/",  # the metadata address in hex
    "http://2852039166/",  # ... and decimal
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # shared address space
    "http://[fc00::1]/",  # unique local
    "http://[fe80::1]/",  # link-local
    "http://224.0.0.1/",  # multicast
    "http://[ff02::1]/",
    "http://240.0.0.1/",  # reserved
    "http://255.255.255.255/",
    "http://198.18.0.1/",  # benchmarking
]


@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_internal_destinations_are_refused_in_every_spelling(url: str, settings: Any) -> None:
    settings.EGRESS_ALLOWED_INTERNAL = []
    with pytest.raises(EgressRefused) as refused:
        egress_check_url(url)
    assert "not allowed" in refused.value.message
    with egress_client(timeout=2) as client, pytest.raises((EgressRefused, httpx.InvalidURL)):
        client.get(url)  # (httpx itself refuses some spellings before the guard sees them)


def test_a_name_that_resolves_to_an_internal_address_is_refused(monkeypatch: Any, settings: Any) -> None:
    settings.EGRESS_ALLOWED_INTERNAL = []
    real = socket.getaddrinfo

    def fake(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "crm.example.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", 443))]  # fmt: skip
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(EgressRefused, match=r"crm\.example\.com resolves to a private or internal network"):
        egress_check_url("https://crm.example.com/api")


@pytest.fixture
def local_server(http_server: Any, settings: Any) -> Any:
    settings.EGRESS_ALLOWED_INTERNAL = []  # the loopback server is NOT on the platform list unless a test says so
    http_server.json("/secret", {"leak": "internal data"})
    return http_server


def test_dns_rebinding_cannot_reach_the_internal_server(monkeypatch: Any, local_server: Any) -> None:
    """First answer public (passes the check), every later one loopback: a second lookup at connect time would
    land on the internal server. The guard connects to the address it checked."""
    lookups: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.example.com":
            lookups.append(host)
            address = "198.51.100.7" if len(lookups) == 1 else "127.0.0.1"  # TEST-NET-2: never answers here
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr("core.egress.address_is_public", lambda a: str(a) == "198.51.100.7")
    with egress_client(timeout=1) as client, pytest.raises((httpx.ConnectError, httpx.ConnectTimeout)):
        client.get(f"http://rebind.example.com:{local_server.port}/secret")
    assert lookups == ["rebind.example.com"]  # one lookup, the checked one
    assert local_server.calls() == []


def test_the_connection_goes_to_the_checked_address_with_the_name_in_host(
    monkeypatch: Any, local_server: Any, settings: Any
) -> None:
    settings.EGRESS_ALLOWED_INTERNAL = ["pinned.example.com"]  # the platform allows this internal name
    lookups: list[str] = []
    real = socket.getaddrinfo

    def resolver(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "pinned.example.com":
            lookups.append(host)
            address = "127.0.0.1" if len(lookups) == 1 else "10.255.255.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with egress_client(timeout=3) as client:
        response = client.get(f"http://pinned.example.com:{local_server.port}/secret")
    assert response.status_code == 200
    [request] = local_server.calls("/secret")
    assert request.headers["host"] == f"pinned.example.com:{local_server.port}"
    assert lookups == ["pinned.example.com"]


def test_redirects_are_not_followed(local_server: Any, settings: Any) -> None:
    settings.EGRESS_ALLOWED_INTERNAL = ["127.0.0.1"]
    local_server.routes["/moved"] = (302, "")
    local_server.headers["/moved"] = {"Location": "http://169.254.169.254/latest/"}
    with egress_client(timeout=3) as client:
        assert client.get(f"{local_server.base}/moved").status_code == 302
    assert [r.path for r in local_server.calls()] == ["/moved"]


# --- the tenant-facing forms and calls -------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/metrics", "http://0x7f.1/", "http://169.254.169.254/", "http://[::ffff:10.0.0.1]/"]
)
def test_a_department_admin_cannot_allowlist_or_hook_an_internal_address(world: Any, url: str, settings: Any) -> None:
    settings.EGRESS_ALLOWED_INTERNAL = []
    with pytest.raises(InvalidInput, match="internal addresses are not allowed"):
        http_tool_rule_create(tenant=world.tenant, name="internal", method="GET", url_prefix=url, actor=world.admin)
    with pytest.raises(InvalidInput, match="internal addresses are not allowed"):
        webhook_endpoint_create(tenant=world.tenant, url=url, actor=world.admin)
    assert not HttpToolRule.objects.for_tenant(world.tenant).exists()
    assert not WebhookEndpoint.objects.for_tenant(world.tenant).exists()


@pytest.mark.django_db
def test_a_stored_rule_that_points_inside_is_refused_at_call_time(world: Any, local_server: Any) -> None:
    """A rule saved while the name was public (or before this guard) cannot reach an internal address later."""
    HttpToolRule.objects.create(tenant=world.tenant, name="old", method="GET", url_prefix=f"{local_server.base}/")
    ctx = ToolContext(tenant=world.tenant, role=Role.MEMBER, run_id=1, knowledge_base_ids=None, idempotency_key="k")
    with pytest.raises(ToolError, match=r"was refused: 127\.0\.0\.1 is this machine"):
        HTTP.run(ctx, {"method": "GET", "url": f"{local_server.base}/secret"})
    assert local_server.calls() == []


@pytest.mark.django_db
def test_a_webhook_to_an_internal_address_is_not_delivered(world: Any, local_server: Any) -> None:
    endpoint = WebhookEndpoint.objects.create(
        tenant=world.tenant, url=f"{local_server.base}/secret", encrypted_secret=_secret()
    )
    run = start_run(world, make_definition(world), "hi")
    emit(run, 1)
    event = AgentEvent.objects.for_tenant(world.tenant).filter(run=run).first()
    assert event is not None
    assert webhook_deliver(endpoint_id=endpoint.pk, event_id=event.pk) == 0
    assert local_server.calls() == []
    assert WebhookEndpoint.unscoped.get(pk=endpoint.pk).last_status.startswith("refused: 127.0.0.1 is this machine")


def _secret() -> str:
    from agents.crypto import encrypt

    return encrypt("whsec_test")
