"""The pool's error codes (the values are the wire contract: docs/contracts.md)."""

from __future__ import annotations

from enum import StrEnum


class PoolErrorCode(StrEnum):
    MODEL_NOT_FOUND = "model_not_found"  # no backend registers that base model
    ADAPTER_NOT_FOUND = "adapter_not_found"  # the adapter is not served for that model
    NO_BACKEND = "no_backend"  # every backend that could serve it is down, draining or failed
    ENGINE_REJECTED = "engine_rejected"  # the engine refused the request itself (e.g. a prompt over its context)
    UPSTREAM_INTERRUPTED = "upstream_interrupted"  # the stream broke after the first token (the text is kept)
    PRECISION = "precision"  # the capacity planner does not know that weight precision
    CAPACITY = "capacity"  # the capacity planner's figures are out of range
