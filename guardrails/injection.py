"""Prompt-injection and jailbreak detection in layers: normalisation → heuristics → an n-gram classifier.

Two operating points:

- ``prompt`` (a user's message): the classifier (TF-IDF of character and word n-grams, logistic regression, trained
  by ``manage.py train_injection_model`` on the training data described in guardrails.training and shipped as JSON
  weights in guardrails/data/, no pickle) scores the canonical text and every decoded view (base64, hex, URL
  encoding, tag characters, spaced letters); the score is the larger of the classifier and heuristic scores, raised
  when an attack was hidden by obfuscation.
- ``document`` (a retrieved passage, a tool result, a web page): ordinary documents use imperatives, talk about
  passwords and rules, and quote "do not ignore". A passage is flagged only when it addresses the model: an
  unambiguous override or fake prompt delimiter, or text aimed at an assistant/AI/LLM, or hidden text (HTML
  comments, invisible styling, tag characters) that reads as instructions. Its classifier score counts only then.

The classifier's logit is mapped so that the thresholds chosen on out-of-fold training scores land on the
strictness levels' warn thresholds: high's warn at 10 % benign false positives, medium's at 4 %, low's at 1 %.
"""

from __future__ import annotations

import bisect
import gzip
import json
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import re2
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from guardrails import heuristics
from guardrails.normalize import DECODED_VIEWS, normalize
from guardrails.training import vectorizer_params
from guardrails.types import Decision, Verdict

MODEL_PATH = Path(__file__).resolve().parent / "data" / "injection_model.json.gz"

Mode = Literal["prompt", "document"]

# (warn, block) score thresholds per strictness level.
THRESHOLDS: dict[str, tuple[float, float]] = {"low": (0.85, 0.95), "medium": (0.7, 0.85), "high": (0.5, 0.7)}
MAX_CLASSIFIER_CHARS = 20_000
_OBFUSCATION_VIEWS = DECODED_VIEWS | {"rot13", "leetspeak"}


class InjectionClassifier:
    def __init__(self, data: dict[str, Any]) -> None:
        self.vectorizers: list[TfidfVectorizer] = []
        for kind in ("char", "word"):
            part = data[kind]
            vec = TfidfVectorizer(**vectorizer_params(kind), vocabulary=part["vocabulary"])
            vec.idf_ = np.asarray(part["idf"], dtype=np.float64)
            self.vectorizers.append(vec)
        self.coef = np.asarray(data["coef"], dtype=np.float64)
        self.intercept = float(data["intercept"])
        self.levels: dict[str, float] = {k: float(v) for k, v in data["levels"].items()}
        self.meta = {k: v for k, v in data.items() if k not in {"char", "word", "coef"}}
        # Knots (logit → score): each level's out-of-fold threshold lands on that level's warn threshold.
        self._knots = sorted(
            [(self.levels[level], THRESHOLDS[level][0]) for level in ("high", "medium", "low")], key=lambda k: k[0]
        )

    @classmethod
    def load(cls, path: Path = MODEL_PATH) -> InjectionClassifier:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return cls(json.load(fh))

    def features(self, texts: list[str]) -> sparse.csr_matrix:
        return sparse.hstack([v.transform(texts) for v in self.vectorizers]).tocsr()

    def logits(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.features([t[:MAX_CLASSIFIER_CHARS] for t in texts]) @ self.coef + self.intercept)

    def calibrated(self, z: float) -> float:
        """Map a logit to the strictness scale (monotone, piecewise linear between the levels' knots)."""
        (z0, s0), (z1, s1), (z2, s2) = self._knots
        if z < z0:
            return s0 * 2.0 / (1.0 + math.exp(-(z - z0)))  # s0 at z0, towards 0 far below
        if z < z1:
            return s0 + (s1 - s0) * (z - z0) / max(1e-9, z1 - z0)
        if z < z2:
            return s1 + (s2 - s1) * (z - z1) / max(1e-9, z2 - z1)
        scale = max(1e-6, z2 - z1)
        return s2 + (1.0 - s2) * (1.0 - math.exp(-(z - z2) / scale))


_classifier: InjectionClassifier | None = None
_classifier_lock = threading.Lock()


def get_classifier() -> InjectionClassifier:
    global _classifier
    if _classifier is None:
        with _classifier_lock:
            if _classifier is None:
                _classifier = InjectionClassifier.load()
    return _classifier


def reset_classifier() -> None:
    global _classifier
    with _classifier_lock:
        _classifier = None


