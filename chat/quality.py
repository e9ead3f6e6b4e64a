"""Answer-quality signals as Prometheus metrics, per department and model (labels: the department's slug and the
served model: the adapter's name when one answered, else the base model's).

- ``portal_answers_total{outcome}``: every chat turn by outcome: ``answered``, ``abstained`` (the answer says the
  sources or the model do not hold it), ``blocked`` (a guard refused it), ``refused`` (quota, budget, a busy pool),
  ``stopped``, ``error``;
- ``portal_answer_groundedness``: the output guard's groundedness of answers that cited passages;
- ``portal_answer_verdicts_total{stage, decision}``: the guards' verdicts on the question (``input``), the retrieved
  passages (``chunks``, one per passage) and the answer (``output``);
- ``portal_answer_feedback_total{rating}``: thumbs up and down (``chat.services.message_feedback_set``).

Only labels and numbers leave the pipeline: never text.
"""

from __future__ import annotations

import re
from typing import Any

from core.metrics import ANSWER_FEEDBACK, ANSWER_GROUNDEDNESS, ANSWER_VERDICTS, ANSWERS, label_value

_NOT = r"(?:n't|\s+not|not)"
ABSTENTION_RE = re.compile(
    r"|".join(
        [
            rf"\b(?:i|we)\s+(?:do|does|did|can|could|am|was|have|had){_NOT}\s+"
            r"(?:know|find|see|answer|determine|tell|say|have|been\s+able|able|sure|aware)\b",
            r"\b(?:i|we)\s+(?:cannot|can't|couldn't|can\s+not)\b",
            rf"\b(?:does|do|did){_NOT}\s+(?:contain|mention|include|provide|say|specify|state|cover|address|"
            r"describe|explain|answer|give)\b",
            r"\b(?:is|are|was|were)\s*(?:n't|\s+not)\s+(?:mentioned|found|provided|stated|specified|covered|"
            r"included|available|given|described|addressed)\b",
            r"\bnot\s+(?:mentioned|found|provided|stated|specified|covered|included|available)\s+in\b",
            r"\bno\s+(?:information|mention|details?|data|answer)\s+(?:about|on|regarding|for|in|is|was)\b",
            r"\b(?:there\s+is|there's)\s+no\s+(?:information|mention|answer)\b",
            r"\bunable\s+to\s+(?:find|answer|determine|locate)\b",
        ]
    ),
    re.IGNORECASE,
)
_ABSTENTION_HEAD = 300  # an abstention says so up front; a long answer that mentions a gap later still answered

_REFUSED_CODES = {"quota_exceeded", "budget_exceeded", "rate_limited", "rate_limit_exceeded", "busy"}


def answer_abstained(text: str) -> bool:
    """The answer declines: the passages (or the model) do not hold what was asked."""
    return bool(ABSTENTION_RE.search((text or "")[:_ABSTENTION_HEAD]))


def _model_label(model: str, adapter: str) -> str:
    return label_value(adapter or model)


def turn_outcome(*, status: str, error_code: str, text: str) -> str:
    if status == "complete":
        return "abstained" if answer_abstained(text) else "answered"
    if error_code.startswith("guardrail"):
        return "blocked"
    if error_code in _REFUSED_CODES:
        return "refused"
    if status in ("stopped", "cancelled"):
        return "stopped"
    return "error"


def answer_quality_record(
    *, tenant: str, model: str, adapter: str, status: str, error_code: str, text: str, guard: dict[str, Any]
) -> str:
    """Record one chat turn's quality signals; returns its outcome. ``text`` is read here only (never exported)."""
    labels = {"tenant": label_value(tenant), "model": _model_label(model, adapter)}
    outcome = turn_outcome(status=status, error_code=error_code, text=text)
    ANSWERS.labels(outcome=outcome, **labels).inc()
    decision = (guard.get("input") or {}).get("decision")
    if decision:
        ANSWER_VERDICTS.labels(stage="input", decision=label_value(decision), **labels).inc()
    for decision in (guard.get("chunks") or {}).get("decisions") or []:
        ANSWER_VERDICTS.labels(stage="chunks", decision=label_value(decision), **labels).inc()
    output = guard.get("output") or {}
    if output.get("decision"):
        ANSWER_VERDICTS.labels(stage="output", decision=label_value(output["decision"]), **labels).inc()
    groundedness = output.get("groundedness")
    if isinstance(groundedness, int | float):
        ANSWER_GROUNDEDNESS.labels(**labels).observe(float(groundedness))
    return outcome


def answer_feedback_record(*, tenant: str, model: str, adapter: str, rating: str) -> None:
    ANSWER_FEEDBACK.labels(tenant=label_value(tenant), model=_model_label(model, adapter), rating=rating).inc()
