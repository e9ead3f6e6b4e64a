"""Console writes that compose the tenants services: members by username or email, new users with a one-time
password, the owner-role rules, and model prices. Every change is an AuditEvent (the tenants services record their
own; the ones here record theirs)."""

from __future__ import annotations

import secrets
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tenants.models import Membership, ModelPrice, Role, Tenant
from tenants.services import audit_record, membership_assign, membership_revoke

ONE_TIME_PASSWORD_BYTES = 12


def _check_role(role: str) -> None:
    if role not in Role.values:
        raise InvalidInput(f"Unknown role '{role}'. Choose one of: {', '.join(Role.values)}.")


def user_find(*, identifier: str) -> User:
    identifier = identifier.strip()
    if not identifier:
        raise InvalidInput("Enter a username or an email address.")
    user = User.objects.filter(username__iexact=identifier).first()
    if user is None and "@" in identifier:
        matches = list(User.objects.filter(email__iexact=identifier)[:2])
        if len(matches) > 1:
            raise InvalidInput("Several users share that email address; enter the username instead.")
        user = matches[0] if matches else None
    if user is None or not user.is_active:
        raise InvalidInput("No active user has that username or email. Create the user instead.")
    return user


@transaction.atomic
def member_add(*, tenant: Tenant, identifier: str, role: str, actor: User, actor_role: str) -> Membership:
    """Add an existing user (found by username or email) to the department with a role. ``actor_role`` is the
    caller's role in the department (platform staff act as owners): only owners grant the owner role."""
    _check_role(role)
    user = user_find(identifier=identifier)
    current = Membership.objects.for_tenant(tenant).filter(user_id=user.pk).first()
    if current is not None:
        raise Conflict(f"{user.get_username()} is already a member (role {current.role}); change the role instead.")
    return membership_assign(tenant=tenant, user=user, role=role, actor_role=actor_role, actor=actor)


@transaction.atomic
def member_create_user(
    *, tenant: Tenant, username: str, email: str, role: str, actor: User, actor_role: str
) -> tuple[Membership, str]:
    """Create a user with a random password (returned once, never stored in clear) and add them to the department."""
    _check_role(role)
    username = username.strip()
    email = email.strip()
    if not username:
        raise InvalidInput("A new user needs a username.")
    try:
        UnicodeUsernameValidator()(username)
    except ValidationError:
        raise InvalidInput("Usernames may hold letters, digits and @ . + - _ only.") from None
    if len(username) > 150:
        raise InvalidInput("Usernames are at most 150 characters.")
    if email:
        try:
            validate_email(email)
        except ValidationError:
            raise InvalidInput("That email address is not valid.") from None
    if User.objects.filter(username__iexact=username).exists():
        raise Conflict(f"The username '{username}' is taken; add the existing user instead.")
    if role == Role.OWNER and actor_role != Role.OWNER:
        raise PermissionDenied("Only an owner can grant or change the owner role.")
    password = secrets.token_urlsafe(ONE_TIME_PASSWORD_BYTES)
    user = User.objects.create_user(username=username, email=email, password=password)
    audit_record(action="user.create", tenant=tenant, actor=actor, target=user, details={"user_id": user.pk})
    membership = membership_assign(tenant=tenant, user=user, role=role, actor_role=actor_role, actor=actor)
    return membership, password


@transaction.atomic
def member_set_role(*, tenant: Tenant, user_id: int, role: str, actor: User, actor_role: str) -> Membership:
    _check_role(role)
    current = Membership.objects.for_tenant(tenant).select_related("user").filter(user_id=user_id).first()
    if current is None:
        raise NotFound()
    if current.role == role:
        return current
    return membership_assign(tenant=tenant, user=current.user, role=role, actor_role=actor_role, actor=actor)


def member_remove(*, tenant: Tenant, user_id: int, actor: User, actor_role: str) -> None:
    membership_revoke(tenant=tenant, user_id=user_id, actor_role=actor_role, actor=actor)


def _price(value: Any, field: str) -> Decimal:
    try:
        price = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"The {field} price must be a number, like 0.0015.") from None
    if not price.is_finite() or price < 0:
        raise InvalidInput(f"The {field} price must be zero or more.")
    if price >= Decimal("10000"):
        raise InvalidInput(f"The {field} price must be below 10,000 per 1,000 tokens.")
    return price.quantize(Decimal("0.000001"))


@transaction.atomic
def model_price_set(*, model: str, input_per_1k: Any, output_per_1k: Any, actor: User) -> ModelPrice:
    """Create or change the price per 1,000 tokens of a base model or adapter (applies to usage settled from now)."""
    model = model.strip()
    if not model:
        raise InvalidInput("Name the model or adapter the price is for.")
    if len(model) > 200:
        raise InvalidInput("Model names are at most 200 characters.")
    price_in = _price(input_per_1k, "input")
    price_out = _price(output_per_1k, "output")
    price, created = ModelPrice.objects.update_or_create(
        model=model, defaults={"input_per_1k": price_in, "output_per_1k": price_out}
    )
    audit_record(
        action="price.create" if created else "price.update",
        actor=actor,
        target=price,
        details={"model": model, "input_per_1k": str(price_in), "output_per_1k": str(price_out)},
    )
    return price


@transaction.atomic
def model_price_delete(*, price_id: int, actor: User) -> None:
    price = ModelPrice.objects.filter(pk=price_id).first()
    if price is None:
        raise NotFound()
    audit_record(action="price.delete", actor=actor, target=price, details={"model": price.model})
    price.delete()


# ------------------------------------------------------------------------------------------------ pool backends


def feedback_export_record(*, actor: User, tenant: Tenant | None, answers: int) -> None:
    """An export of reviewed answers (masked text) leaves the portal: who exported how many, of which department."""
    audit_record(
        action="chat.feedback.export",
        tenant=tenant,
        actor=actor,
        details={"answers": answers, "scope": tenant.slug if tenant is not None else "all"},
    )
