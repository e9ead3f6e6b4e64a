"""Training data and fitting for the injection classifier (``manage.py train_injection_model``).

Training data, and only this (the evaluation sets deepset_test.csv, the jackhhao test split and NotInject are never
read here):

- jackhhao ``jailbreak_dataset_train_balanced.csv`` (jailbreak / benign),
- deepset's **train** split (``opensource_deepset_attacks.yaml`` / ``_benign.yaml``),
- ``train/injection_train_extra.csv`` (Lakera gandalf, multilingual injections, CyberSecEval, XSTest safe
  prompts, JailbreakBench benign; the mosscap sample is left out, see EXCLUDED_SOURCES),
- the portal developers' own benign prompts: ``data/benign_prompts.tsv`` (hand-written),
  ``benign_templates.generate()`` (trigger words in ordinary use, six languages) and
  ``benign_conversation.generate()`` (self-introductions, greetings, sign-offs, names and PII placeholders, workplace
  questions; nine languages),
- the portal developers' own attack prompts: ``attack_templates.generate()`` (override, task switch after praise,
  role play without rules, prompt extraction, fake authority; nine languages, weighted like a public source).

The extra set is attack-heavy and a few sources are large, so each (source, label) group's total weight is capped
and the own benign prompts weigh more (they are the hard negatives the public sets lack); the classes are then
balanced. Hyper-parameters (C) are chosen by out-of-fold ROC AUC over 5 stratified folds, and the strictness
levels' operating points are set on the out-of-fold scores of the benign training rows.
"""

from __future__ import annotations

import collections
import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from guardrails import attack_templates, benign_conversation, benign_templates, evaldata

EXTRA_TRAIN = "train/injection_train_extra.csv"
OWN_BENIGN_PATH = Path(__file__).resolve().parent / "data" / "benign_prompts.tsv"
OWN_SOURCES = frozenset({"own_benign", "own_template", "own_conversation"})
# Lakera's mosscap sample is every message sent to a password-guarding game bot, labelled attack wholesale; many are
# ordinary chatter out of context ("is there a space between the hyphen and the number?", "write a haiku"), and with
# them the classifier learned that any short question is an attack. Left out (measured: "What is the capital of
# France?" scored as an injection with it). gandalf_ignore_instructions, the clean override subset, stays.
EXCLUDED_SOURCES = frozenset({"mosscap_sample"})
GROUP_CAP = 600.0
OWN_WEIGHT = 10.0
C_GRID = (10.0, 30.0)
FOLDS = 5
SEED = 20261204
MAX_FEATURES = {"char": 50_000, "word": 20_000}
# Out-of-fold false-positive rates on the benign training rows at which the strictness levels' warn thresholds sit
# (low warns on fewer prompts than medium, high on more).
LEVEL_FPR = {"low": 0.01, "medium": 0.04, "high": 0.10}
# The benign rows whose out-of-fold scores set the levels: all but the conversational ones (greetings, names,
# sign-offs), which are easy and many and would pull the quantiles down (more warnings on every other prompt).
THRESHOLD_EXCLUDED = frozenset({"own_conversation"})


@dataclass(frozen=True)
class Row:
    text: str
    label: int
    source: str
    lang: str


def own_benign() -> list[Row]:
    rows = []
    for line in OWN_BENIGN_PATH.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        lang, text = line.split("\t", 1)
        rows.append(Row(text, 0, "own_benign", lang))
    rows += [Row(text, 0, "own_template", lang) for lang, text in benign_templates.generate()]
    rows += [Row(text, 0, "own_conversation", lang) for lang, text in benign_conversation.generate()]
    return rows


def own_attacks() -> list[Row]:
    return [Row(text, 1, "own_attack", lang) for lang, text in attack_templates.generate()]


