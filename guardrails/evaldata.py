"""Readers for the shared evaluation sets (../shared/eval, or PORTAL_EVAL_DIR). Never copied into the project."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

INJECTION_TRAIN = "jailbreak_dataset_train_balanced.csv"
INJECTION_TEST = "jailbreak_dataset_test_balanced.csv"
DEEPSET_ATTACKS = "opensource_deepset_attacks.yaml"
DEEPSET_BENIGN = "opensource_deepset_benign.yaml"
NOTINJECT = "opensource_notinject_benign.yaml"
DEEPSET_TEST = "deepset_test.csv"
SCIFACT_CORPUS = "corpus.jsonl.gz"
PII_SYNTH = "synth_dataset_v2.json"
PII_SMALL = "generated_small.json"


# Where the evaluation sets are looked for when PORTAL_EVAL_DIR is unset: beside the checkout (the development
# layout), then the workplace's shared folder (a CI clone may live anywhere on the machine).
WORKPLACE_EVAL_DIR = Path("/work/shared/eval")


def eval_dir() -> Path:
    configured = os.environ.get("PORTAL_EVAL_DIR")
    if configured:
        return Path(configured)
    candidates = [Path(settings.BASE_DIR).parent / "shared" / "eval", WORKPLACE_EVAL_DIR]
    return next((c for c in candidates if (c / "injection").is_dir()), candidates[0])


@dataclass(frozen=True)
class Labeled:
    text: str
    malicious: bool


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_jackhhao(name: str) -> list[Labeled]:
    path = eval_dir() / "injection" / name
    with path.open(newline="", encoding="utf-8") as fh:
        return [Labeled(row["prompt"], row["type"].strip() == "jailbreak") for row in csv.DictReader(fh)]


def read_parapet_yaml(name: str) -> list[Labeled]:
    path = eval_dir() / "injection" / name
    rows = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    return [Labeled(str(row["content"]), str(row["label"]).strip() == "malicious") for row in rows]


def read_pii(name: str = PII_SYNTH) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((eval_dir() / "pii" / name).read_text(encoding="utf-8"))
    return rows


def read_deepset_test() -> list[Labeled]:
    """deepset/prompt-injections' test split (116 rows, a third German): evaluation only, never training."""
    path = eval_dir() / "injection" / DEEPSET_TEST
    with path.open(newline="", encoding="utf-8") as fh:
        return [Labeled(row["text"], row["label"].strip() == "1") for row in csv.DictReader(fh)]


def read_scifact_abstracts() -> list[str]:
    """The 5,183 SciFact abstracts (title and text), ordinary documents for the passage false-positive rate."""
    path = eval_dir() / "scifact" / SCIFACT_CORPUS
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [f"{r.get('title', '')}\n{r.get('text', '')}".strip() for r in rows]
