"""The tools on their own: the calculator's safe evaluation, URL normalization and the allowlist, the HTTP tool
against a local server (secrets in headers and redacted, size cap, no redirects), the schema protocol."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agents import protocol
from agents.models import HttpToolRule
from agents.services import agent_secret_set, http_tool_rule_create
from agents.tools import (
    CALCULATOR,
    HTTP,
    SEARCH,
    TOOLS,
    ToolContext,
    ToolError,
    calculate,
    http_rule_for,
    normalize_url,
)
from core.errors import InvalidInput
from tenants.models import Role


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 + 3 * 4", 14),
        ("(1200 * 0.15) + 30", 210),
        ("2 ** 10", 1024),
        ("2^3", 8),
        ("7 / 2", 3.5),
        ("-7 // 2", -4),
        ("sqrt(16) + abs(-2)", 6),
        ("round(pi, 2)", 3.14),
        ("max(3, 9, 4) % 5", 4),
    ],
)
def test_calculator_evaluates_arithmetic(expression: str, value: Any) -> None:
    assert calculate(expression) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('true')", "Only numbers"),
        ("open('/etc/passwd')", "Only numbers"),
        ("(1).__class__", "Only numbers"),
        ("x + 1", "Only numbers"),
        ("'a' * 3", "Only numbers"),
        ("[1, 2]", "Only numbers"),
        ("lambda: 1", "Only numbers"),
        ("9 ** 9 ** 9", "too large"),
        ("10 ** 5000", "too large"),
        ("1 / 0", "Division by zero"),
        ("sqrt(-1)", "cannot take"),
        ("1 +", "not an arithmetic expression"),
        ("True + 1", "Only numbers"),
        ("+".join(["1"] * 300), "too"),
    ],
)
def test_calculator_refuses_anything_else(expression: str, message: str) -> None:
    with pytest.raises(ToolError) as info:
        calculate(expression)
    assert message in info.value.message


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("HTTP://API.Example.com:80/v1/items?q=1#frag", "http://api.example.com/v1/items?q=1"),
        ("https://api.example.com", "https://api.example.com/"),
        ("https://api.example.com:8443/x", "https://api.example.com:8443/x"),
    ],
)
def test_urls_are_normalized(raw: str, normalized: str) -> None:
    assert normalize_url(raw) == normalized


@pytest.mark.parametrize(
    "raw",
    [
        "ftp://api.example.com/x",
        "file:///etc/passwd",
        "https://user:pw@api.example.com/x",
        "https://api.example.com@evil.example/x",
        "https://api.example.com/v1/../admin",
        "https://api.example.com/v1/%2e%2e/admin",
        "https://api.example.com/v1/%2fadmin",
        "https://api.example.com/v1\\..\\admin",
        "https://api.example.com/v1/ x",
        "javascript:alert(1)",
        "",
    ],
)
def test_urls_that_could_slip_past_a_prefix_are_refused(raw: str) -> None:
    with pytest.raises(ToolError):
        normalize_url(raw)


@pytest.fixture
def rules(world: Any) -> list[HttpToolRule]:
    return [
        http_tool_rule_create(
            tenant=world.tenant, name="orders", method="GET", url_prefix="https://shop.example.com/api/orders"
        ),
        http_tool_rule_create(
            tenant=world.tenant, name="tickets", method="POST", url_prefix="https://desk.example.com/"
        ),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("GET", "https://shop.example.com/api/orders", True),
        ("GET", "https://shop.example.com/api/orders/42", True),
        ("GET", "https://shop.example.com/api/orders?id=42", True),
        ("GET", "https://SHOP.example.com:443/api/orders/42", True),
        ("GET", "https://shop.example.com/api/orders-admin", False),
        ("GET", "https://shop.example.com/api/orders/../users", False),
        ("POST", "https://shop.example.com/api/orders/42", False),
        ("GET", "http://shop.example.com/api/orders/42", False),
        ("GET", "https://shop.example.com.evil.example/api/orders", False),
        ("POST", "https://desk.example.com/tickets", True),
        ("GET", "https://desk.example.com/tickets", False),
    ],
)
def test_the_allowlist_matches_method_and_prefix(world: Any, rules: Any, method: str, url: str, allowed: bool) -> None:
    if allowed:
        assert http_rule_for(tenant=world.tenant, method=method, url=url) is not None
    else:
        with pytest.raises(ToolError) as info:
            http_rule_for(tenant=world.tenant, method=method, url=url)
        assert "refused" in info.value.message or "not allowed" in info.value.message


@pytest.mark.django_db
def test_another_departments_rules_do_not_apply(world: Any, rules: Any) -> None:
    with pytest.raises(ToolError):
        http_rule_for(tenant=world.other_tenant, method="GET", url="https://shop.example.com/api/orders/1")


@pytest.mark.django_db
def test_rule_and_secret_validation(world: Any) -> None:
    with pytest.raises(InvalidInput):
        http_tool_rule_create(tenant=world.tenant, name="x", method="GET", url_prefix="ftp://files.example.com/")
    with pytest.raises(InvalidInput):
        http_tool_rule_create(
            tenant=world.tenant,
            name="y",
            method="GET",
            url_prefix="https://a.example.com/",
            header_secrets={"Authorization": "missing"},
        )
    with pytest.raises(InvalidInput):
        agent_secret_set(tenant=world.tenant, name="bad name", value="x")
    secret = agent_secret_set(tenant=world.tenant, name="crm-token", value="s3cr3t-value")
    assert b"s3cr3t-value" not in bytes(secret.encrypted_value)
    with pytest.raises(InvalidInput):
        http_tool_rule_create(
            tenant=world.tenant,
            name="z",
            method="GET",
            url_prefix="https://a.example.com/",
            header_secrets={"Host": "crm-token"},
        )


def _ctx(world: Any, key: str = "run-1-2") -> ToolContext:
    return ToolContext(tenant=world.tenant, role=Role.MEMBER, run_id=1, knowledge_base_ids=None, idempotency_key=key)


@pytest.mark.django_db
def test_an_http_call_inside_the_allowlist_works_and_one_outside_is_refused(world: Any, http_server: Any) -> None:
    agent_secret_set(tenant=world.tenant, name="crm-token", value="Bearer s3cr3t-value")
    http_tool_rule_create(
        tenant=world.tenant,
        name="crm",
        method="GET",
        url_prefix=f"{http_server.base}/api/",
        header_secrets={"Authorization": "crm-token"},
        max_response_bytes=300,
    )
    http_server.json("/api/orders/42", {"order": 42, "status": "shipped", "echo": "Bearer s3cr3t-value"})

    result = HTTP.run(_ctx(world), {"method": "GET", "url": f"{http_server.base}/api/orders/42"})

    assert result.data["status"] == 200 and result.data["rule"] == "crm"
    assert '"status": "shipped"' in result.text
    [request] = http_server.calls("/api/orders/42")
    assert request.headers["authorization"] == "Bearer s3cr3t-value"
    assert request.headers["idempotency-key"] == "run-1-2"
    assert result.redact == ["Bearer s3cr3t-value"]  # the runner removes echoed secrets from what is kept

    for method, url in (
        ("GET", f"{http_server.base}/admin/users"),
        ("DELETE", f"{http_server.base}/api/orders/42"),
        ("GET", "http://127.0.0.2:9/api/orders/42"),
    ):
        with pytest.raises(ToolError) as info:
            HTTP.run(_ctx(world), {"method": method, "url": url})
        assert "not on the department's HTTP allowlist" in info.value.message
    assert len(http_server.calls()) == 1  # nothing else reached the server


@pytest.mark.django_db
def test_http_responses_are_capped_and_redirects_not_followed(world: Any, http_server: Any) -> None:
    http_tool_rule_create(
        tenant=world.tenant, name="api", method="GET", url_prefix=f"{http_server.base}/", max_response_bytes=256
    )
    http_server.routes["/big"] = (200, "x" * 10_000)
    http_server.routes["/moved"] = (302, "")
    http_server.headers["/moved"] = {"Location": f"{http_server.base}/big"}

    big = HTTP.run(_ctx(world), {"method": "GET", "url": f"{http_server.base}/big"})
    assert big.truncated and big.data["bytes"] == 256 and "cut at 256 bytes" in big.text

    moved = HTTP.run(_ctx(world), {"method": "GET", "url": f"{http_server.base}/moved"})
    assert moved.data["status"] == 302 and "(redirects are not followed)" in moved.text
    assert [r.path for r in http_server.calls()] == ["/big", "/moved"]


@pytest.mark.django_db
def test_only_get_and_head_or_marked_rules_are_repeatable(world: Any, http_server: Any) -> None:
    http_tool_rule_create(tenant=world.tenant, name="read", method="GET", url_prefix=f"{http_server.base}/r/")
    http_tool_rule_create(tenant=world.tenant, name="write", method="POST", url_prefix=f"{http_server.base}/w/")
    http_tool_rule_create(
        tenant=world.tenant, name="put", method="PUT", url_prefix=f"{http_server.base}/p/", idempotent=True
    )
    assert HTTP.idempotent(world.tenant, {"method": "GET", "url": f"{http_server.base}/r/1"}) is True
    assert HTTP.idempotent(world.tenant, {"method": "POST", "url": f"{http_server.base}/w/1"}) is False
    assert HTTP.idempotent(world.tenant, {"method": "PUT", "url": f"{http_server.base}/p/1"}) is True
    assert CALCULATOR.idempotent(world.tenant, {}) is True


def test_the_step_schema_offers_only_what_the_step_allows() -> None:
    args = {name: TOOLS[name].arguments(None) for name in ("knowledge_search", "calculator")}  # type: ignore[arg-type]
    both = protocol.step_schema(
        tools=[SEARCH, CALCULATOR], argument_schemas=args, allow_final=True, max_output_tokens=128
    )
    assert [o["properties"]["action"]["const"] for o in both["oneOf"]] == [
        "knowledge_search",
        "calculator",
        "final_answer",
    ]
    tools_only = protocol.step_schema(tools=[SEARCH], argument_schemas=args, allow_final=False, max_output_tokens=128)
    assert tools_only["properties"]["action"] == {"const": "knowledge_search"}
    # free-text strings are capped so that a whole step fits the turn's tokens
    thought_cap, cap = protocol.output_caps(128)
    assert tools_only["properties"]["thought"]["maxLength"] == thought_cap
    assert tools_only["properties"]["input"]["properties"]["query"]["maxLength"] == min(cap, 200)

    ok = protocol.parse_step(
        json.dumps({"thought": "look", "action": "calculator", "input": {"expression": "1+1"}}), schema=both
    )
    assert ok.action == "calculator" and ok.arguments == {"expression": "1+1"}
    final = protocol.parse_step('{"thought": "done", "action": "final_answer", "answer": "42"}', schema=both)
    assert final.is_final and final.answer == "42"
    for bad, reason in (
        ("", "empty"),
        ("not json", "not valid JSON"),
        ("[1]", "one JSON object"),
        ('{"thought": "x", "action": "delete_everything", "input": {}}', "must be one of"),
        ('{"thought": "x", "action": "calculator", "input": {"expr": "1"}}', "input"),
        ('{"thought": "x", "action": "final_answer", "answer": "ok"}', "must be one of"),
    ):
        with pytest.raises(protocol.InvalidStep) as info:
            protocol.parse_step(bad, schema=tools_only if "final_answer" in bad else both)
        assert reason in info.value.reason, (bad, info.value.reason)
