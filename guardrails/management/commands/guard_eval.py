"""Print precision, recall and false-positive rate of the guards on the shared evaluation sets."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from guardrails import evaluation
from guardrails.policy import BUILTIN_ENTITIES


class Command(BaseCommand):
    requires_system_checks: list[str] = []
    help = "Evaluate injection detection (deepset, NotInject, jackhhao test) and PII detection (synth_dataset_v2)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--strictness", default="medium", choices=["low", "medium", "high"])
        parser.add_argument("--skip-pii", action="store_true")
        parser.add_argument("--skip-injection", action="store_true")
        parser.add_argument("--all-entities", action="store_true", help="also evaluate every built-in entity type")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["skip_injection"]:
            report = evaluation.injection_table(evaluation.evaluate_injection(strictness=options["strictness"]))
            self.stdout.write("\n".join(report) + "\n")
        if not options["skip_pii"]:
            pii = evaluation.evaluate_pii()
            self.stdout.write("\n".join(evaluation.pii_table(pii, "PII, default policy entity types")) + "\n")
            if options["all_entities"]:
                full = evaluation.evaluate_pii(entities=list(BUILTIN_ENTITIES))
                self.stdout.write("\n".join(evaluation.pii_table(full, "PII, all built-in entity types")) + "\n")
