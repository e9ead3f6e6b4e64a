"""REST endpoints of the knowledge app under /api/v1/: knowledge bases (CRUD), documents (multipart upload, list,
status, delete, re-index, cancel) and search.

Reading needs the ``knowledge:read`` scope and a role that may read the knowledge base (others answer 404, like a
missing one); uploading and document changes need ``knowledge:write`` and a role that may upload; creating,
changing and deleting knowledge bases need ``knowledge:write`` and the admin role.
"""

from __future__ import annotations

from typing import Any

from django.urls import include, path, re_path
from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import APIView

from core.api.views import ID_PATTERN, JsonViewSet, id_parameter
from core.errors import InvalidInput, PermissionDenied
from knowledge import selectors, services
from knowledge.models import Access, Document, KnowledgeBase
from knowledge.selectors import MODES, SearchHit, chunk_search
from tenants.auth import Caller, caller_from_request
from tenants.models import ApiKey, Role

READ = ApiKey.Scope.KNOWLEDGE_READ
WRITE = ApiKey.Scope.KNOWLEDGE_WRITE
ROLE_CHOICES = [Role.MEMBER, Role.VIEWER, Role.ADMIN, Role.OWNER]


def _caller(request: Request, *, min_role: str = Role.VIEWER, scope: str = READ) -> Caller:
    caller = caller_from_request(request)
    caller.require(min_role=min_role, scope=scope)
    return caller


def _readable_kb(caller: Caller, kb_id: Any) -> KnowledgeBase:
    return selectors.knowledge_base_get(tenant=caller.tenant, role=caller.role, knowledge_base_id=int(kb_id))


def _uploadable_kb(caller: Caller, kb_id: Any) -> KnowledgeBase:
    kb = _readable_kb(caller, kb_id)
    if not kb.may_upload(caller.role):
        raise PermissionDenied("Your role may not change documents in this knowledge base.")
    return kb


# --- serializers ----------------------------------------------------------------------------------------


class KnowledgeBaseSerializer(serializers.ModelSerializer[KnowledgeBase]):
    read_roles = serializers.ListField(child=serializers.CharField())
    upload_roles = serializers.ListField(child=serializers.CharField())
    chunk_count = serializers.IntegerField(source="bm25_chunk_count")

    class Meta:
        model = KnowledgeBase
        fields = [
            "id",
            "name",
            "description",
            "read_access",
            "read_roles",
            "upload_access",
            "upload_roles",
            "embedding_model",
            "embedding_dim",
            "pending_embedding_model",
            "chunk_size",
            "chunk_overlap",
            "chunk_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class KnowledgeBaseWriteSerializer(serializers.Serializer[KnowledgeBase]):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    read_access = serializers.ChoiceField(choices=Access.choices, required=False)
    read_roles = serializers.ListField(child=serializers.ChoiceField(choices=ROLE_CHOICES), required=False)
    upload_access = serializers.ChoiceField(choices=Access.choices, required=False)
    upload_roles = serializers.ListField(child=serializers.ChoiceField(choices=ROLE_CHOICES), required=False)
    chunk_size = serializers.IntegerField(min_value=64, max_value=2000, required=False)
    chunk_overlap = serializers.IntegerField(min_value=0, max_value=1000, required=False)
    embedding_model = serializers.CharField(max_length=200, required=False)


class KnowledgeBaseUpdateSerializer(KnowledgeBaseWriteSerializer):
    name = serializers.CharField(max_length=200, required=False)


class DocumentSerializer(serializers.ModelSerializer[Document]):
    class Meta:
        model = Document
        fields = [
            "id",
            "knowledge_base_id",
            "filename",
            "detected_type",
            "size_bytes",
            "sha256",
            "status",
            "progress",
            "error",
            "pages",
            "chunk_count",
            "created_at",
            "updated_at",
            "indexed_at",
        ]
        read_only_fields = fields


class UploadSerializer(serializers.Serializer[Any]):
    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True, use_url=False), min_length=1, max_length=100
    )


class UploadResultSerializer(serializers.Serializer[Any]):
    document = DocumentSerializer()
    duplicate = serializers.BooleanField(help_text="the same file (sha256) is already in this knowledge base")


class SearchSerializer(serializers.Serializer[Any]):
    query = serializers.CharField(max_length=4000)
    knowledge_base_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=999_999_999_999_999_999),
        required=False,
        allow_null=True,
        help_text="omit for every knowledge base you may read",
    )
    k = serializers.IntegerField(min_value=1, max_value=100, default=8)
    mode = serializers.ChoiceField(choices=list(MODES), default="hybrid")


