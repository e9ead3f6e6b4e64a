"""Per-tenant guardrail policy, resolved against the built-in defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import re2
import regex

# Entity types the built-in analyzers can find. NER types need the spaCy pipeline; the rest are patterns.
NER_ENTITIES = ("PERSON", "LOCATION", "NRP")
PATTERN_ENTITIES = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
    "URL",
    "DATE_TIME",
)
BUILTIN_ENTITIES = NER_ENTITIES + PATTERN_ENTITIES

# What a department gets before it changes anything: identifying data is masked, context (places, dates, links)
# passes through so answers stay useful.
DEFAULT_ENTITY_ACTIONS: dict[str, str] = {
    "PERSON": "mask",
    "EMAIL_ADDRESS": "mask",
    "PHONE_NUMBER": "mask",
    "CREDIT_CARD": "mask",
    "IBAN_CODE": "mask",
    "US_SSN": "mask",
    "IP_ADDRESS": "mask",
    "LOCATION": "allow",
    "NRP": "allow",
    "URL": "allow",
    "DATE_TIME": "allow",
}
ACTIONS = ("allow", "mask", "block")
STRICTNESS = ("low", "medium", "high")
ENTITY_TYPE_RE = re.compile(r"^[A-Z][A-Z0-9_]{1,39}$")
MAX_CUSTOM_RECOGNIZERS = 50
MAX_PATTERN_LENGTH = 300
MAX_DENY_TERMS = 1000


@dataclass(frozen=True)
class CustomPattern:
    entity_type: str
    pattern: str
    score: float = 0.9


@dataclass(frozen=True)
class ResolvedPolicy:
    tenant_id: int | None
    version: str
    entity_actions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ENTITY_ACTIONS))
    injection_strictness: str = "medium"
    custom_patterns: tuple[CustomPattern, ...] = ()
    deny_lists: tuple[tuple[str, tuple[str, ...]], ...] = ()
    link_hosts: tuple[str, ...] = ()

    def action(self, entity_type: str) -> str:
        return self.entity_actions.get(entity_type, "mask")

    @property
    def custom_entities(self) -> tuple[str, ...]:
        types = {p.entity_type for p in self.custom_patterns} | {t for t, _ in self.deny_lists}
        return tuple(sorted(types))

    def active_entities(self) -> list[str]:
        """Entity types to look for: everything not allowed."""
        types = list(BUILTIN_ENTITIES) + [t for t in self.custom_entities if t not in BUILTIN_ENTITIES]
        return [t for t in types if self.action(t) != "allow"]


DEFAULT_POLICY = ResolvedPolicy(tenant_id=None, version="default")


def validate_entity_actions(raw: object) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise ValueError("Entity actions must map an entity type to allow, mask or block.")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not ENTITY_TYPE_RE.match(key):
            raise ValueError(f"'{key}' is not an entity type (capital letters, digits and _ only).")
        if value not in ACTIONS:
            raise ValueError(f"The action for {key} must be allow, mask or block, not '{value}'.")
        out[key] = value
    return out


CUSTOM_PATTERN_MAX_MEM = 8 << 20  # RE2 program memory per pattern (a huge repetition count is refused)
_RE2_ONLY = (
    "it needs a feature that cannot run in guaranteed linear time (back-references like \\1, look-ahead or "
    "look-behind, possessive or atomic groups); patterns run with RE2 so that no text can make them slow"
)


def compile_custom_pattern(pattern: str) -> Any:
    """A department's pattern compiled with RE2 (linear time in the text, whatever the pattern); ``ValueError``
    with the reason when RE2 cannot run it."""
    options = re2.Options()
    options.log_errors = False
    options.max_mem = CUSTOM_PATTERN_MAX_MEM
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        if "too large" in detail or "repetition size" in detail:
            return _raise(f"it is too large to run; use smaller repetition counts ({detail}).")
        try:
            regex.compile(pattern)
        except regex.error as syntax:
            return _raise(f"it is not a valid regular expression: {syntax}.")
        return _raise(f"{_RE2_ONLY} ({detail}).")


def _raise(message: str) -> Any:
    raise ValueError(message)


def validate_custom_recognizers(raw: object) -> list[dict[str, object]]:
    if not isinstance(raw, list):
        raise ValueError("Custom recognizers must be a list.")
    if len(raw) > MAX_CUSTOM_RECOGNIZERS:
        raise ValueError(f"At most {MAX_CUSTOM_RECOGNIZERS} custom recognizers are allowed.")
    out: list[dict[str, object]] = []
    for item in raw:
        if not isinstance(item, dict):
            raise ValueError("Each custom recognizer needs an entity_type and a pattern.")
        entity_type = item.get("entity_type")
        pattern = item.get("pattern")
        score = item.get("score", 0.9)
        if not isinstance(entity_type, str) or not ENTITY_TYPE_RE.match(entity_type):
            raise ValueError(f"'{entity_type}' is not an entity type (capital letters, digits and _ only).")
        if entity_type in BUILTIN_ENTITIES:
            raise ValueError(f"{entity_type} is built in; give the custom recognizer its own entity type.")
        if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_LENGTH:
            raise ValueError(f"The pattern for {entity_type} must be 1 to {MAX_PATTERN_LENGTH} characters.")
        try:
            compiled = compile_custom_pattern(pattern)
        except ValueError as exc:
            raise ValueError(f"The pattern for {entity_type} cannot be used: {exc}") from None
        if compiled.search("") is not None:
            raise ValueError(f"The pattern for {entity_type} matches empty text.")
        if not isinstance(score, int | float) or not 0 < float(score) <= 1:
            raise ValueError(f"The score for {entity_type} must be between 0 and 1.")
        out.append({"entity_type": entity_type, "pattern": pattern, "score": float(score)})
    return out


def validate_deny_lists(raw: object) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        raise ValueError("Deny-lists must map an entity type to a list of terms.")
    out: dict[str, list[str]] = {}
    total = 0
    for key, terms in raw.items():
        if not isinstance(key, str) or not ENTITY_TYPE_RE.match(key):
            raise ValueError(f"'{key}' is not an entity type (capital letters, digits and _ only).")
        if not isinstance(terms, list) or not all(isinstance(t, str) and t.strip() for t in terms):
            raise ValueError(f"The deny-list for {key} must be a list of non-empty terms.")
        cleaned = sorted({t.strip() for t in terms if len(t.strip()) <= 200})
        total += len(cleaned)
        out[key] = cleaned
    if total > MAX_DENY_TERMS:
        raise ValueError(f"At most {MAX_DENY_TERMS} deny-list terms are allowed.")
    return out


MAX_LINK_HOSTS = 200
_HOST_RE = re.compile(
    r"^(?:\*\.)?(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)


def validate_link_hosts(raw: object) -> list[str]:
    """Host names answers may link to with data in the URL (``intranet.example.com``; subdomains included)."""
    if not isinstance(raw, list) or not all(isinstance(h, str) for h in raw):
        raise ValueError("Allowed link hosts must be a list of host names.")
    out = set()
    for entry in raw:
        host = entry.strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
        if not host:
            continue
        if not _HOST_RE.match(host):
            raise ValueError(f"'{entry.strip()}' is not a host name (write it like intranet.example.com).")
        out.add(host.removeprefix("*."))
    if len(out) > MAX_LINK_HOSTS:
        raise ValueError(f"At most {MAX_LINK_HOSTS} allowed link hosts.")
    return sorted(out)
