"""Train the injection classifier on the jackhhao train split only and write guardrails/data/ weights.

Reproducible: fixed folds and solver (liblinear is deterministic), sorted vocabularies, rounded weights and a
gzip header without a timestamp, so the same data gives the same file byte for byte.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandParser
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from guardrails import evaldata
from guardrails.injection import MODEL_PATH, reset_classifier, vectorizer_params
from guardrails.normalize import normalize

C_GRID = (1.0, 3.0, 10.0, 30.0)
TARGET_TRAIN_FPR = 0.02
MAX_FEATURES = {"char": 40_000, "word": 15_000}


def _fit_vectorizers(texts: list[str]) -> list[TfidfVectorizer]:
    vecs = []
    for kind in ("char", "word"):
        vec = TfidfVectorizer(**vectorizer_params(kind), min_df=2, max_features=MAX_FEATURES[kind], dtype=np.float64)
        vec.fit(texts)
        vecs.append(vec)
    return vecs


def _features(vecs: list[TfidfVectorizer], texts: list[str]) -> sparse.csr_matrix:
    return sparse.hstack([v.transform(texts) for v in vecs]).tocsr()


def _fit(texts: list[str], labels: np.ndarray, c: float) -> tuple[list[TfidfVectorizer], LogisticRegression]:
    vecs = _fit_vectorizers(texts)
    model = LogisticRegression(C=c, solver="liblinear", class_weight="balanced", max_iter=1000)
    model.fit(_features(vecs, texts), labels)
    return vecs, model


def _oof(texts: list[str], labels: np.ndarray, c: float) -> np.ndarray:
    probs = np.zeros(len(texts))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=20240501)
    for train_idx, test_idx in folds.split(texts, labels):
        vecs, model = _fit([texts[i] for i in train_idx], labels[train_idx], c)
        probs[test_idx] = model.predict_proba(_features(vecs, [texts[i] for i in test_idx]))[:, 1]
    return probs


def _threshold(probs: np.ndarray, labels: np.ndarray) -> float:
    """The lowest threshold whose out-of-fold false-positive rate on the benign train rows is ≤ the target."""
    benign = np.sort(probs[labels == 0])
    allowed = int(np.floor(TARGET_TRAIN_FPR * len(benign)))
    cut = benign[len(benign) - allowed - 1] if allowed < len(benign) else 0.5
    return float(min(0.95, max(0.2, cut + 1e-6)))


class Command(BaseCommand):
    requires_system_checks: list[str] = []
    help = "Train the prompt-injection classifier on the jackhhao train split (only) and write its weights."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", default=str(MODEL_PATH))

    def handle(self, *args: Any, **options: Any) -> None:
        rows = evaldata.read_jackhhao(evaldata.INJECTION_TRAIN)
        texts = [normalize(r.text).canonical for r in rows]
        labels = np.array([1 if r.malicious else 0 for r in rows])
        self.stdout.write(f"train rows: {len(rows)} ({labels.sum()} jailbreak, {(labels == 0).sum()} benign)")
        best_c, best_auc, best_oof = C_GRID[0], -1.0, np.zeros(len(rows))
        for c in C_GRID:
            oof = _oof(texts, labels, c)
            auc = roc_auc_score(labels, oof)
            self.stdout.write(f"  C={c:g}: out-of-fold ROC AUC {auc:.4f}")
            if auc > best_auc + 1e-9:
                best_c, best_auc, best_oof = c, auc, oof
        threshold = _threshold(best_oof, labels)
        oof_recall = float((best_oof[labels == 1] >= threshold).mean())
        oof_fpr = float((best_oof[labels == 0] >= threshold).mean())
        vecs, model = _fit(texts, labels, best_c)
        offsets = np.cumsum([0] + [len(v.vocabulary_) for v in vecs])
        coef = model.coef_[0]
        data: dict[str, Any] = {
            "format": "guardrails.injection/v1",
            "trained_on": {
                "file": evaldata.INJECTION_TRAIN,
                "sha256": evaldata.sha256(evaldata.eval_dir() / "injection" / evaldata.INJECTION_TRAIN),
                "rows": len(rows),
            },
            "C": best_c,
            "oof_auc": round(best_auc, 4),
            "oof_recall": round(oof_recall, 4),
            "oof_fpr": round(oof_fpr, 4),
            "threshold": round(threshold, 6),
            "intercept": round(float(model.intercept_[0]), 8),
        }
        for i, (kind, vec) in enumerate(zip(("char", "word"), vecs, strict=True)):
            vocab = {term: int(idx) for term, idx in sorted(vec.vocabulary_.items())}
            data[kind] = {"vocabulary": vocab, "idf": [round(float(x), 8) for x in vec.idf_]}
            assert offsets[i + 1] - offsets[i] == len(vocab)
        data["coef"] = [round(float(x), 8) for x in coef]
        raw = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
            gz.write(raw)
        out = Path(options["output"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(buf.getvalue())
        reset_classifier()
        self.stdout.write(
            f"C={best_c:g} threshold={threshold:.4f} out-of-fold recall={oof_recall:.3f} fpr={oof_fpr:.3f} "
            f"features={len(coef)} → {out} ({out.stat().st_size // 1024} KiB)"
        )