class SearchHitSerializer(serializers.Serializer[SearchHit]):
    chunk_id = serializers.IntegerField()
    document_id = serializers.IntegerField()
    document_name = serializers.CharField()
    knowledge_base_id = serializers.IntegerField()
    knowledge_base_name = serializers.CharField()
    page = serializers.IntegerField(allow_null=True)
    heading = serializers.CharField()
    score = serializers.FloatField()
    text = serializers.CharField()
    snippet = serializers.CharField()


class SearchResultSerializer(serializers.Serializer[Any]):
    results = SearchHitSerializer(many=True)


# --- knowledge bases ------------------------------------------------------------------------------------

_KB_ID = id_parameter("id", "the knowledge base's id")


@extend_schema_view(
    list=extend_schema(summary="Knowledge bases you may read", responses=KnowledgeBaseSerializer(many=True)),
    create=extend_schema(
        summary="Create a knowledge base (admin)",
        request=KnowledgeBaseWriteSerializer,
        responses={201: KnowledgeBaseSerializer},
    ),
    retrieve=extend_schema(summary="A knowledge base", parameters=[_KB_ID], responses=KnowledgeBaseSerializer),
    partial_update=extend_schema(
        summary="Change a knowledge base (admin); a new embedding_model re-embeds in the background, then switches",
        parameters=[_KB_ID],
        request=KnowledgeBaseUpdateSerializer,
        responses=KnowledgeBaseSerializer,
    ),
    destroy=extend_schema(
        summary="Delete a knowledge base with its documents (admin)", parameters=[_KB_ID], responses={204: None}
    ),
    search=extend_schema(
        summary="Search the knowledge bases you may read (hybrid: dense + BM25, fused by RRF)",
        request=SearchSerializer,
        responses=SearchResultSerializer,
    ),
)
class KnowledgeBaseViewSet(JsonViewSet):
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    serializer_class = KnowledgeBaseSerializer

    def list(self, request: Request) -> Response:
        caller = _caller(request)
        page = self.paginate_queryset(selectors.knowledge_base_list_readable(tenant=caller.tenant, role=caller.role))
        return self.get_paginated_response(KnowledgeBaseSerializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        caller = _caller(request, min_role=Role.ADMIN, scope=WRITE)
        body = KnowledgeBaseWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        kb = services.knowledge_base_create(tenant=caller.tenant, actor=caller.user, **body.validated_data)
        return Response(KnowledgeBaseSerializer(kb).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, pk: str) -> Response:
        caller = _caller(request)
        return Response(KnowledgeBaseSerializer(_readable_kb(caller, pk)).data)

    def partial_update(self, request: Request, pk: str) -> Response:
        caller = _caller(request, min_role=Role.ADMIN, scope=WRITE)
        kb = _readable_kb(caller, pk)
        body = KnowledgeBaseUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        kb = services.knowledge_base_update(knowledge_base=kb, actor=caller.user, **body.validated_data)
        return Response(KnowledgeBaseSerializer(kb).data)

    def destroy(self, request: Request, pk: str) -> Response:
        caller = _caller(request, min_role=Role.ADMIN, scope=WRITE)
        services.knowledge_base_delete(knowledge_base=_readable_kb(caller, pk), actor=caller.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=False, methods=["post"], url_path="search")
    def search(self, request: Request) -> Response:
        caller = _caller(request)
        body = SearchSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        hits = chunk_search(
            tenant=caller.tenant,
            knowledge_base_ids=data.get("knowledge_base_ids"),
            query=data["query"],
            k=data["k"],
            role=caller.role,
            mode=data["mode"],
        )
        return Response({"results": SearchHitSerializer(hits, many=True).data})  # type: ignore[arg-type]


# --- documents ------------------------------------------------------------------------------------------

_KB_PATH = id_parameter("kb_id", "the knowledge base's id")
_DOC_PATH = id_parameter("doc_id", "the document's id")


class DocumentListView(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        summary="The documents of a knowledge base, newest first, with status and progress",
        operation_id="knowledge_bases_documents_list",
        parameters=[_KB_PATH],
        responses=inline_serializer(
            "PaginatedDocumentList",
            {
                "count": serializers.IntegerField(),
                "next": serializers.URLField(allow_null=True),
                "previous": serializers.URLField(allow_null=True),
                "results": DocumentSerializer(many=True),
            },
        ),
    )
    def get(self, request: Request, kb_id: str) -> Response:
        caller = _caller(request)
        kb = _readable_kb(caller, kb_id)
        paginator = self.paginator
        documents = selectors.document_list(knowledge_base=kb)
        page = paginator.paginate_queryset(documents, request, view=self)
        return paginator.get_paginated_response(DocumentSerializer(page, many=True).data)

    @property
    def paginator(self) -> LimitOffsetPagination:
        if not hasattr(self, "_paginator"):
            self._paginator = LimitOffsetPagination()
        return self._paginator

    @extend_schema(
        summary="Upload files (multipart, field 'files', repeatable); each is queued for indexing",
        parameters=[_KB_PATH],
        request={"multipart/form-data": UploadSerializer},
        responses={201: UploadResultSerializer(many=True), 200: UploadResultSerializer(many=True)},
    )
    def post(self, request: Request, kb_id: str) -> Response:
        caller = _caller(request, min_role=Role.MEMBER, scope=WRITE)
        kb = _uploadable_kb(caller, kb_id)
        files = request.FILES.getlist("files") or request.FILES.getlist("file")
        if not files:
            raise InvalidInput("Send the files as multipart form field 'files'.", details={"files": ["required"]})
        if len(files) > 100:
            raise InvalidInput("At most 100 files per request.", details={"files": ["too many"]})
        results = services.document_upload(knowledge_base=kb, actor=caller.user, files=files)
        payload = [{"document": r.document, "duplicate": r.duplicate} for r in results]
        created = any(r.created for r in results)
        return Response(
            UploadResultSerializer(payload, many=True).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class DocumentDetailView(APIView):
    parser_classes = [JSONParser]

    @extend_schema(
        summary="A document's status and progress", parameters=[_KB_PATH, _DOC_PATH], responses=DocumentSerializer
    )
    def get(self, request: Request, kb_id: str, doc_id: str) -> Response:
        caller = _caller(request)
        doc = selectors.document_get(knowledge_base=_readable_kb(caller, kb_id), document_id=int(doc_id))
        return Response(DocumentSerializer(doc).data)

    @extend_schema(summary="Delete a document and its chunks", parameters=[_KB_PATH, _DOC_PATH], responses={204: None})
    def delete(self, request: Request, kb_id: str, doc_id: str) -> Response:
        caller = _caller(request, min_role=Role.MEMBER, scope=WRITE)
        doc = selectors.document_get(knowledge_base=_uploadable_kb(caller, kb_id), document_id=int(doc_id))
        services.document_delete(document=doc, actor=caller.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DocumentReindexView(APIView):
    parser_classes = [JSONParser]

    @extend_schema(
        summary="Index the stored file again",
        parameters=[_KB_PATH, _DOC_PATH],
        request=None,
        responses=DocumentSerializer,
    )
    def post(self, request: Request, kb_id: str, doc_id: str) -> Response:
        caller = _caller(request, min_role=Role.MEMBER, scope=WRITE)
        doc = selectors.document_get(knowledge_base=_uploadable_kb(caller, kb_id), document_id=int(doc_id))
        return Response(DocumentSerializer(services.document_reindex(document=doc, actor=caller.user)).data)


class DocumentCancelView(APIView):
    parser_classes = [JSONParser]

    @extend_schema(
        summary="Cancel a queued or running ingestion",
        parameters=[_KB_PATH, _DOC_PATH],
        request=None,
        responses=DocumentSerializer,
    )
    def post(self, request: Request, kb_id: str, doc_id: str) -> Response:
        caller = _caller(request, min_role=Role.MEMBER, scope=WRITE)
        doc = selectors.document_get(knowledge_base=_uploadable_kb(caller, kb_id), document_id=int(doc_id))
        return Response(DocumentSerializer(services.document_cancel(document=doc, actor=caller.user)).data)


router = SimpleRouter()
router.register("knowledge-bases", KnowledgeBaseViewSet, basename="knowledge-base")

_KB = rf"knowledge-bases/(?P<kb_id>{ID_PATTERN})/documents/"
urlpatterns = [
    path("", include(router.urls)),
    re_path(rf"^{_KB}$", DocumentListView.as_view(), name="knowledge-document-list"),
    re_path(rf"^{_KB}(?P<doc_id>{ID_PATTERN})/$", DocumentDetailView.as_view(), name="knowledge-document-detail"),
    re_path(
        rf"^{_KB}(?P<doc_id>{ID_PATTERN})/reindex/$", DocumentReindexView.as_view(), name="knowledge-document-reindex"
    ),
    re_path(
        rf"^{_KB}(?P<doc_id>{ID_PATTERN})/cancel/$", DocumentCancelView.as_view(), name="knowledge-document-cancel"
    ),
]
