"""The policy form: per entity type an action, the strictness, custom patterns and deny-lists as plain lines."""

from __future__ import annotations

from typing import Any

from django import forms

from guardrails.policy import ACTIONS, BUILTIN_ENTITIES, DEFAULT_ENTITY_ACTIONS, STRICTNESS, ResolvedPolicy

_ACTION_CHOICES = [(a, a.capitalize()) for a in ACTIONS]


class PolicyForm(forms.Form):
    injection_strictness = forms.ChoiceField(
        label="Injection strictness", choices=[(s, s.capitalize()) for s in STRICTNESS]
    )
    custom_recognizers = forms.CharField(
        label="Custom patterns (one per line: ENTITY_TYPE | regular expression | score)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": r"EMPLOYEE_ID | \bEMP-\d{6}\b | 0.9"}),
    )
    deny_lists = forms.CharField(
        label="Deny-lists (one per line: ENTITY_TYPE: term, term, …)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "PROJECT: Bluebird, Nightjar"}),
    )

    def __init__(self, *args: Any, policy: ResolvedPolicy, **kwargs: Any) -> None:
        initial = {
            "injection_strictness": policy.injection_strictness,
            "custom_recognizers": "\n".join(
                f"{p.entity_type} | {p.pattern} | {p.score:g}" for p in policy.custom_patterns
            ),
            "deny_lists": "\n".join(f"{t}: {', '.join(terms)}" for t, terms in policy.deny_lists),
        }
        for entity in self.entity_types(policy):
            initial[f"action_{entity}"] = policy.action(entity)
        kwargs["initial"] = initial
        super().__init__(*args, **kwargs)
        for entity in self.entity_types(policy):
            self.fields[f"action_{entity}"] = forms.ChoiceField(label=entity, choices=_ACTION_CHOICES)

    @staticmethod
    def entity_types(policy: ResolvedPolicy) -> list[str]:
        return list(BUILTIN_ENTITIES) + [t for t in policy.custom_entities if t not in BUILTIN_ENTITIES]

    def entity_fields(self) -> list[Any]:
        return [self[name] for name in self.fields if name.startswith("action_")]

    def clean_custom_recognizers(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for n, line in enumerate(self.cleaned_data["custom_recognizers"].splitlines(), start=1):
            if not line.strip():
                continue
            parts = [p.strip() for p in line.split(" | ")]
            if len(parts) not in (2, 3):
                raise forms.ValidationError(f"Line {n}: write ENTITY_TYPE | pattern | score.")
            try:
                score = float(parts[2]) if len(parts) == 3 else 0.9
            except ValueError:
                raise forms.ValidationError(f"Line {n}: the score must be a number between 0 and 1.") from None
            out.append({"entity_type": parts[0], "pattern": parts[1], "score": score})
        return out

    def clean_deny_lists(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for n, line in enumerate(self.cleaned_data["deny_lists"].splitlines(), start=1):
            if not line.strip():
                continue
            if ":" not in line:
                raise forms.ValidationError(f"Line {n}: write ENTITY_TYPE: term, term.")
            entity, terms = line.split(":", 1)
            out.setdefault(entity.strip(), []).extend(t.strip() for t in terms.split(",") if t.strip())
        return out

    def entity_actions(self) -> dict[str, str]:
        """Only the actions that differ from the defaults are stored."""
        actions = {}
        for name, value in self.cleaned_data.items():
            if name.startswith("action_"):
                entity = name.removeprefix("action_")
                if DEFAULT_ENTITY_ACTIONS.get(entity, "mask") != value:
                    actions[entity] = value
        return actions


class PreviewForm(forms.Form):
    text = forms.CharField(label="Sample text", max_length=5000, widget=forms.Textarea(attrs={"rows": 3}))
