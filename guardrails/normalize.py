"""Normalisation for the injection detector: undo cheap obfuscation before matching.

``views(text)`` returns the texts the detector looks at: the canonical form (NFKC, invisible characters removed,
homoglyphs folded to Latin, whitespace collapsed, lower case) and, when present, decoded variants (base64
segments, Unicode tag characters, rot13, leetspeak, spaced-out letters). ``signals`` says which obfuscations
were seen; they are reasons, never proof on their own.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
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
_LEET_TABLE = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})

_WORD_RE = re.compile(r"\w+", re.UNICODE)
_BASE64_RE = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
_SPACED_RE = re.compile(r"\b(?:\w[\s.\-_*]){3,}\w\b")
_LEET_WORD_RE = re.compile(r"\b(?=\w*[a-z])(?=\w*[013457])[a-z0-9@$!]{3,}\b")
_WS_RE = re.compile(r"\s+")
_MAX_DECODE = 20_000


@dataclass
class Normalized:
    canonical: str
    views: list[tuple[str, str]] = field(default_factory=list)  # (kind, text), canonical first
    signals: set[str] = field(default_factory=set)


def _fold_word(word: str) -> str:
    folded = word.translate(_CONFUSABLE_TABLE)
    if folded == word:
        return word
    has_latin = any("a" <= ch <= "z" for ch in word.lower())
    all_confusable = all(ch in _CONFUSABLES or not ch.isalpha() for ch in word.lower())
    return folded if has_latin or all_confusable else word


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
    folded = _WORD_RE.sub(lambda m: _fold_word(m.group(0)), lowered)
    if folded != lowered:
        signals.add("homoglyphs")
    # Remove combining marks used to disguise letters (keeps umlauts: NFKC composed them already).
    decomposed = unicodedata.normalize("NFD", folded)
    if any(unicodedata.combining(ch) for ch in decomposed) and not re.search(r"[äöüßéèàáçñ]", folded):
        folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _WS_RE.sub(" ", folded).strip(), signals


def _tag_characters(text: str) -> str:
    """Unicode tag characters (U+E0020 to U+E007E) spell ASCII invisibly ("ASCII smuggling")."""
    return "".join(chr(ord(ch) - 0xE0000) for ch in text if 0xE0020 <= ord(ch) <= 0xE007E)


def _base64_segments(text: str) -> list[str]:
    out = []
    for m in _BASE64_RE.finditer(text[:_MAX_DECODE]):
        token = m.group(0)
        padded = token + "=" * (-len(token) % 4)
        try:
            raw = base64.b64decode(padded, validate=True)
            decoded = raw.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        letters = sum(ch.isalpha() or ch == " " for ch in decoded)
        if len(decoded) >= 8 and _printable_share(decoded) > 0.95 and letters / len(decoded) > 0.7:
            out.append(decoded)
    return out


def normalize(text: str) -> Normalized:
    canon, signals = canonical(text)
    result = Normalized(canonical=canon, views=[("canonical", canon)], signals=signals)
    hidden = _tag_characters(text)
    if hidden.strip():
        result.signals.add("tag_characters")
        result.views.append(("tag_characters", canonical(hidden)[0]))
    for decoded in _base64_segments(text):
        result.signals.add("base64")
        result.views.append(("base64", canonical(decoded)[0]))
    sample = canon[:_MAX_DECODE]
    result.views.append(("rot13", codecs.decode(sample, "rot_13")))
    if _LEET_WORD_RE.search(sample):
        leet = _LEET_WORD_RE.sub(lambda m: m.group(0).translate(_LEET_TABLE), sample)
        if leet != sample:
            result.views.append(("leetspeak", leet))
    if _SPACED_RE.search(sample):
        joined = _SPACED_RE.sub(lambda m: re.sub(r"[\s.\-_*]", "", m.group(0)), sample)
        result.views.append(("spaced_letters", joined))
    return result
