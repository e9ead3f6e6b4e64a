"""The chat socket's own overhead (``make bench-chat``).

Setup: a throw-away PostgreSQL (``PORTAL_EPHEMERAL_DB=1``), the portal's ASGI app under uvicorn in its own process
(the real consumer, pipeline, guardrails, quota, persistence and pool router), and a ZERO-DELAY FAKE ENGINE
(``FakeZeroDelayEngine`` below, a separate process, defined only here to isolate the portal's own overhead; the test
suite never fakes an engine). The fake engine stamps every token with the wall-clock time at which it leaves the
engine (``time.time_ns()``; all processes share the machine's clock), so the client measures the delay from the
engine to the browser's socket: the pool's SSE parsing and routing, the pipeline's streaming unmask and canary
check, the consumer's JSON frame and the WebSocket write.

1. baseline: one conversation at a time (nothing else running), the same token relay;
2. memory: the server's RSS before and after opening ``--sessions`` idle, authenticated sockets;
3. load: every session asks at once (``--sessions`` concurrent conversations, ``--tokens`` tokens each).

The answers stream through the output guard (PII, markdown and link redaction, holding back only what may still
grow into an entity or a link). The load is run twice: answers of time stamps only (as before the output guard
streamed; the guard's regular expressions run, the analyzer never), then a business answer that holds a heading,
a name, an e-mail address, a phone number, numbers and links, with a time stamp between its sentences and phrases
(only those are timed: ``relay_p99_ms_business``). The output guard's hold is read from the stored business answers:
how many later tokens arrived before each token was sent.

Ends with one line: ``ws_sessions=<n> errors=<n> relay_p99_ms=<x> relay_p99_ms_business=<x>
redaction_lag_tokens_p99=<n> kib_per_idle_connection=<x>``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# --- the zero-delay fake engine (benchmark only) ----------------------------------------------------------------
def _chunk(obj: dict[str, Any]) -> bytes:
    data = b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)  # one HTTP chunk per event, as engines send them


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def stamp(ns: int) -> str:
    """A time as a lowercase word (``zq`` + base 26), so that the guards see text, not numbers that look like PII."""
    out = ""
    while ns:
        ns, r = divmod(ns, 26)
        out = _LETTERS[r] + out
    return "zq" + out


def unstamp(word: str) -> int | None:
    if not word.startswith("zq") or len(word) < 10 or not word[2:].isalpha():
        return None
    value = 0
    for ch in word[2:]:
        value = value * 26 + _LETTERS.index(ch)
    return value


# What a business answer holds: headings, lists, capitalised words, numbers, a name, an e-mail
# address, a phone number, a link to the intranet and an image whose URL carries data (the last four are removed or
# redacted by the output guard on the way).
ANSWER = [
    "## Travel policy",
    "Questions go to Freja Nilsson in the travel office (freja.nilsson@example.com, +46 70 123 45 67).",
    "Book flights through the travel portal at least 14 days before you leave.",
    "The full policy is on [the intranet](https://intranet.example.com/policies/travel).",
    "![summary](https://collector.example/p.png?d=Q3-travel-numbers)",
    "- Economy class for flights under six hours.",
    "- Receipts go into the expense tool within 30 days of the trip.",
    "For trips longer than 3 days, ask your manager first and attach the approval to the booking.",
    "Per diem rates for Germany and Sweden are listed in the appendix.",
]
_SAFE_GAP = re.compile(r"[a-z]+,?")  # a stamp may follow a lowercase word, before another one


def answer_tokens(n: int) -> list[str | None]:
    """The first ``n`` tokens of the mixed answer (about five characters each); None marks a time stamp: one after
    every sentence, and one between two lowercase words after every three tokens (never inside a name, a number or
    an address)."""
    out: list[str | None] = []
    while len(out) < n:
        for sentence in ANSWER:
            since, word = 0, ""
            for i, token in enumerate(re.findall(r"\s*\S{1,5}", sentence)):
                if since >= 3 and token[:1] == " " and token[1:2].islower() and _SAFE_GAP.fullmatch(word):
                    out.append(None)
                    since = 0
                out.append(("\n" if i == 0 and out else "") + token)
                word = token.strip() if token[:1].isspace() or not word else word + token
                since += 1
            out.append(None)
    return out[:n]


class FakeZeroDelayEngine:
    """OpenAI-compatible ``/v1/chat/completions`` streaming ``max_tokens`` tokens with no delay. Each token's text
    is the wall-clock time at which it is written (``time.time_ns()``, as a word: see ``stamp``); asked "Who do I
    ask ...", it streams the business answer (``answer_tokens``), a time stamp between its sentences and phrases."""

    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1764325201, "model": "bench"}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = json.loads(await reader.readexactly(length)) if length else {}
                if not head.startswith(b"POST"):
                    writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{"status":"ok"}')
                    await writer.drain()
                    continue
                n = int(body.get("max_tokens") or 16)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                )
                writer.write(_chunk({**self.base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}))
                asked = json.dumps(body.get("messages", [])[-1:])
                plan = answer_tokens(n) if "Who do I ask" in asked else [None] * n
                for token in plan:
                    delta = {"content": token if token is not None else " " + stamp(time.time_ns())}
                    writer.write(
                        _chunk({**self.base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                    )
                    await writer.drain()
                writer.write(_chunk({**self.base, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}))
                usage = {"prompt_tokens": 40, "completion_tokens": n, "total_tokens": 40 + n}
                writer.write(_chunk({**self.base, "choices": [], "usage": usage}))
                writer.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def serve_fake_engine(port: int) -> None:
    async def main() -> None:
        server = await asyncio.start_server(FakeZeroDelayEngine().handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --- helpers ----------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def setup_database(*, sessions: int, engine_url: str) -> tuple[str, list[int]]:
    """Migrate the throw-away database, create a department, a member, its conversations and a session."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    from chat.models import Conversation
    from inference_pool.models import Backend
    from inference_pool.services import backend_register
    from tenants.middleware import SESSION_KEY
    from tenants.services import membership_set, tenant_create

    call_command("migrate", verbosity=0)
    tenant = tenant_create(name="Bench", slug="bench", tokens_per_day=10**12, tokens_per_month=10**13)
    tenant.quota.requests_per_minute = 10**6
    tenant.quota.save()
    user = User.objects.create_user(username="bench-member", password="bench-password-123")
    membership_set(tenant=tenant, user=user, role="member")
    backend = backend_register(
        name="fake-zero-delay",
        kind="openai",
        base_url=engine_url,
        model=settings.LLAMA_MODEL_NAME,
        max_concurrent=4096,
        context_length=4096,
    )
    Backend.objects.filter(pk=backend.pk).update(health="up")
    ids = [Conversation.objects.create(tenant=tenant, user=user).pk for _ in range(sessions + 4)]
    client = Client()
    client.force_login(user)
    session = client.session
    session[SESSION_KEY] = tenant.pk
    session.save()
    return client.cookies[settings.SESSION_COOKIE_NAME].value, ids


# --- the client side --------------------------------------------------------------------------------------------
class Session:
    def __init__(self, url: str, cookie: str, origin: str) -> None:
        self.url, self.cookie, self.origin = url, cookie, origin
        self.ws: Any = None

    async def open(self) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(
            self.url,
            origin=self.origin,  # type: ignore[arg-type]
            additional_headers={"Cookie": f"sessionid={self.cookie}"},
            max_size=2**22,
            open_timeout=60,
            ping_interval=None,
        )

    async def ask(self, text: str, tokens: int, stamps: int) -> tuple[list[float], str | None]:
        """Send one question; return the relay delays (ms) of its ``stamps`` time-stamped tokens and an error (None
        when done)."""
        await self.ws.send(json.dumps({"type": "send", "text": text, "max_tokens": tokens}))
        delays: list[float] = []
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), timeout=300)
            now = time.time_ns()
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "token":
                for word in frame["text"].split():
                    sent = unstamp(word)
                    if sent is not None:
                        delays.append((now - sent) / 1e6)
            elif kind == "done":
                return delays, None if len(delays) == stamps else f"{len(delays)} of {stamps} stamped tokens"
            elif kind == "error":
                return delays, f"{frame.get('code')}: {frame.get('message')}"

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


async def stage_medians() -> str:
    from asgiref.sync import sync_to_async

    from chat.models import Message

    def read() -> str:
        stages: dict[str, list[float]] = {}
        for timings in Message.unscoped.filter(role="assistant").values_list("timings", flat=True):
            for stage, ms in (timings or {}).items():
                stages.setdefault(stage, []).append(ms)
        return ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in stages.items())

    return await sync_to_async(read)()


async def redaction_lag(*, since: float) -> tuple[float, float, float]:
    """The output guard's hold, from the answers stored: p50 and p99 of how many later tokens arrived before a token
    was sent, over every token; and the pieces per answer that needed the PII analyzer."""
    from asgiref.sync import sync_to_async

    from chat.models import Message

    def read() -> tuple[float, float, float]:
        histogram: list[int] = []
        analyses: list[int] = []
        answers = Message.unscoped.filter(role="assistant", created_at__gte=datetime.fromtimestamp(since, UTC))
        for guard in answers.values_list("guardrails", flat=True):
            stream = ((guard or {}).get("output") or {}).get("stream") or {}
            for lag, count in enumerate(stream.get("lag_tokens") or []):
                histogram += [0] * (lag + 1 - len(histogram))
                histogram[lag] += count
            if stream:
                analyses.append(int(stream.get("analyses", 0)))
        lags = [float(lag) for lag, count in enumerate(histogram) for _ in range(count)]
        return pct(lags, 50), pct(lags, 99), statistics.mean(analyses) if analyses else float("nan")

    return await sync_to_async(read)()


def summary(label: str, delays: list[float], base: list[float] | None = None) -> str:
    p50, p95, p99 = pct(delays, 50), pct(delays, 95), pct(delays, 99)
    line = f"  {label:<34} tokens={len(delays):>6}  p50={p50:7.2f} ms  p95={p95:7.2f} ms  p99={p99:7.2f} ms"
    if base:
        b50, b95, b99 = pct(base, 50), pct(base, 95), pct(base, 99)
        line += f"   (x{p50 / b50:.1f} / x{p95 / b95:.1f} / x{p99 / b99:.1f} of the baseline)"
    return line


STAMPS_QUESTION = "Summarise our travel policy for a new colleague, please."
BUSINESS_QUESTION = "Who do I ask about the travel policy, and where is it?"  # the fake engine: a business answer


async def _loop_lag(out: list[float], every: float = 0.005) -> None:
    """How late this process's own event loop wakes up: a late client would be read as a slow portal."""
    while True:
        t = time.perf_counter()
        await asyncio.sleep(every)
        out.append((time.perf_counter() - t - every) * 1000)


async def gather_answers(
    sessions: list[Session], question: str, tokens: int, stamps: int
) -> tuple[list[float], int, dict[str, int], float]:
    """Every session asks at once: the relay delays, the errors (and why) and the seconds it took."""
    started = time.perf_counter()
    lags: list[float] = []
    monitor = asyncio.create_task(_loop_lag(lags))
    results = await asyncio.gather(*(s.ask(question, tokens, stamps) for s in sessions), return_exceptions=True)
    monitor.cancel()
    elapsed = time.perf_counter() - started
    print(f"  the benchmark client's own loop: woke up late by p99 {pct(lags, 99):.1f} ms, at most {max(lags):.1f} ms")
    delays: list[float] = []
    errors, reasons = 0, dict[str, int]()
    for r in results:
        if isinstance(r, BaseException):
            errors += 1
            reasons[type(r).__name__] = reasons.get(type(r).__name__, 0) + 1
            continue
        d, err = r
        delays += d
        if err:
            errors += 1
            reasons[err[:80]] = reasons.get(err[:80], 0) + 1
    return delays, errors, reasons, elapsed


async def run(args: argparse.Namespace, server_pid: int, port: int, cookie: str, ids: list[int]) -> dict[str, Any]:
    origin = f"http://127.0.0.1:{port}"
    url = f"ws://127.0.0.1:{port}/ws/chat/{{}}/"
    business_stamps = sum(t is None for t in answer_tokens(args.tokens))

    # warm-up: the server loads the guard models, opens its router, fills its caches
    warm = Session(url.format(ids[-1]), cookie, origin)
    await warm.open()
    for question, stamps in ((STAMPS_QUESTION, args.tokens), (BUSINESS_QUESTION, business_stamps)) * 2:
        _, err = await warm.ask(question, args.tokens, stamps)
        if err:
            raise SystemExit(f"warm-up failed: {err}")
    await warm.close()

    # 1. baseline: one conversation at a time
    base_delays: list[float] = []
    business_base: list[float] = []
    single = Session(url.format(ids[-2]), cookie, origin)
    await single.open()
    for question, stamps, delays in (
        (STAMPS_QUESTION, args.tokens, base_delays),
        (BUSINESS_QUESTION, business_stamps, business_base),
    ):
        for _ in range(args.baseline_turns):
            d, err = await single.ask(question, args.tokens, stamps)
            if err:
                raise SystemExit(f"baseline failed: {err}")
            delays += d
    await single.close()
    print(summary("baseline (1 session, sequential)", base_delays))
    print(summary("  business answers", business_base))

    # 2. memory per idle connection
    await asyncio.sleep(1.0)
    before = rss_kib(server_pid)
    sessions = [Session(url.format(ids[i]), cookie, origin) for i in range(args.sessions)]
    errors = 0
    opened = await asyncio.gather(*(s.open() for s in sessions), return_exceptions=True)
    failed_open = [o for o in opened if isinstance(o, BaseException)]
    errors += len(failed_open)
    await asyncio.sleep(2.0)  # every consumer has loaded its conversation and is idle
    after = rss_kib(server_pid)
    live = [s for s, o in zip(sessions, opened, strict=True) if not isinstance(o, BaseException)]
    kib_per_idle = (after - before) / max(len(live), 1)
    print(
        f"  server RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB with {len(live)} idle sockets"
        f" = {kib_per_idle:.1f} KiB per idle connection"
    )

    # 3. every session asks at once: time stamps, then business answers
    load_delays, failed, reasons, elapsed = await gather_answers(live, STAMPS_QUESTION, args.tokens, args.tokens)
    errors += failed
    print("  pipeline stages under load (median ms): " + await stage_medians())
    print(summary(f"{len(live)} concurrent conversations", load_delays, base_delays))
    rate = len(load_delays) / elapsed
    print(f"  {len(live)} answers of {args.tokens} tokens in {elapsed:.1f} s ({rate:.0f} tokens/s relayed)")
    await asyncio.sleep(1.0)
    since = time.time()
    business, failed, more, elapsed = await gather_answers(live, BUSINESS_QUESTION, args.tokens, business_stamps)
    errors += failed
    reasons.update(more)
    print(summary(f"{len(live)} concurrent business answers", business, business_base))
    print(f"  {len(live)} business answers of {args.tokens} tokens in {elapsed:.1f} s")
    await asyncio.gather(*(s.close() for s in live), return_exceptions=True)
    if reasons:
        print("  errors: " + "; ".join(f"{k} ×{v}" for k, v in reasons.items()))
    lag50, lag99, analyses = await redaction_lag(since=since)
    print(
        f"  output guard hold (business answers under load): p50 {lag50:.0f} / p99 {lag99:.0f} tokens before a"
        f" token is sent; {analyses:.1f} pieces per answer needed the PII analyzer"
    )
    return {
        "errors": errors,
        "relay_p99_ms": pct(load_delays, 99),
        "relay_p99_ms_business": pct(business, 99),
        "lag99": lag99,
        "kib": kib_per_idle,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per answer")
    parser.add_argument("--baseline-turns", type=int, default=10)
    parser.add_argument("--serve-fake-engine", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake_engine:
        serve_fake_engine(args.serve_fake_engine)
        return
    os.environ.setdefault("PORTAL_EPHEMERAL_DB", "1")
    engine_port, web_port = free_port(), free_port()
    engine = subprocess.Popen([sys.executable, __file__, "--serve-fake-engine", str(engine_port)])
    server = None
    try:
        wait_port(engine_port)
        cookie, ids = setup_database(sessions=args.sessions, engine_url=f"http://127.0.0.1:{engine_port}")
        # The client imported Django and the portal's apps to set up the database: millions of objects that every
        # full garbage collection would walk, a pause of 1-2 s in which no frame is read (measured: whole answers
        # "arriving" up to 2.3 s late while the server had sent them). Out of the collector's reach from here on.
        gc.collect()
        gc.freeze()
        env = {k: v for k, v in os.environ.items() if k not in ("PORTAL_EPHEMERAL_DB", "PROMETHEUS_MULTIPROC_DIR")}
        env.update(DEBUG="false", LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))  # DATABASE_URL: the throw-away one
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "portal.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(web_port),
                "--ws",
                "websockets-sansio",
                "--lifespan",
                "on",  # as the launcher and the container start it: the guards' models load and are frozen
                "--log-level",
                "warning",
                "--no-access-log",
                "--backlog",
                "2048",
            ],
            cwd=ROOT,
            env=env,
        )
        wait_port(web_port)
        print(
            f"chat socket benchmark: {args.sessions} sessions, {args.tokens} tokens per answer, zero-delay fake engine"
        )
        figures = asyncio.run(run(args, server.pid, web_port, cookie, ids))
    finally:
        for proc in (server, engine):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print(
        f"ws_sessions={args.sessions} errors={figures['errors']} relay_p99_ms={figures['relay_p99_ms']:.1f}"
        f" relay_p99_ms_business={figures['relay_p99_ms_business']:.1f}"
        f" redaction_lag_tokens_p99={figures['lag99']:.0f} kib_per_idle_connection={figures['kib']:.1f}"
    )


if __name__ == "__main__":
    main()
