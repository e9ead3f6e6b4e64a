"""Reads: knowledge bases a role may read, documents, and the hybrid retrieval ``chunk_search``.

Retrieval (see ARCHITECTURE.md, "Retrieval"):
- dense candidates from the HNSW index (``vector_cosine_ops`` with ``<=>``), with ``hnsw.ef_search`` raised to the
  candidate count and ``hnsw.iterative_scan`` so that tenant and knowledge-base filters still return enough rows;
  small scopes are searched exactly (a filtered sequential scan is both faster and exact there);
- lexical candidates matched through the tsvector GIN index and ranked by a real BM25 (k1 0.9, b 0.4): term
  frequency from the tsvector, chunk length, and document frequencies kept per knowledge base at ingestion and
  deletion;
- the two lists fused by Reciprocal Rank Fusion.

``chunk_search_result`` also measures how well the knowledge bases support the query (``SearchSupport``): the best
dense similarity, the best BM25 score, how much of the query's IDF weight the passages hold (as words, and with the
words a passage lacks credited by their closest token in meaning), and whether the dense and lexical lists agree on
their best passages. ``knowledge.support`` turns these into one support score.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet

from core.errors import InvalidInput, NotFound
from knowledge.drift import query_sample_record
from knowledge.embeddings import Embedder, get_embedder
from knowledge.models import Access, Chunk, Document, DriftReport, KnowledgeBase
from tenants.models import Role, Tenant

BM25_K1 = 0.9
BM25_B = 0.4
TS_CONFIG = "english"
MODES = ("hybrid", "dense", "lexical")
# the longest search text; a chat question longer than this is searched with its first part (chat/pipeline.py)
SEARCH_QUERY_MAX_CHARS = 4000


@dataclass(frozen=True)
class SearchHit:
    chunk_id: int
    document_id: int
    document_name: str
    knowledge_base_id: int
    page: int | None
    heading: str
    score: float
    text: str
    snippet: str
    knowledge_base_name: str = ""
    ordinal: int = 0


@dataclass(frozen=True)
class SearchSupport:
    """How well the searched knowledge bases support a query (measured, not guessed).

    ``dense``: the best cosine similarity of any chunk to the query (0 when no dense list ran);
    ``bm25``: the best BM25 score; ``coverage``: the largest share of the query's IDF weight held by one of the
    returned passages; ``bm25_share``: the best BM25 score over the most any chunk could score for the query (every
    term, each weighing as in ``coverage``, at saturation), so that it reads alike in a small and a large knowledge
    base; ``top_coverage``: the same for the first
    passage; ``agreement``: the share of the dense list's best 3 passages that are also among the lexical list's
    best 3; ``soft_coverage``: ``coverage`` over the best 3 passages in which a query term that a passage lacks
    counts for as much as the passage's closest token in meaning (the model's contextual vectors: "memory stick"
    finds "USB storage", "dogs" finds nothing in office rules); ``terms``: the number of distinct query terms after
    stemming and stop words."""

    dense: float = 0.0
    bm25: float = 0.0
    bm25_share: float = 0.0
    coverage: float = 0.0
    top_coverage: float = 0.0
    agreement: float = 0.0
    soft_coverage: float = 0.0
    terms: int = 0

    def as_dict(self) -> dict[str, float]:
        return {
            "dense": round(self.dense, 4),
            "bm25": round(self.bm25, 4),
            "bm25_share": round(self.bm25_share, 4),
            "coverage": round(self.coverage, 4),
            "top_coverage": round(self.top_coverage, 4),
            "agreement": round(self.agreement, 4),
            "soft_coverage": round(self.soft_coverage, 4),
            "terms": self.terms,
        }


@dataclass(frozen=True)
class SearchResult:
    hits: list[SearchHit]
    support: SearchSupport


# --- knowledge bases and documents ------------------------------------------------------------------------


def knowledge_base_list_readable(*, tenant: Tenant, role: str) -> QuerySet[KnowledgeBase]:
    """The tenant's knowledge bases that ``role`` may read (admins and owners read all)."""
    qs = KnowledgeBase.objects.for_tenant(tenant)
    if role in (Role.OWNER, Role.ADMIN):
        return qs.order_by("name", "id")
    return qs.filter(Q(read_access=Access.TENANT) | Q(read_roles__contains=[role])).order_by("name", "id")


