"""REST endpoint of the guardrails app under /api/v1/: the department's guard policy.

``GET /api/v1/guardrail-policy/``: the policy in force (the defaults until an admin changes it), for every role.
``PUT``/``PATCH``: change it (admins; a key needs the ``admin`` scope). ``PATCH`` changes only the fields sent;
``PUT`` sets every field (the ones left out go back to the defaults). A change applies to the next request.
"""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.views import JsonViewSet
from guardrails.policy import DEFAULT_ENTITY_ACTIONS, STRICTNESS, ResolvedPolicy
from guardrails.selectors import guardrail_policy_get
from guardrails.services import guardrail_policy_update
from tenants.auth import caller_from_request
from tenants.models import ApiKey, Role


class CustomRecognizerSerializer(serializers.Serializer[dict[str, Any]]):
    entity_type = serializers.CharField(max_length=40, help_text="capital letters, digits and _ (not a built-in type)")
    pattern = serializers.CharField(max_length=300, help_text="a regular expression")
    score = serializers.FloatField(min_value=0, max_value=1, default=0.9)


class PolicySerializer(serializers.Serializer[ResolvedPolicy]):
    entity_actions = serializers.DictField(
        child=serializers.ChoiceField(choices=[("allow", "allow"), ("mask", "mask"), ("block", "block")]),
        help_text="entity type → allow, mask or block",
    )
    injection_strictness = serializers.ChoiceField(choices=[(s, s) for s in STRICTNESS])
    custom_recognizers = CustomRecognizerSerializer(many=True)
    deny_lists = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField(max_length=200)),
        help_text="entity type → terms that are always that entity",
    )
    version = serializers.CharField(read_only=True, help_text="changes with every edit")


def _policy_data(policy: ResolvedPolicy) -> dict[str, Any]:
    return {
        "entity_actions": dict(policy.entity_actions),
        "injection_strictness": policy.injection_strictness,
        "custom_recognizers": [
            {"entity_type": p.entity_type, "pattern": p.pattern, "score": p.score} for p in policy.custom_patterns
        ],
        "deny_lists": {k: list(v) for k, v in policy.deny_lists},
        "version": policy.version,
    }


class GuardrailPolicyView(JsonViewSet):
    http_method_names = ["get", "put", "patch", "head", "options"]
    serializer_class = PolicySerializer

    @extend_schema(summary="Your department's guard policy (every role)", responses=PolicySerializer)
    def retrieve(self, request: Request) -> Response:
        caller = caller_from_request(request)
        caller.require(min_role=Role.VIEWER)
        return Response(_policy_data(guardrail_policy_get(tenant=caller.tenant)))

    def _write(self, request: Request, *, partial: bool) -> Response:
        caller = caller_from_request(request)
        caller.require(min_role=Role.ADMIN, scope=ApiKey.Scope.ADMIN)
        body = PolicySerializer(data=request.data, partial=partial)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        if not partial:
            data.setdefault("entity_actions", dict(DEFAULT_ENTITY_ACTIONS))
        if "custom_recognizers" in data:
            data["custom_recognizers"] = [dict(r) for r in data["custom_recognizers"]]
        guardrail_policy_update(tenant=caller.tenant, actor=caller.user, **data)
        return Response(_policy_data(guardrail_policy_get(tenant=caller.tenant)))

    @extend_schema(
        summary="Set your department's guard policy (admins)", request=PolicySerializer, responses=PolicySerializer
    )
    def update(self, request: Request) -> Response:
        return self._write(request, partial=False)

    @extend_schema(
        summary="Change parts of your department's guard policy (admins)",
        request=PolicySerializer,
        responses=PolicySerializer,
    )
    def partial_update(self, request: Request) -> Response:
        return self._write(request, partial=True)


urlpatterns = [
    path(
        "guardrail-policy/",
        GuardrailPolicyView.as_view({"get": "retrieve", "put": "update", "patch": "partial_update"}),
        name="guardrail-policy",
    ),
]
