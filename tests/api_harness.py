"""Permission-matrix harness for the REST API and the OpenAI-compatible endpoint.

Callers of a matrix: no key, a revoked key, an expired key, a key of another department, and keys of the
department with the viewer, member and admin roles (every scope, so the role is what is tested; scope tests are
separate). ``ApiKeys`` holds the raw secrets (shown once at creation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tenants.models import ApiKey, Role
from tenants.services import api_key_create, api_key_revoke

ALL_SCOPES = list(ApiKey.Scope.values)

# Who answers what when a caller may not do something.
DENIED_AUTH = ("anonymous", "revoked", "expired")  # 401
ROLE_CALLERS = ("viewer", "member", "admin")
MATRIX_CALLERS = (*DENIED_AUTH, "other_tenant", *ROLE_CALLERS)
ROLE_ORDER = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


@dataclass
class ApiKeys:
    secrets: dict[str, str | None] = field(default_factory=dict)
    keys: dict[str, ApiKey] = field(default_factory=dict)

    def __getitem__(self, caller: str) -> str | None:
        return self.secrets[caller]


def make_api_keys(world: Any) -> ApiKeys:
    out = ApiKeys(secrets={"anonymous": None})
    for role in (Role.VIEWER, Role.MEMBER, Role.ADMIN, Role.OWNER):
        # a key never exceeds its issuer's role (tenants.selectors.api_key_authenticate caps it): the owner issues
        # the owner key
        issuer = world.owner if role == Role.OWNER else world.admin
        key, secret = api_key_create(
            tenant=world.tenant, name=f"{role} key", role=role, scopes=ALL_SCOPES, created_by=issuer
        )
        out.secrets[str(role)], out.keys[str(role)] = secret, key
    key, secret = api_key_create(tenant=world.tenant, name="revoked", role=Role.ADMIN, scopes=ALL_SCOPES)
    api_key_revoke(tenant=world.tenant, key_id=key.pk)
    out.secrets["revoked"], out.keys["revoked"] = secret, key
    key, secret = api_key_create(
        tenant=world.tenant,
        name="expired",
        role=Role.ADMIN,
        scopes=ALL_SCOPES,
        expires_at=timezone.now() - timedelta(minutes=1),
    )
    out.secrets["expired"], out.keys["expired"] = secret, key
    key, secret = api_key_create(
        tenant=world.other_tenant, name="other", role=Role.ADMIN, scopes=ALL_SCOPES, created_by=world.outsider
    )
    out.secrets["other_tenant"], out.keys["other_tenant"] = secret, key
    return out


@pytest.fixture
def api_keys(world: Any) -> ApiKeys:
    return make_api_keys(world)


@pytest.fixture
def pool_backend(transactional_db: Any, llama_server: Any) -> Any:
    """The session's real llama-server registered as the pool's only backend (rows committed: use with servers or
    threads that open their own database connections)."""
    from django.conf import settings

    from inference_pool.services import backend_register

    return backend_register(
        name="test-llama",
        kind="llamacpp",
        base_url=llama_server.spec.base_url,
        model=settings.LLAMA_MODEL_NAME,
        served_name=settings.LLAMA_MODEL_NAME,
        max_concurrent=8,
        context_length=2048,
    )


def api_call(method: str, path: str, *, key: str | None, body: Any = None, **extra: Any) -> Any:
    """One request through the full Django stack; JSON body; returns the response with ``.json_body``."""
    client = APIClient()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    if body is not None:
        response = client.generic(
            method.upper(), path, data=json.dumps(body), content_type="application/json", **headers, **extra
        )
    else:
        response = client.generic(method.upper(), path, **headers, **extra)
    content = getattr(response, "content", b"")
    try:
        response.json_body = json.loads(content) if content else None
    except ValueError:
        response.json_body = None
    return response


def expected_status(caller: str, min_role: str, ok: int, *, other_tenant: int = 404) -> int:
    """The status a caller must get from an endpoint that needs ``min_role`` and answers ``ok`` on success."""
    if caller in DENIED_AUTH:
        return 401
    if caller == "other_tenant":
        return other_tenant
    return ok if ROLE_ORDER[Role(caller)] >= ROLE_ORDER[Role(min_role)] else 403


def assert_error_body(response: Any, status: int) -> None:
    assert response.status_code == status, (response.status_code, getattr(response, "json_body", None))
    body = response.json_body
    assert isinstance(body, dict) and set(body) == {"code", "message", "details"}, body
    assert body["message"]


def v1_stream_body(url: str, key: str, *, max_tokens: int = 4) -> str:
    """One streamed ``/v1/chat/completions`` answer to "Say hello." over real HTTP; the raw SSE body."""
    import httpx
    from django.conf import settings

    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": settings.LLAMA_MODEL_NAME,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
        },
        timeout=120,
    ) as response:
        assert response.status_code == 200
        return response.read().decode()