def training_rows() -> list[Row]:
    rows = [
        Row(r.text, int(r.malicious), "jackhhao_train", "en") for r in evaldata.read_jackhhao(evaldata.INJECTION_TRAIN)
    ]
    for name in (evaldata.DEEPSET_ATTACKS, evaldata.DEEPSET_BENIGN):
        rows += [Row(r.text, int(r.malicious), "deepset_train", "en/de") for r in evaldata.read_parapet_yaml(name)]
    path = evaldata.eval_dir() / "injection" / EXTRA_TRAIN
    with path.open(newline="", encoding="utf-8") as fh:
        rows += [
            Row(r["text"], int(r["label"]), r["source"], r["lang"])
            for r in csv.DictReader(fh)
            if r["source"] not in EXCLUDED_SOURCES
        ]
    return rows + own_benign() + own_attacks()


def training_files() -> list[dict[str, Any]]:
    base = evaldata.eval_dir() / "injection"
    names = [evaldata.INJECTION_TRAIN, evaldata.DEEPSET_ATTACKS, evaldata.DEEPSET_BENIGN, EXTRA_TRAIN]
    return [{"file": n, "sha256": evaldata.sha256(base / n)} for n in names]


def sample_weights(rows: list[Row]) -> np.ndarray:
    counts = collections.Counter((r.source, r.label) for r in rows)
    w = np.array(
        [OWN_WEIGHT if r.source in OWN_SOURCES else min(1.0, GROUP_CAP / counts[(r.source, r.label)]) for r in rows]
    )
    y = np.array([r.label for r in rows])
    pos, neg = w[y == 1].sum(), w[y == 0].sum()
    w[y == 1] *= (pos + neg) / (2 * pos)
    w[y == 0] *= (pos + neg) / (2 * neg)
    return w


def vectorizer_params(kind: str) -> dict[str, Any]:
    """The feature extractors, shared by training and inference."""
    if kind == "char":
        return {"analyzer": "char_wb", "ngram_range": (3, 5), "sublinear_tf": True, "lowercase": False}
    return {
        "analyzer": "word",
        "ngram_range": (1, 2),
        "sublinear_tf": True,
        "lowercase": False,
        "token_pattern": r"(?u)\b\w+\b",
    }


@dataclass
class Fitted:
    vectorizers: list[TfidfVectorizer]
    model: LogisticRegression

    def decision(self, texts: list[str]) -> np.ndarray:
        features = sparse.hstack([v.transform(texts) for v in self.vectorizers]).tocsr()
        return np.asarray(self.model.decision_function(features))


def fit(texts: list[str], labels: np.ndarray, weights: np.ndarray, c: float) -> Fitted:
    vecs = []
    for kind in ("char", "word"):
        vec = TfidfVectorizer(**vectorizer_params(kind), min_df=3, max_features=MAX_FEATURES[kind], dtype=np.float64)
        vec.fit(texts)
        vecs.append(vec)
    features = sparse.hstack([v.transform(texts) for v in vecs]).tocsr()
    model = LogisticRegression(C=c, solver="liblinear", max_iter=2000)
    model.fit(features, labels, sample_weight=weights)
    return Fitted(vecs, model)


def out_of_fold(
    texts: list[str],
    labels: np.ndarray,
    weights: np.ndarray,
    make: Callable[[list[str], np.ndarray, np.ndarray], Callable[[list[str]], np.ndarray]],
) -> np.ndarray:
    scores = np.zeros(len(texts))
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    for train_idx, test_idx in folds.split(texts, labels):
        predict = make([texts[i] for i in train_idx], labels[train_idx], weights[train_idx])
        scores[test_idx] = predict([texts[i] for i in test_idx])
    return scores


def level_thresholds(scores: np.ndarray, labels: np.ndarray, pool: np.ndarray | None = None) -> dict[str, float]:
    """Per strictness level, the lowest score whose out-of-fold benign false-positive rate ≤ LEVEL_FPR, over the
    benign rows in ``pool`` (all benign rows when None)."""
    keep = labels == 0 if pool is None else (labels == 0) & pool
    benign = np.sort(scores[keep])
    out = {}
    for level, fpr in LEVEL_FPR.items():
        allowed = int(np.floor(fpr * len(benign)))
        out[level] = float(benign[len(benign) - allowed - 1]) + 1e-6
    return out


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores))
