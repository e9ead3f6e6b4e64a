"""Hostile inputs against the real parsers and guards (``make bench-hostile``).

The corpus (tests/hostile/corpus.py) goes through every in-process entry point that takes text or files: each file
through the isolated parser (``knowledge.sandbox``, the settings' CPU and memory limits) and the chunker; each
text through ``mask``, ``inspect_input``, ``inspect_chunks``, ``inspect_output`` and the hybrid search. A case
passes when it ends within its budget (5,000 ms) with a result or a clear error. Afterwards the process must still
parse and guard an ordinary input (``worker_alive``).

Ends with one line: ``hostile_cases=<n> over_budget=<n> max_ms=<x> worker_alive=<0|1>``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

BUDGET_MS = 5_000


def setup_django() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def run_case(fn: Callable[[], str]) -> tuple[float, str]:
    started = time.perf_counter()
    try:
        outcome = fn()
    except Exception as exc:  # a clear, typed refusal is a pass; the message is what a person would read
        message = getattr(exc, "message", "") or str(exc)
        outcome = f"refused ({type(exc).__name__}): {message[:90]}"
    return (time.perf_counter() - started) * 1000, outcome


def main() -> None:
    setup_django()
    from guardrails.pii import get_analyzer
    from guardrails.services import inspect_chunks, inspect_input, inspect_output, mask
    from knowledge.chunking import chunk_sections
    from knowledge.sandbox import parse_document_isolated
    from knowledge.selectors import chunk_search
    from knowledge.services import knowledge_base_create, parse_limits
    from tenants.models import Role, Tenant
    from tests.hostile.corpus import file_cases, text_cases

    tenant, _ = Tenant.objects.get_or_create(slug="bench-hostile", defaults={"name": "Bench hostile"})
    kb = knowledge_base_create(tenant=tenant, actor=None, name=f"hostile-{time.time_ns()}")
    # loading models is once per process, not per input: the NER, the injection classifier and the embedder
    get_analyzer().analyze("warm up, Mary Johnson", entities=["PERSON"])
    inspect_input(tenant=tenant, text="warm up")
    chunk_search(tenant=tenant, knowledge_base_ids=[kb.pk], query="warm up", k=1, role=Role.VIEWER)
    limits = parse_limits()
    rows: list[tuple[str, str, float, str]] = []

    def record(door: str, name: str, fn: Callable[[], str]) -> None:
        ms, outcome = run_case(fn)
        rows.append((door, name, ms, outcome))
        flag = "OVER" if ms > BUDGET_MS else "ok"
        print(f"{flag:4} {ms:8.0f} ms  {door:15} {name:32} {outcome}", flush=True)

    for case in file_cases():

        def parse(case: Any = case) -> str:
            parsed = parse_document_isolated(data=case.data, filename=case.filename, limits=limits)
            chunks = chunk_sections(parsed.sections, chunk_size=kb.chunk_size, overlap=kb.chunk_overlap)
            return f"{parsed.detected_type}: {len(parsed.sections)} sections, {len(chunks)} chunks"

        record("upload/parse", case.name, parse)

    counter = iter(range(10**9))
    for case in text_cases():
        text = case.text
        scope = f"bench:hostile-{next(counter)}"

        def masked(text: str = text, scope: str = scope) -> str:
            result = mask(tenant=tenant, scope_key=scope, text=text)
            return f"{sum(result.counts.values())} masked"

        def inspected(text: str = text) -> str:
            return str(inspect_input(tenant=tenant, text=text).decision)

        def chunks(text: str = text) -> str:
            return ",".join(sorted({str(v.decision) for v in inspect_chunks(tenant=tenant, texts=[text[:4000]] * 4)}))

        def output(text: str = text, scope: str = scope) -> str:
            verdict = inspect_output(
                tenant=tenant, scope_key=scope, text=text, user_text="hi", canary="c4n4ry-x", sources=[text[:2000]]
            )
            return "blocked" if getattr(verdict, "blocked", False) else "checked"

        def search(text: str = text) -> str:
            hits = chunk_search(tenant=tenant, knowledge_base_ids=[kb.pk], query=text[:2000], k=4, role=Role.VIEWER)
            return f"{len(hits)} hits"

        for door, fn in (
            ("mask", masked),
            ("inspect_input", inspected),
            ("inspect_chunks", chunks),
            ("inspect_output", output),
            ("search", search),
        ):
            record(door, case.name, fn)

    # the process still answers: an ordinary file parses and an ordinary message is guarded
    alive = 0
    try:
        parsed = parse_document_isolated(data=b"Travel policy: economy class.", filename="ok.txt", limits=limits)
        verdict = inspect_input(tenant=tenant, text="What is the travel policy?")
        alive = int(parsed.sections[0].text.startswith("Travel") and verdict.decision == "allow")
    except Exception as exc:
        print(f"not alive: {type(exc).__name__}: {exc}")
    over = sum(1 for _, _, ms, _ in rows if ms > BUDGET_MS)
    slowest = max(rows, key=lambda r: r[2])
    print(f"slowest: {slowest[0]} {slowest[1]} {slowest[2]:.0f} ms")
    line = f"hostile_cases={len(rows)} over_budget={over} max_ms={slowest[2]:.0f} worker_alive={alive}"
    finish(line)


def finish(line: str) -> None:
    """Stop the embedded PostgreSQL now (its exit handler would run after the last line), silence logging and
    warnings, print ``line`` last and leave without interpreter-exit handlers (nothing may print after it)."""
    import logging
    import warnings

    from django.db import connections

    from portal import embedded

    connections.close_all()
    server = embedded._server
    if server is not None:
        server.cleanup()
    logging.disable(logging.CRITICAL)
    warnings.filterwarnings("ignore")
    sys.stderr.flush()
    print(line, flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
