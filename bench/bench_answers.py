"""Grounded answers on the QA set in ``bench/answers`` (``make bench-answers``).

1. The 13 documents are uploaded to one knowledge base of a fresh department and indexed by the product's own
   ingestion (``knowledge.services.document_upload`` + ``document_ingest``: parse → chunk → embed → index).
2. Each of the 89 questions goes through the chat pipeline as the API door runs it (``chat.pipeline.ChatRun``: the
   real retrieval with its support decision, the guards, masking, the prompt, the real llama-server with the
   test-suite model, the output guard and the citation choice). ``--model qwen`` (or ``PORTAL_MODEL=qwen make
   bench-answers``) runs it on the default model of ``make run`` instead.
3. Figures (unanswerable: the 16 questions the documents cannot answer; answerable: the other 73):
   - ``abstain_recall``: unanswerable questions answered "the documents do not contain it" with no citation;
   - ``false_abstain``: answerable questions answered that way;
   - ``evidence_at3``: answerable questions whose evidence is in one of the 3 best passages of the pipeline's search;
   - ``citation_precision``: of the citations shown with answers to answerable questions, the share whose passage
     holds the evidence (a passage of the right document holding every evidence fragment);
   - ``answer_contains_gold``: answerable questions whose answer contains a gold answer.

``--retrieval-only`` skips the engine (the support signals and evidence figures only); ``--signals FILE`` writes
every question's support signals as JSON lines (for calibrating ``knowledge.support``).

Ends with one line:
``abstain_recall=<x> false_abstain=<x> evidence_at3=<x> citation_precision=<x> answer_contains_gold=<x>``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
DATA = ROOT / "bench" / "answers"


def log(msg: str) -> None:
    print(msg, flush=True)


def norm(text: str) -> str:
    """Lowercase, punctuation as spaces, thousands separators dropped: how gold and evidence are compared."""
    text = re.sub(r"(?<=\d)[,\u202f](?=\d{3}\b)", "", text.lower())
    return " ".join(re.sub(r"[^0-9a-z%.]+", " ", text).replace(". ", " ").split())


def holds_evidence(text: str, evidence: list[str]) -> bool:
    flat = " " + norm(text).rstrip(".") + " "
    return bool(evidence) and all(" " + norm(e).rstrip(".") + " " in flat or norm(e) in flat for e in evidence)


def contains_gold(answer: str, gold: list[str]) -> bool:
    flat = " " + norm(answer) + " "
    return any(re.search(r"(?<![0-9a-z])" + re.escape(norm(g)) + r"(?![0-9a-z])", flat) for g in gold)


# --- setup -------------------------------------------------------------------------------------------------------


def setup() -> tuple[Any, Any, Any]:
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command

    from knowledge import services
    from knowledge.models import Document
    from knowledge.services import document_ingest, document_upload, knowledge_base_create
    from tenants.services import membership_set, tenant_create

    call_command("migrate", verbosity=0)
    services._send = lambda ids: None  # no broker: the bench runs document_ingest itself
    tenant = tenant_create(name="Brightwater", slug="bench-answers", tokens_per_day=10**12, tokens_per_month=10**13)
    tenant.quota.requests_per_minute = 10**6
    tenant.quota.save()
    user = User.objects.create_user(username="bench-answers", password="bench-password-123")
    membership_set(tenant=tenant, user=user, role="member")
    kb = knowledge_base_create(tenant=tenant, actor=None, name="Company handbook")
    files = [
        SimpleUploadedFile(path.name, path.read_bytes()) for path in sorted((DATA / "docs").iterdir()) if path.is_file()
    ]
    started = time.perf_counter()
    results = document_upload(knowledge_base=kb, actor=None, files=files)  # type: ignore[arg-type]
    for result in results:
        document_ingest(document_id=result.document.pk)
    docs = Document.objects.for_tenant(tenant).filter(knowledge_base=kb)
    failed = [d.filename for d in docs if d.status != "indexed"]
    if failed:
        raise SystemExit(f"documents not indexed: {failed}")
    chunks = sum(d.chunk_count for d in docs)
    log(f"[ingest] {len(files)} documents, {chunks} chunks in {time.perf_counter() - started:.1f} s")
    return tenant, user, kb


def start_engine(context: int, slots: int) -> Any:
    from django.conf import settings

    from inference_pool.models import Backend
    from inference_pool.services import backend_register
    from tests.engine import make_engine

    engine = make_engine(slots=slots, context=context, name="bench-answers")
    engine.start(timeout=180)
    backend = backend_register(
        name="bench-answers",
        kind="llamacpp",
        base_url=engine.spec.base_url,
        model=settings.LLAMA_MODEL_NAME,
        served_name=settings.LLAMA_MODEL_NAME,
        max_concurrent=slots,
        context_length=context // slots,
    )
    Backend.objects.filter(pk=backend.pk).update(health="up")
    return engine


# --- one question ------------------------------------------------------------------------------------------------


def search(tenant: Any, kb: Any, question: str) -> Any:
    from django.conf import settings

    from knowledge.selectors import chunk_search_result

    return chunk_search_result(
        tenant=tenant, knowledge_base_ids=[kb.pk], query=question, k=settings.CHAT_CONTEXT_CHUNKS, role="member"
    )


def chunk_text(chunk_id: int) -> str:
    from knowledge.models import Chunk

    return str(Chunk.unscoped.filter(pk=chunk_id).values_list("text", flat=True).first() or "")


async def answer(tenant: Any, user: Any, kb: Any, question: str) -> tuple[Any, dict[str, float]]:
    from chat.pipeline import ChatInput, ChatRun, Done

    run = ChatRun(
        ChatInput(
            tenant=tenant,
            role="member",
            user=user,
            text=question,
            knowledge_base_ids=[kb.pk],
            max_tokens=64,
            temperature=0.0,
            seed=7,
            source="api",
        )
    )
    done = None
    async for event in run.stream():
        if isinstance(event, Done):
            done = event
    return done, dict(run.state.timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retrieval-only", action="store_true", help="no engine: support and evidence figures only")
    parser.add_argument("--signals", default="", help="write each question's support signals here (JSON lines)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions (a quick look)")
    parser.add_argument(
        "--answerable-every",
        type=int,
        default=1,
        help="keep every Nth answerable question of each kind, and every unanswerable one (a slow model's sample)",
    )
    parser.add_argument("--context", type=int, default=8192, help="the engine's context (all slots)")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument(
        "--model", default="", help="qwen, smollm2 or a .gguf path (default: PORTAL_MODEL; the Makefile: smollm2)"
    )
    args = parser.parse_args()
    if args.model:
        os.environ["PORTAL_MODEL"] = args.model

    questions = json.loads((DATA / "questions.json").read_text())
    if args.answerable_every > 1:
        seen: dict[str, int] = defaultdict(int)
        kept = []
        for q in questions:
            seen[q["kind"]] += 1
            if q["kind"] == "unanswerable" or (seen[q["kind"]] - 1) % args.answerable_every == 0:
                kept.append(q)
        questions = kept
    if args.limit:
        questions = questions[: args.limit]
    tenant, user, kb = setup()
    from django.conf import settings

    log(f"[model] {settings.LLAMA_MODEL_NAME} ({settings.LLAMA_MODEL_PATH}): {args.context} tokens, {args.slots} slots")
    from chat.pipeline.stages import abstain_decision
    from chat.pipeline.text import ABSTAIN_TEXT, is_abstention

    # round-robin over the documents (the unanswerable questions among them), so that a partial run covers every kind
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for q in questions:
        groups[q["doc"]].append(q)
    questions = [g[i] for i in range(max(len(g) for g in groups.values())) for g in groups.values() if i < len(g)]
    signals = open(args.signals, "w") if args.signals else None  # noqa: SIM115 - written as the run goes
    engine = None if args.retrieval_only else start_engine(args.context, args.slots)
    by_kind: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    rows: list[dict[str, Any]] = []
    cited_total = cited_good = 0
    started = time.perf_counter()
    try:
        for q in questions:
            answerable = q["kind"] != "unanswerable"
            result = search(tenant, kb, q["q"])
            top3 = result.hits[:3]
            at3 = any(h.document_name == q["doc"] and holds_evidence(h.text, q["e"]) for h in top3)
            abstain_retrieval = abstain_decision(result.support)
            row: dict[str, Any] = {
                "id": q["id"],
                "kind": q["kind"],
                "answerable": answerable,
                "support": result.support.as_dict(),
                "evidence_at3": at3,
                "retrieval_abstains": abstain_retrieval,
            }
            if engine is not None:
                done, timings = asyncio.run(answer(tenant, user, kb, q["q"]))
                text = done.text if done is not None else ""
                citations = done.citations if done is not None else []
                abstained = is_abstention(text) and not citations
                good = sum(
                    int(c["document_name"] == q["doc"] and holds_evidence(chunk_text(c["chunk_id"]), q["e"]))
                    for c in citations
                )
                row.update(
                    {
                        "answer": text,
                        "timings_ms": timings,
                        "prompt_tokens": done.usage.prompt_tokens if done is not None else None,
                        "abstained": abstained,
                        "citations": [c["document_name"] for c in citations],
                        "cited_good": good,
                        "gold": contains_gold(text, q["a"]) if answerable else None,
                    }
                )
                if answerable:
                    cited_total += len(citations)
                    cited_good += good
            else:
                row["abstained"] = abstain_retrieval
            rows.append(row)
            if signals is not None:
                signals.write(json.dumps(row) + "\n")
                signals.flush()
            kind = by_kind[q["kind"]]
            kind["abstained"].append(float(row["abstained"]))
            if answerable:
                kind["evidence_at3"].append(float(at3))
                if "gold" in row:
                    kind["gold"].append(float(bool(row["gold"])))
            log(
                f"[{q['id']}] {'ABSTAIN' if row['abstained'] else 'answer '} at3={int(at3)} "
                f"{json.dumps(row['support'])}"
                + (
                    f" :: {row['answer'][:110]!r} {json.dumps(row['timings_ms'])} prompt={row['prompt_tokens']}"
                    if "answer" in row
                    else ""
                )
            )
    finally:
        if engine is not None:
            engine.stop()
        if signals is not None:
            signals.close()
    elapsed = time.perf_counter() - started

    answerable_rows = [r for r in rows if r["answerable"]]
    unanswerable_rows = [r for r in rows if not r["answerable"]]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else float("nan")

    log(f"\n{len(rows)} questions in {elapsed:.0f} s ({ABSTAIN_TEXT!r} is the abstention)")
    log("| kind | questions | answered | evidence in top 3 | answer holds the gold |")
    log("|---|---|---|---|---|")
    for kind_name in ("lookup", "number", "paraphrase", "multistep", "unanswerable"):
        kind = by_kind.get(kind_name)
        if not kind:
            continue
        n = len(kind["abstained"])
        answered = n - int(sum(kind["abstained"]))
        at3_txt = f"{mean(kind['evidence_at3']):.2f}" if kind["evidence_at3"] else "—"
        gold_txt = f"{mean(kind['gold']):.2f}" if kind["gold"] else "—"
        log(f"| {kind_name} | {n} | {answered} | {at3_txt} | {gold_txt} |")
    abstain_recall = mean([float(r["abstained"]) for r in unanswerable_rows])
    false_abstain = mean([float(r["abstained"]) for r in answerable_rows])
    evidence_at3 = mean([float(r["evidence_at3"]) for r in answerable_rows])
    precision = cited_good / cited_total if cited_total else float("nan")
    gold = mean([float(bool(r.get("gold"))) for r in answerable_rows]) if engine is not None else float("nan")
    log(f"citations shown with answerable questions: {cited_total}, holding the evidence: {cited_good}")
    print(
        f"abstain_recall={abstain_recall:.3f} false_abstain={false_abstain:.3f} evidence_at3={evidence_at3:.3f} "
        f"citation_precision={precision:.3f} answer_contains_gold={gold:.3f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
