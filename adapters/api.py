"""REST endpoints of the adapters app under /api/v1/: the LoRA adapters a department may use (read only).

Any role may list them (they are what chat and /v1/ accept as ``model``); managing the catalog and assignments is
platform staff's work in the console. Another department's adapter answers 404, like a missing one. Where an
adapter lives on disk is not shown; ``served`` tells whether a backend has it loaded and confirmed right now.
"""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from adapters.models import Adapter, AdapterFormat
from adapters.selectors import adapter_list_for_tenant
from core.api.views import JsonViewSet, id_parameter
from core.errors import NotFound
from inference_pool.selectors import served_model_list
from tenants.auth import caller_from_request
from tenants.models import Role


def _served_names() -> set[str]:
    return {s.adapter for s in served_model_list() if s.adapter}


class AdapterSerializer(serializers.ModelSerializer[Adapter]):
    base_model = serializers.CharField(source="base_model.name", read_only=True)
    format = serializers.ChoiceField(choices=AdapterFormat.choices, read_only=True)
    is_default = serializers.BooleanField(read_only=True, help_text="used when a chat names no adapter")
    shared = serializers.BooleanField(source="is_shared", read_only=True, help_text="false: your department's own")
    served = serializers.SerializerMethodField(help_text="loaded and confirmed on a healthy backend right now")

    class Meta:
        model = Adapter
        fields = ["id", "name", "base_model", "format", "rank", "description", "is_default", "shared", "served"]
        read_only_fields = fields

    def get_served(self, adapter: Adapter) -> bool:
        return adapter.name in self.context.get("served", set())


@extend_schema_view(
    list=extend_schema(summary="Adapters your department may use", responses=AdapterSerializer(many=True)),
    retrieve=extend_schema(
        summary="An adapter your department may use",
        parameters=[id_parameter("id", "the adapter's id")],
        responses=AdapterSerializer,
    ),
)
class AdapterViewSet(JsonViewSet):
    http_method_names = ["get", "head", "options"]
    serializer_class = AdapterSerializer

    def list(self, request: Request) -> Response:
        caller = caller_from_request(request)
        caller.require(min_role=Role.VIEWER)
        page = self.paginate_queryset(adapter_list_for_tenant(tenant=caller.tenant))
        data = AdapterSerializer(page, many=True, context={"served": _served_names()}).data
        return self.get_paginated_response(data)

    def retrieve(self, request: Request, pk: str) -> Response:
        caller = caller_from_request(request)
        caller.require(min_role=Role.VIEWER)
        adapter = adapter_list_for_tenant(tenant=caller.tenant).filter(pk=int(pk)).first()
        if adapter is None:
            raise NotFound("Adapter not found.")
        return Response(AdapterSerializer(adapter, context={"served": _served_names()}).data)


router = SimpleRouter()
router.register("adapters", AdapterViewSet, basename="adapter")

urlpatterns = [path("", include(router.urls))]
