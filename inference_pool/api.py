"""REST endpoints of the inference pool under /api/v1/ (platform staff, signed in): the base models the pool serves.

A fresh install knows only the managed local model; pointing the pool at an external engine starts here:
``POST /api/v1/base-models/`` registers the model's name (what clients send as ``model``), then a backend serving
it is added in the console's pool page. API keys belong to one department and are refused (403).
"""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from core.api.views import JsonViewSet, id_parameter
from core.errors import NotFound, PermissionDenied
from inference_pool.models import BaseModel
from inference_pool.selectors import base_model_list
from inference_pool.services import base_model_create
from tenants.auth import ApiKeyPrincipal
from tenants.selectors import require_staff


class BaseModelSerializer(serializers.ModelSerializer[BaseModel]):
    class Meta:
        model = BaseModel
        fields = ["id", "name", "family", "params_b", "context_length", "layers", "kv_heads", "head_dim", "created_at"]
        read_only_fields = fields


class BaseModelCreateSerializer(serializers.Serializer[BaseModel]):
    name = serializers.CharField(max_length=200, help_text="the name clients send as 'model'")
    family = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    params_b = serializers.FloatField(min_value=0, required=False, default=0.0, help_text="billions of parameters")
    context_length = serializers.IntegerField(min_value=128, max_value=10_000_000, required=False, default=4096)
    layers = serializers.IntegerField(min_value=0, max_value=10_000, required=False, default=0)
    kv_heads = serializers.IntegerField(min_value=0, max_value=10_000, required=False, default=0)
    head_dim = serializers.IntegerField(min_value=0, max_value=100_000, required=False, default=0)


def _staff(request: Request) -> None:
    if isinstance(request.user, ApiKeyPrincipal):
        raise PermissionDenied("The pool is run by platform staff signed in, not with an API key.")
    require_staff(user=request.user)


@extend_schema_view(
    list=extend_schema(summary="Base models of the pool (platform staff)", responses=BaseModelSerializer(many=True)),
    create=extend_schema(
        summary="Register a base model (platform staff)",
        request=BaseModelCreateSerializer,
        responses={201: BaseModelSerializer},
    ),
    retrieve=extend_schema(
        summary="A base model (platform staff)",
        parameters=[id_parameter("id", "the base model's id")],
        responses=BaseModelSerializer,
    ),
)
class BaseModelViewSet(JsonViewSet):
    http_method_names = ["get", "post", "head", "options"]
    serializer_class = BaseModelSerializer

    def list(self, request: Request) -> Response:
        _staff(request)
        page = self.paginate_queryset(base_model_list())
        return self.get_paginated_response(BaseModelSerializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        _staff(request)
        body = BaseModelCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        model = base_model_create(actor=request.user, **body.validated_data)
        return Response(BaseModelSerializer(model).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, pk: str) -> Response:
        _staff(request)
        model = base_model_list().filter(pk=int(pk)).first()
        if model is None:
            raise NotFound()
        return Response(BaseModelSerializer(model).data)


router = SimpleRouter()
router.register("base-models", BaseModelViewSet, basename="base-model")

urlpatterns = [path("", include(router.urls))]
