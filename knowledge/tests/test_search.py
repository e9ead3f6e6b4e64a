"""chunk_search: real BM25, HNSW with filters, RRF, tenant and role isolation."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from django.db import connection, transaction

from knowledge.models import Chunk, Document
from knowledge.selectors import chunk_search, knowledge_base_list_readable
from knowledge.services import knowledge_base_create
from knowledge.tests.conftest import ingest, upload
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

CORPUS = {
    "trains.txt": "Employees book trains for trips under 500 km. Trains are cheaper than flights.",
    "flights.txt": "Flights need approval from a director. Book flights two weeks ahead.",
    "hotels.txt": "Hotels are reimbursed up to 150 euros per night in large cities.",
    "laptops.txt": "Laptops are replaced every three years by the IT department.",
    "parking.txt": "The parking garage closes at ten. Bicycles park in the yard.",
}


@pytest.fixture
def corpus(world, kb):
    return {name: ingest(upload(kb, name, text.encode())) for name, text in CORPUS.items()}


def _python_bm25(query: str, k1: float = 0.9, b: float = 0.4) -> dict[str, float]:
    """An independent BM25 over the same analyzed tokens (PostgreSQL's english parser and stemmer)."""
    with connection.cursor() as cur:
        docs = {}
        for name, text in CORPUS.items():
            cur.execute(
                "SELECT u.lexeme, array_length(u.positions, 1) FROM knowledge_chunk c "
                "JOIN knowledge_document d ON d.id = c.document_id CROSS JOIN LATERAL unnest(c.search) u "
                "WHERE d.filename = %s",
                [name],
            )
            docs[name] = dict(cur.fetchall())
        cur.execute("SELECT tsvector_to_array(to_tsvector('english', %s))", [query])
        terms = cur.fetchone()[0]
    n = len(docs)
    avgdl = sum(sum(tf.values()) for tf in docs.values()) / n
    df = Counter(t for tf in docs.values() for t in tf)
    scores = {}
    for name, tf in docs.items():
        length = sum(tf.values())
        score = 0.0
        for t in terms:
            if t in tf:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                score += idf * tf[t] * (k1 + 1) / (tf[t] + k1 * (1 - b + b * length / avgdl))
        if score:
            scores[name] = score
    return scores


def test_lexical_ranking_is_bm25(world, kb, corpus):
    query = "book trains or flights"
    expected = _python_bm25(query)
    hits = chunk_search(
        tenant=world.tenant, knowledge_base_ids=[kb.pk], query=query, k=10, role="viewer", mode="lexical"
    )
    got = {h.document_name: h.score for h in hits}
    assert set(got) == set(expected) == {"trains.txt", "flights.txt"}
    for name, score in expected.items():
        assert got[name] == pytest.approx(score, rel=1e-5)
    assert [h.document_name for h in hits] == sorted(expected, key=lambda n: -expected[n])


def test_hybrid_finds_by_meaning_and_by_words(world, kb, corpus):
    by_meaning = chunk_search(
        tenant=world.tenant, knowledge_base_ids=[kb.pk], query="where can I leave my bike", k=3, role="member"
    )
    assert by_meaning[0].document_name == "parking.txt"
    by_words = chunk_search(tenant=world.tenant, knowledge_base_ids=None, query="150 euros", k=3, role="member")
    top = by_words[0]
    assert top.document_name == "hotels.txt"
    assert top.knowledge_base_id == kb.pk and top.knowledge_base_name == "Policies"
    assert top.document_id == corpus["hotels.txt"].pk
    assert top.snippet == CORPUS["hotels.txt"]
    assert top.score > by_words[-1].score
    dense = chunk_search(
        tenant=world.tenant, knowledge_base_ids=[kb.pk], query="computer renewal", k=1, role="member", mode="dense"
    )
    assert dense[0].document_name == "laptops.txt" and 0 < dense[0].score <= 1


def test_snippet_centres_on_the_query_words(world, kb):
    text = (
        ("Filler sentence about nothing in particular. " * 30)
        + "The secret code word is pineapple. "
        + ("More filler. " * 30)
    )
    ingest(upload(kb, "long.txt", text.encode()))
    [hit] = chunk_search(
        tenant=world.tenant, knowledge_base_ids=[kb.pk], query="pineapple", k=1, role="viewer", mode="lexical"
    )
    assert "pineapple" in hit.snippet and len(hit.snippet) <= 242 and hit.snippet.startswith("…")


def _insert_random_chunks(tenant, kb, doc, count, rng, start=0):
    vectors = rng.normal(size=(count, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO knowledge_chunk (tenant_id, knowledge_base_id, document_id, ordinal, text, token_count,"
            " heading, embedding, search, length, pii_counts) "
            "SELECT %s, %s, %s, o, 'synthetic chunk ' || o, 3, '', e::vector,"
            " to_tsvector('english', 'synthetic chunk'), 2, '{}'"
            " FROM unnest(%s::int[], %s::text[]) AS t(o, e)",
            [
                tenant.pk,
                kb.pk,
                doc.pk,
                list(range(start, start + count)),
                ["[" + ",".join(map(str, v)) + "]" for v in vectors],
            ],
        )
    kb.bm25_chunk_count += count
    kb.save(update_fields=["bm25_chunk_count"])


def test_filtered_search_returns_k_when_other_tenants_have_far_more(world, kb, settings):
    """HNSW applies WHERE after the graph scan; iterative scan and ef_search still give k rows of our tenant."""
    rng = np.random.default_rng(7)
    big = TenantFactory()
    big_kb = knowledge_base_create(tenant=big, actor=None, name="Big")
    big_doc = Document.objects.create(
        tenant=big, knowledge_base=big_kb, filename="big", sha256="b" * 64, status="indexed"
    )
    ours = Document.objects.create(
        tenant=world.tenant, knowledge_base=kb, filename="ours", sha256="a" * 64, status="indexed"
    )
    _insert_random_chunks(big, big_kb, big_doc, 2000, rng)
    _insert_random_chunks(world.tenant, kb, ours, 30, rng)
    with connection.cursor() as cur:
        # make the planner take the HNSW index (the test's transaction is rolled back afterwards)
        cur.execute("SET enable_sort = off")
    query_vec = rng.normal(size=384)
    query_vec /= np.linalg.norm(query_vec)
    literal = "[" + ",".join(map(str, query_vec)) + "]"
    # the naive query (default ef_search 40, no iterative scan) loses most of our rows: the graph is the big tenant's
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL hnsw.iterative_scan = off")
        naive_sql = (
            "SELECT id FROM knowledge_chunk WHERE tenant_id = %s AND knowledge_base_id = %s "
            "ORDER BY embedding <=> %s::vector LIMIT 20"
        )
        cur.execute("EXPLAIN " + naive_sql, [world.tenant.pk, kb.pk, literal])
        assert "chunk_embedding_hnsw" in "\n".join(r[0] for r in cur.fetchall())
        cur.execute(naive_sql, [world.tenant.pk, kb.pk, literal])
        naive = cur.fetchall()
    assert len(naive) < 20
    settings.KNOWLEDGE_EXACT_SEARCH_MAX = 0  # force the HNSW path
    from knowledge import selectors

    original = selectors.get_embedder

    class Fixed:
        def embed(self, texts):
            return [list(query_vec)]

        def token_vectors(self, texts):
            return None

    selectors.get_embedder = lambda model=None: Fixed()  # the query vector is the random one above
    try:
        hits = chunk_search(
            tenant=world.tenant, knowledge_base_ids=[kb.pk], query="anything", k=20, role="viewer", mode="dense"
        )
    finally:
        selectors.get_embedder = original
    assert len(hits) == 20
    assert {h.document_id for h in hits} == {ours.pk}
    # and they are the true nearest 20 of our 30
    exact = list(
        Chunk.objects.for_tenant(world.tenant)
        .filter(knowledge_base=kb)
        .extra(select={"d": "embedding <=> %s::vector"}, select_params=[literal], order_by=["d"])
        .values_list("id", flat=True)[:20]
    )
    assert [h.chunk_id for h in hits] == exact


def test_other_tenants_chunks_are_never_returned(world, kb, corpus):
    other = world.other_tenant
    other_kb = knowledge_base_create(tenant=other, actor=None, name="Beta KB")
    ingest(upload(other_kb, "trains-beta.txt", b"Beta books trains for every trip."))
    # the other tenant's knowledge base id is ignored, not an error (fail closed)
    hits = chunk_search(
        tenant=world.tenant, knowledge_base_ids=[kb.pk, other_kb.pk], query="trains", k=10, role="admin"
    )
    assert hits and all(h.knowledge_base_id == kb.pk for h in hits)
    assert chunk_search(tenant=world.tenant, knowledge_base_ids=[other_kb.pk], query="trains", k=10, role="owner") == []
    beta_hits = chunk_search(tenant=other, knowledge_base_ids=None, query="trains", k=10, role="viewer")
    assert {h.document_name for h in beta_hits} == {"trains-beta.txt"}


@pytest.mark.parametrize(
    ("role", "sees_restricted"), [("viewer", False), ("member", True), ("admin", True), ("owner", True)]
)
def test_a_role_never_sees_a_knowledge_base_it_may_not_read(world, kb, corpus, role, sees_restricted):
    restricted = knowledge_base_create(
        tenant=world.tenant, actor=None, name="Board", read_access="roles", read_roles=["member"]
    )
    ingest(upload(restricted, "board.txt", b"Board minutes: trains budget frozen."))
    readable = set(knowledge_base_list_readable(tenant=world.tenant, role=role).values_list("name", flat=True))
    assert readable == ({"Policies", "Board"} if sees_restricted else {"Policies"})
    hits = chunk_search(tenant=world.tenant, knowledge_base_ids=None, query="trains budget", k=10, role=role)
    names = {h.document_name for h in hits}
    assert ("board.txt" in names) == sees_restricted
    asked = chunk_search(tenant=world.tenant, knowledge_base_ids=[restricted.pk], query="trains", k=10, role=role)
    assert bool(asked) == sees_restricted


def test_empty_query_and_unknown_mode(world, kb, corpus):
    from core.errors import InvalidInput

    assert chunk_search(tenant=world.tenant, knowledge_base_ids=None, query="   ", k=5, role="viewer") == []
    assert (
        chunk_search(
            tenant=world.tenant, knowledge_base_ids=None, query="the and of", k=5, role="viewer", mode="lexical"
        )
        == []
    )
    with pytest.raises(InvalidInput):
        chunk_search(tenant=world.tenant, knowledge_base_ids=None, query="x", k=5, role="viewer", mode="magic")
