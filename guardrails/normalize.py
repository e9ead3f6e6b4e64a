"""Normalisation for the injection detector: undo cheap obfuscation before matching.

``normalize(text)`` returns the texts the detector looks at: the canonical form (NFKC, invisible and bidi
characters removed, homoglyphs folded to Latin, whitespace collapsed, lower case) and, when present, decoded
variants: base64, hex and URL-encoded segments (decoded, then decoded once more, so a payload wrapped twice is
found), Unicode tag characters, rot13, leetspeak, and spaced or dashed letters (``I G N O R E  A L L``,
``i-g-n-o-r-e``) joined with the word gaps kept. ``signals`` says which obfuscations were seen; they are reasons,
never proof on their own. ``decoded_views`` are the views that carry text the reader could not see as written
(the classifier scores those as well as the canonical text).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass, field

# Zero-width and other invisible format characters (Unicode Cf) commonly used to split trigger words.
_INVISIBLE = dict.fromkeys(
    [
        0x00AD,
        0x034F,
        0x061C,
        0x115F,
        0x1160,
        0x17B4,
        0x17B5,
        0x180B,
        0x180C,
        0x180D,
        0x180E,
        0x200B,
        0x200C,
        0x200D,
        0x200E,
        0x200F,
        0x202A,
        0x202B,
        0x202C,
        0x202D,
        0x202E,
        0x2060,
        0x2061,
        0x2062,
        0x2063,
        0x2064,
        0x2066,
        0x2067,
        0x2068,
        0x2069,
        0x206A,
        0x206B,
        0x206C,
        0x206D,
        0x206E,
        0x206F,
        0x3164,
        0xFEFF,
        0xFFA0,
        *range(0xFE00, 0xFE10),
    ]
)

# Letters from Cyrillic, Greek, Armenian and IPA that look like Latin ones (after NFKC, which already folds
# full-width and mathematical alphanumerics).
_CONFUSABLES = {
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "һ": "h",
    "ɡ": "g", "ɑ": "a", "ı": "i", "ʏ": "y", "ɪ": "i", "ʟ": "l", "ɴ": "n", "ʀ": "r", "ᴀ": "a", "ᴄ": "c", "ᴅ": "d",
    "ᴇ": "e", "ᴋ": "k", "ᴍ": "m", "ᴏ": "o", "ᴘ": "p", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ᴢ": "z",
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    "ω": "w", "ɩ": "i", "ց": "g", "ո": "n", "ս": "u", "օ": "o", "ԍ": "g", "ɾ": "r", "ʋ": "v",
}  # fmt: skip
_CONFUSABLE_TABLE = str.maketrans(_CONFUSABLES)
_CONFUSABLE_RE = re.compile("[" + "".join(sorted(_CONFUSABLES)) + "]")
_CONFUSABLE_WORD_RE = re.compile(r"\w*[" + "".join(sorted(_CONFUSABLES)) + r"]\w*")
_LETTER_RE = re.compile(r"[^\W\d_]")
_LATIN_RE = re.compile(r"[a-z]")
_COMBINING_RE = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_TAG_RE = re.compile("[\U000e0020-\U000e007e]")
_LEET_TABLE = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})

_WORD_RE = re.compile(r"\w+", re.UNICODE)
_BASE64_RE = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
_HEX_RE = re.compile(r"(?<![0-9A-Za-z])(?:(?:\\x|0x)?[0-9A-Fa-f]{2}[ :]?){8,}(?![0-9A-Za-z])")
_URLENC_RE = re.compile(r"(?:%[0-9A-Fa-f]{2}|[A-Za-z0-9+._~\-]){0,40}(?:%[0-9A-Fa-f]{2}[A-Za-z0-9+._~\-]{0,12}){4,}")
# Runs of single letters separated by one space, a dash, a dot, an underscore or an asterisk; two or more spaces
# (or a slash) between letters mark a word gap.
_SPACED_RUN_RE = re.compile(r"(?<!\w)\w(?:(?:[ \t]{1,3}|[.\-_*/]|[ ]/[ ])\w(?!\w)){3,}")
_LEET_WORD_RE = re.compile(r"\b(?=\w*[a-z])(?=\w*[013457])[a-z0-9@$!]{3,24}\b")
_WS_RE = re.compile(r"\s+")
_MAX_DECODE = 20_000
# Stems of attack words as they read after rot13 (ignore, instruction, prompt, system, previous, disregard, forget,
# password, jailbreak, reveal, rules, secret).
_ROT13_HINT_RE = re.compile(
    "|".join(
        codecs.encode(w, "rot_13")
        for w in (
            "ignor",
            "instruct",
            "prompt",
            "system",
            "previous",
            "disregard",
            "forget",
            "password",
            "jailbreak",
            "reveal",
            "rules",
            "secret",
        )
    )
)
DECODED_VIEWS = frozenset({"base64", "hex", "url_encoding", "tag_characters", "spaced_letters"})


@dataclass
class Normalized:
    canonical: str
    views: list[tuple[str, str]] = field(default_factory=list)  # (kind, text), canonical first
    signals: set[str] = field(default_factory=set)


def _fold_word(word: str, mostly_latin: bool = True) -> str:
    folded = word.translate(_CONFUSABLE_TABLE)
    if folded == word:
        return word
    has_latin = any("a" <= ch <= "z" for ch in word.lower())
    all_confusable = all(ch in _CONFUSABLES or not ch.isalpha() for ch in word.lower())
    return folded if has_latin or (all_confusable and mostly_latin) else word


def _printable_share(s: str) -> float:
    if not s:
        return 0.0
    return sum(1 for ch in s if ch.isprintable() or ch in "\n\t") / len(s)


def canonical(text: str) -> tuple[str, set[str]]:
    signals: set[str] = set()
    stripped = text.translate(_INVISIBLE)
    if len(stripped) != len(text):
        signals.add("invisible_characters")
    nfkc = unicodedata.normalize("NFKC", stripped)
    if nfkc != stripped:
        signals.add("compatibility_characters")
    lowered = nfkc.lower()
    # Text written mostly in another script (Russian, Greek) keeps its words; only words that mix scripts fold.
    if lowered.isascii():
        folded, mostly_latin = lowered, True  # the common case: nothing to fold
    else:
        sample = lowered[:2000]
        letters = len(_LETTER_RE.findall(sample))
        latin = len(_LATIN_RE.findall(sample))
        mostly_latin = not letters or latin >= 0.5 * letters
        if _CONFUSABLE_RE.search(lowered):
            folded = _CONFUSABLE_WORD_RE.sub(lambda m: _fold_word(m.group(0), mostly_latin), lowered)
        else:
            folded = lowered
    if folded != lowered:
        signals.add("homoglyphs")
    # Remove combining marks used to disguise letters (keeps umlauts: NFKC composed them already).
    decomposed = folded if folded.isascii() else unicodedata.normalize("NFD", folded)
    if mostly_latin and _COMBINING_RE.search(decomposed) and not re.search(r"[äöüßéèàáçñ]", folded):
        folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _WS_RE.sub(" ", folded).strip(), signals


def _tag_characters(text: str) -> str:
    """Unicode tag characters (U+E0020 to U+E007E) spell ASCII invisibly ("ASCII smuggling")."""
    found = _TAG_RE.findall(text)
    return "".join(chr(ord(ch) - 0xE0000) for ch in found)


def _plausible_text(decoded: str) -> bool:
    letters = sum(ch.isalpha() or ch == " " for ch in decoded)
    return len(decoded) >= 8 and _printable_share(decoded) > 0.95 and letters / len(decoded) > 0.7


def _base64_segments(text: str) -> list[str]:
    out = []
    for m in _BASE64_RE.finditer(text[:_MAX_DECODE]):
        token = m.group(0)
        padded = token + "=" * (-len(token) % 4)
        try:
            decoded = base64.b64decode(padded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if _plausible_text(decoded):
            out.append(decoded)
    return out


def _hex_segments(text: str) -> list[str]:
    out = []
    for m in _HEX_RE.finditer(text[:_MAX_DECODE]):
        digits = re.sub(r"\\x|0x|[ :]", "", m.group(0))
        if len(digits) % 2:
            digits = digits[:-1]
        try:
            decoded = bytes.fromhex(digits).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
        if _plausible_text(decoded):
            out.append(decoded)
    return out


def _url_segments(text: str) -> list[str]:
    out: list[str] = []
    if text.count("%") < 4:
        return out
    for m in _URLENC_RE.finditer(text[:_MAX_DECODE]):
        decoded = urllib.parse.unquote_plus(m.group(0), errors="strict") if "%" in m.group(0) else ""
        if decoded and _plausible_text(decoded):
            out.append(decoded)
    return out


def _decode_layers(text: str) -> list[tuple[str, str]]:
    """Encoded segments decoded, and what they decode to decoded once more (base64 of hex, URL of base64 …)."""
    found: list[tuple[str, str]] = []
    frontier = [text]
    for _depth in range(2):
        nxt: list[str] = []
        for source in frontier:
            for kind, fn in (("base64", _base64_segments), ("hex", _hex_segments), ("url_encoding", _url_segments)):
                for decoded in fn(source):
                    if decoded not in nxt and all(decoded != d for _, d in found):
                        found.append((kind, decoded))
                        nxt.append(decoded)
        frontier = nxt
        if not frontier:
            break
    return found[:8]


def _join_spaced(text: str) -> str:
    """``I G N O R E  A L L`` → ``ignore all``; ``i-g-n-o-r-e`` → ``ignore`` (the word gaps are kept)."""

    def join(m: re.Match[str]) -> str:
        run = m.group(0)
        gaps = re.findall(r"\w([^\w]+)(?=\w)", run)
        wide = any((len(g) >= 2 and g.strip(" \t") in {"", "/"}) or g.strip() == "/" for g in gaps)
        # "i-g-n-o-r-e a-l-l": letters joined by dashes (or dots), words separated by spaces
        spaced = [g for g in gaps if g.strip() == ""]
        if spaced and len(spaced) < len(gaps):
            gaps = ["  " if g.strip() == "" else "" for g in gaps]
            wide = True
        out = []
        letters = re.findall(r"\w", run)
        for letter, gap in zip(letters, [*gaps, ""], strict=True):
            out.append(letter)
            if wide and (len(gap) >= 2 or gap.strip() == "/"):
                out.append(" ")
        return "".join(out)

    return _SPACED_RUN_RE.sub(join, text)


def normalize(text: str) -> Normalized:
    canon, signals = canonical(text)
    result = Normalized(canonical=canon, views=[("canonical", canon)], signals=signals)
    hidden = _tag_characters(text)
    if hidden.strip():
        result.signals.add("tag_characters")
        result.views.append(("tag_characters", canonical(hidden)[0]))
    for kind, decoded in _decode_layers(text[:_MAX_DECODE]):
        result.signals.add(kind)
        result.views.append((kind, canonical(decoded)[0]))
    sample = canon[:_MAX_DECODE]
    if _ROT13_HINT_RE.search(sample):  # only when an attack's word appears rot13-encoded (halves the work)
        result.views.append(("rot13", codecs.decode(sample, "rot_13")))
    if _LEET_WORD_RE.search(sample):
        leet = _LEET_WORD_RE.sub(lambda m: m.group(0).translate(_LEET_TABLE), sample)
        if leet != sample:
            result.views.append(("leetspeak", leet))
    # Spaced letters: look at the text before whitespace is collapsed, so that wide gaps still separate words.
    lowered = unicodedata.normalize("NFKC", text[:_MAX_DECODE].translate(_INVISIBLE)).lower()
    if _SPACED_RUN_RE.search(lowered):
        joined = _WS_RE.sub(" ", _join_spaced(lowered)).strip()
        if joined != sample:
            result.signals.add("spaced_letters")
            result.views.append(("spaced_letters", canonical(joined)[0]))
    return result
