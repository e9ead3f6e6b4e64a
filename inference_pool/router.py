"""The router: picks a backend for each request, streams from it, retries and keeps the books.

Per request: among enabled, non-draining backends that serve the base model (and have *confirmed* the adapter),
that are not down and whose circuit breaker lets traffic through, pick two at random and take the one with the
lower load score (power of two choices). The score uses the portal's own in-flight count (shared through Redis
when ``settings.REDIS_URL`` is set), the engine's load signals from its ``/metrics`` (scraped by the health probes),
adapter affinity and the backend's weight. A backend at ``max_concurrent`` takes nothing more: when every one is
full the request waits a bounded time for a slot, then gets ``Busy(retry_after)``.

A failure before the first token retries on another backend (at most ``max_retries`` times); after the first token
the stream ends with an ``ErrorEvent`` and the caller keeps the text so far. The hot path does no database work:
the backend list is a snapshot refreshed in the background, and breaker transitions are written after the fact.
A refresh that drops a backend or changes its address or key retires its client: new requests get a fresh one,
and the old one is closed when the last request using it ends (a count kept per client, no locks).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from core import metrics
from core.errors import Busy, InvalidInput, NotFound, UpstreamError
from inference_pool.breaker import CircuitBreaker
from inference_pool.clients import BackendTarget, EngineClient, EngineError, Finish, estimate_prompt_tokens
from inference_pool.errors import PoolErrorCode
from inference_pool.inflight import Inflight, LocalInflight, RedisInflight
from inference_pool.models import Backend, BackendAdapter, BaseModel
from inference_pool.types import ChatRequest, DoneEvent, ErrorEvent, PoolEvent, Telemetry, TokenEvent, UsageEvent

logger = logging.getLogger(__name__)

_AFFINITY_WINDOW_S = 120.0
_AFFINITY_FACTOR = 0.7


@dataclass(frozen=True, slots=True)
class PoolConfig:
    connect_timeout: float = 2.0
    first_token_timeout: float = 60.0
    read_timeout: float = 60.0
    max_retries: int = 2
    queue_timeout: float = 10.0
    retry_after: int = 2
    breaker_threshold: int = 3
    breaker_cooldown: float = 10.0
    refresh_interval: float = 2.0
    probe_interval: float = 5.0

    @classmethod
    def from_settings(cls) -> PoolConfig:
        return cls(
            connect_timeout=settings.POOL_CONNECT_TIMEOUT,
            first_token_timeout=settings.POOL_FIRST_TOKEN_TIMEOUT,
            read_timeout=settings.POOL_READ_TIMEOUT,
            max_retries=settings.POOL_MAX_RETRIES,
            queue_timeout=settings.POOL_QUEUE_TIMEOUT,
            retry_after=settings.POOL_RETRY_AFTER,
            breaker_threshold=settings.POOL_BREAKER_THRESHOLD,
            breaker_cooldown=settings.POOL_BREAKER_COOLDOWN,
            refresh_interval=settings.POOL_REFRESH_INTERVAL,
            probe_interval=settings.POOL_PROBE_INTERVAL,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    targets: tuple[BackendTarget, ...]
    models: frozenset[str]  # every base model name the registry knows
    adapters: frozenset[tuple[str, str]]  # every (model, adapter) registered, confirmed or not
    taken_at: float


def _load_snapshot() -> Snapshot:
    backends = Backend.objects.filter(enabled=True, draining=False).select_related("base_model")
    confirmed: dict[int, dict[str, str]] = {}
    numeric_refs: dict[int, set[int]] = {}
    registered: set[tuple[str, str]] = set()
    for a in BackendAdapter.objects.select_related("backend__base_model").only(
        "name", "engine_ref", "confirmed", "backend_id", "backend__base_model__name"
    ):
        registered.add((a.backend.base_model.name, a.name))
        if a.confirmed:
            confirmed.setdefault(a.backend_id, {})[a.name] = a.ref
        if a.engine_ref.isdigit():
            numeric_refs.setdefault(a.backend_id, set()).add(int(a.engine_ref))
    targets = tuple(
        BackendTarget(
            id=b.pk,
            name=b.name,
            kind=b.kind,
            base_url=b.base_url,
            model=b.base_model.name,
            model_id=b.model_id,
            max_concurrent=b.max_concurrent,
            weight=b.weight,
            context_length=b.context_length,
            api_key=b.api_key,
            adapters=confirmed.get(b.pk, {}),
            lora_ids=_lora_ids(b.load, numeric_refs.get(b.pk, set())) if b.kind == "llamacpp" else (),
            health=b.health,
            breaker=b.breaker,
            load={k: float(v) for k, v in (b.load or {}).items() if isinstance(v, int | float)},
            last_probe_ts=b.last_probe_at.timestamp() if b.last_probe_at else 0.0,
        )
        for b in backends
    )
    models = frozenset(BaseModel.objects.values_list("name", flat=True))
    return Snapshot(targets=targets, models=models, adapters=frozenset(registered), taken_at=time.monotonic())


def _lora_ids(load: Any, refs: set[int]) -> tuple[int, ...]:
    """The llama.cpp adapter ids a backend has loaded: as its last probe listed them, plus every registered one."""
    probed = load.get("lora_ids") if isinstance(load, dict) else None
    ids = {int(i) for i in probed if isinstance(i, int)} if isinstance(probed, list) else set()
    return tuple(sorted(ids | refs))


class Router:
    def __init__(self, *, config: PoolConfig | None = None, inflight: Inflight | None = None) -> None:
        self.config = config or PoolConfig.from_settings()
        if inflight is None:
            redis_url = settings.REDIS_URL
            inflight = RedisInflight(redis_url) if redis_url else LocalInflight()
        self.inflight = inflight
        self.snapshot: Snapshot | None = None
        self.clients: dict[int, EngineClient] = {}
        self._retired: set[EngineClient] = set()  # dropped from the registry, still used by running requests
        self.breakers: dict[int, CircuitBreaker] = {}
        self._affinity: dict[tuple[int, str], float] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._rng = random.Random()

    # --- registry snapshot ------------------------------------------------------------------------------------
    async def refresh(self) -> None:
        snap = await database_sync_to_async(_load_snapshot)()
        self._apply(snap)

    def _apply(self, snap: Snapshot) -> None:
        live = {t.id for t in snap.targets}
        for target in snap.targets:
            client = self.clients.get(target.id)
            if client is None or client.target != target:
                if client is not None and (client.target.base_url, client.target.api_key) != (
                    target.base_url,
                    target.api_key,
                ):
                    self._retire(client)
                    client = None
                if client is None:
                    client = EngineClient(
                        target, connect_timeout=self.config.connect_timeout, read_timeout=self.config.read_timeout
                    )
                else:
                    client.target = target
                self.clients[target.id] = client
            breaker = self.breakers.get(target.id)
            if breaker is None:
                breaker = self.breakers[target.id] = CircuitBreaker(
                    threshold=self.config.breaker_threshold, cooldown=self.config.breaker_cooldown
                )
            # Learn from probes and other processes through the row: a probe newer than our last transition that
            # found the engine up closes our breaker; a breaker opened elsewhere since then opens ours.
            if (
                breaker.state != "closed"
                and target.breaker == "closed"
                and target.health == "up"
                and target.last_probe_ts > breaker.changed_wall
            ):
                breaker.force_close()
                metrics.POOL_BREAKER_OPEN.labels(target.name).set(0)
        for gone in set(self.clients) - live:
            self._retire(self.clients.pop(gone))
        self.snapshot = snap

    def _retire(self, client: EngineClient) -> None:
        """The registry no longer routes to this client: close it now if idle, else after its last request."""
        client.retired = True
        if client.users:
            self._retired.add(client)
        else:
            self._spawn(client.aclose())

    def _done_with(self, client: EngineClient) -> None:
        client.users -= 1
        if client.retired and not client.users:
            self._retired.discard(client)
            self._spawn(client.aclose())

    async def _current(self) -> Snapshot:
        snap = self.snapshot
        if snap is None:
            await self.refresh()
            assert self.snapshot is not None
            return self.snapshot
        if time.monotonic() - snap.taken_at > self.config.refresh_interval and self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._refresh_in_background())
        return snap

    async def _refresh_in_background(self) -> None:
        try:
            await self.refresh()
        except Exception:
            logger.exception("pool registry refresh failed")
        finally:
            self._refreshing = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain_background(self) -> None:
        """Wait for the background work (registry refresh, breaker mirroring). Tests and shutdown use it."""
        while self._background or self._refreshing:
            pending = [*self._background, *([self._refreshing] if self._refreshing else [])]
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain_background()
        for client in [*self.clients.values(), *self._retired]:
            await client.aclose()
        self.clients.clear()
        self._retired.clear()
        await self.inflight.aclose()

    # --- selection --------------------------------------------------------------------------------------------
    def candidates(self, snap: Snapshot, request: ChatRequest) -> list[BackendTarget]:
        if request.model not in snap.models:
            raise NotFound(f"The model “{request.model}” is not known to the pool.", code=PoolErrorCode.MODEL_NOT_FOUND)
        adapter = request.adapter
        if adapter and (request.model, adapter) not in snap.adapters:
            raise NotFound(
                f"The adapter “{adapter}” is not served for the model “{request.model}”.",
                code=PoolErrorCode.ADAPTER_NOT_FOUND,
            )
        return [
            t
            for t in snap.targets
            if t.model == request.model
            and (not adapter or adapter in t.adapters)
            and t.health not in ("down", "loading")
        ]

    def score(self, target: BackendTarget, inflight: int, adapter: str | None, now: float) -> float:
        load = target.load
        if load and time.time() - target.last_probe_ts > 3 * self.config.probe_interval:
            load = {}  # stale signals mislead more than they help
        busy = max(inflight, load.get("running", 0.0)) + load.get("waiting", 0.0)
        score = (busy + 1.0) / (max(target.max_concurrent, 1) * max(target.weight, 0.01)) + 0.5 * load.get(
            "kv_usage", 0.0
        )
        if adapter and now - self._affinity.get((target.id, adapter), -1e9) < _AFFINITY_WINDOW_S:
            score *= _AFFINITY_FACTOR
        return score

    async def acquire(
        self, snap: Snapshot, request: ChatRequest, *, exclude: set[int], deadline: float
    ) -> tuple[BackendTarget, str] | None:
        """Lease a slot on the best of two random eligible backends; wait (bounded) while every one is full.

        Returns None when no backend is eligible at all (all down, open or already tried)."""
        while True:
            pool = [
                t for t in self.candidates(snap, request) if t.id not in exclude and self._breaker(t.id).available()
            ]
            if not pool:
                return None
            counts = await self.inflight.counts([t.id for t in pool])
            free = [t for t in pool if counts[t.id] < t.max_concurrent]
            if free:
                now = time.monotonic()
                pair = self._rng.sample(free, min(2, len(free)))  # random order too: ties go either way
                best = min(pair, key=lambda t: self.score(t, counts[t.id], request.adapter, now))
                lease = await self.inflight.try_acquire(best.id, limit=best.max_concurrent)
                if lease is not None:
                    self._breaker(best.id).claim()
                    metrics.POOL_INFLIGHT.labels(best.name).inc()
                    if request.adapter:
                        self._affinity[(best.id, request.adapter)] = now
                    return best, lease
                continue  # lost a race for the last slot: look again
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Busy(
                    "Every model server is busy. Try again in a few seconds.",
                    retry_after=self.config.retry_after,
                    details={"backends": len(pool)},
                )
            await self.inflight.wait_for_release(remaining)
            snap = self.snapshot or snap

    def _breaker(self, backend_id: int) -> CircuitBreaker:
        breaker = self.breakers.get(backend_id)
        if breaker is None:
            breaker = self.breakers[backend_id] = CircuitBreaker(
                threshold=self.config.breaker_threshold, cooldown=self.config.breaker_cooldown
            )
        return breaker

    async def _release(self, target: BackendTarget, lease: str) -> None:
        metrics.POOL_INFLIGHT.labels(target.name).dec()
        await self.inflight.release(target.id, lease)

    # --- outcome bookkeeping ------------------------------------------------------------------------------------
    def _failed(self, target: BackendTarget, exc: EngineError | None, reason: str) -> None:
        breaker = self._breaker(target.id)
        if exc is not None and not exc.trips_breaker:
            breaker.release_trial()
            return
        if breaker.record_failure():
            logger.warning(
                "circuit breaker opened", extra={"backend": target.name, "failures": breaker.failures, "why": reason}
            )
            metrics.POOL_BREAKER_OPEN.labels(target.name).set(1)
            self._spawn(_mirror_breaker(target.id, state="open", failures=breaker.failures, detail=reason))

    def _succeeded(self, target: BackendTarget) -> None:
        if self._breaker(target.id).record_success():
            logger.info("circuit breaker closed", extra={"backend": target.name})
            metrics.POOL_BREAKER_OPEN.labels(target.name).set(0)
            self._spawn(_mirror_breaker(target.id, state="closed", failures=0, detail=""))

    # --- the stream -------------------------------------------------------------------------------------------
    async def _start(
        self, request: ChatRequest
    ) -> tuple[BackendTarget, str, EngineClient, AsyncGenerator[Any, None], Any, int]:
        """Pick a backend and wait for its first event, retrying elsewhere on failure (at most ``max_retries``).

        The returned client is counted as in use (``users``) until the caller hands it back with ``_done_with``."""
        snap = await self._current()
        if not self.candidates(snap, request):
            raise UpstreamError(
                f"No model server can serve “{request.adapter or request.model}” right now.",
                code=PoolErrorCode.NO_BACKEND,
            )
        deadline = time.monotonic() + self.config.queue_timeout
        tried: set[int] = set()
        attempts = 0
        last_error: EngineError | None = None
        while attempts <= self.config.max_retries:
            picked = await self.acquire(snap, request, exclude=tried, deadline=deadline)
            if picked is None:
                break
            target, lease = picked
            tried.add(target.id)
            attempts += 1
            client = self.clients.get(target.id)
            if client is None:  # a refresh replaced the client between snapshot and pick
                await self._release(target, lease)
                continue
            client.users += 1  # a registry refresh now defers closing it until this request is done
            adapter_ref = target.adapters.get(request.adapter) if request.adapter else None
            events = client.stream_chat(request, adapter_ref=adapter_ref)
            # Phase 1: until the first event, failures are retried elsewhere.
            try:
                async with asyncio.timeout(self.config.first_token_timeout):
                    first = await anext(events)
            except (EngineError, TimeoutError, StopAsyncIteration) as exc:
                await events.aclose()
                self._done_with(client)
                await self._release(target, lease)
                err = (
                    exc
                    if isinstance(exc, EngineError)
                    else EngineError(
                        f"{target.name} sent no token within {self.config.first_token_timeout:g}s"
                        if isinstance(exc, TimeoutError)
                        else f"{target.name} closed the stream without an answer",
                        kind="timeout" if isinstance(exc, TimeoutError) else "protocol",
                    )
                )
                self._failed(target, err, err.kind)
                metrics.REQUESTS.labels(target.name, request.model, "retry").inc()
                logger.warning(
                    "attempt failed before the first token",
                    extra={"backend": target.name, "kind": err.kind, "attempt": attempts, "rid": request.request_id},
                )
                if not err.retryable:
                    raise InvalidInput(err.message, code=PoolErrorCode.ENGINE_REJECTED) from None
                last_error = err
                continue
            except BaseException:
                await events.aclose()
                self._done_with(client)
                await self._release(target, lease)
                self._breaker(target.id).release_trial()
                raise
            return target, lease, client, events, first, attempts
        if attempts == 0:
            raise UpstreamError(
                f"No model server can serve “{request.adapter or request.model}” right now.",
                code=PoolErrorCode.NO_BACKEND,
            )
        detail = f" ({last_error.message})" if last_error else ""
        raise UpstreamError(
            f"No model server could answer after {attempts} attempt(s){detail}. Try again shortly.",
            details={"attempts": attempts},
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[PoolEvent]:
        """Run one request: errors before the first token are raised (``Busy``, ``UpstreamError``, ``NotFound``,
        ``InvalidInput``); after it the stream ends with ``DoneEvent`` or ``ErrorEvent``."""
        started = time.perf_counter()
        target, lease, client, events, first, attempts = await self._start(request)
        # The relay: nothing here touches the database or blocks.
        adapter_label = request.adapter or "-"
        perf = time.perf_counter
        first_at = last_at = 0.0
        n_tokens = 0
        usage: UsageEvent | None = None
        finish = "stop"
        outcome = "cancelled"
        error: EngineError | None = None
        try:
            if type(first) is TokenEvent:
                first_at = last_at = perf()
                n_tokens = 1
                yield first
            elif type(first) is UsageEvent:
                usage = first
            elif type(first) is Finish:
                finish = first.reason
            async for event in events:  # the hot loop: one type check, one clock read, one yield per token
                cls = type(event)
                if cls is TokenEvent:
                    last_at = perf()
                    if not n_tokens:
                        first_at = last_at
                    n_tokens += 1
                    yield event
                elif cls is UsageEvent:
                    usage = event
                elif cls is Finish:
                    finish = event.reason
            outcome = "ok"
        except EngineError as exc:
            outcome, error = "error", exc
        finally:
            await events.aclose()
            self._done_with(client)
            await self._release(target, lease)
            ended = perf()
            ttft = (first_at - started) if n_tokens else None
            tpot = (last_at - first_at) / (n_tokens - 1) if n_tokens > 1 else None
            if usage is None:
                usage = UsageEvent(estimate_prompt_tokens(request.messages), n_tokens, estimated=True)
            telemetry = Telemetry(
                ttft_s=ttft,
                tpot_s=tpot,
                tokens_in=usage.prompt_tokens,
                tokens_out=usage.completion_tokens,
                backend=target.name,
                model=request.model,
                adapter=request.adapter,
                outcome=outcome,  # type: ignore[arg-type]
                attempts=attempts,
                duration_s=ended - started,
                usage_from_engine=not usage.estimated,
            )
            if outcome == "ok":
                self._succeeded(target)
            elif outcome == "error":
                self._failed(target, error, "stream broke after the first token")
            else:
                self._breaker(target.id).release_trial()
            _observe(telemetry, adapter_label)
        if outcome == "ok":
            yield usage
            yield DoneEvent(telemetry, finish_reason=finish)
        elif error is not None:
            yield usage
            yield ErrorEvent(
                PoolErrorCode.UPSTREAM_INTERRUPTED,
                "The model server stopped in the middle of the answer; the text so far is kept.",
                telemetry,
            )


def _observe(t: Telemetry, adapter_label: str) -> None:
    if t.ttft_s is not None:
        metrics.TTFT.labels(t.backend, t.model, adapter_label).observe(t.ttft_s)
    if t.tpot_s is not None:
        metrics.TPOT.labels(t.backend, t.model, adapter_label).observe(t.tpot_s)
    metrics.REQUESTS.labels(t.backend, t.model, t.outcome).inc()


async def _mirror_breaker(backend_id: int, *, state: str, failures: int, detail: str) -> None:
    """Write a breaker transition to the Backend row (passive marking), off the request's path."""
    fields: dict[str, Any] = {"breaker": state, "consecutive_failures": failures}
    if state == "open":
        fields.update(last_failure_at=timezone.now(), health_detail=f"breaker opened: {detail}"[:300])
    try:
        await database_sync_to_async(Backend.objects.filter(pk=backend_id).update)(**fields)
    except Exception:
        logger.exception("could not record the breaker state", extra={"backend_id": backend_id})


_routers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Router] = weakref.WeakKeyDictionary()


def get_router() -> Router:
    """The router of the running event loop (its HTTP connections and Redis client belong to that loop)."""
    loop = asyncio.get_running_loop()
    router = _routers.get(loop)
    if router is None:
        router = _routers[loop] = Router()
    return router
