"""REST endpoints of the chat app under /api/v1/: conversations, their messages, and feedback on answers.

A conversation belongs to one user. An API key acts for the user who created it (``Caller.user``), so it sees that
user's conversations in its own department only; another user's or department's conversation answers 404.
Every endpoint needs the ``chat`` scope; viewers may chat.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.urls import include, path
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from chat.models import Conversation, Message
from chat.pipeline import ChatInput, ChatRun
from chat.selectors import conversation_get, conversation_list, message_get, message_list
from chat.services import (
    conversation_create,
    conversation_delete,
    conversation_rename,
    conversation_set_options,
    message_feedback_set,
)
from core.api.views import MAX_ID, JsonViewSet, id_parameter
from core.errors import ApplicationError, PermissionDenied
from tenants.auth import Caller, caller_from_request
from tenants.models import ApiKey, Role, UsageRecord


def chat_caller(request: Request) -> tuple[Caller, User]:
    caller = caller_from_request(request)
    caller.require(min_role=Role.VIEWER, scope=ApiKey.Scope.CHAT)
    if caller.user is None:
        raise PermissionDenied("This API key belongs to no user, so it has no conversations.")
    return caller, caller.user


# --- serializers ----------------------------------------------------------------------------------------


class ConversationSerializer(serializers.ModelSerializer[Conversation]):
    knowledge_base_ids = serializers.SerializerMethodField()

    class Meta:
        model = Conversation
        fields = ["id", "title", "adapter", "knowledge_base_ids", "created_at", "updated_at"]
        read_only_fields = fields

    def get_knowledge_base_ids(self, conversation: Conversation) -> list[int]:
        return sorted(kb.pk for kb in conversation.knowledge_bases.all())


class ConversationCreateSerializer(serializers.Serializer[Conversation]):
    title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    knowledge_base_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID), required=False, default=list, max_length=50
    )
    adapter = serializers.CharField(
        max_length=100, required=False, allow_blank=True, default="", help_text="blank: the base model"
    )


class ConversationUpdateSerializer(serializers.Serializer[Conversation]):
    title = serializers.CharField(max_length=200, required=False)
    knowledge_base_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID), required=False, max_length=50
    )
    adapter = serializers.CharField(max_length=100, required=False, allow_blank=True)


class CitationSerializer(serializers.Serializer[dict[str, Any]]):
    n = serializers.IntegerField()
    document_id = serializers.IntegerField()
    document_name = serializers.CharField()
    knowledge_base_id = serializers.IntegerField()
    page = serializers.IntegerField(allow_null=True, required=False)
    heading = serializers.CharField(allow_blank=True, required=False)
    snippet = serializers.CharField(allow_blank=True, required=False)
    chunk_id = serializers.IntegerField(required=False)


class MessageSerializer(serializers.ModelSerializer[Message]):
    conversation_id = serializers.IntegerField(read_only=True)
    citations = CitationSerializer(many=True, read_only=True)
    warnings = serializers.ListField(child=serializers.CharField(), source="guard_warnings", read_only=True)

    class Meta:
        model = Message
        fields = [
            "id",
            "conversation_id",
            "role",
            "text",
            "status",
            "error_code",
            "citations",
            "warnings",
            "model",
            "adapter",
            "tokens_in",
            "tokens_out",
            "ttft_ms",
            "tpot_ms",
            "feedback",
            "feedback_comment",
            "created_at",
        ]
        read_only_fields = fields


class AskSerializer(serializers.Serializer[Any]):
    text = serializers.CharField(max_length=20_000, help_text="the question")
    max_tokens = serializers.IntegerField(
        required=False, min_value=1, max_value=100_000, help_text="capped by the portal's limit"
    )


class ExchangeSerializer(serializers.Serializer[dict[str, Any]]):
    question = MessageSerializer()
    answer = MessageSerializer()


def conversation_ask(
    *, caller: Caller, user: User, conversation: Conversation, text: str, max_tokens: int | None = None
) -> tuple[int, int]:
    """One turn through the chat pipeline, consumed to the end (the REST door does not stream). Errors before the
    answer starts (quota, guardrails, busy pool, a generation already running) raise ``core.errors.*``.
    Returns the ids of the question and the answer."""
    run = ChatRun(
        ChatInput(
            tenant=caller.tenant,
            role=caller.role,
            text=text,
            user=user,
            api_key=caller.key,
            conversation=conversation,
            max_tokens=max_tokens,
            source=UsageRecord.Source.API if caller.key is not None else UsageRecord.Source.CHAT,
        )
    )

    async def consume() -> None:
        async for _ in run.stream():
            pass

    async_to_sync(consume)()
    if run.message_id is None or run.user_message_id is None:
        raise ApplicationError("The answer could not be recorded.")
    return run.user_message_id, run.message_id


class FeedbackSerializer(serializers.Serializer[Message]):
    feedback = serializers.ChoiceField(choices=Message.Feedback.choices, help_text="up, down, or empty to clear")
    comment = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class ConversationQuerySerializer(serializers.Serializer[Any]):
    q = serializers.CharField(required=False, max_length=200, allow_blank=True, help_text="words in the title")


# --- views ----------------------------------------------------------------------------------------------

_CONVERSATION_ID = id_parameter("id", "the conversation's id")


@extend_schema_view(
    list=extend_schema(
        summary="Your conversations, most recent first",
        parameters=[ConversationQuerySerializer],
        responses=ConversationSerializer(many=True),
    ),
    create=extend_schema(
        summary="Start a conversation (knowledge bases and adapter must be yours to use)",
        request=ConversationCreateSerializer,
        responses={201: ConversationSerializer},
    ),
    retrieve=extend_schema(summary="A conversation", parameters=[_CONVERSATION_ID], responses=ConversationSerializer),
    partial_update=extend_schema(
        summary="Rename a conversation or change its knowledge bases or adapter",
        parameters=[_CONVERSATION_ID],
        request=ConversationUpdateSerializer,
        responses=ConversationSerializer,
    ),
    destroy=extend_schema(
        summary="Delete a conversation, its messages and its PII vault",
        parameters=[_CONVERSATION_ID],
        responses={204: None},
    ),
)
class ConversationViewSet(JsonViewSet):
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    serializer_class = ConversationSerializer

    def list(self, request: Request) -> Response:
        caller, user = chat_caller(request)
        query = ConversationQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        conversations = conversation_list(tenant=caller.tenant, user=user, query=query.validated_data.get("q", ""))
        page = self.paginate_queryset(conversations.prefetch_related("knowledge_bases"))
        return self.get_paginated_response(ConversationSerializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        caller, user = chat_caller(request)
        body = ConversationCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        conversation = conversation_create(
            tenant=caller.tenant,
            user=user,
            role=caller.role,
            title=body.validated_data["title"],
            knowledge_base_ids=body.validated_data["knowledge_base_ids"],
            adapter=body.validated_data["adapter"],
        )
        return Response(ConversationSerializer(conversation).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, pk: str) -> Response:
        caller, user = chat_caller(request)
        conversation = conversation_get(tenant=caller.tenant, user=user, conversation_id=pk)
        return Response(ConversationSerializer(conversation).data)

    def partial_update(self, request: Request, pk: str) -> Response:
        caller, user = chat_caller(request)
        conversation = conversation_get(tenant=caller.tenant, user=user, conversation_id=pk)
        body = ConversationUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if "title" in data:
            conversation = conversation_rename(conversation=conversation, title=data["title"])
        if "knowledge_base_ids" in data or "adapter" in data:
            conversation = conversation_set_options(
                conversation=conversation,
                role=caller.role,
                knowledge_base_ids=data.get("knowledge_base_ids"),
                adapter=data.get("adapter"),
            )
        return Response(ConversationSerializer(conversation).data)

    def destroy(self, request: Request, pk: str) -> Response:
        caller, user = chat_caller(request)
        conversation = conversation_get(tenant=caller.tenant, user=user, conversation_id=pk)
        conversation_delete(conversation=conversation, actor=user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        methods=["GET"],
        summary="The messages of a conversation, oldest first",
        parameters=[_CONVERSATION_ID],
        responses=MessageSerializer(many=True),
    )
    @extend_schema(
        methods=["POST"],
        summary="Ask a question in a conversation and wait for the whole answer (to stream, use the browser "
        "socket or /v1/chat/completions)",
        parameters=[_CONVERSATION_ID],
        request=AskSerializer,
        responses={201: ExchangeSerializer},
    )
    @action(detail=True, methods=["get", "post"], url_path="messages")
    def messages(self, request: Request, pk: str) -> Response:
        caller, user = chat_caller(request)
        conversation = conversation_get(tenant=caller.tenant, user=user, conversation_id=pk)
        if request.method == "POST":
            body = AskSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            question_id, answer_id = conversation_ask(
                caller=caller, user=user, conversation=conversation, **body.validated_data
            )
            exchange = {
                "question": message_get(tenant=caller.tenant, user=user, message_id=question_id),
                "answer": message_get(tenant=caller.tenant, user=user, message_id=answer_id),
            }
            return Response(ExchangeSerializer(exchange).data, status=status.HTTP_201_CREATED)
        page = self.paginate_queryset(message_list(conversation=conversation))
        return self.get_paginated_response(MessageSerializer(page, many=True).data)


_MESSAGE_ID = id_parameter("id", "the message's id")


@extend_schema_view(
    retrieve=extend_schema(summary="A message", parameters=[_MESSAGE_ID], responses=MessageSerializer),
    feedback=extend_schema(
        summary="Rate an answer (up, down, or empty to clear)",
        parameters=[_MESSAGE_ID],
        request=FeedbackSerializer,
        responses=MessageSerializer,
    ),
)
class MessageViewSet(JsonViewSet):
    http_method_names = ["get", "post", "head", "options"]
    serializer_class = MessageSerializer

    def retrieve(self, request: Request, pk: str) -> Response:
        caller, user = chat_caller(request)
        return Response(MessageSerializer(message_get(tenant=caller.tenant, user=user, message_id=pk)).data)

    @action(detail=True, methods=["post"], url_path="feedback")
    def feedback(self, request: Request, pk: str) -> Response:
        caller, user = chat_caller(request)
        message = message_get(tenant=caller.tenant, user=user, message_id=pk)
        body = FeedbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        message = message_feedback_set(
            message=message,
            feedback=body.validated_data["feedback"],
            comment=body.validated_data["comment"],
            actor=user,
        )
        return Response(MessageSerializer(message).data)


router = SimpleRouter()
router.register("conversations", ConversationViewSet, basename="conversation")
router.register("messages", MessageViewSet, basename="message")

urlpatterns = [path("", include(router.urls))]
