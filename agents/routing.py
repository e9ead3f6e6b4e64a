"""WebSocket routes of the agents app (collected by ``portal.routing``)."""

from __future__ import annotations

from django.urls import path

from agents.consumers import AgentRunConsumer

websocket_urlpatterns = [path("ws/agents/runs/<str:run_id>/", AgentRunConsumer.as_asgi())]
