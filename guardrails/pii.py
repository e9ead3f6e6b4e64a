"""PII analysis with Presidio, fully offline and trimmed for latency.

- spaCy pipeline from settings.SPACY_MODEL, loaded once per process with every component NER does not need
  disabled (tagger, parser, lemmatizer …); never downloaded at run time.
- Pattern recognizers: email and URL (our own linear-time patterns, domains checked on tldextract's bundled
  public-suffix list), phone (a regex pre-filter and python-phonenumbers validation instead of Presidio's slow
  multi-region matcher), credit card (Luhn), IBAN (checksum), US SSN, IP, dates; plus per-tenant custom patterns
  and deny-lists (ad hoc recognizers).
- PERSON: the NER plus the signals in guardrails.names (name lines, known given names, chat handles, greetings,
  sign-offs, people lists, repetition, context cues), every span passing one not-a-name check and widened to the
  name's other parts (a given name before a surname the NER found alone).
- When no NER entity type is requested the spaCy pipeline is skipped: a regex tokenizer feeds the context
  enhancer instead (the "patterns only" mode).
- Overlaps are resolved by score then length, so an email's domain is not also a URL and a card number's digits
  are not also a date.

The analyzer is a lazy, thread-safe singleton; the spaCy call itself is serialized by a lock.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
import tldextract
from django.conf import settings
from presidio_analyzer import (
    AnalysisExplanation,
    AnalyzerEngine,
    EntityRecognizer,
    LocalRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    DateRecognizer,
    IbanRecognizer,
    IpRecognizer,
    SpacyRecognizer,
    UsSsnRecognizer,
)

from guardrails import names
from guardrails.policy import NER_ENTITIES, ResolvedPolicy, compile_custom_pattern
from guardrails.vault import PLACEHOLDER_RE

logger = logging.getLogger(__name__)

LANGUAGE = "en"

# Public-suffix lookups from the snapshot bundled with tldextract: no download, no cache directory.
OFFLINE_TLD_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


def _patch_tldextract() -> None:
    """Make every module-level ``tldextract.extract`` call offline (Presidio's own recognizers, which the stock
    baseline in bench/bench_guard.py still runs; the portal's recognizers use OFFLINE_TLD_EXTRACT directly)."""
    import tldextract.tldextract as tld_module  # third-party module patched in place, only when Presidio loads

    tld_module.TLD_EXTRACTOR = OFFLINE_TLD_EXTRACT


_patch_tldextract()

# Which spaCy labels become which entity types; everything else (ORG, DATE, MONEY …) is ignored: dates come
# from the date patterns and organisation names are not personal data.
SPACY_LABELS = {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION"}
SPACY_LABELS_NRP = {"NORP": "NRP"}
_IGNORED_SPACY_LABELS = [
    "ORG",
    "DATE",
    "TIME",
    "CARDINAL",
    "EVENT",
    "LANGUAGE",
    "LAW",
    "MONEY",
    "ORDINAL",
    "PERCENT",
    "PRODUCT",
    "QUANTITY",
    "WORK_OF_ART",
    "ORGANIZATION",
    "DATE_TIME",
]

# Minimum score per entity type after context enhancement (Presidio's default is 0: everything).
SCORE_THRESHOLDS = {
    "PHONE_NUMBER": 0.4,
    "US_SSN": 0.4,
    "DATE_TIME": 0.5,
    "URL": 0.5,
    "IP_ADDRESS": 0.5,
    "CREDIT_CARD": 0.5,
    "IBAN_CODE": 0.5,
}
DEFAULT_THRESHOLD = 0.35


@dataclass(frozen=True)
class Finding:
    entity_type: str
    start: int
    end: int
    score: float


# Host names: labels of letters, digits and inner hyphens, then a top-level domain checked against the bundled
# public-suffix list. Every repetition starts with a label character and ends with a dot, so a run of dots or of
# "a.a.a." costs linear time (Presidio's own email and URL patterns take seconds on 2 KB of such text).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_HOST = rf"(?:{_LABEL}\.){{1,16}}[A-Za-z]{{2,24}}(?![\w\-])"


class OfflineEmailRecognizer(PatternRecognizer):
    """Email addresses, with the domain checked on the bundled public-suffix snapshot (no network)."""

    def __init__(self) -> None:
        super().__init__(
            supported_entity="EMAIL_ADDRESS",
            name="Email",
            supported_language=LANGUAGE,
            context=["email", "e-mail", "mail"],
            patterns=[Pattern("email", rf"(?<![\w.+\-])[\w+\-](?:[\w.+\-]{{0,62}}[\w+\-])?@{_HOST}", 1.0)],
        )

    def validate_result(self, pattern_text: str) -> bool:
        return OFFLINE_TLD_EXTRACT(pattern_text.rpartition("@")[2]).suffix != ""


class OfflineUrlRecognizer(PatternRecognizer):
    """Links with a scheme (any host), and bare host names whose top-level domain is a public suffix
    ("intranet.example.com")."""

    _PATH = r"(?:[/?#][^\s<>\"'()\[\]{}]{0,2048})?"

    def __init__(self) -> None:
        super().__init__(
            supported_entity="URL",
            name="Url",
            supported_language=LANGUAGE,
            context=["url", "website", "link", "site"],
            patterns=[
                Pattern(
                    "url with scheme",
                    r"(?i)\b(?:https?|ftp)://[^\s<>\"'()\[\]{}]{1,2048}",
                    0.6,
                ),
                Pattern("bare host", rf"(?i)(?<![\w.@/\-]){_HOST}(?::\d{{1,5}})?{self._PATH}", 0.5),
            ],
        )

    def validate_result(self, pattern_text: str) -> bool:
        if re.match(r"(?i)(?:https?|ftp)://", pattern_text):
            return True  # any host after a scheme: names, addresses, localhost
        return OFFLINE_TLD_EXTRACT(re.split(r"[:/?#]", pattern_text, maxsplit=1)[0]).suffix != ""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None, regex_flags: int | None = None
    ) -> list[RecognizerResult]:
        results = super().analyze(text, entities, nlp_artifacts, regex_flags)
        for r in results:  # a sentence's full stop or closing bracket is not part of the link
            while r.end > r.start and text[r.end - 1] in ".,;:!?)]}'\"":
                r.end -= 1
        return results


_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class CaseInsensitiveIbanRecognizer(IbanRecognizer):
    """IBANs typed in lower case ("gb42nawi0445…") are IBANs too. Presidio's patterns and country formats are upper
    case, so the text is read as it is and, when it holds a lower-case country code and check digits, once more as
    a copy in which only those IBAN candidates are upper-cased (same length, so the offsets hold). A candidate is
    the country code and check digits, one group (a bank code may be letters: "nwbk"), then groups that hold a
    digit: upper-casing the whole text ran print-format IBANs on into the next word ("SE45 … 7466 BANK") and lost
    them to the checksum."""

    _LOWER_CANDIDATE = re.compile(
        r"(?<![A-Za-z0-9])[a-z]{2}\d{2}(?:[ \-]?[A-Za-z0-9]{4})?(?:[ \-]?(?=[A-Za-z]*\d)[A-Za-z0-9]{1,4}){1,8}"
    )

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None, regex_flags: int | None = None
    ) -> list[RecognizerResult]:
        results = super().analyze(text, entities, nlp_artifacts, regex_flags)  # type: ignore[arg-type]
        if re.search(r"[a-z]{2}\d{2}", text) is None:
            return results
        upper = self._LOWER_CANDIDATE.sub(lambda m: m.group(0).translate(_ASCII_UPPER), text)
        if upper != text:
            for r in super().analyze(upper, entities, nlp_artifacts, regex_flags):  # type: ignore[arg-type]
                if all(r.end <= k.start or r.start >= k.end for k in results):
                    results.append(r)
        return results


