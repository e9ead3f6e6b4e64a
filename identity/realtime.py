"""Sockets that follow the account: every WebSocket consumer of a signed-in person joins ``user_group(user_id)``;
``user_sockets_close`` tells them all to close (deprovisioning, sign-out everywhere).

A consumer joins with ``await self.channel_layer.group_add(user_group(user.pk), self.channel_name)`` and handles
the ``identity.revoked`` event (method ``identity_revoked``) by sending an error frame and closing with 4401.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

REVOKED_EVENT = "identity.revoked"
CLOSE_CODE = 4401


def user_group(user_id: int) -> str:
    return f"identity.user.{int(user_id)}"


def user_sockets_close(*, user_id: int, reason: str = "account_deactivated") -> None:
    """Close every open socket of the user (sync code; call it after the transaction commits)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(user_group(user_id), {"type": REVOKED_EVENT, "reason": reason})
    except Exception:
        logger.exception("could not tell the user's sockets to close", extra={"target_user_id": user_id})
