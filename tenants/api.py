"""REST endpoints of the tenants app under /api/v1/: departments, members, API keys and usage.

Reading the department is open to every role; members, keys and usage are for admins (and keys with the
``admin`` scope). A key only ever sees its own department; another department's ids answer 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.urls import include, path
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from core.api.views import MAX_ID, JsonViewSet, id_parameter
from core.errors import NotFound, PermissionDenied
from tenants.auth import ApiKeyPrincipal, Caller, caller_from_request
from tenants.models import ApiKey, Membership, Quota, Role, Tenant
from tenants.selectors import (
    USAGE_GROUPS,
    api_key_get,
    api_key_list,
    membership_get_in_tenant,
    membership_list,
    membership_list_for_user,
    membership_require,
    require_staff,
    usage_summary,
    user_get_by_username,
)
from tenants.services import (
    api_key_issue,
    api_key_revoke,
    membership_assign,
    membership_revoke,
    membership_set,
    tenant_create,
    tenant_update,
)


def admin_caller(request: Request) -> Caller:
    caller = caller_from_request(request)
    caller.require(min_role=Role.ADMIN, scope=ApiKey.Scope.ADMIN)
    return caller


# --- serializers ----------------------------------------------------------------------------------------


class QuotaSerializer(serializers.ModelSerializer[Quota]):
    class Meta:
        model = Quota
        fields = [
            "tokens_per_day",
            "tokens_per_month",
            "requests_per_minute",
            "max_upload_mb",
            "max_documents",
            "monthly_budget",
            "budget_alert_percent",
            "budget_enforcement",
        ]
        read_only_fields = fields


@dataclass
class TenantView:
    tenant: Tenant
    role: str


class TenantSerializer(serializers.Serializer[TenantView]):
    id = serializers.IntegerField(source="tenant.id", read_only=True)
    slug = serializers.CharField(source="tenant.slug", read_only=True)
    name = serializers.CharField(source="tenant.name", read_only=True)
    status = serializers.ChoiceField(source="tenant.status", choices=Tenant.Status.choices, read_only=True)
    system_prompt = serializers.CharField(source="tenant.system_prompt", read_only=True)
    created_at = serializers.DateTimeField(source="tenant.created_at", read_only=True)
    role = serializers.ChoiceField(choices=Role.choices, read_only=True, help_text="your role in this department")
    quota = QuotaSerializer(source="tenant.quota", read_only=True, allow_null=True)


class TenantCreateSerializer(serializers.Serializer[Tenant]):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=63, required=False, help_text="default: from the name")
    owner = serializers.CharField(
        max_length=150, required=False, help_text="username of the department's first owner (optional)"
    )
    tokens_per_day = serializers.IntegerField(required=False, min_value=0, max_value=10**15)
    tokens_per_month = serializers.IntegerField(required=False, min_value=0, max_value=10**15)
    requests_per_minute = serializers.IntegerField(required=False, min_value=0, max_value=10**9)

    def validate_name(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("A department needs a name.")
        return value.strip()


class TenantCreatedSerializer(serializers.ModelSerializer[Tenant]):
    quota = QuotaSerializer(read_only=True)

    class Meta:
        model = Tenant
        fields = ["id", "slug", "name", "status", "system_prompt", "created_at", "quota"]
        read_only_fields = fields


class TenantUpdateSerializer(serializers.Serializer[Tenant]):
    name = serializers.CharField(max_length=200, required=False)
    system_prompt = serializers.CharField(max_length=20_000, required=False, allow_blank=True)


class MemberSerializer(serializers.ModelSerializer[Membership]):
    user_id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["user_id", "username", "role", "created_at"]
        read_only_fields = fields


class MemberCreateSerializer(serializers.Serializer[Membership]):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)


class MemberListQuerySerializer(serializers.Serializer[Any]):
    role = serializers.ChoiceField(choices=Role.choices, required=False, help_text="only members with this role")


class MemberUpdateSerializer(serializers.Serializer[Membership]):
    role = serializers.ChoiceField(choices=Role.choices)


class ApiKeySerializer(serializers.ModelSerializer[ApiKey]):
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ApiKey.Scope.choices), read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True, default=None)
    is_active = serializers.SerializerMethodField()

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "role",
            "scopes",
            "created_by",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "is_active",
        ]
        read_only_fields = fields

    def get_is_active(self, key: ApiKey) -> bool:
        return key.is_usable()


class ApiKeyCreatedSerializer(ApiKeySerializer):
    secret = serializers.CharField(read_only=True, help_text="the full key; shown only in this response")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "secret"]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer[ApiKey]):
    name = serializers.CharField(max_length=100)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=ApiKey.Scope.choices),
        required=False,
        max_length=len(ApiKey.Scope.values),
        help_text="default: chat and knowledge:read",
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)

    def validate_name(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("An API key needs a name.")
        return value


class ApiKeyListQuerySerializer(serializers.Serializer[Any]):
    active = serializers.BooleanField(required=False, allow_null=True, default=None, help_text="only usable keys")


class UsageQuerySerializer(serializers.Serializer[Any]):
    group_by = serializers.ChoiceField(choices=[(g, g) for g in USAGE_GROUPS], default="day")
    since = serializers.DateTimeField(required=False, help_text="inclusive, ISO 8601")
    until = serializers.DateTimeField(required=False, help_text="exclusive, ISO 8601")
    model = serializers.CharField(required=False, max_length=200)
    adapter = serializers.CharField(required=False, max_length=200)
    source = serializers.ChoiceField(  # type: ignore[assignment]
        required=False, choices=[(s, s) for s in ("chat", "api", "agent", "embedding")]
    )
    user_id = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    api_key_id = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        since: datetime | None = attrs.get("since")
        until: datetime | None = attrs.get("until")
        if since and until and since >= until:
            raise serializers.ValidationError({"until": ["must be after since"]})
        return attrs


class UsageRowSerializer(serializers.Serializer[dict[str, Any]]):
    key = serializers.CharField(help_text="the group's value: a date, user id, adapter, model, key id or source")
    label = serializers.CharField()  # type: ignore[assignment]
    requests = serializers.IntegerField()
    tokens_in = serializers.IntegerField()
    tokens_out = serializers.IntegerField()
    cost = serializers.DecimalField(max_digits=14, decimal_places=6)


# --- views ----------------------------------------------------------------------------------------------


def _tenant_view(caller: Caller) -> TenantView:
    return TenantView(tenant=caller.tenant, role=caller.role)


@extend_schema_view(
    list=extend_schema(summary="Departments you can act in", responses=TenantSerializer(many=True)),
    retrieve=extend_schema(summary="A department", responses=TenantSerializer),
    create=extend_schema(
        summary="Create a department (platform staff, signed in; not with an API key)",
        request=TenantCreateSerializer,
        responses={201: TenantCreatedSerializer},
    ),
    partial_update=extend_schema(
        summary="Rename a department or change its system prompt (admins)",
        request=TenantUpdateSerializer,
        responses=TenantSerializer,
    ),
)
class TenantViewSet(JsonViewSet):
    http_method_names = ["get", "post", "patch", "head", "options"]
    serializer_class = TenantSerializer

    def _resolve(self, request: Request, tenant_id: int) -> TenantView:
        caller = caller_from_request(request)
        if caller.key is not None:
            if caller.tenant.pk != tenant_id:
                raise NotFound()
            return _tenant_view(caller)
        membership = membership_require(user=request.user, tenant=Tenant.objects.filter(pk=tenant_id).first())
        return TenantView(tenant=membership.tenant, role=membership.role)

    def list(self, request: Request) -> Response:
        caller = caller_from_request(request)
        if caller.key is not None:
            views = [_tenant_view(caller)]
        else:
            views = [TenantView(tenant=m.tenant, role=m.role) for m in membership_list_for_user(user=request.user)]
        page = self.paginate_queryset(views)
        return self.get_paginated_response(TenantSerializer(page, many=True).data)  # type: ignore[arg-type]

    def create(self, request: Request) -> Response:
        """Platform staff only: an API key belongs to one department and never creates another."""
        user = request.user
        if isinstance(user, ApiKeyPrincipal):
            raise PermissionDenied("Departments are created by platform staff signed in, not with an API key.")
        require_staff(user=user)
        assert isinstance(user, User)  # require_staff refused anonymous callers
        body = TenantCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        owner = user_get_by_username(username=data.pop("owner")) if data.get("owner") else None
        tenant = tenant_create(actor=user, **data)
        if owner is not None:
            membership_set(tenant=tenant, user=owner, role=Role.OWNER, actor=user)
        return Response(TenantCreatedSerializer(tenant).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[id_parameter("id", "the department's id")])
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(TenantSerializer(self._resolve(request, int(pk))).data)

    @extend_schema(parameters=[id_parameter("id", "the department's id")])
    def partial_update(self, request: Request, pk: str) -> Response:
        view = self._resolve(request, int(pk))
        caller = caller_from_request(request)
        acting = Caller(tenant=view.tenant, role=view.role, user=caller.user, key=caller.key, scopes=caller.scopes)
        acting.require(min_role=Role.ADMIN, scope=ApiKey.Scope.ADMIN)
        body = TenantUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        tenant_update(tenant=view.tenant, actor=caller.user, **body.validated_data)
        return Response(TenantSerializer(view).data)


_MEMBER_ID = id_parameter("user_id", "the member's user id")


@extend_schema_view(
    list=extend_schema(
        summary="Members of your department (admins)",
        parameters=[MemberListQuerySerializer],
        responses=MemberSerializer(many=True),
    ),
    create=extend_schema(
        summary="Add a user to your department (admins; only owners grant owner)",
        request=MemberCreateSerializer,
        responses={201: MemberSerializer},
    ),
    retrieve=extend_schema(summary="A member", parameters=[_MEMBER_ID], responses=MemberSerializer),
    partial_update=extend_schema(
        summary="Change a member's role (admins; only owners touch owners)",
        parameters=[_MEMBER_ID],
        request=MemberUpdateSerializer,
        responses=MemberSerializer,
    ),
    destroy=extend_schema(
        summary="Remove a member (admins; the last owner stays)", parameters=[_MEMBER_ID], responses={204: None}
    ),
)
class MemberViewSet(JsonViewSet):
    lookup_field = "user_id"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    serializer_class = MemberSerializer

    def list(self, request: Request) -> Response:
        caller = admin_caller(request)
        query = MemberListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        page = self.paginate_queryset(membership_list(tenant=caller.tenant, role=query.validated_data.get("role")))
        return self.get_paginated_response(MemberSerializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        caller = admin_caller(request)
        body = MemberCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        user = user_get_by_username(username=body.validated_data["username"])
        membership = membership_assign(
            tenant=caller.tenant, user=user, role=body.validated_data["role"], actor_role=caller.role, actor=caller.user
        )
        membership = membership_get_in_tenant(tenant=caller.tenant, user_id=membership.user_id)
        return Response(MemberSerializer(membership).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, user_id: str) -> Response:
        caller = admin_caller(request)
        return Response(MemberSerializer(membership_get_in_tenant(tenant=caller.tenant, user_id=int(user_id))).data)

    def partial_update(self, request: Request, user_id: str) -> Response:
        caller = admin_caller(request)
        membership = membership_get_in_tenant(tenant=caller.tenant, user_id=int(user_id))
        body = MemberUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        membership_assign(
            tenant=caller.tenant,
            user=membership.user,
            role=body.validated_data["role"],
            actor_role=caller.role,
            actor=caller.user,
        )
        return Response(MemberSerializer(membership_get_in_tenant(tenant=caller.tenant, user_id=int(user_id))).data)

    def destroy(self, request: Request, user_id: str) -> Response:
        caller = admin_caller(request)
        membership_revoke(tenant=caller.tenant, user_id=int(user_id), actor_role=caller.role, actor=caller.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


_KEY_ID = id_parameter("id", "the API key's id")


@extend_schema_view(
    list=extend_schema(
        summary="API keys of your department (admins); secrets are never shown again",
        parameters=[ApiKeyListQuerySerializer],
        responses=ApiKeySerializer(many=True),
    ),
    create=extend_schema(
        summary="Create an API key (admins); the secret is in this response only",
        request=ApiKeyCreateSerializer,
        responses={201: ApiKeyCreatedSerializer},
    ),
    retrieve=extend_schema(summary="An API key", parameters=[_KEY_ID], responses=ApiKeySerializer),
    destroy=extend_schema(summary="Revoke an API key (admins)", parameters=[_KEY_ID], responses={204: None}),
)
class ApiKeyViewSet(JsonViewSet):
    http_method_names = ["get", "post", "delete", "head", "options"]
    serializer_class = ApiKeySerializer

    def list(self, request: Request) -> Response:
        caller = admin_caller(request)
        query = ApiKeyListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        keys = api_key_list(tenant=caller.tenant, active=query.validated_data["active"])
        page = self.paginate_queryset(keys.select_related("created_by"))
        return self.get_paginated_response(ApiKeySerializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        caller = admin_caller(request)
        body = ApiKeyCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        key, secret = api_key_issue(
            tenant=caller.tenant,
            name=data["name"],
            role=data["role"],
            scopes=data.get("scopes"),
            expires_at=data.get("expires_at"),
            issuer_role=caller.role,
            issuer_scopes=caller.scopes if caller.key is not None else None,
            created_by=caller.user,
        )
        key.secret = secret  # type: ignore[attr-defined]
        return Response(ApiKeyCreatedSerializer(key).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, pk: str) -> Response:
        caller = admin_caller(request)
        return Response(ApiKeySerializer(api_key_get(tenant=caller.tenant, key_id=int(pk))).data)

    def destroy(self, request: Request, pk: str) -> Response:
        caller = admin_caller(request)
        api_key_revoke(tenant=caller.tenant, key_id=int(pk), actor=caller.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(
        summary="Usage of your department by day, user, adapter, model, API key or source (admins)",
        parameters=[UsageQuerySerializer],
        responses=UsageRowSerializer(many=True),
    ),
)
class UsageViewSet(JsonViewSet):
    http_method_names = ["get", "head", "options"]
    serializer_class = UsageRowSerializer

    def list(self, request: Request) -> Response:
        caller = admin_caller(request)
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = dict(query.validated_data)
        rows = usage_summary(
            tenant=caller.tenant,
            group_by=q.pop("group_by"),
            since=q.pop("since", None),
            until=q.pop("until", None),
            filters=q,
        )
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(UsageRowSerializer(page, many=True).data)  # type: ignore[arg-type]


router = SimpleRouter()
router.register("tenants", TenantViewSet, basename="tenant")
router.register("members", MemberViewSet, basename="member")
router.register("api-keys", ApiKeyViewSet, basename="api-key")
router.register("usage", UsageViewSet, basename="usage")

urlpatterns = [path("", include(router.urls))]
