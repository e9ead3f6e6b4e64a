"""Who may use the admin console, and over which departments.

Platform staff (``user.is_staff``) see every department and the platform-wide pages (the pool, prices, shared
adapters). A department's admin or owner sees only the session's current department. Everyone else is refused:
anonymous callers are sent to the login page, members and viewers get 403, a suspended department 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest

from core.errors import NotAuthenticated, NotFound, PermissionDenied, TenantSuspended
from tenants.models import Membership, Role, Tenant
from tenants.selectors import membership_require, tenant_get, tenant_list


@dataclass(frozen=True)
class ConsoleScope:
    """The caller's reach in the console: ``tenant`` is None for platform staff (every department)."""

    user: User
    tenant: Tenant | None
    role: str  # "staff" or the membership role in ``tenant``

    @property
    def is_staff(self) -> bool:
        return self.tenant is None

    def require_staff(self) -> None:
        if not self.is_staff:
            raise PermissionDenied("Only platform staff can do this.")

    def tenant_get(self, tenant_id: Any) -> Tenant:
        """A department the caller may administer; another one answers 404 just like a missing one."""
        try:
            pk = int(tenant_id)
        except (TypeError, ValueError):
            raise NotFound() from None
        if self.tenant is not None:
            if pk != self.tenant.pk:
                raise NotFound()
            return self.tenant
        return tenant_get(tenant_id=pk)

    def tenants(self) -> list[Tenant]:
        if self.tenant is not None:
            return [self.tenant]
        return list(tenant_list())

    @property
    def acting_role(self) -> str:
        """The department role the caller acts with: platform staff act as owners."""
        return Role.OWNER if self.is_staff else self.role

    def may_manage_owners(self) -> bool:
        return self.acting_role == Role.OWNER


def console_scope(*, user: User | AnonymousUser, tenant: Tenant | None) -> ConsoleScope:
    """Resolve the caller's scope, or raise: 401 anonymous, 403 too low a role or suspended, 404 no department."""
    if not user.is_authenticated:
        raise NotAuthenticated()
    assert isinstance(user, User)
    if user.is_staff:
        return ConsoleScope(user=user, tenant=None, role="staff")
    if tenant is None:
        # The session resolves only active departments: say "suspended" when that is why there is none.
        suspended = (
            Membership.unscoped.filter(user_id=user.pk, tenant__status=Tenant.Status.SUSPENDED)
            .exclude(role__in=[Role.MEMBER, Role.VIEWER])
            .exists()
        )
        if suspended:
            raise TenantSuspended()
    membership = membership_require(user=user, tenant=tenant, min_role=Role.ADMIN)
    return ConsoleScope(user=user, tenant=membership.tenant, role=membership.role)


def scope_from_request(request: HttpRequest) -> ConsoleScope:
    return console_scope(user=request.user, tenant=getattr(request, "tenant", None))
