"""Value objects returned by the guardrail services (see docs/contracts.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Decision = Literal["allow", "warn", "block"]


@dataclass(frozen=True)
class Verdict:
    """Result of the injection/jailbreak detector: a score in [0, 1], a decision and human-readable reasons."""

    score: float
    decision: Decision
    reasons: tuple[str, ...] = ()

    @property
    def flagged(self) -> bool:
        return self.decision != "allow"


@dataclass(frozen=True)
class MaskResult:
    """Masked text (placeholders such as ``<PERSON_1>``) and the number of entities masked per type."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputVerdict:
    """Checked model output.

    ``text`` is safe to show (unsafe markdown removed, PII the user did not supply redacted, replaced by a notice on
    a canary leak); ``groundedness`` is the share of answer sentences supported by the sources (None without
    sources); ``counts`` holds redacted entities per type.
    """

    text: str
    decision: Decision
    groundedness: float | None
    canary_leaked: bool
    counts: dict[str, int] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()