def card_recognizer() -> CreditCardRecognizer:
    """Presidio's Luhn-validated card recognizer, widened to today's lengths and ranges: 12 to 19 digits,
    Mastercard 2-series, Maestro (12 to 19 digits), 19-digit Visa, 15-digit JCB (2131/1800)."""
    return CreditCardRecognizer(
        patterns=[
            Pattern(
                "card 12-19 digits",
                r"(?<![\d\-+])(?=[1-6])(?:\d[ \-]?){11,18}\d(?![\d\-])",
                0.3,
            )
        ]
    )


class PersonContextRecognizer(PatternRecognizer):
    """Names announced by their context that a small NER misses: an honorific, an introduction (``my name is``,
    ``Name:``, ``Dear``, a signature), a relation (``my son``, ``follow up with``) or a predicate only people take
    (``… lives at``, ``… was born``). Look-behinds take at most eight blanks: an unbounded one re-scans a run of
    spaces at every position (seconds on 2 KB of blanks)."""

    _NAME = rf"((?:{names.NAME_WORD}|[A-Z]\.)(?:[ \t]+(?:{names.NAME_WORD}|[A-Z]\.?(?=[ \t]))){{0,2}})"
    _INTRODUCED = (
        r"[Mm]y name is|[Nn]ame(?: is|:)|[Nn]amed|[Cc]alled|[Ii] am|[Ii]'m|[Tt]his is|[Dd]ear|[Rr]egards,|"
        r"[Ss]incerely,|[Tt]hanks,|[Cc]ontact(?: person)?:|[Aa]ttn:?|[Ff]rom:|[Tt]o:|[Cc]c:|"
        r"(?:[Ll]ast|[Ff]irst|[Ff]ull|[Mm]aiden|[Mm]iddle|[Gg]iven|[Ff]amily) name(?: is|\?|:)|[Ss]urname(?: is|:|\?)|"
        r"[Cc]alls? me|[Kk]nown as|[Uu]nder the name|name on the account(?: is|\?|:)"
    )
    _RELATION = (
        r"\b(?:[Mm]y|[Oo]ur|[Hh]is|[Hh]er|[Tt]heir) (?:kid|son|daughter|child|wife|husband|partner|spouse|mother|"
        r"father|mom|mum|dad|brother|sister|grandmother|grandfather|uncle|aunt|cousin|nephew|niece|colleague|"
        r"coworker|boss|manager|assistant|friend|fiancée?|girlfriend|boyfriend|tenant|landlord|neighbou?r)"
        r"|[Ff]ollow up with|[Ss]peak (?:to|with)|[Tt]alk (?:to|with)|[Mm]eet(?:ing)? with|[Aa]ssistant to"
        r"|(?:[Dd]irected|[Ww]ritten|[Pp]roduced|[Cc]omposed|[Pp]erformed|[Pp]ainted|[Ss]igned) [Bb]y:?"
        r"|[Ss]tarring|[Ff]eaturing|[Aa] tribute to|[Oo]n behalf of"
    )
    _PREDICATE = (
        r"(?=[ \t]+(?:lives (?:at|on|in)|was born|is (?:from|married)|passed away|, aged? \d)"
        r"|'s (?:kid|son|daughter|child|children|wife|husband|partner|mother|father|parents|killers?|funeral)\b)"
    )

    def __init__(self) -> None:
        super().__init__(
            supported_entity="PERSON",
            name="PersonContext",
            supported_language=LANGUAGE,
            global_regex_flags=re.MULTILINE,
            patterns=[
                Pattern(
                    "honorific",
                    rf"(?<=\b(?i:{'|'.join(names.HONORIFICS)})\.?[ \t]{{1,8}})" + self._NAME,
                    0.7,
                ),
                Pattern("introduced", rf"(?<=\b(?:{self._INTRODUCED})[ \t]{{1,8}})" + self._NAME, 0.5),
                Pattern("relation", rf"(?<=(?:{self._RELATION})[ \t]{{1,8}})" + self._NAME, 0.5),
                Pattern("predicate", rf"(?<![\w\-]){self._NAME}{self._PREDICATE}", 0.5),
            ],
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        first = pattern_text.split()[0].lower().strip(".")
        return None if names.is_name_word(first) else False


_ADDRESS_BEFORE = re.compile(
    r"(?:\b(?:Apt|Apartment|Suite|Ste|Unit|Box|address(?: is)?|lives? (?:at|on))\.?:?\s*)$", re.I
)
_ADDRESS_AFTER = re.compile(
    r"^\s*,?\s*(?:(?:[A-Z\u00c0-\u024f][\w'\-]*|[a-z]{1,3})\s+){0,3}"
    r"(?:St|Street|Str|Road|Rd|Avenue|Ave|Drive|Lane|Ln|Close|Way|Blvd|Boulevard|Court|Ct|Place|Pl|Square|"
    r"Terrace|Highway|Hwy|Parkway|Straße|Strasse|Gasse|Weg|Platz|Allee|Ring|Rue|Via|Calle|Suite|Apt)\b"
    r"|^\s*,?\s*(?:[a-z\u00df-\u024f][\w'\-]*\s+){1,3}(?i:street|road|avenue|drive|lane|boulevard|way)\b"
)


def _in_address(text: str, start: int, end: int) -> bool:
    return bool(_ADDRESS_BEFORE.search(text[max(0, start - 20) : start])) or bool(
        _ADDRESS_AFTER.match(text[end : end + 60])
    )


# Document, order, ticket and lot numbers: a number glued to a letter prefix ("INV-2026-12345", "SO-88123",
# "RMA#55821", "L240311-07") or announced by a document word ("Lot 2024-118-0042", "order no. 5512-8890").
_DOC_WORDS = (
    r"invoice|order|ticket|case|lot|batch|ref|reference|item|sku|serial|part|article|document|contract|claim|"
    r"shipment|tracking|delivery|receipt|quote|quotation|incident|booking|reservation|voucher|rechnung|bestellung|"
    r"auftrag|charge|faktura|ordernr|zamówienie|zamowienie|pedido|factura|albarán|albaran|lote|partia|"
    r"licen[cs]e|passport|zip|postcode|postal|plz|postnummer|postnr"
)
_DOC_ABBREVIATIONS = r"INV|SO|PO|RMA|REF|INC|CHG|REQ|ART|DOC|LOT|SKU|PRJ|WO|TKT|CS"  # upper case only
_DOC_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9]{0,9}[\-/#_.:]?$")
_DOC_CONTEXT = re.compile(
    rf"(?:\b(?i:{_DOC_WORDS})|\b(?:{_DOC_ABBREVIATIONS}))"
    r"(?:[ \t]*(?i:no\.?|nr\.?|number|num\.?|id|#|n[º°o]\.?|:|code|is|was))*[ \t:#.\-]*$"
)


def document_number(text: str, start: int) -> bool:
    """True when the number starting at ``start`` is part of a document, order, ticket or lot number."""
    before = text[max(0, start - 40) : start]
    if before and (before[-1].isalnum() or before[-1] in "-/#_") and _DOC_PREFIX.search(before):
        return True
    return bool(_DOC_CONTEXT.search(before))


class DocumentAwareSsnRecognizer(UsSsnRecognizer):
    """Presidio's US SSN patterns, minus numbers that belong to a document or lot ("LOT-123-45-6789")."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None, regex_flags: int | None = None
    ) -> list[RecognizerResult]:
        results = super().analyze(text, entities, nlp_artifacts, regex_flags)  # type: ignore[arg-type]
        return [r for r in results if not document_number(text, r.start)]


class FastPhoneRecognizer(LocalRecognizer):
    """Phone numbers: a regex finds candidates, python-phonenumbers validates them.

    Presidio's PhoneRecognizer runs PhoneNumberMatcher once per region over the whole text (about 49 ms for
    2 KB here). Candidates are runs of digits with the usual separators; each is parsed once as international
    (leading + or 00) or against a short list of regions and kept when it is a possible number.
    """

    CONTEXT = ["phone", "number", "telephone", "tel", "cell", "cellphone", "mobile", "call", "fax", "contact"]
    REGIONS = ("US", "GB", "DE", "FR", "IN", "IL", "BR", "DK", "NO", "NL", "IT", "ES", "AU")
    SCORE = 0.3  # bare digits: a phone number only with context ("phone", "call" …) nearby
    STRONG_SCORE = 0.6  # formatted with separators or an international prefix
    _CANDIDATE = re.compile(
        r"(?<![\w+])(?=[+(\d])"
        r"(?:\+|00)?\d{0,3}[ \t.\-]?"
        r"(?:\(\d{1,5}\)[ \t.\-]?)?"
        r"\d[\d \t.\-/]{5,18}\d"
        r"(?:[ \t]?(?:x|ext\.?|extension)[ \t]?\d{1,6})?"
        r"(?![\w])"
        r"|(?<![\w+])\(\d{2,5}\)[ \t]?\d[\d \t.\-]{4,14}\d(?:[ \t]?(?:x|ext\.?)[ \t]?\d{1,6})?(?!\w)",
        re.IGNORECASE,
    )

    _SSN_SHAPE = re.compile(r"^\d{3}[- .]\d{2}[- .]\d{4}$")
    _DATE_SHAPE = re.compile(
        r"\b(?:(?:19|20)\d{2}[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])|"
        r"(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|[12]\d|3[01])[-/.](?:19|20)?\d{2})\b"
    )

    def __init__(self) -> None:
        super().__init__(
            supported_entities=["PHONE_NUMBER"], supported_language=LANGUAGE, context=self.CONTEXT, name="FastPhone"
        )

    def load(self) -> None:
        pass

    def _parse(self, candidate: str) -> Any:
        core = re.sub(r"\s?(?:x|ext\.?|extension)\s?\d{1,6}$", "", candidate, flags=re.IGNORECASE)
        digits = re.sub(r"\D", "", core)
        if not 7 <= len(digits) <= 15:
            return None
        if core.startswith("+") or core.startswith("00"):
            try:
                number = phonenumbers.parse("+" + digits[2:] if core.startswith("00") else core, None)
            except phonenumbers.NumberParseException:
                return None
            return number if phonenumbers.is_possible_number(number) else None
        for region in self.REGIONS:
            try:
                number = phonenumbers.parse(core, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_possible_number(number):
                return number
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        results: list[RecognizerResult] = []
        parsed: dict[str, bool] = {}  # a number repeated in the text is parsed once (up to 13 regions each)
        for match in self._CANDIDATE.finditer(text):
            candidate = match.group(0).strip()
            start = match.start() + (len(match.group(0)) - len(match.group(0).lstrip()))
            if not candidate or self._SSN_SHAPE.match(candidate) or self._DATE_SHAPE.search(candidate):
                continue
            if text[match.end() : match.end() + 1] == ":":  # a date-time's hour, not a number
                continue
            international = candidate.startswith(("+", "00"))
            if not international and document_number(text, start):
                continue  # "INV-2026-12345", "Lot 2024-118-0042": a document's number, not a phone
            if not international and _in_address(text, start, start + len(candidate)):
                continue  # "704 1436 Redbud Drive", "Apt. 675 62314": house and postal numbers
            groups = re.findall(r"\d+", candidate.split("x")[0])
            if not international and len(groups) > 1 and max(len(g) for g in groups[:-1]) > 5:
                continue  # "20240301-7781": an id or a compact date with a suffix, not a phone grouping
            possible = parsed.get(candidate)
            if possible is None:
                possible = parsed[candidate] = self._parse(candidate) is not None
            if not possible:
                continue
            digits = sum(ch.isdigit() for ch in candidate)
            formatted = bool(re.search(r"[\s.\-()/]", candidate)) or international
            score = self.STRONG_SCORE if formatted else (self.SCORE + 0.1 if digits >= 10 else self.SCORE)
            results.append(
                RecognizerResult(
                    entity_type="PHONE_NUMBER",
                    start=start,
                    end=start + len(candidate),
                    score=score,
                    analysis_explanation=AnalysisExplanation(
                        recognizer="FastPhone", original_score=score, textual_explanation="phone number"
                    ),
                    recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: "FastPhone",
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                    },
                )
            )
        return results


class WindowContextEnhancer(ContextAwareEnhancer):
    """Presidio's context boost (+0.35, at least 0.4 when a context word precedes the match), computed on the five
    words before the match in the raw text instead of on lemmas: no tokens, no deep copies, no per-result scans
    of the whole token list (about half of the pattern path's time on 2 KB)."""

    _WORD = re.compile(r"[^\W\d_]+")

    def __init__(self) -> None:
        super().__init__(
            context_similarity_factor=0.35,
            min_score_with_context_similarity=0.4,
            context_prefix_count=5,
            context_suffix_count=0,
        )

    def enhance_using_context(
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: NlpArtifacts,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        by_id = {r.id: r for r in recognizers}
        extra = [w.lower() for w in context or []]
        for result in raw_results:
            metadata = result.recognition_metadata or {}
            recognizer = by_id.get(metadata.get(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY, ""))
            if recognizer is None or not recognizer.context:
                continue
            if metadata.get(RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY):
                continue
            before = self._WORD.findall(text[max(0, result.start - 80) : result.start].lower())
            window = before[-self.context_prefix_count :] + extra
            if any(c.lower() in w for c in recognizer.context for w in window):
                result.score = min(
                    self.MAX_SCORE,
                    max(result.score + self.context_similarity_factor, self.min_score_with_context_similarity),
                )
                metadata[RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY] = True
        return raw_results


# What the NER calls a place is not a person, whatever a weaker signal says ("Austin Texas", "Victoria Station");
# the NER's own PERSON spans are not affected. (Vetoing its ORG spans too cost 0.03 PERSON recall on
# synth_dataset_v2: the small pipeline calls many people organisations.)
PLACE_LABELS = frozenset({"GPE", "LOC", "FAC"})


class NerArtifacts(NlpArtifacts):
    """Presidio's artifacts plus the character spans the NER labelled as places and as organisations."""

    places: Sequence[tuple[int, int]] = ()
    organisations: Sequence[tuple[int, int]] = ()


NER_SEGMENT_CHARS = 1_500  # what one spaCy call sees at most
NER_MAX_TOKEN_CHARS = 40  # longer runs without a space are cut (a name is never that long)
# The NER's cost is per token (about 0.1 ms each on the shared machine), so each analysis gets a token budget:
# ordinary prose holds 0.17 to 0.23 spaCy tokens per character (synth_dataset_v2, SciFact, chat prompts), so 0.3 per
# character covers it with a margin, and a text of single letters or "a,a,a," (0.5 to 1 per character) is cut to it;
# NER_MAX_TOKENS caps a 100,000-character text (about 2 s of NER at most).
NER_TOKENS_PER_CHAR = 0.25
NER_MIN_TOKENS = 2_000  # a text of up to this many tokens is always read whole
NER_MAX_TOKENS = 10_000
_LONG_RUN = re.compile(rf"\S{{{NER_MAX_TOKEN_CHARS + 1},}}")
# A run between spaces without a letter or digit (punctuation), or any run without a letter longer than a phone
# number: blanked before the NER. Numbers up to that length stay: they are the NER's context ("Lukas Berg, 0171 …",
# "12 Harbour Road"), and blanking them cost 0.03 PERSON precision on synth_dataset_v2.
_NO_LETTER_RUN = re.compile(r"(?<!\S)(?:(?:(?![^\W\d_])(?!\d)\S)+|(?:(?![^\W\d_])\S){25,})(?!\S)")
_LETTER_WORD = re.compile(r"[^\W\d_]{2,}")


@dataclass
class NerEntity:
    """An entity of a segment, moved to the whole text's offsets (what Presidio's SpacyRecognizer reads)."""

    start_char: int
    end_char: int
    label_: str
    raw_label: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.raw_label = self.label_  # spaCy's own label (Presidio renames ``label_`` to its entity types)


def ner_segments(text: str) -> list[tuple[int, str]]:
    """``(offset, segment)`` pieces of at most NER_SEGMENT_CHARS covering ``text``, cut at a line end, else a
    sentence end, else a space; inside, runs without spaces that hold neither letter nor digit (punctuation) and runs
    without a letter longer than a phone number are blanked, and every longer run gets a space every
    NER_MAX_TOKEN_CHARS characters. Lengths are kept, so offsets stay
    those of ``text``."""
    chars: list[str] | None = None
    for match in _NO_LETTER_RUN.finditer(text):  # no letter, no name or place: one space token instead of many
        chars = chars if chars is not None else list(text)
        chars[match.start() : match.end()] = " " * (match.end() - match.start())
    if chars is not None:
        text = "".join(chars)
    if _LONG_RUN.search(text):
        chars = list(text)
        for match in _LONG_RUN.finditer(text):
            for cut in range(match.start() + NER_MAX_TOKEN_CHARS, match.end(), NER_MAX_TOKEN_CHARS + 1):
                chars[cut] = " "
        text = "".join(chars)
    segments: list[tuple[int, str]] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + NER_SEGMENT_CHARS)
        if end < len(text):
            window = text[start:end]
            cut = window.rfind("\n")
            if cut < NER_SEGMENT_CHARS // 2:
                cut = max(window.rfind(". "), window.rfind("? "), window.rfind("! "))
                cut = cut + 1 if cut >= NER_SEGMENT_CHARS // 2 else window.rfind(" ")
            if cut >= NER_SEGMENT_CHARS // 4:
                end = start + cut + 1
        segments.append((start, text[start:end]))
        start = end
    return segments


# A sentence ends at . ! or ? before a blank (closing quotes and brackets included) or at a line end.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"'\u2019\u201d)\]]*[ \t]+|\n")
_WORD = re.compile(r"[^\W\d_][\w'\u2019\-]*")
_PRONOUN_I = re.compile(r"I(?:['\u2019](?:m|ll|ve|d))?")
_INFLECTIONS = ("s", "es", "ed", "d", "ing")


class SentenceStarters:
    """Words that open an English sentence without being a name or a place: stop words and the verbs, adjectives
    and adverbs of the pipeline's own WordNet lemma index ("Summarise …", "Several …", "Finally …"), inflected or
    not; known given names are never in it, nor everyday words that are given names ("Mark", "Will"). Nouns are
    not in it (surnames and towns are nouns)."""

    def __init__(self, nlp: Any) -> None:
        words: set[str] = set(nlp.Defaults.stop_words)
        lemmatizer = dict(nlp.components).get("lemmatizer")
        lookups = getattr(lemmatizer, "lookups", None)
        if lookups is not None and lookups.has_table("lemma_index"):
            index = lookups.get_table("lemma_index")
            for pos in ("verb", "adj", "adv"):
                if pos in index:
                    words.update(w for w in index[pos] if w.isalpha())
        self.words = frozenset(words - names.given_names() - names.AMBIGUOUS_GIVEN_NAMES)

    def __contains__(self, word: str) -> bool:
        w = word.lower()
        if w in self.words:
            return True
        if w in names.given_names():
            return False
        for ending in _INFLECTIONS:  # "Discussed", "Using", "Agrees": the base form is in the index
            if len(w) > len(ending) + 2 and w.endswith(ending):
                base = w[: -len(ending)]
                if base in self.words or base + "e" in self.words or (base[-1] == base[-2] and base[:-1] in self.words):
                    return True
        return False


def may_hold_names(sentence: str, starters: SentenceStarters | frozenset[str]) -> bool:
    """Whether the NER could find a name or a place in ``sentence``: it holds a letter of a script without case, or
    a capitalised word other than "I" and other than an everyday first word. The NER (trained on cased text) does
    not label words in lower case; text typed in lower case reaches it through ``names.true_case``, with its likely
    names capitalised."""
    first = True
    for m in _WORD.finditer(sentence):
        word = m.group()
        if not word.islower():
            if any(ch.isalpha() and not ch.isupper() and not ch.islower() for ch in word):
                return True  # a script without case (CJK, Arabic, Devanagari …)
            if any(ch.isupper() for ch in word):
                if not first and not _PRONOUN_I.fullmatch(word):
                    return True
                if (
                    first
                    and not _PRONOUN_I.fullmatch(word)
                    and not (len(word) == 1 or (word[1:].islower() and word in starters))
                ):
                    return True
        first = False
    return False


def ner_pieces(segment: str, starters: SentenceStarters | frozenset[str]) -> list[tuple[int, str]]:
    """``(offset, piece)``: the runs of sentences of ``segment`` that the NER reads: each sentence that may hold a
    name or a place with the sentence before and after it as context (read alone, "Park and Mann were engineers."
    loses "Park"); the other sentences cost the NER nothing."""
    sentences: list[tuple[int, int]] = []
    start = 0
    for m in [*_SENTENCE_BREAK.finditer(segment), None]:
        stop, next_start = (m.start(), m.end()) if m is not None else (len(segment), len(segment))
        if segment[start:stop].strip():
            sentences.append((start, stop))
        start = next_start
    read = [may_hold_names(segment[a:b], starters) for a, b in sentences]
    pieces: list[tuple[int, str]] = []
    run: tuple[int, int] | None = None
    for i, (a, b) in enumerate(sentences):
        if read[i] or (i > 0 and read[i - 1]) or (i + 1 < len(read) and read[i + 1]):
            run = (run[0], b) if run is not None else (a, b)
        elif run is not None:
            pieces.append((run[0], segment[run[0] : run[1]]))
            run = None
    if run is not None:
        pieces.append((run[0], segment[run[0] : run[1]]))
    return pieces


def ner_token_budget(chars: int) -> int:
    """How many spaCy tokens the NER reads at most for a text of ``chars`` characters."""
    return min(NER_MAX_TOKENS, max(NER_MIN_TOKENS, int(chars * NER_TOKENS_PER_CHAR)))


def select_within_budget(token_counts: dict[str, int], *, budget: int) -> tuple[list[str], int]:
    """The segments the NER reads (and how many it leaves out): all of them when their tokens fit the budget,
    else those with a capitalised word first (names and places almost always have one), each class in text
    order, as long as they fit."""
    if sum(token_counts.values()) <= budget:
        return list(token_counts), 0
    capitalised = {s for s in token_counts if any(w[0].isupper() for w in _LETTER_WORD.findall(s))}
    chosen: list[str] = []
    used = 0
    for segment in [*(s for s in token_counts if s in capitalised), *(s for s in token_counts if s not in capitalised)]:
        if used + token_counts[segment] <= budget:
            chosen.append(segment)
            used += token_counts[segment]
    return chosen, len(token_counts) - len(chosen)


class TrimmedSpacyNlpEngine(SpacyNlpEngine):
    """spaCy with only what NER needs; never downloads a model; lowercase tokens stand in for lemmas."""

    def __init__(self, model_name: str) -> None:
        super().__init__(
            models=[{"lang_code": LANGUAGE, "model_name": model_name}],
            ner_model_configuration=NerModelConfiguration(
                model_to_presidio_entity_mapping={**SPACY_LABELS, **SPACY_LABELS_NRP},
                labels_to_ignore=_IGNORED_SPACY_LABELS,
            ),
        )
        self.model_name = model_name
        self._lock = threading.Lock()
        self._stop_words: frozenset[str] = frozenset()
        self._starters: SentenceStarters | frozenset[str] = frozenset()

    def load(self) -> None:
        import spacy  # lazy heavy import: the NLP pipeline loads on first analysis, not at start-up

        if not (spacy.util.is_package(self.model_name) or spacy.util.ensure_path(self.model_name).exists()):
            raise RuntimeError(
                f"The spaCy pipeline '{self.model_name}' (settings.SPACY_MODEL) is not installed; "
                "install its package, it is never downloaded at run time."
            )
        nlp = spacy.load(self.model_name)
        keep = {"ner"}
        for name, component in nlp.pipeline:
            listeners = getattr(component, "listening_components", None)
            if listeners and "ner" in listeners:
                keep.add(name)
        for name in list(nlp.pipe_names):
            if name not in keep:
                nlp.disable_pipe(name)
        self.nlp = {LANGUAGE: nlp}  # type: ignore[assignment]
        self._stop_words = frozenset(nlp.Defaults.stop_words)
        self._starters = SentenceStarters(nlp)

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        """NER over bounded segments with bounded tokens, within a token budget, so the time is linear in the text
        whatever it holds (spaCy's tokenizer is quadratic in the length of a run without spaces: 8,000 '(' took
        8.9 s; its model costs the same for every token). Within a segment it reads only the sentences that may
        hold a name or a place (``ner_pieces``): 2 KB of ordinary prose cost 51 ms of NER, most of it on sentences
        with no capitalised word but their first."""
        assert self.nlp is not None
        nlp = self.nlp[language]
        pieces = [
            (offset + at, piece)
            for offset, segment in ner_segments(text)
            for at, piece in ner_pieces(segment, self._starters)
        ]
        with self._lock:
            docs: dict[str, Any] = {}  # each distinct piece once (repeated text costs nothing more)
            for _, piece in pieces:
                if piece not in docs and _LETTER_WORD.search(piece):
                    docs[piece] = nlp.make_doc(piece)
            chosen, skipped = select_within_budget(
                {segment: len(doc) for segment, doc in docs.items()}, budget=ner_token_budget(len(text))
            )
            read = dict(zip(chosen, nlp.pipe((docs[s] for s in chosen), batch_size=8), strict=True))
        if skipped:
            logger.warning(
                "NER token budget reached: %s of %s segments not read by the NER", skipped, len(docs)
            )  # counts only, never text
        found: list[NerEntity] = []
        for offset, segment in pieces:
            doc = read.get(segment)
            if doc is not None:
                found.extend(NerEntity(offset + e.start_char, offset + e.end_char, e.label_) for e in doc.ents)
        entities = self._get_updated_entities(found, [0.85] * len(found))[0]  # type: ignore[arg-type]
        artifacts = NerArtifacts(
            entities=entities,
            tokens=[],  # type: ignore[arg-type]
            tokens_indices=[],
            lemmas=[],
            nlp_engine=self,
            language=language,
        )
        artifacts.places = [(e.start_char, e.end_char) for e in found if e.raw_label in PLACE_LABELS]
        artifacts.organisations = [(e.start_char, e.end_char) for e in found if e.raw_label == "ORG"]
        return artifacts

    def pattern_artifacts(self, text: str) -> NlpArtifacts:
        """Empty artifacts for the patterns-only mode: spaCy is not run (WindowContextEnhancer needs no tokens)."""
        return NlpArtifacts(
            entities=[],
            tokens=[],  # type: ignore[arg-type]
            tokens_indices=[],
            lemmas=[],
            nlp_engine=self,
            language=LANGUAGE,
        )

    def is_stopword(self, word: str, language: str) -> bool:
        return word.lower() in self._stop_words

    def is_punct(self, word: str, language: str) -> bool:
        return len(word) == 1 and not word.isalnum()


def _pattern_recognizers() -> list[EntityRecognizer]:
    return [
        OfflineEmailRecognizer(),
        FastPhoneRecognizer(),
        card_recognizer(),
        CaseInsensitiveIbanRecognizer(),
        DocumentAwareSsnRecognizer(),
        IpRecognizer(),
        OfflineUrlRecognizer(),
        DateRecognizer(),
    ]


class Re2PatternRecognizer(LocalRecognizer):
    """A department's own patterns, run with RE2 (linear time, no backtracking) and each within its own time
    budget per call: a pattern that matches too much stops at its budget (logged), never holds the shared
    guardrail threads."""

    def __init__(self, *, entity_type: str, patterns: list[tuple[str, Any, float]], budget_s: float) -> None:
        self.patterns = patterns
        self.budget_s = budget_s
        self.label: str = f"custom:{entity_type}"
        super().__init__(supported_entities=[entity_type], name=self.label, supported_language=LANGUAGE, context=[])

    def load(self) -> None:
        return None

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list[Any]:
        results: list[RecognizerResult] = []
        entity_type = self.supported_entities[0]
        for name, compiled, score in self.patterns:
            deadline = time.monotonic() + self.budget_s
            for match in compiled.finditer(text):
                if match.end() > match.start():
                    results.append(
                        RecognizerResult(
                            entity_type=entity_type,
                            start=match.start(),
                            end=match.end(),
                            score=score,
                            analysis_explanation=AnalysisExplanation(
                                recognizer=self.label, original_score=score, pattern_name=name
                            ),
                            recognition_metadata={
                                RecognizerResult.RECOGNIZER_NAME_KEY: self.label,
                                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                            },
                        )
                    )
                if time.monotonic() > deadline:
                    logger.warning("custom pattern %s (%s) stopped at its time budget", name, entity_type)
                    break
        return results


class PiiAnalyzer:
    def __init__(self, model_name: str) -> None:
        self.nlp_engine = TrimmedSpacyNlpEngine(model_name)
        self.nlp_engine.load()
        registry = RecognizerRegistry(supported_languages=[LANGUAGE])
        for recognizer in _pattern_recognizers():
            registry.add_recognizer(recognizer)
        registry.add_recognizer(SpacyRecognizer(supported_entities=list(NER_ENTITIES)))
        registry.add_recognizer(PersonContextRecognizer())
        self.engine = AnalyzerEngine(
            registry=registry,
            nlp_engine=self.nlp_engine,
            supported_languages=[LANGUAGE],
            default_score_threshold=0,
            context_aware_enhancer=WindowContextEnhancer(),
        )
        self._builtin_types = frozenset(self.engine.get_supported_entities(LANGUAGE))
        self._custom_cache: dict[str, list[EntityRecognizer]] = {}
        self._custom_lock = threading.Lock()

    def _custom_recognizers(self, policy: ResolvedPolicy) -> list[EntityRecognizer]:
        if not policy.custom_patterns and not policy.deny_lists:
            return []
        key = f"{policy.tenant_id}:{policy.version}"
        with self._custom_lock:
            cached = self._custom_cache.get(key)
            if cached is not None:
                return cached
        recognizers: list[EntityRecognizer] = []
        by_type: dict[str, list[tuple[str, Any, float]]] = {}
        for i, p in enumerate(policy.custom_patterns):
            try:
                compiled = compile_custom_pattern("(?m)" + p.pattern)
            except ValueError as exc:  # stored before patterns had to compile with RE2: skipped, never backtracked
                logger.warning("custom pattern %s of tenant %s skipped: %s", i, policy.tenant_id, exc)
                continue
            by_type.setdefault(p.entity_type, []).append((f"custom-{i}", compiled, p.score))
        budget = settings.GUARDRAILS_CUSTOM_PATTERN_BUDGET_MS / 1000
        for entity_type, patterns in by_type.items():
            recognizers.append(Re2PatternRecognizer(entity_type=entity_type, patterns=patterns, budget_s=budget))
        for entity_type, terms in policy.deny_lists:
            if terms:
                recognizers.append(
                    PatternRecognizer(
                        supported_entity=entity_type,
                        deny_list=list(terms),
                        name=f"deny:{entity_type}",
                        supported_language=LANGUAGE,
                    )
                )
        with self._custom_lock:
            if len(self._custom_cache) > 512:
                self._custom_cache.clear()
            self._custom_cache[key] = recognizers
        return recognizers

    def analyze(self, text: str, *, entities: Sequence[str], policy: ResolvedPolicy | None = None) -> list[Finding]:
        wanted = list(dict.fromkeys(entities))
        if not text.strip() or not wanted:
            return []
        ad_hoc = self._custom_recognizers(policy) if policy is not None else []
        custom_types = {e for r in ad_hoc for e in r.supported_entities}
        builtin_types = self._builtin_types
        wanted = [e for e in wanted if e in builtin_types or e in custom_types]
        if not wanted:
            return []
        needs_ner = any(e in NER_ENTITIES for e in wanted)
        # text typed in lower case: the analysis reads a copy with likely names capitalised (same offsets; e-mail
        # addresses, links and words with digits are left as they are); a department's own patterns read the text
        cased = names.true_case(text) if "PERSON" in wanted else None
        artifacts = self.nlp_engine.process_text(cased or text, LANGUAGE) if needs_ner else None
        if artifacts is None:
            artifacts = self.nlp_engine.pattern_artifacts(text)
        results = self.engine.analyze(
            text=cased or text,
            language=LANGUAGE,
            entities=wanted,
            nlp_artifacts=artifacts,
            ad_hoc_recognizers=None if cased else ad_hoc or None,
        )
        if cased and ad_hoc and custom_types & set(wanted):  # a department's own patterns read the text as it is
            results += self.engine.analyze(
                text=text,
                language=LANGUAGE,
                entities=sorted(custom_types & set(wanted)),
                nlp_artifacts=artifacts,
                ad_hoc_recognizers=ad_hoc,
            )
        placeholders = [(m.start(), m.end()) for m in PLACEHOLDER_RE.finditer(text)] if "<" in text else []
        findings = [
            Finding(r.entity_type, r.start, r.end, float(r.score))
            for r in results
            if r.score >= SCORE_THRESHOLDS.get(r.entity_type, DEFAULT_THRESHOLD)
            and r.end > r.start
            and not any(r.start < pe and r.end > ps for ps, pe in placeholders)  # our own <PERSON_1> markers
        ]
        if "PERSON" in wanted:
            ner = artifacts if isinstance(artifacts, NerArtifacts) else None
            findings = _with_names(
                cased or text,
                findings,
                placeholders=placeholders,
                places=ner.places if ner else (),
                organisations=ner.organisations if ner else (),
            )
        return resolve_overlaps(findings)


# Scores of the name signals in guardrails.names: below the NER's 0.85, so an overlap goes to the model.
NAME_LINE_SCORE = 0.5
GIVEN_NAME_SCORE = 0.45
MENTION_SCORE = 0.5
LIST_MATE_SCORE = 0.4
SINGLE_GIVEN_NAME_SCORE = 0.4
SURNAME_SCORE = 0.4
PREDICATE_SCORE = 0.4


def _merge_people(findings: list[Finding]) -> list[Finding]:
    """Overlapping PERSON spans become one, their union ("Sieda Batukayev" from "Name: Sieda Batukayev" and the NER's
    "Batukayev"), so that no part of a name is left in clear; other types are left to ``resolve_overlaps``."""
    people = sorted((f for f in findings if f.entity_type == "PERSON"), key=lambda f: f.start)
    merged: list[Finding] = []
    for f in people:
        last = merged[-1] if merged else None
        if last is not None and f.start < last.end and max(last.end, f.end) - last.start <= names.MAX_NAME_CHARS:
            merged[-1] = Finding("PERSON", last.start, max(last.end, f.end), max(last.score, f.score))
        else:
            merged.append(f)
    return [*(f for f in findings if f.entity_type != "PERSON"), *merged]


REPEATED_NAME_SCORE = 0.4


def overlaps(start: int, end: int, spans: Sequence[tuple[int, int]]) -> bool:
    return any(start < e and end > s for s, e in spans)


def _with_names(
    text: str,
    findings: list[Finding],
    *,
    placeholders: Sequence[tuple[int, int]],
    places: Sequence[tuple[int, int]],
    organisations: Sequence[tuple[int, int]] = (),
) -> list[Finding]:
    """Add the name signals (not over a placeholder, nor over a place the NER saw unless a chat handle, greeting,
    sign-off or list names a known given name: the small NER calls "Agnieszka" a place), reject PERSON spans that
    are streets, companies or numbers, widen the rest to the name's other parts, then mark the other occurrences
    of every name found."""
    vetoes = [*placeholders, *places]
    verdicts: dict[tuple[int, int], bool] = {}  # the same span comes from several signals and from repetition

    def not_a_name(start: int, end: int) -> bool:
        verdict = verdicts.get((start, end))
        if verdict is None:
            verdict = verdicts[(start, end)] = names.not_a_name(text, start, end)
        return verdict

    ordered = sorted(vetoes)
    veto_starts = [vs for vs, _ in ordered]
    reach = list(itertools.accumulate((ve for _, ve in ordered), max))  # the furthest end among the first n

    def vetoed(start: int, end: int) -> bool:  # O(log n): some veto starts before ``end`` and ends after ``start``
        n = bisect.bisect_left(veto_starts, end)
        return n > 0 and reach[n - 1] > start

    def known_name_vetoed(start: int, end: int) -> bool:
        """Vetoed, unless the span is a known given name the NER called a place (that name alone, not "Los Angeles")
        out of a place's context."""
        if not vetoed(start, end):
            return False
        if overlaps(start, end, placeholders):
            return True
        within = all(start <= ps and pe <= end for ps, pe in places if ps < end and pe > start)
        return not within or not names.person_despite_place(text, start, end)

    candidates = [
        *findings,
        *(Finding("PERSON", s, e, NAME_LINE_SCORE) for s, e in names.name_line_spans(text) if not vetoed(s, e)),
        *(
            Finding("PERSON", s, e, GIVEN_NAME_SCORE)
            for s, e in names.given_name_spans(text)
            if not known_name_vetoed(s, e)
        ),
        *(Finding("PERSON", s, e, SURNAME_SCORE) for s, e in names.surname_spans(text) if not vetoed(s, e)),
        *(  # a list of several people outweighs the NER calling one of them a place
            Finding("PERSON", s, e, MENTION_SCORE)
            for (s, e), items in names.listed_people_spans(text)
            if not overlaps(s, e, placeholders)
            and (items >= 2 or names.has_known_given_name(text[s:e]) or not vetoed(s, e))
        ),
        *(
            Finding("PERSON", s, e, PREDICATE_SCORE)
            for s, e in names.predicate_spans(text)
            if not vetoed(s, e) and not overlaps(s, e, organisations)
        ),
        *(
            Finding("PERSON", s, e, SINGLE_GIVEN_NAME_SCORE)
            for s, e in names.single_given_name_spans(text)
            if not known_name_vetoed(s, e)
        ),
        *(
            Finding("PERSON", s, e, MENTION_SCORE)
            for s, e in names.mention_spans(text)
            if not overlaps(s, e, placeholders) and (names.has_known_given_name(text[s:e]) or not vetoed(s, e))
        ),
    ]
    kept: list[Finding] = []
    for f in candidates:
        if f.entity_type == "PERSON":
            start, end = names.trim(text, f.start, f.end)
            if not_a_name(start, end):
                continue
            wide = names.extend(text, start, end)
            if wide != (start, end) and not vetoed(*wide) and not not_a_name(*wide):
                start, end = wide
            f = Finding("PERSON", start, end, f.score)
        kept.append(f)
    kept = resolve_overlaps(_merge_people(kept))
    people = [(f.start, f.end) for f in kept if f.entity_type == "PERSON"]
    mates = [
        Finding("PERSON", s, e, LIST_MATE_SCORE)
        for s, e in names.list_mate_spans(text, people)
        if not vetoed(s, e) and not not_a_name(s, e)
    ]
    if mates:
        kept = resolve_overlaps(_merge_people([*kept, *mates]))
        people = [(f.start, f.end) for f in kept if f.entity_type == "PERSON"]
    repeats = [
        Finding("PERSON", s, e, REPEATED_NAME_SCORE)
        for s, e in names.repeated_spans(text, people)
        if not not_a_name(s, e) and not vetoed(s, e)
    ]
    return [*kept, *repeats]


def resolve_overlaps(findings: Iterable[Finding]) -> list[Finding]:
    """Keep the best of overlapping findings (score, then length); return them in text order. The kept spans do
    not overlap, so each candidate is checked against its two neighbours only (O(n log n))."""
    kept: list[Finding] = []
    starts: list[int] = []
    for f in sorted(findings, key=lambda f: (-f.score, -(f.end - f.start), f.start)):
        i = bisect.bisect_right(starts, f.start)
        if i > 0 and kept[i - 1].end > f.start:
            continue
        if i < len(kept) and kept[i].start < f.end:
            continue
        kept.insert(i, f)
        starts.insert(i, f.start)
    return kept


_analyzer: PiiAnalyzer | None = None
_analyzer_lock = threading.Lock()


def get_analyzer() -> PiiAnalyzer:
    """The process-wide analyzer, built on first use (loading spaCy takes about a second)."""
    global _analyzer
    if _analyzer is None:
        with _analyzer_lock:
            if _analyzer is None:
                _analyzer = PiiAnalyzer(settings.SPACY_MODEL)
    return _analyzer