@dataclass(frozen=True)
class Detection:
    score: float
    classifier: float
    heuristic: float
    reasons: tuple[str, ...]


# --- documents: does the passage address the model? ------------------------------------------------------------
# Heuristic rules that are unambiguous in any text: an override of "previous instructions", a fake prompt delimiter,
# a request for the system prompt. Other rules ("new rules are …", "without restrictions", "reveal your password")
# occur in ordinary policies and count in a document only when it also addresses the model.
DOCUMENT_RULES = frozenset(
    {"ml_override", "despite_told", "de_despite_told", "fake_delimiters", "reveal_prompt", "dan"}
)
# In a document "ignore … rules" is often ordinary advice ("ignore any request to bypass these rules"): an override
# counts on its own only when it names the earlier/previous/system instructions.
_DOC_OVERRIDE_RE = re.compile(
    r"\b(?:ignore|ignoring|disregard|disregarding|forget|override|do not follow|don't follow|stop following)\b"
    r"\s+(?:\w+\s+){0,2}?(?:(?:all|any|of|your|the|my|its)\s+){0,3}"
    r"(?:previous|prior|preceding|above|earlier|initial|original|system|developer|existing|foregoing)\s+"
    r"(?:\w+\s+)?(?:instructions?|prompts?|directives?|guidelines|rules|context|commands|messages)\b"
    r"|\b(?:ignorier\w*|vergiss|vergessen sie|missacht\w*)\s+(?:\w+\s+){0,2}?(?:vorherig\w*|bisherig\w*|obig\w*|"
    r"vorangegangen\w*|vorig\w*|vorangehend\w*|früher\w*|ursprünglich\w*)\s+(?:anweisung\w*|instruktion\w*|"
    r"befehl\w*|regeln|vorgaben|prompt\w*)\b",
    re.IGNORECASE,
)
_MODEL_NOUN = (
    r"(?:ai|a\.i\.|assistant|ai assistant|chatbot|chat bot|bot|llm|large language model|language model|model|agent|"
    r"copilot|chatgpt|gpt(?:-?\d[\w.]*)?|claude|gemini|llama|mistral|ki|ki-assistent\w*|sprachmodell|assistent\w*|"
    r"ia|asistente|assistente|modèle|modelo|modell|asystent\w*|model językowy)"
)
# Nouns that name an AI only (not "model", "agent", "bot", which ordinary documents use in other senses).
_AI_NOUN = (
    r"(?:ai|a\.i\.|ai assistant|ai agent|ai model|assistant|chatbot|llm|large language model|language model|copilot|"
    r"chatgpt|gpt(?:-?\d[\w.]*)?|claude|gemini|ki|ki-assistent\w*|sprachmodell|ki-modell|asystent ai|"
    r"assistant ia|asistente de ia|ai-assistent\w*)"
)
_ADDRESS_RES = [
    # "Note to the AI:", "AI assistant: …", "Dear language model", "Hinweis an die KI"
    re.compile(
        r"\b(?:note|message|instructions?|attention|hinweis|nachricht|anweisung|remarque|nota|uwaga)\s+"
        r"(?:to|for|an|für|à|pour|para|dla)\s+(?:the |any |all |die |den |l'|el |la )?" + _AI_NOUN + r"\b",
        re.IGNORECASE,
    ),
    re.compile(r"(?:^|[\n!>*#\[]|[.!?]\s)\s*(?:dear\s+|hey\s+|hi\s+|attention\s+)?" + _AI_NOUN + r"s?\s*[:,!]", re.I),
    # "If you are an AI / a language model …", "Wenn du eine KI bist"
    re.compile(
        r"\b(?:if|when|as|since|wenn|falls|als|si|jeśli|om)\s+(?:you(?:'re| are)|du|vous êtes|tu es|eres|jesteś|"
        r"you read this as)\s+(?:an?\s+|eine?\s+|un\s+|una\s+)?(?:\w+\s+){0,2}" + _MODEL_NOUN + r"\b",
        re.IGNORECASE,
    ),
    # "AI assistants/models reading this must …", "any LLM processing this document should …"
    re.compile(
        r"\b(?:any|all|every|the|an?)\s+" + _AI_NOUN + r"s?\s+(?:\w+\s+){0,4}?"
        r"(?:reading|processing|summari[sz]ing|parsing|seeing|analy[sz]ing|that reads|who reads)\b",
        re.IGNORECASE,
    ),
    # "When summarising this page, tell the user …", "in your answer/response/summary, include …"
    re.compile(
        r"\b(?:when|while|before)\s+(?:you\s+)?(?:summari[sz]\w*|answering|responding|processing|reading)\s+"
        r"(?:this|the)\s+(?:\w+\s+){0,2}?(?:page|document|text|email|message|file|passage|website|content)\b",
        re.IGNORECASE,
    ),
    re.compile(
        r"\b(?:tell|instruct|inform|ask|urge|convince|direct|persuade)\s+the\s+(?:user|reader|customer|human)\s+"
        r"(?:to|that)\b",
        re.IGNORECASE,
    ),
    re.compile(
        r"\b(?:in|at the end of|at the start of|append to|add to)\s+your\s+(?:answer|response|reply|summary|output)\b",
        re.IGNORECASE,
    ),
    re.compile(r"\b(?:do not|don't|never)\s+(?:tell|mention|reveal|disclose)\s+(?:to\s+)?the\s+user\b", re.I),
]
_HTML_COMMENT_RE = re.compile(r"<!--(.*?)(?:-->|$)", re.DOTALL)
# An opening tag styled invisible (the element's text is taken up to its closing tag by code below). RE2: linear
# whatever the text holds (with Python's re, a hidden element's ".*?</\1>" rescanned the rest of the text for every
# opening tag: 100,000 characters of "<span style=display:none>" took 18 s).
_HIDDEN_STYLE_RE = re2.compile(
    r"(?i)<(\w+)[^>]*style[ \t\n\r\f\x0b]*=[ \t\n\r\f\x0b]*[\"']"
    r"(?:[^\"']*(?:display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:\.\d+)?(?:px|pt|em|rem)?\s*[;\"']|"
    r"opacity\s*:\s*0(?:\.0+)?\s*[;\"'])|(?:[^\"']*[^\"'\w-])?color\s*:\s*(?:#fff(?:fff)?|white|"
    r"rgba?\(\s*255\s*,\s*255\s*,\s*255)\b)[^\"']*[\"'][^>]*>"
)
_CLOSING_TAG_RE = re.compile(r"</(\w+)>")
_TAG_RE = re2.compile(r"<[^>]+>")
_WORDS_RE = re.compile(r"[^\W\d_]{2,}")


