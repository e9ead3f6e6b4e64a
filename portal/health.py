"""Health of the parts the portal depends on, for /healthz."""

from __future__ import annotations

import asyncio
import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection

from inference_pool.health import engine_health
from portal.celery import app


def check_database() -> dict[str, object]:
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cur.fetchone()
        if not row:
            return {"ok": False, "error": "the vector extension is missing (run migrations)"}
        return {"ok": True, "pgvector": row[0]}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}


def check_broker() -> dict[str, object]:
    url = settings.CELERY_BROKER_URL
    if url.startswith("filesystem://"):
        folder = settings.CELERY_QUEUE_DIR / "in"
        return {"ok": folder.is_dir(), "transport": "filesystem"}
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return {"ok": True, "transport": url.split("://", 1)[0]}
    except Exception as exc:
        return {"ok": False, "transport": url.split("://", 1)[0], "error": type(exc).__name__}


async def _channel_roundtrip() -> bool:
    layer = get_channel_layer()
    if layer is None:
        return False
    channel = await layer.new_channel()
    token = uuid.uuid4().hex
    await layer.send(channel, {"type": "healthz.ping", "token": token})
    message = await asyncio.wait_for(layer.receive(channel), timeout=2)
    return bool(message.get("token") == token)


def check_channel_layer() -> dict[str, object]:
    backend = str(settings.CHANNEL_LAYERS["default"]["BACKEND"]).rsplit(".", 1)[-1]
    try:
        return {"ok": async_to_sync(_channel_roundtrip)(), "backend": backend}
    except Exception as exc:
        return {"ok": False, "backend": backend, "error": type(exc).__name__}


def check_engine() -> dict[str, object]:
    return engine_health()


def health_report() -> tuple[bool, dict[str, dict[str, object]]]:
    checks = {
        "database": check_database(),
        "broker": check_broker(),
        "channel_layer": check_channel_layer(),
        "engine": check_engine(),
    }
    return all(bool(c.get("ok")) for c in checks.values()), checks
