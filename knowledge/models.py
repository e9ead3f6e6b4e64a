"""Knowledge bases, their documents and the indexed chunks (pgvector HNSW + tsvector/GIN, BM25 statistics)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.db.models import Q
from django.utils import timezone
from pgvector.django import HnswIndex, VectorField

from tenants.models import Role, TenantOwned

# The index column's dimension. A knowledge base may switch to another embedding model of this dimension; the
# model and its dimension are recorded on the knowledge base.
EMBEDDING_DIM = 384


class Access(models.TextChoices):
    TENANT = "tenant", "Everyone in the department"
    ROLES = "roles", "Only the chosen roles"


class KnowledgeBase(TenantOwned):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    read_access = models.CharField(max_length=16, choices=Access.choices, default=Access.TENANT)
    read_roles = models.JSONField(default=list, blank=True)
    upload_access = models.CharField(max_length=16, choices=Access.choices, default=Access.TENANT)
    upload_roles = models.JSONField(default=list, blank=True)
    embedding_model = models.CharField(max_length=200)
    embedding_dim = models.PositiveIntegerField(default=EMBEDDING_DIM)
    # a model change in progress: chunks are re-embedded into ``Chunk.embedding_next``, then swapped in one transaction
    pending_embedding_model = models.CharField(max_length=200, blank=True, default="")
    chunk_size = models.PositiveIntegerField(default=400)  # tokens
    chunk_overlap = models.PositiveIntegerField(default=60)  # tokens (15 %)
    # BM25 statistics over this knowledge base's chunks, kept in step with ingestion and deletion
    bm25_chunk_count = models.BigIntegerField(default=0)
    bm25_total_length = models.BigIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantOwned.Meta):
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="uniq_kb_tenant_name")]

    def __str__(self) -> str:
        return self.name

    def may_read(self, role: str) -> bool:
        if role in (Role.OWNER, Role.ADMIN):
            return True
        return self.read_access == Access.TENANT or role in (self.read_roles or [])

    def may_upload(self, role: str) -> bool:
        if role in (Role.OWNER, Role.ADMIN):
            return True
        if role == Role.VIEWER or not self.may_read(role):
            return False
        return self.upload_access == Access.TENANT or role in (self.upload_roles or [])


class Document(TenantOwned):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        PARSING = "parsing", "Parsing"
        CHUNKING = "chunking", "Chunking"
        EMBEDDING = "embedding", "Embedding"
        INDEXED = "indexed", "Indexed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE_STATES = (Status.QUEUED, Status.PARSING, Status.CHUNKING, Status.EMBEDDING)

    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="documents")
    filename = models.CharField(max_length=255)
    detected_type = models.CharField(max_length=16, blank=True, default="")
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    pages = models.PositiveIntegerField(null=True, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    pii_counts = models.JSONField(default=dict, blank=True)  # entity type → count, never the values
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # fair scheduling: set when the document was handed to the broker (null: waiting in the tenant's line)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantOwned.Meta):
        ordering = ["-created_at", "-id"]
        constraints = [
            # the same bytes are indexed once; every empty file has the same hash, and each is its own (refused) row
            models.UniqueConstraint(
                fields=["knowledge_base", "sha256"], condition=Q(size_bytes__gt=0), name="uniq_document_kb_sha256"
            ),
        ]
        indexes = [
            models.Index(
                fields=["tenant", "created_at"],
                name="doc_waiting",
                condition=Q(status="queued", dispatched_at__isnull=True),
            ),
            models.Index(fields=["tenant", "status"], name="doc_tenant_status"),
        ]

    def __str__(self) -> str:
        return self.filename

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATES


class DocumentContent(TenantOwned):
    """The uploaded bytes, kept in PostgreSQL so any worker (embedded or another machine) can read them."""

    document = models.OneToOneField(Document, on_delete=models.CASCADE, related_name="content")
    data = models.BinaryField()


class Chunk(TenantOwned):
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="chunks")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    token_count = models.PositiveIntegerField(default=0)
    page = models.PositiveIntegerField(null=True, blank=True)
    heading = models.CharField(max_length=500, blank=True, default="")
    embedding = VectorField(dimensions=EMBEDDING_DIM)
    embedding_next = VectorField(dimensions=EMBEDDING_DIM, null=True, blank=True)
    search = SearchVectorField()
    # BM25 document length: the number of indexed terms (positions) in ``search``
    length = models.PositiveIntegerField(default=0)
    pii_counts = models.JSONField(default=dict, blank=True)

    class Meta(TenantOwned.Meta):
        ordering = ["document_id", "ordinal"]
        constraints = [models.UniqueConstraint(fields=["document", "ordinal"], name="uniq_chunk_document_ordinal")]
        indexes = [
            # ef_construction 128: at 100,000 chunks the graph reaches recall@10 0.97 at ef_search 300 (64: 0.95
            # only at ef_search 400); see docs/benchmarks.md
            HnswIndex(
                name="chunk_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=128,
                opclasses=["vector_cosine_ops"],
            ),
            # btree_gin: the knowledge base and the terms in one GIN index, so a lexical match never walks
            # other knowledge bases' postings
            GinIndex(fields=["knowledge_base", "search"], name="chunk_kb_search_gin"),
            models.Index(fields=["tenant", "knowledge_base"], name="chunk_tenant_kb"),
        ]

    def __str__(self) -> str:
        return f"chunk {self.document_id}#{self.ordinal}"


class KnowledgeBaseTerm(TenantOwned):
    """BM25 document frequency: in how many chunks of a knowledge base a (stemmed) term occurs."""

    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+")
    term = models.TextField()
    df = models.IntegerField(default=0)

    class Meta(TenantOwned.Meta):
        constraints = [models.UniqueConstraint(fields=["knowledge_base", "term"], name="uniq_kbterm_kb_term")]


class QuerySample(TenantOwned):
    """One search's query, for the drift check (``knowledge.drift``): never its text, nor its embedding, only a
    random projection of the embedding (``KNOWLEDGE_DRIFT_DIMENSIONS`` numbers, from which the text cannot be
    recovered) and the best dense similarity the search found. Kept for ``KNOWLEDGE_DRIFT_RETENTION_HOURS``."""

    created_at = models.DateTimeField(default=timezone.now)
    embedding_model = models.CharField(max_length=200)
    knowledge_base_ids = ArrayField(models.BigIntegerField())
    projection = ArrayField(models.FloatField())
    best_similarity = models.FloatField(null=True, blank=True)  # None: the dense search found nothing

    class Meta(TenantOwned.Meta):
        indexes = [
            models.Index(fields=["tenant", "created_at"], name="query_sample_tenant_time"),
            GinIndex(fields=["knowledge_base_ids"], name="query_sample_kbs"),
        ]

    def __str__(self) -> str:
        return f"query-sample:{self.tenant_id}:{self.created_at:%Y-%m-%d %H:%M}"


class DriftReport(TenantOwned):
    """One drift check of one knowledge base: the window's queries against its chunks."""

    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="drift_reports")
    created_at = models.DateTimeField(default=timezone.now)
    window_start = models.DateTimeField()
    embedding_model = models.CharField(max_length=200)
    queries = models.PositiveIntegerField()
    chunks = models.PositiveIntegerField()  # the chunks sampled as the reference
    centroid_distance = models.FloatField()  # cosine distance of the two centroids (0: same direction)
    psi = models.FloatField()  # population stability index, mean over the projected dimensions
    weak_share = models.FloatField()  # share of the window's searches whose best passage was weakly similar
    drifted = models.BooleanField(default=False)

    class Meta(TenantOwned.Meta):
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["knowledge_base", "-created_at"], name="drift_report_kb_time")]

    def __str__(self) -> str:
        return f"drift:{self.knowledge_base_id}:{self.created_at:%Y-%m-%d %H:%M}"
