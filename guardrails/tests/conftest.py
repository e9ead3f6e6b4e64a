from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from guardrails.pii import get_analyzer


@pytest.fixture(scope="session")
def analyzer() -> Any:
    """Load spaCy and the recognizers once for the whole session."""
    return get_analyzer()


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