def _hidden_elements(text: str) -> list[str]:
    """The text of elements styled invisible, each up to the next closing tag of its name (case-insensitive), found
    with one pass over the closing tags: O(n log n) whatever the text holds."""
    closings: dict[str, list[int]] = {}
    for m in _CLOSING_TAG_RE.finditer(text):
        closings.setdefault(m.group(1).lower(), []).append(m.start())
    found: list[str] = []
    done = 0
    for opening in _HIDDEN_STYLE_RE.finditer(text):
        if opening.start() < done:
            continue  # inside the previous hidden element
        positions = closings.get(opening.group(1).lower(), [])
        k = bisect.bisect_left(positions, opening.end())
        if k == len(positions):
            continue
        found.append(_TAG_RE.sub(" ", text[opening.end() : positions[k]]))
        done = positions[k] + len(opening.group(1)) + 3
    return found


def _hidden_texts(text: str) -> list[str]:
    """Text a human reader does not see: HTML comments and elements styled invisible (white on white, size 0)."""
    found = [m.group(1) for m in _HTML_COMMENT_RE.finditer(text)]
    found += _hidden_elements(text)
    return [h.strip() for h in found if len(_WORDS_RE.findall(h)) >= 3]


def _addresses_model(views: list[tuple[str, str]]) -> bool:
    return any(r.search(text) for _, text in views for r in _ADDRESS_RES)


# --- detection ------------------------------------------------------------------------------------------------
def _classifier_views(views: list[tuple[str, str]]) -> list[str]:
    return [text for kind, text in views if kind == "canonical" or kind in DECODED_VIEWS]


def detect_many(texts: list[str], *, mode: Mode = "prompt") -> list[Detection]:
    if not texts:
        return []
    normalized = [normalize(t) for t in texts]
    hidden = [_hidden_texts(t) if mode == "document" else [] for t in texts]
    batch: list[str] = []
    spans: list[tuple[int, int, int]] = []  # per text: start, end of its views, end of its hidden parts
    for norm, hid in zip(normalized, hidden, strict=True):
        start = len(batch)
        batch += _classifier_views(norm.views)
        mid = len(batch)
        batch += [normalize(h).canonical for h in hid]
        spans.append((start, mid, len(batch)))
    clf = get_classifier()
    logits = clf.logits(batch) if batch else np.zeros(0)
    out: list[Detection] = []
    for norm, hid, (start, mid, end) in zip(normalized, hidden, spans, strict=True):
        c = max(clf.calibrated(float(z)) for z in logits[start:mid])
        c_hidden = max((clf.calibrated(float(z)) for z in logits[mid:end]), default=0.0)
        if mode == "document":
            out.append(_document(norm.views, norm.signals, hid, c, c_hidden))
        else:
            out.append(_prompt(norm.views, norm.signals, c))
    return out


