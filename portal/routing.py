"""WebSocket routes, collected from each app's ``routing.websocket_urlpatterns``."""

from __future__ import annotations

from importlib import import_module
from typing import Any

WEBSOCKET_APPS = ["chat", "knowledge", "agents"]


def websocket_urlpatterns() -> list[Any]:
    patterns: list[Any] = []
    for app in WEBSOCKET_APPS:
        try:
            module = import_module(f"{app}.routing")
        except ModuleNotFoundError as exc:
            if exc.name != f"{app}.routing":
                raise
            continue
        patterns += getattr(module, "websocket_urlpatterns", [])
    return patterns
