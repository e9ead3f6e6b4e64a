from django.http import HttpRequest

from tenants.selectors import membership_list_for_user


def current_tenant(request: HttpRequest) -> dict[str, object]:
    membership = getattr(request, "membership", None)
    user = getattr(request, "user", None)
    return {
        "current_tenant": getattr(request, "tenant", None),
        "current_membership": membership,
        "all_memberships": (lambda: list(membership_list_for_user(user=user))) if user is not None else list,
    }