def _obfuscation(hits: list[heuristics.HeuristicHit], signals: set[str], score: float, reasons: list[str]) -> float:
    hidden = sorted({hit.view for hit in hits if hit.view in _OBFUSCATION_VIEWS})
    if hidden:
        score = min(1.0, score + 0.1)
        reasons.append("instructions hidden by obfuscation (" + ", ".join(hidden) + ")")
    if "tag_characters" in signals:
        score = max(score, 0.75)
        reasons.append("invisible Unicode tag characters carry hidden text")
    for signal in sorted(signals & {"homoglyphs", "invisible_characters"}):
        if score >= THRESHOLDS["high"][0]:
            reasons.append(signal.replace("_", " ") + " used to disguise words")
    return score


def _prompt(views: list[tuple[str, str]], signals: set[str], c: float) -> Detection:
    hits = heuristics.match(views)
    h = heuristics.score(hits)
    reasons = [heuristics.describe(category) for category in dict.fromkeys(hit.category for hit in hits)]
    score = max(h, c)
    if h >= 0.6 and c >= THRESHOLDS["high"][0]:
        # Two independent layers agree (a pattern and the classifier): combine them like independent evidence.
        score = max(score, 1.0 - (1.0 - h) * (1.0 - c))
    score = _obfuscation(hits, signals, score, reasons)
    if c >= THRESHOLDS["medium"][0]:
        reasons.append("reads like known injection and jailbreak prompts (classifier)")
    return Detection(score=round(score, 4), classifier=round(c, 4), heuristic=round(h, 4), reasons=tuple(reasons))


def _document(
    views: list[tuple[str, str]], signals: set[str], hidden: list[str], c: float, c_hidden: float
) -> Detection:
    hits = heuristics.match(views)
    strong = [hit for hit in hits if hit.rule in DOCUMENT_RULES]
    for kind, text in views:
        if _DOC_OVERRIDE_RE.search(text):
            strong.append(heuristics.HeuristicHit("document_override", "instruction_override", 0.95, kind))
            break
    addressed = _addresses_model(views)
    reasons: list[str] = []
    score = heuristics.score(strong)
    if strong:
        reasons += [heuristics.describe(category) for category in dict.fromkeys(hit.category for hit in strong)]
    if addressed:
        reasons.append("addresses the AI assistant directly")
        score = max(score, heuristics.score(hits), c)
        if hits and not strong:
            reasons += [heuristics.describe(category) for category in dict.fromkeys(hit.category for hit in hits)]
        if c >= THRESHOLDS["medium"][0]:
            reasons.append("reads like known injection prompts (classifier)")
    if hidden:
        hidden_views = [("hidden", normalize(h).canonical) for h in hidden]
        hidden_hits = heuristics.match(hidden_views)
        hidden_score = max(heuristics.score(hidden_hits), c_hidden)
        if _addresses_model(hidden_views):
            hidden_score = max(hidden_score, THRESHOLDS["medium"][0])
        if hidden_score >= THRESHOLDS["high"][0]:
            score = max(score, min(1.0, hidden_score + 0.1))
            reasons.append("hidden text (HTML comment or invisible styling) carries instructions")
    if score > 0 or "tag_characters" in signals:
        score = _obfuscation(hits if (addressed or strong) else [], signals, score, reasons)
    h = heuristics.score(strong)
    return Detection(score=round(score, 4), classifier=round(c, 4), heuristic=round(h, 4), reasons=tuple(reasons))


def decide(score: float, strictness: str) -> Decision:
    warn, block = THRESHOLDS.get(strictness, THRESHOLDS["medium"])
    if score >= block:
        return "block"
    if score >= warn:
        return "warn"
    return "allow"


def verdicts(texts: list[str], *, strictness: str, mode: Mode = "prompt") -> list[Verdict]:
    return [
        Verdict(score=d.score, decision=decide(d.score, strictness), reasons=d.reasons if d.score > 0.3 else ())
        for d in detect_many(texts, mode=mode)
    ]
