"""Shared fixtures: two departments and one user per role, for permission matrices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tenants.models import Role, Tenant
from tests.factories import MembershipFactory, TenantFactory, UserFactory

PASSWORD = "pw-12345-secret"


@dataclass
class World:
    tenant: Tenant
    other_tenant: Tenant
    owner: Any
    admin: Any
    member: Any
    viewer: Any
    outsider: Any  # a member of the other tenant only
    staff: Any

    def user(self, role: str) -> Any:
        return {
            "owner": self.owner,
            "admin": self.admin,
            "member": self.member,
            "viewer": self.viewer,
            "other_tenant": self.outsider,
            "staff": self.staff,
            "anonymous": None,
        }[role]


@pytest.fixture
def world(db: Any) -> World:
    tenant = TenantFactory(slug="alpha", name="Alpha")
    other = TenantFactory(slug="beta", name="Beta")
    users = {}
    for role in (Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER):
        users[role] = MembershipFactory(tenant=tenant, user=UserFactory(username=f"alpha-{role}"), role=role).user
    outsider = MembershipFactory(tenant=other, user=UserFactory(username="beta-admin"), role=Role.ADMIN).user
    staff = UserFactory(username="platform-staff", is_staff=True)
    return World(
        tenant=tenant,
        other_tenant=other,
        owner=users[Role.OWNER],
        admin=users[Role.ADMIN],
        member=users[Role.MEMBER],
        viewer=users[Role.VIEWER],
        outsider=outsider,
        staff=staff,
    )


@pytest.fixture
def login_client(client: Any) -> Any:
    def _login(user: Any) -> Any:
        if user is not None:
            client.force_login(user)
        return client

    return _login


from tests.engine import llama_server  # noqa: E402,F401  (re-exported as a fixture)
