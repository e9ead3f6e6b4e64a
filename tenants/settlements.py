"""Settlements promised before they are written: a request's usage survives the process that served it.

A streamed answer ends for its client as soon as the last token is guarded; the answer's persistence and its quota
settlement follow in the background. Before the client's stream ends, the usage to settle is written to this
journal (one small record: ids and token counts, never text): Redis when the portal has one (every process of every
host sees it), else a file under ``PORTAL_VAR_DIR`` (the embedded topology's one host). The background settlement
removes the record once its transaction commits; a process killed in between leaves it, and
``settlement_replay`` (the quota sweep) settles it later, exactly once: the usage record is written in the same
statement that deletes the reservation row, so a replay of an entry already settled changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings

from tenants.quota import Reservation, quota_settle

logger = logging.getLogger(__name__)

REDIS_KEY = "portal:settlements:pending"


@dataclass(frozen=True, slots=True)
class PendingSettlement:
    """What ``quota_settle`` needs, by id (the tenant, the user and the key are looked up again on replay)."""

    request_id: str
    reservation_id: int
    tenant_id: int
    reserved: int
    day_start: str
    month_start: str
    tokens_in: int
    tokens_out: int
    source: str
    user_id: int | None
    api_key_id: int | None
    model: str
    adapter: str
    backend: str
    outcome: str
    at: float

    @classmethod
    def of(
        cls,
        *,
        reservation: Reservation,
        request_id: str,
        tokens_in: int,
        tokens_out: int,
        source: str,
        user_id: int | None,
        api_key_id: int | None,
        model: str,
        adapter: str,
        backend: str,
        outcome: str,
    ) -> PendingSettlement:
        return cls(
            request_id=request_id,
            reservation_id=reservation.id,
            tenant_id=reservation.tenant_id,
            reserved=reservation.tokens,
            day_start=reservation.day_start.isoformat(),
            month_start=reservation.month_start.isoformat(),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            source=source,
            user_id=user_id,
            api_key_id=api_key_id,
            model=model,
            adapter=adapter,
            backend=backend,
            outcome=outcome,
            at=time.time(),
        )

    @property
    def key(self) -> str:
        return f"{self.tenant_id}-{self.reservation_id}"

    def reservation(self) -> Reservation:
        return Reservation(
            id=self.reservation_id,
            tenant_id=self.tenant_id,
            tenant_slug="",
            tokens=self.reserved,
            day_start=datetime.fromisoformat(self.day_start),
            month_start=datetime.fromisoformat(self.month_start),
        )

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str | bytes) -> PendingSettlement:
        return cls(**json.loads(raw))


class Journal(Protocol):
    def put(self, entry: PendingSettlement) -> None: ...
    def remove(self, key: str) -> None: ...
    def entries(self) -> Iterator[PendingSettlement]: ...


class FileJournal:
    """One file per entry, written whole (a temporary name, then renamed): a killed process leaves either nothing
    or a complete entry. No fsync: the files must outlive the process, and the page cache does."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def put(self, entry: PendingSettlement) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{entry.key}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(entry.dumps())
        os.replace(tmp, path)

    def remove(self, key: str) -> None:
        (self.directory / f"{key}.json").unlink(missing_ok=True)

    def entries(self) -> Iterator[PendingSettlement]:
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob("*.json")):
            try:
                yield PendingSettlement.loads(path.read_text())
            except (OSError, ValueError, TypeError):
                logger.warning("unreadable settlement journal entry %s", path.name)


class RedisJournal:
    def __init__(self, url: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def put(self, entry: PendingSettlement) -> None:
        self.redis.hset(REDIS_KEY, entry.key, entry.dumps())

    def remove(self, key: str) -> None:
        self.redis.hdel(REDIS_KEY, key)

    def entries(self) -> Iterator[PendingSettlement]:
        raw: dict[bytes, bytes] = self.redis.hgetall(REDIS_KEY)  # type: ignore[assignment]
        for value in raw.values():
            try:
                yield PendingSettlement.loads(value)
            except (ValueError, TypeError):
                logger.warning("unreadable settlement journal entry in Redis")


_journal: Journal | None = None
_journal_for: tuple[str, str] | None = None


def journal() -> Journal:
    """Redis when the portal has one, else a folder under ``PORTAL_VAR_DIR`` (rebuilt when the settings change)."""
    global _journal, _journal_for
    where = (str(getattr(settings, "REDIS_URL", "") or ""), str(settings.VAR_DIR))
    if _journal is None or _journal_for != where:
        _journal = RedisJournal(where[0]) if where[0] else FileJournal(Path(where[1]) / "settlements")
        _journal_for = where
    return _journal


def settlement_promise(*, entry: PendingSettlement) -> None:
    """Record usage that will be settled after the client's stream ends (before it ends)."""
    journal().put(entry)


def settlement_kept(*, key: str) -> None:
    """The settlement committed: forget its promise."""
    try:
        journal().remove(key)
    except Exception:  # the replay settles nothing twice: a leftover entry is harmless
        logger.warning("could not remove a settled journal entry", exc_info=True)


def settlement_replay(*, older_than_s: float = 60.0) -> int:
    """Settle every promise older than ``older_than_s`` that its process did not keep (it died, or the database was
    away). Exactly once: the usage is recorded only if the reservation row still exists. Returns how many entries
    were settled now (not those that had been settled already)."""
    from django.contrib.auth import get_user_model

    from tenants.models import ApiKey

    j = journal()
    cutoff = time.time() - older_than_s
    settled = 0
    for entry in list(j.entries()):
        if entry.at > cutoff:
            continue
        user: Any = get_user_model().objects.filter(pk=entry.user_id).first() if entry.user_id else None
        api_key = ApiKey.unscoped.filter(pk=entry.api_key_id).first() if entry.api_key_id else None
        record = quota_settle(
            reservation=entry.reservation(),
            tokens_in=entry.tokens_in,
            tokens_out=entry.tokens_out,
            source=entry.source,
            user=user,
            api_key=api_key,
            model=entry.model,
            adapter=entry.adapter,
            backend=entry.backend,
            request_id=entry.request_id,
            outcome=entry.outcome,
            once=True,
        )
        if record is not None and record.pk is not None:
            settled += 1
            logger.info("settled a request's usage after its process ended", extra={"request_id": entry.request_id})
        j.remove(entry.key)
    return settled