def knowledge_base_get(*, tenant: Tenant, role: str, knowledge_base_id: int) -> KnowledgeBase:
    """One readable knowledge base; another tenant's or an unreadable one answers the same 404."""
    kb = knowledge_base_list_readable(tenant=tenant, role=role).filter(pk=knowledge_base_id).first()
    if kb is None:
        raise NotFound("Knowledge base not found.")
    return kb


def document_get_readable(
    *, tenant: Tenant, role: str, document_id: int, knowledge_base_ids: list[int] | None = None
) -> Document:
    """A document in a knowledge base the role may read (within ``knowledge_base_ids`` when given); another
    tenant's, an unreadable or a missing one answers the same ``NotFound``."""
    readable = knowledge_base_list_readable(tenant=tenant, role=role)
    if knowledge_base_ids is not None:
        readable = readable.filter(pk__in=knowledge_base_ids)
    doc = (
        Document.objects.for_tenant(tenant)
        .filter(pk=document_id, knowledge_base_id__in=readable.values("pk"))
        .only("id", "filename", "status", "tenant_id", "knowledge_base_id")
        .first()
    )
    if doc is None:
        raise NotFound("Document not found.")
    return doc


def document_chunk_text_list(*, document: Document) -> list[str]:
    """The document's indexed chunk texts in reading order (empty until it is indexed)."""
    return list(
        Chunk.objects.for_tenant(document.tenant_id)
        .filter(document_id=document.pk)
        .order_by("ordinal")
        .values_list("text", flat=True)
    )


@dataclass(frozen=True)
class DocumentSegment:
    """A part of a document as its page shows it: a chunk's text less the overlap it shares with the chunk before
    (``lead`` is that shared text, shown once, at the end of the previous segment)."""

    chunk_id: int
    ordinal: int
    heading: str
    page: int | None
    text: str
    lead: str = ""


def _overlap(previous: str, current: str) -> int:
    """Characters at the start of ``current`` that repeat the end of ``previous`` (the chunker's overlap)."""
    probe = current[:40]
    if not probe:
        return 0
    start = previous.rfind(probe)
    while start >= 0:
        tail = previous[start:]
        if current.startswith(tail):
            return len(tail)
        start = previous.rfind(probe, 0, start)
    return 0


def document_segments(*, document: Document) -> list[DocumentSegment]:
    """The document's indexed chunks in reading order, each without the text it repeats from the one before, so that
    the segments read as the document; ``lead`` keeps the repeated text for a highlighted chunk."""
    rows = (
        Chunk.objects.for_tenant(document.tenant_id)
        .filter(document_id=document.pk)
        .order_by("ordinal")
        .values_list("id", "ordinal", "heading", "page", "text")
    )
    segments: list[DocumentSegment] = []
    previous = ""
    for chunk_id, ordinal, heading, page, text in rows:
        cut = _overlap(previous, text) if previous else 0
        segments.append(
            DocumentSegment(
                chunk_id=chunk_id, ordinal=ordinal, heading=heading, page=page, text=text[cut:], lead=text[:cut]
            )
        )
        previous = text
    return segments


def document_list(*, knowledge_base: KnowledgeBase) -> QuerySet[Document]:
    return Document.objects.for_tenant(knowledge_base.tenant_id).filter(knowledge_base=knowledge_base)


def document_get(*, knowledge_base: KnowledgeBase, document_id: int) -> Document:
    doc = document_list(knowledge_base=knowledge_base).filter(pk=document_id).first()
    if doc is None:
        raise NotFound("Document not found.")
    return doc


