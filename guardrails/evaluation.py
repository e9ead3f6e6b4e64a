"""Evaluation of the guards on the shared data sets (used by ``manage.py guard_eval`` and bench/bench_guard.py).

Injection: a prompt is *flagged* when the decision at the given strictness is warn or block. Recall is over the
malicious rows, the false-positive rate over the benign rows; ``injection_recall`` pools the deepset **test** split's
injections and the jackhhao test jailbreaks, ``injection_fpr`` their benign rows; NotInject is all benign. These
sets are for reporting only: the classifier is trained on other data (guardrails.training) and its thresholds are
set on out-of-fold training scores. Passages (documents) are scored at their own operating point: SciFact
abstracts and hand-written policy passages must pass, passages with instructions for the AI must be flagged.

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
    "PHONE_NUMBER": 0.85,
    "PERSON": 0.80,
}
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


_LANG_STOP = {
    "de": "und der die das ist nicht ich du sie wir ein eine zu mit auf für von sich dem den des im wie was auch aber "
    "wenn oder bitte alle alles vergiss ignoriere über können kannst werden wird sind habe hast welche warum schreibe "
    "jetzt",
    "en": "the and is are not you your i we a an to of in on for with what how why which this that be can please all "
    "it do does",
    "fr": "le la les et est pas je tu vous nous un une des du de pour avec que qui quoi comment dans sur",
    "es": "el la los las y es no yo tú usted un una de del para con que qué cómo por en",
    "sv": "och är inte jag du vi en ett att av för med vad hur det som på",
    "pl": "i jest nie ja ty my to że na do w z się jak co czy dla",
}
_LANG_WORDS = {lang: frozenset(words.split()) for lang, words in _LANG_STOP.items()}
_LETTERS_RE = re.compile(r"[^\W\d_]+")


def guess_language(text: str) -> str:
    """A rough language guess for per-language figures: the language whose function words occur most (German
    also counts umlauts); text without any (keyword queries) is English when it is ASCII."""
    words = [w.lower() for w in _LETTERS_RE.findall(text)]
    umlauts = len(re.findall(r"[äöüß]", text.lower()))

    def hits(lang: str) -> float:
        return sum(w in _LANG_WORDS[lang] for w in words) + (0.5 * umlauts if lang == "de" else 0)

    best = max(_LANG_WORDS, key=hits)
    if hits(best) > 0:
        return best
    return "en" if text.isascii() else "other"


@dataclass
class ScoredSet:
    """Detector scores of one labelled set (the score does not depend on the strictness; the decision does)."""

    name: str
    scores: list[float]
    labels: list[bool]
    langs: list[str]

    def at(self, threshold: float, *, lang: str | None = None) -> BinaryScore:
        out = BinaryScore(self.name if lang is None else f"{self.name}[{lang}]")
        for s, y, lg in zip(self.scores, self.labels, self.langs, strict=True):
            if lang is None or lg == lang:
                out.add(truth=y, flagged=s >= threshold)
        return out


def score_texts(texts: Sequence[str], *, mode: injection.Mode = "prompt") -> list[float]:
    out: list[float] = []
    for start in range(0, len(texts), 64):
        out += [d.score for d in injection.detect_many(list(texts[start : start + 64]), mode=mode)]
    return out


def _scored(name: str, rows: Sequence[evaldata.Labeled]) -> ScoredSet:
    texts = [r.text for r in rows]
    return ScoredSet(name, score_texts(texts), [r.malicious for r in rows], [guess_language(t) for t in texts])


def _pool(name: str, parts: list[BinaryScore]) -> BinaryScore:
    pooled = BinaryScore(name)
    for s in parts:
        pooled.tp, pooled.fp, pooled.fn, pooled.tn = (
            pooled.tp + s.tp,
            pooled.fp + s.fp,
            pooled.fn + s.fn,
            pooled.tn + s.tn,
        )
    return pooled


@dataclass
class InjectionScores:
    """Scores on the report-only sets: deepset test, jackhhao test, NotInject (never used for training)."""

    deepset: ScoredSet
    jackhhao: ScoredSet
    notinject: ScoredSet
    seconds: float

    def report(self, strictness: str, *, block_only: bool = False) -> InjectionReport:
        warn, block = injection.THRESHOLDS[strictness]
        t = block if block_only else warn
        sets = {
            "deepset_test": self.deepset.at(t),
            "jackhhao_test": self.jackhhao.at(t),
            "notinject": self.notinject.at(t),
        }
        pooled = _pool("deepset_test+jackhhao_test", [sets["deepset_test"], sets["jackhhao_test"]])
        return InjectionReport(
            sets=sets, pooled=pooled, notinject=sets["notinject"], strictness=strictness, seconds=self.seconds
        )

    def by_language(self, strictness: str) -> dict[str, BinaryScore]:
        warn = injection.THRESHOLDS[strictness][0]
        langs = sorted(set(self.deepset.langs))
        return {lang: self.deepset.at(warn, lang=lang) for lang in langs}


def score_injection_sets() -> InjectionScores:
    started = time.perf_counter()
    deepset = _scored("deepset_test", evaldata.read_deepset_test())
    jackhhao = _scored("jackhhao_test", evaldata.read_jackhhao(evaldata.INJECTION_TEST))
    notinject = _scored("notinject", evaldata.read_parapet_yaml(evaldata.NOTINJECT))
    return InjectionScores(deepset, jackhhao, notinject, time.perf_counter() - started)


def evaluate_injection(*, strictness: str = "medium") -> InjectionReport:
    """Deepset test + jackhhao test (pooled) and NotInject at one strictness (flagged = warn or block)."""
    scores = score_injection_sets()
    report = scores.report(strictness)
    report.block_only = scores.report(strictness, block_only=True).sets
    return report


def roc_points(scores: InjectionScores) -> list[tuple[str, str, BinaryScore, BinaryScore]]:
    """Per strictness level and decision (warn-or-block, block): pooled recall/FPR and NotInject FPR."""
    out = []
    for level in ("low", "medium", "high"):
        for decision, block_only in (("warn+block", False), ("block", True)):
            r = scores.report(level, block_only=block_only)
            out.append((level, decision, r.pooled, r.notinject))
    return out


@dataclass
class DocumentReport:
    scifact: BinaryScore
    policy: BinaryScore
    injected: BinaryScore
    strictness: str
    seconds: float


def evaluate_documents(*, strictness: str = "medium") -> DocumentReport:
    """The passage operating point: SciFact abstracts and hand-written policy passages must pass (flagged = warn
    or block), passages with instructions planted for the AI must be flagged."""
    from guardrails.documents import INJECTED_PASSAGES, POLICY_PASSAGES

    warn = injection.THRESHOLDS[strictness][0]
    started = time.perf_counter()
    scifact, policy, injected = BinaryScore("scifact"), BinaryScore("policy"), BinaryScore("injected")
    for s in score_texts(evaldata.read_scifact_abstracts(), mode="document"):
        scifact.add(truth=False, flagged=s >= warn)
    for s in score_texts([t for _, t in POLICY_PASSAGES], mode="document"):
        policy.add(truth=False, flagged=s >= warn)
    for s in score_texts([t for _, t in INJECTED_PASSAGES], mode="document"):
        injected.add(truth=True, flagged=s >= warn)
    return DocumentReport(scifact, policy, injected, strictness, time.perf_counter() - started)


@dataclass
class PiiReport:
    per_entity: dict[str, BinaryScore]
    precision: float | None
    recall_min: float | None
    rows: int
    seconds: float
    entities: list[str]

    @property
    def recall_min_entity(self) -> str:
        candidates = [(s.recall, e) for e, s in self.per_entity.items() if e in PII_TARGETS and s.recall is not None]
        return min(candidates)[1] if candidates else ""


_TOKEN_RE = re.compile(r"\S+")


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
    for row in rows:
        text = row["full_text"]
        gold_spans = []
        for s in row["spans"]:
            mapped = GOLD_MAP.get(s["entity_type"])
            if mapped in wanted:
                gold_spans.append((int(s["start_position"]), int(s["end_position"]), mapped))
        gold = _label_tokens(text, gold_spans)
        pred = _label_tokens(text, [p for p in run(text) if p[2] in wanted])
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
    recalls = [scores[e].recall for e in PII_TARGETS if e in scores and scores[e].recall is not None]
    return PiiReport(
        per_entity=dict(sorted(scores.items())),
        precision=tp / (tp + fp) if tp + fp else None,
        recall_min=min(r for r in recalls if r is not None) if recalls else None,
        rows=len(rows),
        seconds=time.perf_counter() - started,
        entities=list(wanted),
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
    lines.append(f"{'overall':<16}{'':>8}{fmt(report.precision):>11}{'':>9}{'≥0.85':>9}")
    lines.append(f"lowest target recall: {fmt(report.recall_min)} ({report.recall_min_entity})")
    return lines


def as_dict(report: Any) -> dict[str, Any]:
    if isinstance(report, InjectionReport):
        return {
            "injection_recall": report.pooled.recall,
            "injection_fpr": report.pooled.fpr,
            "notinject_fpr": report.notinject.fpr,
        }
    if isinstance(report, PiiReport):
        return {"pii_recall_min": report.recall_min, "pii_precision": report.precision}
    raise TypeError(type(report).__name__)
