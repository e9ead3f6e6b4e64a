"""Evaluation of the guards on the shared data sets (used by ``manage.py guard_eval`` and bench/bench_guard.py).

Injection: a prompt is *flagged* when the decision at the given strictness is warn or block. Recall is over the
malicious rows, the false-positive rate over the benign rows; ``injection_recall`` pools deepset attacks and
jackhhao test jailbreaks, ``injection_fpr`` their benign rows; NotInject is all benign.

PII: token level, as presidio-research does: the text is split on whitespace, a token carries an entity type when
it overlaps a span of that type (gold or predicted). Gold types are mapped to the portal's (GPE and
STREET_ADDRESS → LOCATION, DOMAIN_NAME → URL); gold types the portal does not detect (ORGANIZATION, TITLE, AGE …)
count as "O", so predicting PERSON on an organisation is a false positive. Precision pools every predicted type.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from guardrails import evaldata, injection
from guardrails.policy import DEFAULT_POLICY, ResolvedPolicy

PII_TARGETS: dict[str, float] = {
    "EMAIL_ADDRESS": 0.95,
    "CREDIT_CARD": 0.95,
    "IBAN_CODE": 0.95,
    "US_SSN": 0.95,
    "IP_ADDRESS": 0.95,
    "PHONE_NUMBER": 0.95,
    "PERSON": 0.90,
}
PRECISION_TARGET = 0.90
LEAK_TARGET = 0.05
GOLD_MAP = {
    "PERSON": "PERSON",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN_CODE",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
    "GPE": "LOCATION",
    "STREET_ADDRESS": "LOCATION",
    "DATE_TIME": "DATE_TIME",
    "DOMAIN_NAME": "URL",
    "NRP": "NRP",
}


@dataclass
class BinaryScore:
    name: str
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @property
    def positives(self) -> int:
        return self.tp + self.fn

    @property
    def negatives(self) -> int:
        return self.fp + self.tn

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / self.positives if self.positives else None

    @property
    def fpr(self) -> float | None:
        return self.fp / self.negatives if self.negatives else None

    def add(self, *, truth: bool, flagged: bool) -> None:
        if truth and flagged:
            self.tp += 1
        elif truth:
            self.fn += 1
        elif flagged:
            self.fp += 1
        else:
            self.tn += 1


@dataclass
class InjectionReport:
    sets: dict[str, BinaryScore]
    pooled: BinaryScore
    notinject: BinaryScore
    strictness: str
    seconds: float
    block_only: dict[str, BinaryScore] = field(default_factory=dict)


def _score_set(name: str, rows: Sequence[evaldata.Labeled], strictness: str) -> tuple[BinaryScore, BinaryScore]:
    warn_or_block, block = BinaryScore(name), BinaryScore(name)
    for start in range(0, len(rows), 64):
        batch = rows[start : start + 64]
        for row, verdict in zip(batch, injection.verdicts([r.text for r in batch], strictness=strictness), strict=True):
            warn_or_block.add(truth=row.malicious, flagged=verdict.decision != "allow")
            block.add(truth=row.malicious, flagged=verdict.decision == "block")
    return warn_or_block, block


def evaluate_injection(*, strictness: str = "medium") -> InjectionReport:
    started = time.perf_counter()
    deepset = evaldata.read_parapet_yaml(evaldata.DEEPSET_ATTACKS) + evaldata.read_parapet_yaml(evaldata.DEEPSET_BENIGN)
    jackhhao = evaldata.read_jackhhao(evaldata.INJECTION_TEST)
    notinject = evaldata.read_parapet_yaml(evaldata.NOTINJECT)
    sets: dict[str, BinaryScore] = {}
    block_only: dict[str, BinaryScore] = {}
    for name, rows in (("deepset", deepset), ("jackhhao_test", jackhhao), ("notinject", notinject)):
        sets[name], block_only[name] = _score_set(name, rows, strictness)
    pooled = BinaryScore("deepset+jackhhao_test")
    for name in ("deepset", "jackhhao_test"):
        s = sets[name]
        pooled.tp += s.tp
        pooled.fp += s.fp
        pooled.fn += s.fn
        pooled.tn += s.tn
    return InjectionReport(
        sets=sets,
        pooled=pooled,
        notinject=sets["notinject"],
        strictness=strictness,
        seconds=time.perf_counter() - started,
        block_only=block_only,
    )


# Entity types with a fixed shape (``pii_recall_min``); PERSON is reported on its own (``pii_person_recall``).
STRUCTURED_ENTITIES = ("EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "PHONE_NUMBER")


@dataclass
class PiiReport:
    per_entity: dict[str, BinaryScore]
    precision: float | None
    recall_min: float | None
    rows: int
    seconds: float
    entities: list[str]
    leak_texts: int = 0
    leak_examples: list[str] = field(default_factory=list)

    @property
    def leak_share(self) -> float | None:
        return self.leak_texts / self.rows if self.rows else None

    @property
    def person_recall(self) -> float | None:
        s = self.per_entity.get("PERSON")
        return s.recall if s else None

    @property
    def recall_min_entity(self) -> str:
        candidates = [
            (s.recall, e) for e, s in self.per_entity.items() if e in STRUCTURED_ENTITIES and s.recall is not None
        ]
        return min(candidates)[1] if candidates else ""


_TOKEN_RE = re.compile(r"\S+")
_VALUE_PART_RE = re.compile(r"[^\W_]{2,}|\d")


def leaked_parts(text: str, gold: list[tuple[int, int, str]], masked: list[tuple[int, int, str]]) -> list[str]:
    """Parts of gold values still in clear after masking: every word of two letters or more and every digit of a
    gold span that no masked span covers ("Lukas" of "Lukas Berg" when only "Berg" was masked)."""
    left = []
    for start, end, _ in gold:
        for m in _VALUE_PART_RE.finditer(text, start, end):
            if not any(ms < m.end() and me > m.start() for ms, me, _ in masked):
                left.append(m.group(0))
    return left


def _label_tokens(text: str, spans: list[tuple[int, int, str]]) -> list[str]:
    labels = []
    for m in _TOKEN_RE.finditer(text):
        label = "O"
        for start, end, entity in spans:
            if start < m.end() and end > m.start():
                label = entity
                break
        labels.append(label)
    return labels


Analyze = Callable[[str], list[tuple[int, int, str]]]


def portal_analyze(policy: ResolvedPolicy = DEFAULT_POLICY, entities: list[str] | None = None) -> Analyze:
    from guardrails.pii import get_analyzer

    analyzer = get_analyzer()
    wanted = entities if entities is not None else policy.active_entities()

    def run(text: str) -> list[tuple[int, int, str]]:
        return [(f.start, f.end, f.entity_type) for f in analyzer.analyze(text, entities=wanted, policy=policy)]

    return run


def evaluate_pii(
    *, analyze: Analyze | None = None, entities: list[str] | None = None, dataset: str = evaldata.PII_SYNTH
) -> PiiReport:
    rows = evaldata.read_pii(dataset)
    wanted = entities if entities is not None else DEFAULT_POLICY.active_entities()
    run = analyze or portal_analyze(entities=wanted)
    scores: dict[str, BinaryScore] = {}
    started = time.perf_counter()
    leak_texts = 0
    leak_examples: list[str] = []
    for row in rows:
        text = row["full_text"]
        gold_spans = []
        for s in row["spans"]:
            mapped = GOLD_MAP.get(s["entity_type"])
            if mapped in wanted:
                gold_spans.append((int(s["start_position"]), int(s["end_position"]), mapped))
        gold = _label_tokens(text, gold_spans)
        predicted = [p for p in run(text) if p[2] in wanted]
        pred = _label_tokens(text, predicted)
        left = leaked_parts(text, gold_spans, predicted)
        if left:
            leak_texts += 1
            if len(leak_examples) < 200:
                leak_examples.append(f"{' '.join(left)!r} in {text[:160]!r}")
        for g, p in zip(gold, pred, strict=True):
            if g == "O" and p == "O":
                continue
            if g == p:
                scores.setdefault(g, BinaryScore(g)).tp += 1
                continue
            if p != "O":
                scores.setdefault(p, BinaryScore(p)).fp += 1
            if g != "O":
                scores.setdefault(g, BinaryScore(g)).fn += 1
    tp = sum(s.tp for s in scores.values())
    fp = sum(s.fp for s in scores.values())
    recalls = [scores[e].recall for e in STRUCTURED_ENTITIES if e in scores and scores[e].recall is not None]
    return PiiReport(
        per_entity=dict(sorted(scores.items())),
        precision=tp / (tp + fp) if tp + fp else None,
        recall_min=min(r for r in recalls if r is not None) if recalls else None,
        rows=len(rows),
        seconds=time.perf_counter() - started,
        entities=list(wanted),
        leak_texts=leak_texts,
        leak_examples=leak_examples,
    )


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def injection_table(report: InjectionReport) -> list[str]:
    lines = [
        f"Injection detection (strictness={report.strictness}; flagged = warn or block; {report.seconds:.1f} s)",
        f"{'data set':<24}{'rows':>6}{'precision':>11}{'recall':>9}{'FPR':>8}{'recall(block)':>15}{'FPR(block)':>12}",
    ]
    for name, s in [*report.sets.items(), ("pooled (deepset+jackhhao)", report.pooled)]:
        b = report.block_only.get(name)
        lines.append(
            f"{name:<24}{s.positives + s.negatives:>6}{fmt(s.precision):>11}{fmt(s.recall):>9}{fmt(s.fpr):>8}"
            f"{fmt(b.recall if b else None):>15}{fmt(b.fpr if b else None):>12}"
        )
    return lines


def pii_table(report: PiiReport, title: str) -> list[str]:
    lines = [
        f"{title} ({report.rows} rows, token level, {report.seconds:.1f} s)",
        f"{'entity':<16}{'tokens':>8}{'precision':>11}{'recall':>9}{'target':>9}",
    ]
    for entity, s in report.per_entity.items():
        target = PII_TARGETS.get(entity)
        lines.append(
            f"{entity:<16}{s.positives:>8}{fmt(s.precision):>11}{fmt(s.recall):>9}"
            f"{('≥' + format(target, '.2f')) if target else '':>9}"
        )
    lines.append(f"{'overall':<16}{'':>8}{fmt(report.precision):>11}{'':>9}{'≥' + format(PRECISION_TARGET, '.2f'):>9}")
    lines.append(f"lowest structured recall: {fmt(report.recall_min)} ({report.recall_min_entity})")
    lines.append(
        f"texts with a gold value left in clear after masking: {report.leak_texts} of {report.rows} "
        f"({fmt(report.leak_share)}, target ≤{LEAK_TARGET:.2f})"
    )
    return lines


def as_dict(report: Any) -> dict[str, Any]:
    if isinstance(report, InjectionReport):
        return {
            "injection_recall": report.pooled.recall,
            "injection_fpr": report.pooled.fpr,
            "notinject_fpr": report.notinject.fpr,
        }
    if isinstance(report, PiiReport):
        return {
            "pii_recall_min": report.recall_min,
            "pii_precision": report.precision,
            "pii_person_recall": report.person_recall,
            "pii_leak_texts": report.leak_share,
        }
    raise TypeError(type(report).__name__)
