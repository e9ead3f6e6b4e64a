"""Train the injection classifier on the training data (guardrails.training) and write guardrails/data/ weights.

Reproducible: fixed folds and solver (liblinear is deterministic), sorted vocabularies, rounded weights and a
gzip header without a timestamp, so the same data gives the same file byte for byte.
"""

from __future__ import annotations

import collections
import gzip
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandParser

from guardrails import training
from guardrails.injection import MODEL_PATH, reset_classifier
from guardrails.normalize import normalize


class Command(BaseCommand):
    requires_system_checks: list[str] = []
    help = (
        "Train the prompt-injection classifier on the training data only (jackhhao train, deepset train, the extra "
        "training set, the portal's own benign prompts) and write its weights."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", default=str(MODEL_PATH))

    def handle(self, *args: Any, **options: Any) -> None:
        rows = training.training_rows()
        texts = [normalize(r.text).canonical for r in rows]
        labels = np.array([r.label for r in rows])
        weights = training.sample_weights(rows)
        by_source = collections.Counter((r.source, r.label) for r in rows)
        self.stdout.write(f"train rows: {len(rows)} ({labels.sum()} attacks, {(labels == 0).sum()} benign)")
        for (source, label), n in sorted(by_source.items()):
            self.stdout.write(f"  {source:<28} {'attack' if label else 'benign'} {n}")
        best_c, best_auc, best_oof = training.C_GRID[0], -1.0, np.zeros(len(rows))
        for c in training.C_GRID:

            def make(t: list[str], y: np.ndarray, w: np.ndarray, c: float = c) -> Any:
                return training.fit(t, y, w, c).decision

            oof = training.out_of_fold(texts, labels, weights, make)
            auc = training.auc(labels, oof)
            self.stdout.write(f"  C={c:g}: out-of-fold ROC AUC {auc:.4f}")
            if auc > best_auc + 1e-9:
                best_c, best_auc, best_oof = c, auc, oof
        pool = np.array([r.source not in training.THRESHOLD_EXCLUDED for r in rows])
        levels = training.level_thresholds(best_oof, labels, pool)
        own = np.array([r.source in training.OWN_SOURCES for r in rows])
        oof_points = {
            level: {
                "recall": round(float((best_oof[labels == 1] >= t).mean()), 4),
                "fpr": round(float((best_oof[(labels == 0) & pool] >= t).mean()), 4),
                "own_benign_fpr": round(float((best_oof[own] >= t).mean()), 4),
            }
            for level, t in levels.items()
        }
        fitted = training.fit(texts, labels, weights, best_c)
        data: dict[str, Any] = {
            "format": "guardrails.injection/v2",
            "trained_on": {
                "files": training.training_files(),
                "own_benign": int(own.sum()),
                "rows": len(rows),
            },
            "C": best_c,
            "oof_auc": round(best_auc, 4),
            "oof_points": oof_points,
            "levels": {k: round(v, 6) for k, v in levels.items()},
            "intercept": round(float(fitted.model.intercept_[0]), 8),
        }
        for kind, vec in zip(("char", "word"), fitted.vectorizers, strict=True):
            vocab = {term: int(idx) for term, idx in sorted(vec.vocabulary_.items())}
            data[kind] = {"vocabulary": vocab, "idf": [round(float(x), 6) for x in vec.idf_]}
        data["coef"] = [round(float(x), 6) for x in fitted.model.coef_[0]]
        raw = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
            gz.write(raw)
        out = Path(options["output"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(buf.getvalue())
        reset_classifier()
        points = " ".join(f"{k}: recall {v['recall']:.3f} fpr {v['fpr']:.3f}" for k, v in oof_points.items())
        self.stdout.write(
            f"C={best_c:g} out-of-fold {points} features={len(data['coef'])} → {out} ({out.stat().st_size // 1024} KiB)"
        )
