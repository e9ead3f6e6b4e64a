"""WebSocket routes: each app with sockets contributes ``<app>/routing.py`` with ``websocket_urlpatterns``, named
here (an app listed here without the module fails at start-up, never silently)."""

from __future__ import annotations

from typing import Any

from agents import routing as agents_routing
from chat import routing as chat_routing


def websocket_urlpatterns() -> list[Any]:
    return [*chat_routing.websocket_urlpatterns, *agents_routing.websocket_urlpatterns]