def document_counts(*, tenant: Tenant, knowledge_base_ids: list[int]) -> dict[int, dict[str, int]]:
    """Documents per status for each knowledge base: ``{kb_id: {"indexed": 3, "failed": 1, ...}}``."""
    counts: dict[int, dict[str, int]] = {}
    rows = (
        Document.objects.for_tenant(tenant)
        .filter(knowledge_base_id__in=knowledge_base_ids)
        .values_list("knowledge_base_id", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for kb_id, status, n in rows:
        counts.setdefault(kb_id, {})[status] = n
    return counts


# --- retrieval --------------------------------------------------------------------------------------------


def _vector_literal(vec: Sequence[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vec) + "]"


def _tsquery_literal(terms: Iterable[str]) -> str:
    """An OR-query of already normalized lexemes (quoted for ``::tsquery``, no second normalization)."""
    quoted = []
    for term in terms:
        escaped = term.replace("\\", "\\\\").replace("'", "''")
        quoted.append(f"'{escaped}'")
    return " | ".join(quoted)


def _dense_part(
    *, label: str, tenant_id: int, kb_ids: list[int], vector: Sequence[float], n: int, exact: bool
) -> tuple[str, dict[str, Any]]:
    """Dense candidates ranked by cosine distance. ``exact``: a small scope is scored in full (a filtered scan is
    both exact and cheaper there); otherwise the HNSW index (ORDER BY the same ``<=>`` its opclass serves)."""
    distance = f"(c.embedding <=> %({label}_vec)s::vector)" + (" + 0" if exact else "")
    # ``label`` is an internal identifier (d0, d1, …), never user input; values go through parameters
    sql = f"""
        SELECT '{label}' AS src, id, dist AS value, row_number() OVER (ORDER BY dist, id) AS rnk FROM (
            SELECT c.id, {distance} AS dist FROM knowledge_chunk c
            WHERE c.tenant_id = %({label}_tenant)s AND c.knowledge_base_id = ANY(%({label}_kbs)s)
            ORDER BY {distance} LIMIT %({label}_n)s
        ) {label}_s"""  # noqa: S608
    params = {
        f"{label}_vec": _vector_literal(vector),
        f"{label}_tenant": tenant_id,
        f"{label}_kbs": kb_ids,
        f"{label}_n": n,
    }
    return sql, params


def _idf(total: int, df: int) -> float:
    return math.log(1.0 + (total - df + 0.5) / (df + 0.5))


def _query_terms(*, tenant_id: int, kbs: list[KnowledgeBase], query: str) -> dict[str, int]:
    """The query's lexemes with their document frequency over the searched knowledge bases (0: no chunk has it)."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT q.term, coalesce(sum(t.df), 0) FROM unnest(tsvector_to_array(to_tsvector(%s::regconfig, %s))) "
            "AS q(term) LEFT JOIN knowledge_knowledgebaseterm t ON t.term = q.term AND t.tenant_id = %s "
            "AND t.knowledge_base_id = ANY(%s) AND t.df > 0 GROUP BY q.term",
            [TS_CONFIG, query, tenant_id, [kb.pk for kb in kbs]],
        )
        return {str(t): int(df) for t, df in cur.fetchall()}


def _lexical_part(
    *, tenant_id: int, kbs: list[KnowledgeBase], terms: dict[str, int], n: int
) -> tuple[str, dict[str, Any]] | None:
    """BM25 candidates: statistics of the query's terms over the searched knowledge bases, then one scoring query."""
    kb_ids = [kb.pk for kb in kbs]
    dfs = {t: df for t, df in terms.items() if df > 0}
    total = sum(kb.bm25_chunk_count for kb in kbs)
    length = sum(kb.bm25_total_length for kb in kbs)
    if not dfs or total <= 0:
        return None
    avgdl = max(length / total, 1.0)
    ordered = sorted(dfs, key=lambda t: (dfs[t], t))
    idfs = [_idf(total, dfs[t]) for t in ordered]
    # candidates: chunks holding at least one of the rarer terms, within a postings budget (the most common terms
    # alone cannot lift a chunk into the top n while enough chunks hold rarer ones); every query term is scored.
    budget = settings.KNOWLEDGE_LEXICAL_POSTINGS_BUDGET
    match_terms: list[str] = []
    used = 0
    for term in ordered:
        if match_terms and used + dfs[term] > budget:
            break
        match_terms.append(term)
        used += dfs[term]
    # one arm per knowledge base, each served by the (knowledge_base, search) GIN index; the tenant check is kept
    # as a plain filter (the knowledge bases are the tenant's already) so that it never drags a tenant-wide
    # bitmap into the plan
    kb_match = " OR ".join(
        f"(c.knowledge_base_id = %(lex_kb{i})s::bigint AND c.search @@ %(lex_tsq)s::tsquery)"
        for i in range(len(kb_ids))
    )
    # per candidate: the query's lexemes kept from its tsvector (``search`` comes from to_tsvector only, so every
    # position weighs D: marking the query's lexemes A and keeping A leaves exactly them, with their positions,
    # whose count is the term frequency), each weighted by its idf and the chunk's length
    sql = """
        SELECT 'lex' AS src, id, score AS value, row_number() OVER (ORDER BY score DESC, id) AS rnk FROM (
            SELECT c.id, (
                SELECT sum((%(lex_idfs)s::float8[])[array_position(%(lex_terms)s::text[], u.lexeme)]
                           * (coalesce(array_length(u.positions, 1), 1) * (%(lex_k1)s + 1.0))
                           / (coalesce(array_length(u.positions, 1), 1)
                              + %(lex_k1)s * (1.0 - %(lex_b)s + %(lex_b)s * c.length / %(lex_avgdl)s)))
                FROM unnest(ts_filter(setweight(c.search, 'A', %(lex_terms)s::text[]), '{a}')) u
            ) AS score
            FROM knowledge_chunk c
            WHERE ({kb_match}) AND (c.tenant_id + 0) = %(lex_tenant)s
            ORDER BY score DESC, c.id
            LIMIT %(lex_n)s
        ) lex_s""".replace("{kb_match}", kb_match)
    params: dict[str, Any] = {
        "lex_k1": BM25_K1,
        "lex_b": BM25_B,
        "lex_avgdl": avgdl,
        "lex_terms": ordered,
        "lex_idfs": idfs,
        "lex_tenant": tenant_id,
        "lex_tsq": _tsquery_literal(match_terms),
        "lex_n": n,
    }
    params.update({f"lex_kb{i}": kb_id for i, kb_id in enumerate(kb_ids)})
    return sql, params


Part = tuple[str, dict[str, Any]]
Row = tuple[str, int, float, int]


def _run_parts(parts: list[Part], hnsw_ef: int | None) -> list[Row]:
    """Candidate lists in one statement; ``hnsw_ef``: the HNSW settings for this transaction first."""
    sql = " UNION ALL ".join(f"({part})" for part, _ in parts)
    params: dict[str, Any] = {}
    for _, p in parts:
        params.update(p)
    with transaction.atomic(), connection.cursor() as cur:
        if hnsw_ef is not None:
            cur.execute(
                "SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', 'relaxed_order', "
                "true), set_config('hnsw.max_scan_tuples', %s, true)",
                [str(hnsw_ef), str(settings.KNOWLEDGE_HNSW_MAX_SCAN_TUPLES)],
            )
        cur.execute(sql, params)
        return list(cur.fetchall())


def _lists(rows: list[Row]) -> dict[str, list[tuple[int, float]]]:
    lists: dict[str, list[tuple[int, float]]] = {}
    for src, chunk_id, value, _rank in sorted(rows, key=lambda r: (r[0], r[3])):
        lists.setdefault(src, []).append((int(chunk_id), float(value)))
    return lists


def _rrf(lists: list[list[int]], *, k: int) -> list[tuple[int, float]]:
    scores: dict[int, float] = {}
    for ranked in lists:
        for rank, chunk_id in enumerate(ranked, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


_WORD = re.compile(r"\w+", re.UNICODE)


def make_snippet(text: str, query: str, *, width: int = 240) -> str:
    """A window of the chunk around the first query word it contains (plain text, no markup)."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    words = {w.lower() for w in _WORD.findall(query) if len(w) > 2}
    lower = flat.lower()
    positions = [lower.find(w) for w in words]
    hits = [p for p in positions if p >= 0]
    start = max(0, min(hits) - width // 4) if hits else 0
    if start:
        space = flat.find(" ", start)
        start = space + 1 if 0 <= space < start + 20 else start
    end = min(len(flat), start + width)
    snippet = flat[start:end]
    return ("…" if start else "") + snippet + ("…" if end < len(flat) else "")


def chunk_search(
    *,
    tenant: Tenant,
    knowledge_base_ids: Iterable[int] | None,
    query: str,
    k: int = 8,
    role: str,
    mode: str = "hybrid",
    candidates: int | None = None,
) -> list[SearchHit]:
    """Rank the chunks of the readable knowledge bases among ``knowledge_base_ids`` (None: all readable) for
    ``query``. Ids of other tenants or of knowledge bases the role may not read are ignored (fail closed)."""
    return chunk_search_result(
        tenant=tenant,
        knowledge_base_ids=knowledge_base_ids,
        query=query,
        k=k,
        role=role,
        mode=mode,
        candidates=candidates,
    ).hits


def _term_weights(terms: dict[str, int], total: int) -> dict[str, float]:
    """Each query term's IDF weight. A term no chunk holds weighs as much as the rarest term that one chunk holds (its
    own IDF would grow with the corpus and swamp the others in a small one)."""
    return {t: _idf(max(total, 1), max(df, 1)) for t, df in terms.items()}


def _coverage(weights: dict[str, float], held: Iterable[str]) -> float:
    """The share of the query's IDF weight among ``held`` terms."""
    whole = sum(weights.values())
    if whole <= 0:
        return 0.0
    present = set(held)
    return sum(w for t, w in weights.items() if t in present) / whole


# Words that ask for the form of an answer, not for a fact ("Write a long story about the meal allowance" asks about
# the meal allowance): no evidence of support either way, so support is measured over the other terms.
REQUEST_WORDS = (
    "write tell explain describe summarise summarize summary list give show provide detail detailed long short brief "
    "story essay poem paragraph sentence sentences words example examples overview steps"
)
_request_lexemes: frozenset[str] | None = None


def request_lexemes() -> frozenset[str]:
    """REQUEST_WORDS as the text search configuration stems them (computed once per process)."""
    global _request_lexemes
    if _request_lexemes is None:
        with connection.cursor() as cur:
            cur.execute("SELECT tsvector_to_array(to_tsvector(%s::regconfig, %s))", [TS_CONFIG, REQUEST_WORDS])
            row = cur.fetchone()
        _request_lexemes = frozenset(str(t) for t in (row[0] if row else ()))
    return _request_lexemes


SOFT_COVERAGE_PASSAGES = 3  # the passages a grounded answer reads first (``CHAT_CONTEXT_CHUNKS`` is 3 or 4)
_QUERY_WORD = re.compile(r"[\w'-]+", re.UNICODE)


def _term_spans(query: str) -> dict[str, list[tuple[int, int]]]:
    """Where in the query each of its lexemes comes from: the character spans of the words that yield it."""
    words = [(m.group(), m.start(), m.end()) for m in _QUERY_WORD.finditer(query)]
    if not words:
        return {}
    with connection.cursor() as cur:
        cur.execute(
            "SELECT w.i, tsvector_to_array(to_tsvector(%s::regconfig, w.word)) "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS w(word, i)",
            [TS_CONFIG, [word for word, _, _ in words]],
        )
        spans: dict[str, list[tuple[int, int]]] = {}
        for index, lexemes in cur.fetchall():
            _, start, end = words[int(index) - 1]
            for lexeme in lexemes:
                spans.setdefault(str(lexeme), []).append((start, end))
        return spans


def _soft_coverage(
    *, query: str, weights: dict[str, float], passages: list[tuple[str, set[str]]], embedder: Embedder | None
) -> float:
    """The best of ``passages`` (text, lexemes) by the share of the query's IDF weight it supports: a term it holds
    counts in full, a term it lacks by the cosine between the term's words in the query and the passage's closest
    token, both as the model reads them in context (0 without an embedder that gives token vectors)."""
    whole = sum(weights.values())
    if whole <= 0 or not passages:
        return 0.0
    missing = [[t for t in weights if t not in held] for _, held in passages]
    if not all(missing):
        return 1.0  # a passage holds every term: nothing to embed
    tokens = embedder.token_vectors([query] + [text for text, _ in passages]) if embedder is not None else None
    spans = _term_spans(query) if tokens is not None else {}
    best = 0.0
    for index, lacking in enumerate(missing):
        score = whole - sum(weights[t] for t in lacking)
        if tokens is not None:
            asked, passage = tokens[0], tokens[index + 1]
            for term in lacking:
                closest = 0.0
                for start, end in spans.get(term, []):
                    inside = (asked.spans[:, 0] >= start) & (asked.spans[:, 1] <= end)
                    if not inside.any() or not len(passage.vectors):
                        continue
                    word = asked.vectors[inside].mean(axis=0)
                    norm = float(np.linalg.norm(word))
                    if norm > 0:
                        closest = max(closest, float((passage.vectors @ (word / norm)).max()))
                score += weights[term] * closest
        best = max(best, score / whole)
    return best


def _support(
    *,
    lists: dict[str, list[tuple[int, float]]],
    terms: dict[str, int],
    total: int,
    fused_ids: list[int],
    query: str,
    embedder: Embedder | None,
) -> SearchSupport:
    dense_lists = [ranked for src, ranked in lists.items() if src != "lex"]
    lexical = lists.get("lex", [])
    dense = max((1.0 - dist for ranked in dense_lists for _, dist in ranked[:1]), default=0.0)
    bm25 = lexical[0][1] if lexical else 0.0
    dense_best = sorted((dist, cid) for ranked in dense_lists for cid, dist in ranked[:3])[:3]
    lexical_best = {cid for cid, _ in lexical[:3]}
    agreement = sum(1 for _, cid in dense_best if cid in lexical_best) / 3.0 if dense_best else 0.0
    asked = request_lexemes()
    terms = {t: df for t, df in terms.items() if t not in asked}
    held: dict[int, tuple[str, set[str]]] = {}
    if fused_ids and terms:
        with connection.cursor() as cur:
            cur.execute(
                "SELECT id, text, tsvector_to_array(search) FROM knowledge_chunk WHERE id = ANY(%s)",
                [list(fused_ids)],
            )
            held = {int(cid): (str(text), set(lexemes)) for cid, text, lexemes in cur.fetchall()}
    weights = _term_weights(terms, total)
    coverages = [_coverage(weights, held[cid][1] if cid in held else ()) for cid in fused_ids]
    ceiling = sum(weights.values()) * (BM25_K1 + 1.0)
    first = [held[cid] for cid in fused_ids[:SOFT_COVERAGE_PASSAGES] if cid in held]
    return SearchSupport(
        dense=float(dense),
        bm25=float(bm25),
        bm25_share=float(bm25) / ceiling if ceiling > 0 else 0.0,
        coverage=max(coverages, default=0.0),
        top_coverage=coverages[0] if coverages else 0.0,
        agreement=agreement,
        soft_coverage=_soft_coverage(query=query, weights=weights, passages=first, embedder=embedder),
        terms=len(terms),
    )


def chunk_search_result(
    *,
    tenant: Tenant,
    knowledge_base_ids: Iterable[int] | None,
    query: str,
    k: int = 8,
    role: str,
    mode: str = "hybrid",
    candidates: int | None = None,
) -> SearchResult:
    """``chunk_search`` with the measured support of the knowledge bases for the query (``SearchSupport``)."""
    if mode not in MODES:
        raise InvalidInput(f"Unknown search mode '{mode}'.")
    query = (query or "").strip()
    nothing = SearchResult(hits=[], support=SearchSupport())
    if not query or k <= 0:
        return nothing
    if len(query) > SEARCH_QUERY_MAX_CHARS:
        raise InvalidInput(f"The search text is too long (at most {SEARCH_QUERY_MAX_CHARS:,} characters).")
    k = min(int(k), 200)
    readable = knowledge_base_list_readable(tenant=tenant, role=role)
    if knowledge_base_ids is not None:
        wanted = {int(i) for i in knowledge_base_ids}
        readable = readable.filter(pk__in=wanted)
    kbs = list(readable)
    if not kbs:
        return nothing
    n = candidates or max(2 * k, settings.KNOWLEDGE_SEARCH_CANDIDATES)
    dense_parts: list[Part] = []
    queried: dict[str, tuple[str, list[int], list[float]]] = {}  # label → (model, knowledge bases, query vector)
    embedder: Embedder | None = None  # the first model's, for the support's token vectors
    hnsw_ef: int | None = None
    if mode in ("hybrid", "dense"):
        by_model: dict[str, list[KnowledgeBase]] = {}
        for kb in kbs:
            by_model.setdefault(kb.embedding_model, []).append(kb)
        exact_max = settings.KNOWLEDGE_EXACT_SEARCH_MAX
        for index, (model_id, group) in enumerate(by_model.items()):
            exact = sum(kb.bm25_chunk_count for kb in group) <= exact_max
            if not exact:
                hnsw_ef = min(max(n, settings.KNOWLEDGE_HNSW_EF_SEARCH), 1000)
            model_embedder = get_embedder(model_id)
            embedder = embedder or model_embedder
            vector = model_embedder.embed([query])[0]
            queried[f"d{index}"] = (model_id, [kb.pk for kb in group], vector)
            dense_parts.append(
                _dense_part(
                    label=f"d{index}",
                    tenant_id=tenant.pk,
                    kb_ids=[kb.pk for kb in group],
                    vector=vector,
                    n=n,
                    exact=exact,
                )
            )
    terms = _query_terms(tenant_id=tenant.pk, kbs=kbs, query=query)
    lexical_part = (
        _lexical_part(tenant_id=tenant.pk, kbs=kbs, terms=terms, n=n) if mode in ("hybrid", "lexical") else None
    )
    parts = dense_parts + ([lexical_part] if lexical_part is not None else [])
    rows = _run_parts(parts, hnsw_ef) if parts else []
    lists = _lists(rows)
    for label, (model_id, kb_ids, vector) in queried.items():  # the drift check's sample (no text is kept)
        ranked = lists.get(label) or []
        query_sample_record(
            tenant=tenant,
            embedding_model=model_id,
            knowledge_base_ids=kb_ids,
            vector=vector,
            best_distance=ranked[0][1] if ranked else None,
        )
    if mode == "hybrid":
        fused = _rrf([[cid for cid, _ in ranked] for ranked in lists.values()], k=settings.KNOWLEDGE_RRF_K)
    elif mode == "dense":
        fused = sorted(
            ((cid, 1.0 - dist) for src, ranked in lists.items() for cid, dist in ranked), key=lambda i: (-i[1], i[0])
        )
    else:
        fused = lists.get("lex", [])
    fused = fused[:k]
    if not fused:
        return nothing
    ids = [cid for cid, _ in fused]
    support = _support(
        lists=lists,
        terms=terms,
        total=sum(kb.bm25_chunk_count for kb in kbs),
        fused_ids=ids,
        query=query,
        embedder=embedder,
    )
    chunks = {
        c.pk: c
        for c in Chunk.objects.for_tenant(tenant)
        .filter(pk__in=ids)
        .select_related("document", "knowledge_base")
        .only(
            "id",
            "ordinal",
            "text",
            "page",
            "heading",
            "document_id",
            "knowledge_base_id",
            "document__filename",
            "knowledge_base__name",
        )
    }
    hits = []
    for cid, score in fused:
        chunk = chunks.get(cid)
        if chunk is None:  # deleted between the two reads
            continue
        hits.append(
            SearchHit(
                chunk_id=chunk.pk,
                document_id=chunk.document_id,
                document_name=chunk.document.filename,
                knowledge_base_id=chunk.knowledge_base_id,
                page=chunk.page,
                heading=chunk.heading,
                score=round(float(score), 6),
                text=chunk.text,
                snippet=make_snippet(chunk.text, query),
                knowledge_base_name=chunk.knowledge_base.name,
                ordinal=chunk.ordinal,
            )
        )
    return SearchResult(hits=hits, support=support)


def document_chunk_texts(
    *, tenant: Tenant, role: str, knowledge_base_ids: list[int] | None, document_id: int
) -> tuple[str, str, list[str]] | None:
    """(file name, status, chunk texts in order) of a document the role may read, within ``knowledge_base_ids``
    when given; None when there is no such document (missing and not readable answer alike)."""
    readable = knowledge_base_list_readable(tenant=tenant, role=role)
    if knowledge_base_ids is not None:
        readable = readable.filter(pk__in=knowledge_base_ids)
    doc = (
        Document.objects.for_tenant(tenant)
        .filter(pk=document_id, knowledge_base_id__in=readable.values("pk"))
        .only("id", "filename", "status")
        .first()
    )
    if doc is None:
        return None
    texts = (
        Chunk.objects.for_tenant(tenant).filter(document_id=doc.pk).order_by("ordinal").values_list("text", flat=True)
    )
    return doc.filename, doc.status, list(texts)


def upload_limit_mb(*, tenant: Tenant) -> int:
    """The department's per-file upload limit in MB (its quota, else the default)."""
    from tenants.models import Quota

    quota = Quota.objects.filter(tenant=tenant).first()
    return int(quota.max_upload_mb if quota is not None else Quota._meta.get_field("max_upload_mb").default)


def drift_report_list(
    *, tenant: Tenant, knowledge_base_ids: Sequence[int] | None = None, per_knowledge_base: int = 60
) -> list[DriftReport]:
    """The department's drift checks (``knowledge.drift``), newest first, at most ``per_knowledge_base`` each."""
    qs = DriftReport.objects.for_tenant(tenant).select_related("knowledge_base")
    if knowledge_base_ids is not None:
        qs = qs.filter(knowledge_base_id__in=list(knowledge_base_ids))
    out: list[DriftReport] = []
    counts: dict[int, int] = {}
    for report in qs.order_by("-created_at", "-id")[: per_knowledge_base * 50]:
        n = counts.get(report.knowledge_base_id, 0)
        if n < per_knowledge_base:
            out.append(report)
            counts[report.knowledge_base_id] = n + 1
    return out
