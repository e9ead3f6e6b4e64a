"""/api/v1/adapters/: the adapters a department may use, with the permission matrix."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.models import Adapter, AdapterAssignment
from inference_pool.models import Backend, BackendAdapter, BaseModel
from tests.api_harness import MATRIX_CALLERS, api_call, api_keys, assert_error_body, expected_status  # noqa: F401


@pytest.fixture
def catalog(world: Any) -> dict[str, Adapter]:
    base = BaseModel.objects.create(name="smollm2-135m-instruct")
    backend = Backend.objects.create(name="b1", base_url="http://127.0.0.1:9", base_model=base)
    made = {}
    for name, owner, assigned_to, default in (
        ("legal", None, world.tenant, True),
        ("alpha-private", world.tenant, world.tenant, False),
        ("beta-hr", world.other_tenant, world.other_tenant, False),
        ("unassigned", None, None, False),
    ):
        made[name] = Adapter.objects.create(
            name=name, base_model=base, source=f"/srv/adapters/{name}.gguf", owner_tenant=owner, description=name
        )
        if assigned_to is not None:
            AdapterAssignment.objects.create(tenant=assigned_to, adapter=made[name], is_default=default)
    BackendAdapter.objects.create(backend=backend, name="legal", engine_ref="0", confirmed=True)
    return made


@pytest.mark.parametrize("caller", MATRIX_CALLERS)
def test_list_matrix(world, api_keys, catalog, caller):  # noqa: F811
    response = api_call("get", "/api/v1/adapters/", key=api_keys[caller])
    want = expected_status(caller, "viewer", 200, other_tenant=200)
    assert response.status_code == want, response.json_body
    if want != 200:
        assert_error_body(response, want)
        return
    names = [a["name"] for a in response.json_body["results"]]
    if caller == "other_tenant":
        assert names == ["beta-hr"]
        return
    assert names == ["legal", "alpha-private"]  # the default first
    legal, private = response.json_body["results"]
    assert (legal["is_default"], legal["shared"], legal["served"]) == (True, True, True)
    assert (private["is_default"], private["shared"], private["served"]) == (False, False, False)
    assert legal["base_model"] == "smollm2-135m-instruct" and legal["format"] == "peft"
    assert "/srv/adapters" not in response.content.decode()


@pytest.mark.parametrize("caller", MATRIX_CALLERS)
@pytest.mark.parametrize("name", ["alpha-private", "legal"])
def test_detail_matrix(world, api_keys, catalog, caller, name):  # noqa: F811
    response = api_call("get", f"/api/v1/adapters/{catalog[name].pk}/", key=api_keys[caller])
    want = expected_status(caller, "viewer", 200)
    assert response.status_code == want, response.json_body
    if want == 200:
        assert response.json_body["name"] == name
    else:
        assert_error_body(response, want)


@pytest.mark.parametrize("name", ["beta-hr", "unassigned"])
def test_adapters_not_assigned_are_not_found(world, api_keys, catalog, name):  # noqa: F811
    assert_error_body(api_call("get", f"/api/v1/adapters/{catalog[name].pk}/", key=api_keys["admin"]), 404)
