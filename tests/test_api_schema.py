"""The OpenAPI schema of /api/v1/: valid and warning-free, every operation documents the error body, every operation
refuses a missing, revoked or expired key, and a schemathesis run against a live server finds no 5xx and no response
that breaks the schema."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from tenants.models import ApiKey, Role
from tenants.services import api_key_create
from tests.api_harness import ALL_SCOPES, api_call, api_keys, assert_error_body, pool_backend  # noqa: F401
from tests.live_server import live_portal  # noqa: F401

METHODS = ("get", "post", "put", "patch", "delete")


def load_schema(tmp_path: Path) -> dict[str, Any]:
    """Generate the schema exactly as /api/schema/ serves it, failing on any generator warning."""
    out = tmp_path / "schema.json"
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", str(out))
    return json.loads(out.read_text())


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op) for path, item in schema["paths"].items() for method, op in item.items() if method in METHODS
    ]


def test_schema_is_valid_and_documents_auth_and_errors(db, tmp_path):
    schema = load_schema(tmp_path)
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key of the department: `Authorization: Bearer ep_…`",
    }
    ops = operations(schema)
    prefixes = {path.split("/")[3] for path, _, _ in ops}
    assert {"tenants", "members", "api-keys", "usage", "conversations", "messages", "adapters"} <= prefixes
    for path, method, op in ops:
        assert {"apiKey": []} in op["security"], (method, path)
        assert op.get("summary") or op.get("description"), (method, path)
        for status in ("400", "401", "403", "404", "429"):
            ref = op["responses"][status]["content"]["application/json"]["schema"]
            assert ref == {"$ref": "#/components/schemas/Error"}, (method, path, status)
        success = [s for s in op["responses"] if s.startswith("2")]
        assert success, (method, path)
        for param in op.get("parameters", []):
            if param["in"] == "path":
                assert param["schema"]["type"] == "integer" and param["schema"]["minimum"] == 1, (method, path)
    assert schema["components"]["schemas"]["Error"]["required"] == ["code", "message", "details"]


def test_every_operation_refuses_missing_revoked_and_expired_keys(world, api_keys, tmp_path):  # noqa: F811
    """The generic part of the permission matrix, over the whole schema (every app's endpoints)."""
    ops = operations(load_schema(tmp_path))
    assert len(ops) >= 30
    for path, method, _ in ops:
        url = re.sub(r"\{[^}]+\}", "1", path)
        for caller in ("anonymous", "revoked", "expired"):
            response = api_call(method, url, key=api_keys[caller], body={} if method != "get" else None)
            assert_error_body(response, 401)
            assert response.json_body["code"] == "not_authenticated", (method, path, caller)
    garbage = api_call("get", "/api/v1/tenants/", key="ep_notakey")
    assert_error_body(garbage, 401)


def test_schema_and_docs_are_served(world, api_keys, client):  # noqa: F811
    schema = api_call("get", "/api/schema/?format=json", key=api_keys["viewer"])
    assert schema.status_code == 200 and schema.json_body["info"]["title"] == "Enterprise LLM Portal API"
    client.force_login(world.member)
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
    browsable = client.get("/api/v1/tenants/", HTTP_ACCEPT="text/html")
    assert browsable.status_code == 200 and b"Tenant List" in browsable.content and b"alpha" in browsable.content


@pytest.mark.slow
def test_schemathesis_finds_no_server_errors_and_no_schema_violations(
    world,
    pool_backend,  # noqa: F811  (questions asked by the fuzzer are answered by a real engine)
    live_portal,  # noqa: F811
    tmp_path,
    monkeypatch,
    settings,
):
    settings.CHAT_MAX_TOKENS = 8  # short answers: the fuzzer asks a few questions
    # what the fuzzer starts (ingestion, agent runs, re-embedding) is run by nobody: no task leaves for the broker
    monkeypatch.setattr("celery.app.task.Task.apply_async", lambda self, *args, **kwargs: None)
    from knowledge.services import knowledge_base_create

    knowledge_base_create(tenant=world.tenant, actor=world.admin, name="Fuzzed")
    key, secret = api_key_create(
        tenant=world.tenant, name="schemathesis", role=Role.OWNER, scopes=ALL_SCOPES, created_by=world.owner
    )
    # an id no generated path will hit, so the fuzzer cannot revoke the key it runs with
    ApiKey.objects.for_tenant(world.tenant).filter(pk=key.pk).update(id=987_654_321_012)
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(load_schema(tmp_path)))

    def run(*selection: str) -> str:
        command = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            str(schema_file),
            "--url",
            live_portal.url,
            "--header",
            f"Authorization: Bearer {secret}",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases",
            "examples,fuzzing",
            "--max-examples",
            "4",
            "--seed",
            "7",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--generation-with-security-parameters",
            "false",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "--no-color",
            *selection,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        output = result.stdout + result.stderr
        (tmp_path / f"schemathesis-{selection[0].strip('-')}.txt").write_text(output)
        assert result.returncode == 0, output[-8000:]
        assert re.search(r"\b\d+ passed\b", output) or "passed" in output, output[-3000:]
        return output

    # the fuzzer reuses ids it has seen (its own key's among them): revoking keys runs last, on its own
    # platform-staff operations answer every API key 403 by design (tests/test_api_operator.py covers them)
    staff_only = ("tenants_create", "base_models_list", "base_models_retrieve", "base_models_create")
    main = run(
        "--exclude-operation-id", "api_keys_destroy", *[a for op in staff_only for a in ("--exclude-operation-id", op)]
    )
    assert "Authentication failed" not in main, main[-3000:]
    assert ApiKey.objects.for_tenant(world.tenant).get(pk=987_654_321_012).revoked_at is None
    run("--include-operation-id", "api_keys_destroy")
