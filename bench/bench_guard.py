"""Guardrails: quality on the shared evaluation sets and PII-analysis latency (``make bench-guard``).

1. ``guard_eval``: injection detection on the deepset test split, NotInject and the jackhhao test split (strictness
   medium; a prompt counts as flagged on warn or block; all three are report-only sets, never trained or tuned on),
   per language on deepset test, the ROC points of the three strictness levels, the passage operating point
   (SciFact abstracts and hand-written policy passages must pass, passages with planted instructions must be
   flagged), and PII detection on presidio-research's synth_dataset_v2 (token level, the
   default policy's entity types), with stock Presidio's PII figures measured on the same rows as the baseline.
2. Latency on 2 KB prompts (40 different texts built from synth_dataset_v2, so they hold names, numbers, addresses),
   interleaved round by round so every configuration sees the same machine load:
   - stock Presidio 2.2.366 (``AnalyzerEngine`` with the full spaCy pipeline of settings.SPACY_MODEL and the default
     recognizers; tldextract made offline), all entities, and the same with pattern entity types only;
   - the portal's analyzer with NER (default policy: PERSON needs spaCy) and with pattern types only;
   - the services end to end: ``mask`` (analysis + encrypted vault write in PostgreSQL) and ``inspect_input``.
   Ratios are portal ÷ stock of the same percentile.

   - the injection detector alone (``injection.verdicts`` on one 2 KB prompt).

Ends with one line:
``injection_recall=<x> injection_fpr=<x> notinject_fpr=<x> pii_recall_min=<x> pii_precision=<x> p95_ms_ner=<x>
p95_ms_patterns=<x> deepset_de_recall=<x> doc_fpr=<x> p95_ms_injection=<x>``.
``--injection-only`` skips PII and the PII latency (their keys print as nan).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


def setup_django() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def prompts_2kb(count: int) -> list[str]:
    from guardrails import evaldata

    rows = evaldata.read_pii()
    out, i = [], 0
    for _ in range(count):
        text = ""
        while len(text.encode()) < 2048:
            text += rows[i % len(rows)]["full_text"] + "\n"
            i += 1
        out.append(text.encode()[:2048].decode(errors="ignore"))
    return out


def stock_engine() -> Any:
    from django.conf import settings
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    import guardrails.pii  # noqa: F401  (makes tldextract offline for the stock engine too)

    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": settings.SPACY_MODEL}],
        }
    )
    return AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])


def _summary(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "p50": statistics.median(v),
            "p95": percentile(v, 0.95),
            "p99": percentile(v, 0.99),
            "n": float(len(v)),
        }
        for name, v in samples.items()
    }


def injection_latency(rounds: int) -> dict[str, dict[str, float]]:
    from guardrails import injection

    texts = prompts_2kb(40)
    for t in texts[:3]:
        injection.verdicts([t], strictness="medium")
    samples: dict[str, list[float]] = {"injection_detect": []}
    for r in range(rounds):
        started = time.perf_counter()
        injection.verdicts([texts[r % len(texts)]], strictness="medium")
        samples["injection_detect"].append((time.perf_counter() - started) * 1000)
    return _summary(samples)


def latency(rounds: int) -> dict[str, dict[str, float]]:
    from guardrails import injection
    from guardrails.pii import get_analyzer
    from guardrails.policy import DEFAULT_POLICY, PATTERN_ENTITIES
    from guardrails.services import inspect_input, mask
    from tenants.models import Tenant

    texts = prompts_2kb(40)
    analyzer = get_analyzer()
    stock = stock_engine()
    tenant, _ = Tenant.objects.get_or_create(slug="bench-guard", defaults={"name": "Bench guard"})
    ner_entities = DEFAULT_POLICY.active_entities()
    pattern_entities = [e for e in ner_entities if e in PATTERN_ENTITIES]
    counter = iter(range(10**9))
    configs: dict[str, Callable[[str], Any]] = {
        "stock_all": lambda t: stock.analyze(text=t, language="en"),
        "stock_patterns": lambda t: stock.analyze(text=t, language="en", entities=pattern_entities),
        "portal_ner": lambda t: analyzer.analyze(t, entities=ner_entities),
        "portal_patterns": lambda t: analyzer.analyze(t, entities=pattern_entities),
        "service_mask": lambda t: mask(tenant=tenant, scope_key=f"bench:{next(counter)}", text=t),
        "service_inspect_input": lambda t: inspect_input(tenant=tenant, text=t),
        "injection_detect": lambda t: injection.verdicts([t], strictness="medium"),
    }
    for fn in configs.values():  # warm up: load models, compile patterns, fill caches
        for t in texts[:3]:
            fn(t)
    samples: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    for r in range(rounds):
        text = texts[r % len(texts)]
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            started = time.perf_counter()
            configs[name](text)
            samples[name].append((time.perf_counter() - started) * 1000)
    return _summary(samples)


def stock_pii_report() -> Any:
    from guardrails import evaluation

    stock = stock_engine()
    wanted = evaluation.DEFAULT_POLICY.active_entities()

    def run(text: str) -> list[tuple[int, int, str]]:
        return [(r.start, r.end, r.entity_type) for r in stock.analyze(text=text, language="en", entities=wanted)]

    return evaluation.evaluate_pii(analyze=run, entities=wanted)


def injection_section() -> dict[str, float | None]:
    from guardrails import evaluation

    fmt = evaluation.fmt
    scores = evaluation.score_injection_sets()
    for level in ("medium", "high"):
        report = scores.report(level)
        report.block_only = scores.report(level, block_only=True).sets
        print("\n".join(evaluation.injection_table(report)))
    print("\nDeepset test by language (strictness medium, flagged = warn or block)")
    print(f"{'language':<10}{'rows':>6}{'recall':>9}{'FPR':>8}")
    for lang, s in scores.by_language("medium").items():
        print(f"{lang:<10}{s.positives + s.negatives:>6}{fmt(s.recall):>9}{fmt(s.fpr):>8}")
    print("\nStrictness levels (ROC points): pooled deepset test + jackhhao test, NotInject false positives")
    print(f"{'level':<8}{'flagged on':<12}{'recall':>9}{'FPR':>8}{'NotInject FPR':>15}")
    for level, decision, pooled, notinject in evaluation.roc_points(scores):
        print(f"{level:<8}{decision:<12}{fmt(pooled.recall):>9}{fmt(pooled.fpr):>8}{fmt(notinject.fpr):>15}")
    docs = evaluation.evaluate_documents(strictness="medium")
    print(f"\nPassages (document operating point, strictness medium, {docs.seconds:.1f} s)")
    print(f"  SciFact abstracts flagged: {docs.scifact.fp}/{docs.scifact.negatives} ({fmt(docs.scifact.fpr)})")
    print(f"  hand-written policy passages flagged: {docs.policy.fp}/{docs.policy.negatives}")
    print(f"  passages with planted instructions flagged: {docs.injected.tp}/{docs.injected.positives}")
    medium = scores.report("medium")
    de = scores.by_language("medium").get("de")
    return {
        "injection_recall": medium.pooled.recall,
        "injection_fpr": medium.pooled.fpr,
        "notinject_fpr": medium.notinject.fpr,
        "deepset_de_recall": de.recall if de else None,
        "doc_fpr": docs.scifact.fpr,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=160, help="latency samples per configuration")
    parser.add_argument("--skip-stock-pii", action="store_true", help="skip stock Presidio on synth_dataset_v2")
    parser.add_argument("--injection-only", action="store_true", help="skip PII quality and the PII latency")
    args = parser.parse_args()
    setup_django()
    import os as _os

    from django.db import connection

    from guardrails import evaluation

    print(f"machine: {_os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in _os.getloadavg())}")
    inj = injection_section()
    pii = None
    if not args.injection_only:
        pii = evaluation.evaluate_pii()
        print("\n".join(evaluation.pii_table(pii, "PII, portal analyzer, default policy entity types")))
        if not args.skip_stock_pii:
            stock = stock_pii_report()
            print("\n".join(evaluation.pii_table(stock, "PII, stock Presidio (baseline), same entity types")))
        lat = latency(args.rounds)
    else:
        lat = injection_latency(args.rounds)
    print(f"\nLatency on 2 KB prompts ({int(lat['injection_detect']['n'])} samples each, interleaved), milliseconds")
    print(f"{'configuration':<24}{'p50':>9}{'p95':>9}{'p99':>9}")
    for name, v in lat.items():
        print(f"{name:<24}{v['p50']:>9.2f}{v['p95']:>9.2f}{v['p99']:>9.2f}")
    if not args.injection_only:
        for ours, base in (("portal_ner", "stock_all"), ("portal_patterns", "stock_patterns")):
            ratios = " / ".join(f"{lat[ours][q] / lat[base][q]:.2f}" for q in ("p50", "p95", "p99"))
            print(f"ratio {ours} ÷ {base} (p50 / p95 / p99): {ratios}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in _os.getloadavg())}")
    connection.close()

    def f(x: float | None) -> str:
        return "nan" if x is None else f"{x:.3f}"

    def ms(name: str) -> str:
        return f"{lat[name]['p95']:.2f}" if name in lat else "nan"

    print(
        f"injection_recall={f(inj['injection_recall'])} injection_fpr={f(inj['injection_fpr'])} "
        f"notinject_fpr={f(inj['notinject_fpr'])} pii_recall_min={f(pii.recall_min if pii else None)} "
        f"pii_precision={f(pii.precision if pii else None)} p95_ms_ner={ms('portal_ner')} "
        f"p95_ms_patterns={ms('portal_patterns')} deepset_de_recall={f(inj['deepset_de_recall'])} "
        f"doc_fpr={f(inj['doc_fpr'])} p95_ms_injection={ms('injection_detect')}"
    )


if __name__ == "__main__":
    main()
