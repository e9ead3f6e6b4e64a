"""Person-name signals around the NER model, and the checks that reject what is not a name.

The small spaCy pipeline finds names in running prose; it misses them where prose gives it nothing to go on. These
signals fill the common gaps; each is cheap (regular expressions over the raw text, well under a millisecond for
2 KB) and each yields spans with a score below the NER's, so overlaps go to the model:

- **name lines**: a line that holds only two to four capitalised words or initials, right above an address
  (a line that starts with a house number) or on top of a document (the first line, followed by a blank line)
  when one of its words is a known given name: letter heads, address blocks, résumés;
- **known given names**: a given name from the US Census 1990 lists (``data/first_names.txt``, words common in
  English removed; ``data/given_names_eu.txt`` for European names) followed by one or two capitalised words or
  initials: "Ravil G Yefimov", "Sophie Lang";
- **mentions** (``mention_spans``): chat handles, greetings, sign-offs, signatures, people lists and bullets, in
  English, the Nordic languages, German, Polish and Spanish; a known given name alone; the other items of an
  enumeration that holds a found given name (``list_mate_spans``);
- **widening** (``extend``): a name takes a known given name before it and a capitalised name word after it, so no
  part of it is left in clear;
- **repetition**: once a name is found, its other occurrences in the same text are the same person ("My name is
  Antti Poutiainen but everyone calls me Antti"), so masking never leaves a second copy in clear.

``not_a_name`` is the last word on every PERSON span, the NER's included: digits, street words ("Philip
Bypass"), a house number before or a number after on the same line, a company suffix after, an honorific alone.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable
from pathlib import Path

import regex

_UPPER = r"A-Z\u00c0-\u00d6\u00d8-\u00de\u0100-\u024f"  # Latin capitals incl. accented ones
_LOWER = r"a-z\u00df-\u00f6\u00f8-\u00ff\u0100-\u024f"
# A capitalised word, with the prefixes that capitalise a name's second part ("McDonald", "LeBatelier", "O'Neil").
NAME_WORD = rf"(?:(?:Mc|Mac|Le|La|De|Di|Du|Da|Van|Von|Fitz|O'|O\u2019)(?=[{_UPPER}]))?[{_UPPER}][{_LOWER}'\u2019\-]+"
INITIAL = rf"[{_UPPER}]\.?"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that start sentences, label fields, address people or describe the speaker without being names (compared
# in lowercase): "The", "Name:", "Dear", "I am sorry".
_NOT_NAME_WORDS = _words(
    """the a an i we you he she it they this that these those here there and or but if when where what why how who
    which whose my your his her our their its mr mrs ms mx dr prof sir madam miss dear hi hello hey thanks thank
    regards best kind please is are was were be been do does did can could will would should shall may might must
    yes no not also on in at for from to of by with as into about after before name address phone email mobile tel
    fax date subject re fwd attn note notes summary dept department team company inc ltd street road avenue suite
    apt unit box building floor city state country total invoice order account customer client user assistant
    system admin manager director report section chapter page table figure monday tuesday wednesday thursday friday
    saturday sunday january february march april june july august september october november december available
    calling fine glad going good happy hr interested looking new sales sending so sorry trying very writing support
    service agent bot operator caller customer user guest moderator host speaker everyone everybody all team folks
    guys there both again world friends colleagues alle zusammen todos wszystkim kollegen allihopa hej hallo hola
    professor doctor nurse officer captain president chair lead owner status action todo update reminder
    question answer ticket issue case priority re ok okay sure great perfect done noted god salesperson salesman
    saleswoman engineer developer designer consultant analyst accountant architect cinematographer photographer
    producer editor writer author teacher lawyer attorney driver cleaner technician specialist coordinator
    supervisor executive ceo cto cfo founder chairman secretary clerk cashier receptionist intern trainee herr frau
    grüßen grüße gruß hälsningar hilsen pozdrawiam saludos atentamente terveisin sehr geehrter geehrte liebe lieber
    hei moi cześć witam mit freundlichen vielen dank danke und med vänliga venlig vennlig muchas gracias un saludo
    z poważaniem"""
)
HONORIFICS = ("mr", "mrs", "ms", "mx", "dr", "prof", "sir", "madam", "miss", "herr", "frau")

# Street types (USPS Publication 28 suffixes that are not also common surnames, and their European cousins).
_STREET_TYPES = _words(
    """Street St Str Road Rd Avenue Ave Av Drive Lane Ln Boulevard Blvd Parkway Pkwy Highway Hwy Freeway Fwy
    Expressway Expy Turnpike Tpke Terrace Ter Bypass Byp Extension Extensions Ext Crossing Xing Creek Crk Cliffs
    Clfs Square Sq Plaza Plz Alley Aly Causeway Cswy Circle Cir Court Ct Crescent Cres
    Trail Trl Way Place Pl Close Straße Strasse Gasse Weg Platz Allee Rue Via Calle Avenida Rua Vej Gade Gata Katu
    Utca"""
)
_UNIT_WORDS = frozenset({"Suite", "Ste", "Apt", "Apartment", "Unit", "Floor", "Room"})
# Words in the name of a company or a place, not of a person: "Overture Technologies", "Victoria Station".
_ORG_WORDS = _words(
    """Inc Ltd LLC GmbH AG Corp Corporation Company Co Group Orchestra Band Incorporated PLC LLP Partners Associates
    Holdings Foundation University College School Institute Bank Industries Solutions Systems Consulting
    Technologies Technology Tech Agency Services Software Labs Laboratories Capital Ventures Media Networks Analytics
    Insurance Investments Financial Pharmaceuticals Motors Airlines Hospital Clinic Museum Hotel Restaurant Club
    Society Association Council Committee Ministry Department Office Studio Studios Records Publishing Press
    Station Airport Terminal Stadium Arena Centre Center Mall Beach River Bridge Tower Harbour Harbor Cathedral
    Church Temple Mosque Synagogue Castle Palace"""
)

_NAME_LINE = re.compile(
    rf"^[ \t>?*\-]*({NAME_WORD}|{INITIAL})((?:[ \t]+(?:{NAME_WORD}|{INITIAL})){{1,3}})[ \t]*$", re.MULTILINE
)
# An address line: a house number, a few words and then a street type or another number that ends the line
# ("12 Harbour View Road", "4 Kirkegata", "4844 Søndergade 52"), or a box. "2024 revenue grew by 4%" is not one.
_STREET_SUFFIX = r"(?:gata|gatan|gade|vej|veien|straße|strasse|str|weg|katu|tie|laan|gasse|platz|allee|utca|väg|vägen)"
_STREET_TYPE_WORDS = "|".join(sorted(_STREET_TYPES, key=len, reverse=True))
_LAST_HOUSE_NUMBER = r"\d+[a-zA-Z]?(?=[ \t]*(?:,|$|(?:apt|suite|ste|unit)\b))"
_ADDRESS_LINE = regex.compile(
    rf"^[ \t>?*\-]*(?:\d+[a-zA-Z]?,?[ \t]+(?:[\w.'\-]+[ \t]+){{0,4}}?"
    rf"(?:{_LAST_HOUSE_NUMBER}|[\w'\-]*{_STREET_SUFFIX}\b|(?:{_STREET_TYPE_WORDS})\b)"
    rf"|P\.?O\.?[ \t]*Box|PSC[ \t]*\d|Unit[ \t]*\d)",
    regex.IGNORECASE,
)
_GIVEN_NAME_RUN = regex.compile(
    rf"(?<![\w\-])({NAME_WORD})((?:[ \t]+(?:{INITIAL}(?=[ \t])|{NAME_WORD})){{1,2}})(?![\w\-])"
)

# A house number just before, or a short number just after on the same line ("Joaquin Suarez 2906"); a phone
# number after a name ("John Smith 555 123 4567") is not a house number.
_DIGIT_BEFORE = re.compile(r"(?<![\d\-./])\d{1,5}[a-zA-Z]?,?[ \t]+$")
_NUMBER_AFTER = re.compile(r"^[ \t]+\d{1,4}[a-zA-Z]?(?![\d\-/]|[.,]\d|[ \t]\d)")
_STREET_AFTER = re.compile(
    r"^[ \t]*(?:" + "|".join(sorted(_STREET_TYPES, key=len, reverse=True)) + r")\b\.?", re.UNICODE
)
# A PERSON followed by a company suffix is (part of) an organisation: "Davis, Reynolds and Hall Orchestra".
_ORG_SUFFIXES = _words(
    """Inc Ltd LLC GmbH AG SE Corp Corporation Company Co Group Orchestra Incorporated PLC LLP Partners Associates
    Holdings Foundation University Bank Industries Solutions Systems Consulting Sons Brothers Bros"""
)
_ORG_AFTER = re.compile(  # one separator before every word, each word atomic: no exponential backtracking
    r"^(?:(?:,[ \t]*|[ \t]+)[A-Z][\w'\-]*+)*(?:,?[ \t]+(?:and|&)[ \t]+[A-Z][\w'\-]*+)?[ \t]*,?[ \t]*(?:"
    + "|".join(sorted(_ORG_SUFFIXES))
    + r")\b"
)
_FIRST_WORD = re.compile(r"^[ \t]*(\w+)")
_WORD_RUN = re.compile(r"\w+")


GIVEN_NAME_FILES = ("first_names.txt", "given_names_eu.txt")


@functools.cache
def given_names() -> frozenset[str]:
    """Known given names, lowercase: the US Census list and the European one (data/)."""
    known: set[str] = set()
    for name in GIVEN_NAME_FILES:
        path = Path(__file__).resolve().parent / "data" / name
        words = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
        known.update(w for w in words if w and not w.startswith("#"))
    return frozenset(known)


def is_name_word(word: str) -> bool:
    return word.strip(".,").lower() not in _NOT_NAME_WORDS


def name_line_spans(text: str) -> list[tuple[int, int]]:
    """Lines that hold only a name: above an address, or heading a document with a known given name. In a run of
    such lines only the first counts (the lines after a person's name are a company or a department)."""
    known = given_names()
    spans = []
    previous_end = -2
    document_start = len(text) - len(text.lstrip(" \t>?*-\n"))  # where the first line's words begin
    for m in _NAME_LINE.finditer(text):
        follows_a_name_line, previous_end = m.start() == previous_end + 1, m.end()
        if follows_a_name_line:  # "Ingrid Solvang / Nordic Freight / 4 Kirkegata": the person heads the block
            continue
        words = [m.group(1), *m.group(2).split()]
        if not all(is_name_word(w) for w in words) or not any(len(w.strip(".")) > 1 for w in words):
            continue
        following = text[m.end() : m.end() + 240].split("\n")[1:5]
        above_address = any(_ADDRESS_LINE.match(line) for line in following if line.strip(" \t>?*-"))
        heading = (
            m.start() <= document_start
            and text[m.end() : m.end() + 2] == "\n\n"
            and any(w.lower() in known for w in words)
        )
        if above_address or heading:
            spans.append((m.start(1), m.end(2)))
    return spans


def given_name_spans(text: str) -> list[tuple[int, int]]:
    """A known given name followed by one or two capitalised words or initials."""
    known = given_names()
    spans = []
    for m in _GIVEN_NAME_RUN.finditer(text):
        first, rest = m.group(1), m.group(2).split()
        if first.lower() not in known or not is_name_word(first) or not all(is_name_word(w) for w in rest):
            continue
        if len(rest[-1].rstrip(".")) == 1:  # "John F" without the surname
            continue
        spans.append((m.start(1), m.end(2)))
    return spans


# --- names that chats, mails and lists give away ------------------------------------------------------------
# One to three name words, with a particle between them ("Ludwig van Dijk", "María del Carmen", "Karl von Berg").
_PARTICLE = r"(?:van|von|der|den|de|del|della|da|di|af|av|zu|la|le)"
NAMES = rf"{NAME_WORD}(?:[ \t]+(?:{_PARTICLE}[ \t]+)?{NAME_WORD}){{0,2}}"
_TIMESTAMP = r"(?:\[[0-9:.\-/ T]{4,25}\]|\(\d{1,2}:\d{2}(?::\d{2})?\)|\d{1,2}:\d{2}(?::\d{2})?)"
# "[09:14] Freja: …", "09:14 <Lukas Berg> …", "Freja: …" (without a time stamp only for a known given name).
_HANDLE = re.compile(
    rf"^[ \t>*\-]*(?:({_TIMESTAMP})[ \t]*(?:[\-|][ \t]*)?)?(?:<|@)?({NAMES})(?:>|[ \t]*:)[ \t]*\S", re.MULTILINE
)
_GREETINGS = (
    r"hi|hello|hey|dear|hej|hejsan|hei|moi|hallo|moin|servus|hola|buenos d[ií]as|cze[sś][cć]|witam|witaj|"
    r"dzie[nń] dobry|good morning|good afternoon|morning|thanks|thank you|thx|cheers|tack|takk|tak|danke|"
    r"gracias|dzi[eę]kuj[eę]|kiitos"
)
# "Hi Lukas,", "Hej Freja!", "thanks Agnieszka for …": a name after a greeting, then punctuation, the line's end or
# a lowercase word.
_GREETING = regex.compile(
    rf"(?<![\w])(?i:{_GREETINGS})[ \t]*,?[ \t]+({NAMES})(?=[ \t]*(?:[,!.:;?)]|$)|[ \t]+[{_LOWER}])", regex.MULTILINE
)
_SIGN_OFFS = (
    r"thanks|thank you|many thanks|thanks again|best|best regards|kind regards|regards|warm regards|cheers|br|"
    r"sincerely|yours sincerely|yours truly|yours|best wishes|all the best|talk soon|mvh|med vänlig hälsning|"
    r"vänliga hälsningar|hälsningar|hilsen|med venlig hilsen|venlig hilsen|med vennlig hilsen|vennlig hilsen|"
    r"viele grüße|beste grüße|liebe grüße|mit freundlichen grüßen|freundliche grüße|grüße|gruß|lg|vg|saludos|"
    r"un saludo|atentamente|pozdrawiam|pozdrowienia|z poważaniem|terveisin|ystävällisin terveisin|tack|takk|tak"
)
# "Best regards,\nLukas Berg", "Thanks, Freja", "Pozdrawiam\n\nAgnieszka": the name after a sign-off, on its line
# or on one of the next two.
_SIGN_OFF = regex.compile(
    rf"^[ \t>]*(?i:{_SIGN_OFFS})[ \t]*[,!.]?[ \t]*(?:\n[ \t>]*){{0,2}}({NAMES})[ \t]*[,.]?[ \t]*$", regex.MULTILINE
)
# "-- Lukas", "/Freja", "— Agnieszka Nowak" alone on a line; "- Lukas" only for a known given name (else a bullet).
_SIGNATURE = regex.compile(
    rf"(?:^[ \t>]*(--|/|—|–|-)|(?<=\S[ \t]{{1,3}})(/|--|—))[ \t]*({NAMES})[ \t]*$", regex.MULTILINE
)  # alone on its line, or "/Ingrid" and "-- Lukas" ending a line of text
_PEOPLE_LABELS = (
    r"cc|bcc|to|from|attendees|participants|present|absent|apologies|invitees|members|assignees?|assigned to|"
    r"owners?|reviewers?|approvers?|approved by|reported by|requested by|raised by|contacts?|on call|on-call|"
    r"teilnehmer|anwesend|deltagare|deltagere|deltakere|osallistujat|uczestnicy|obecni|asistentes|participantes"
)
# "Attendees: Freja Nilsson, Lukas Berg and Agnieszka": every item of a list after a label that lists people.
_PEOPLE_LIST = re.compile(rf"^[ \t>*\-]*(?i:{_PEOPLE_LABELS})[ \t]*:[ \t]*([^\n]+)$", re.MULTILINE)
# Plural nouns that only people take, anywhere in a line: "our 3 founders: Kónya, Becker and Vasquez".
_PEOPLE_NOUNS = (
    r"founders|co-founders|founded by|authors|written by|speakers|panelists|organi[sz]ers|signed by|witnesses|"
    r"winners|nominees|candidates|employees|colleagues|teammates|guests|hosts"
)
_PEOPLE_LIST_INLINE = re.compile(rf"\b(?i:{_PEOPLE_NOUNS})[ \t]*:[ \t]*([^\n]+)$", re.MULTILINE)
_LIST_SEPARATOR = regex.compile(r"[ \t]*(?:[,;/]|\b(?:and|und|och|og|i|y|e|&)\b)[ \t]*")
_LIST_ITEM = regex.compile(rf"[ \t]*({NAMES})[ \t]*(?:\([^)\n]{{0,40}}\)|<[^>\n]{{0,80}}>)?[ \t]*")
# "- Freja Nilsson (HR)", "2. Lukas": a bullet or numbered line that starts with a known given name.
_BULLET = re.compile(rf"^[ \t]*(?:[-*•·]|\d{{1,2}}[.)])[ \t]+({NAMES})(?=[ \t]*(?:[,(:\-–—]|$))", re.MULTILINE)


_PARTICLE_RE = regex.compile(_PARTICLE)
_NON_BLANK = regex.compile(r"\S+")


def _all_name_words(span: str) -> bool:
    words = [w for w in span.split() if not _PARTICLE_RE.fullmatch(w)]
    return bool(words) and all(is_name_word(w) for w in words)


def has_known_given_name(span: str) -> bool:
    known = given_names()
    return any(w.lower() in known for w in span.split())


def listed_people_spans(text: str) -> list[tuple[tuple[int, int], int]]:
    """The items of a people list ("Attendees: …", "our 3 founders: …"), each with the number of items in its list
    (a list of several people outweighs the NER calling one of them a place)."""
    out: list[tuple[tuple[int, int], int]] = []
    for m in itertools.chain(_PEOPLE_LIST.finditer(text), _PEOPLE_LIST_INLINE.finditer(text)):
        position, end = m.start(1), m.end(1)
        items: list[tuple[int, int]] = []
        while position < end:
            item = _LIST_ITEM.match(text, position, end)
            if item is None:
                break
            if _all_name_words(item.group(1)):
                items.append(item.span(1))
            separator = _LIST_SEPARATOR.match(text, item.end(), end)
            if separator is None or separator.end() == item.end():
                break
            position = separator.end()
        out.extend((span, len(items)) for span in items)
    return out


def mention_spans(text: str) -> list[tuple[int, int]]:
    """Names in chat handles, greetings, sign-offs, signatures and bullets (see the patterns above; people lists are
    ``listed_people_spans``).
    A time-stamped handle, a greeting, a sign-off and a people list are enough on their own; a handle without a
    time stamp and a bullet need a known given name, unless two other speakers of the text have one (a
    dialogue: "Ubbe: …\nNicole: …\nJohn: …")."""
    spans: list[tuple[int, int]] = []
    handles = [m for m in _HANDLE.finditer(text) if _all_name_words(m.group(2))]
    dialogue = sum(1 for m in handles if has_known_given_name(m.group(2))) >= 2  # then every speaker is a person
    for m in handles:
        if m.group(1) or dialogue or has_known_given_name(m.group(2)):
            spans.append(m.span(2))
    for pattern in (_GREETING, _SIGN_OFF):
        for m in pattern.finditer(text):
            if _all_name_words(m.group(1)):
                spans.append(m.span(1))
    for m in _SIGNATURE.finditer(text):
        if _all_name_words(m.group(3)) and (m.group(1) != "-" or has_known_given_name(m.group(3))):
            spans.append(m.span(3))
    for m in _BULLET.finditer(text):
        if _all_name_words(m.group(1)) and m.group(1).split()[0].lower() in given_names():
            spans.append(m.span(1))
    return spans


_LIST_NAME = rf"{NAME_WORD}(?:[ \t]+{NAME_WORD})?"
# At most 13 items before "and": a bounded repetition keeps a 4 KB run of "Anna, Anna, …" linear.
_NAME_LIST = regex.compile(
    rf"(?<![\w\-])({_LIST_NAME}(?:[ \t]*,[ \t]*{_LIST_NAME}){{0,12}})"
    rf"[ \t]*,?[ \t]+(?:and|&|und|och|og|i|y|or|oder|eller)[ \t]+({_LIST_NAME})(?![\w\-])"
)


_LIST_NAME_RE = regex.compile(_LIST_NAME)


def list_mate_spans(text: str, people: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The other items of an enumeration that holds a found name with a known given name: "Eklund, Michael and
    Hodge", "Freja, Lukas and Jürgen" (each item one or two capitalised words that are not label, street or company
    words). "Wisdom and Discipline" stays, even when the NER calls one of them a person."""
    covered = bytearray(len(text))  # one flag a character inside a found name: linear in the text
    for start, end in people:
        covered[start:end] = b"\x01" * (end - start)
    if not any(covered):
        return []
    spans = []
    for m in _NAME_LIST.finditer(text):
        items = [(i.start(), i.end()) for i in _LIST_NAME_RE.finditer(text, m.start(), m.end())]
        if len(items) < 2 or not any(any(covered[s:e]) and has_known_given_name(text[s:e]) for s, e in items):
            continue
        for s, e in items:
            words = text[s:e].split()
            if all(is_name_word(w) and w not in _ORG_WORDS and w not in _STREET_TYPES for w in words):
                spans.append((s, e))
    return spans


_WORD_BEFORE = regex.compile(rf"(?:({NAME_WORD})|{_PARTICLE})[ \t]+$")
_WORD_AFTER = regex.compile(rf"^[ \t]+(?:{INITIAL}[ \t]+)?(?:{_PARTICLE}[ \t]+)?({NAME_WORD})(?![\w\-])")
_WORD_REST = regex.compile(r"(?:\w|-(?=\w)|['\u2019](?=\w)(?![sS]\b))+")
_POSSESSOR = regex.compile(rf"{NAME_WORD}(?:'s|\u2019s)[ \t]+(?={NAME_WORD})")
_LEADING_PARTICLE = regex.compile(rf"{_PARTICLE}[ \t]")


def extend(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen a name to the parts around it, so that no part stays in clear: a known given name before it ("Freja"
    of "Freja Nilsson" when the NER saw only "Nilsson"), a particle and name after it, a capitalised name word
    after it that is not a street or company word. At most four words in all. A span cut inside a word ("Hauta"
    of "Hauta-aho") takes the whole word; a span that starts with a possessor drops it ("Pave's Irena Bílá"); a
    name that begins with a particle takes the name word before it ("Maika van de Noort")."""
    while start > 0 and (
        text[start - 1].isalnum() or (text[start - 1] in "-'\u2019" and text[start - 2 : start - 1].isalpha())
    ):
        start -= 1
    if start < end < len(text) and text[end - 1].isalnum():
        rest = _WORD_REST.match(text, end, min(len(text), end + 40))
        if rest is not None:
            end = rest.end()
    possessor = _POSSESSOR.match(text, start, end)
    if possessor is not None:
        start = possessor.end()
    if _LEADING_PARTICLE.match(text, start, end):
        m = _WORD_BEFORE.search(text, max(0, start - 40), start)
        if m is not None and m.group(1) is not None and is_name_word(m.group(1)):
            start = m.start()
    for _ in range(2):
        m = _WORD_BEFORE.search(text, max(0, start - 40), start)
        if m is None or len(text[m.start() : end].split()) > 4:
            break
        if m.group(1) is None:  # a particle: only with a name word before it
            inner = _WORD_BEFORE.search(text, max(0, m.start() - 40), m.start())
            if inner is None or inner.group(1) is None or inner.group(1).lower() not in given_names():
                break
            start = inner.start()
            break
        if m.group(1).lower() not in given_names() or not is_name_word(m.group(1)):
            break
        start = m.start()
    for _ in range(2):
        m = _WORD_AFTER.match(text, end, min(len(text), end + 40))
        if m is None or len(text[start : m.end()].split()) > 4:
            break
        word = m.group(1)
        if not is_name_word(word) or word in _STREET_TYPES or word in _ORG_WORDS or word in _UNIT_WORDS:
            break
        if _STREET_AFTER.match(text, m.end()) or _ORG_AFTER.match(text[m.end() : m.end() + 80]):
            break
        end = m.end()
    return start, end


_NATIONALITIES = _words(
    """german france french english spanish polish swedish danish norwegian finnish dutch italian china india israel
    jordan georgia america"""
)
_STREET_IN_LINE = regex.compile(
    rf"(?i:\b(?:{_STREET_TYPE_WORDS}|rua|avenida|avda|u|ul|ulica|gatan|vej)\b\.?|\w{_STREET_SUFFIX}\b)"
)
# --- text typed in lower case ("hi lukas, ask freja", "my name is vitoria") -------------------------------------
# Everyday words that never start a name in such text, beside the spaCy stop words and the not-a-name words.
_COMMON_LOWER = _words(
    """today tomorrow yesterday tonight now later soon morning afternoon evening night week weekend month year time
    day days please thanks thx ok okay yes yeah yep no nope sure maybe well just still also too very really much
    many more most some any every each other another same new old good great nice bad best better sorry hello hi
    hey bye see call email mail send sent meet meeting help need want know think said says told ask asked get got
    give gave make made take took go went come came back home work office here there everyone team guys folks all
    both thing things way lot bit ping song songs version novel story concert book music band album life people person
    man woman guy girl boy kid kids baby family friend friends lives lived works worked flew went came left met
    wrote sang spent began told called moved shouted arrived says said has had was is will would can could"""
)
AMBIGUOUS_GIVEN_NAMES = _words("grant jack chad buck rusty hunter mason carter taylor parker dean wade will mark nan")
_LOWER_WORD = regex.compile(rf"(?<![\w\-.@/#])([{_LOWER}][{_LOWER}'\u2019\-]+)(?![\w\-@]|\.\w)")
_LOWER_INITIAL = regex.compile(rf"[ \t]+([{_LOWER}])\.?[ \t]+")
_ENGLISH_ENDINGS = ("ing", "ed", "ly", "tion", "ness", "ment", "able", "ful", "less", "ous", "ive", "est")
# After these a name follows, in any case: "my name is vitoria", "everyone calls me borna", "follow up with eva".
_INTRODUCER = regex.compile(
    r"(?:\bmy name is|\bname is|\bname:|\bnamed|\bcalls? me|\bmaiden name is|\bsurname is|\bfollow up with|"
    r"\bspeak (?:to|with)|\btalk (?:to|with)|\bask|\btell|\bping|\bcc|^dear|^hi|^hello|^hey|^hej|^hallo|^hola|"
    r"\bthanks,?|\bregards,?)[ \t]+$",
    regex.MULTILINE,
)


@functools.cache
def _english_stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS  # small module; imported when lower-case text first comes

    return frozenset(STOP_WORDS)


def _common_lower(word: str) -> bool:
    w = word.lower()
    return (
        w in _NOT_NAME_WORDS
        or w in _COMMON_LOWER
        or w in _english_stop_words()
        or (len(w) > 5 and w.endswith(_ENGLISH_ENDINGS))
    )


def any_case(word: str) -> bool:
    """Whether a found name word is matched in any case elsewhere ("lukas", "LUKAS"): three letters or more and not
    an everyday word ("Will", "Mark", "Grant" are matched only as written)."""
    return " " not in word and len(word) >= 3 and word.lower() not in AMBIGUOUS_GIVEN_NAMES and not _common_lower(word)


def lower_case_text(text: str) -> bool:
    """Text typed in lower case: words, almost none of them capitalised (the pronoun "I" aside)."""
    words = _WORD_RUN.findall(text)
    letters = [w for w in words if w[0].isalpha()]
    if len(letters) < 2:
        return False
    capitalised = sum(1 for w in letters if w[0].isupper() and w not in ("I", "I'm"))
    return capitalised * 30 <= len(letters)


def true_case(text: str) -> str | None:
    """For text typed in lower case, a copy of the same length in which likely names are capitalised, for the NER and
    the name signals to read: known given names, one or two words after an introduction ("my name is vitoria",
    "follow up with patricia desrosiers"), and the word after a capitalised given name unless it is an everyday word
    ("eva kleist lives at …"). None for other text."""
    if not lower_case_text(text):
        return None
    known = given_names()
    chars = list(text)
    name_end = -10  # where the last given name or introduced word ends: the word after it may be its surname

    for m in _LOWER_WORD.finditer(text):
        word, start, end = m.group(1), m.start(1), m.end(1)
        w = word.lower()
        if len(w) >= 3 and w in known and w not in AMBIGUOUS_GIVEN_NAMES and not _common_lower(w):
            chars[start] = chars[start].upper()
            name_end = end
            continue
        if _common_lower(w):
            continue
        between = text[name_end:start]
        initial = _LOWER_INITIAL.fullmatch(between)
        if initial is not None:  # "benjamin a seiler", "hyuuma t. maida": the initial and the surname
            chars[name_end + initial.start(1)] = chars[name_end + initial.start(1)].upper()
        if initial is not None or between in (" ", "\t"):
            chars[start] = chars[start].upper()
            name_end = -10
        elif _INTRODUCER.search(text, max(0, start - 30), start):
            chars[start] = chars[start].upper()
            name_end = end
    return "".join(chars)


_SINGLE_WORD = regex.compile(rf"(?<![\w\-.@/])({NAME_WORD})(?![\w\-@]|\.\w)")


def single_given_name_spans(text: str) -> list[tuple[int, int]]:
    """A known given name standing alone ("ask Lukas", "Irenka is very reliable", "thanks, Freja"): in chats and
    tickets people go by their given name. The NER's places veto it ("Jordan" the country), as for every weaker
    signal."""
    known = given_names()
    spans = []
    street_lines: dict[int, bool] = {}  # line start -> the line names a street (each line searched once)
    for m in _SINGLE_WORD.finditer(text):
        word = m.group(1)
        if word.lower() not in known or not is_name_word(word) or word.lower() in _NATIONALITIES:
            continue
        line_start = text.rfind("\n", 0, m.start()) + 1
        if line_start not in street_lines:
            line_end = text.find("\n", m.end())
            street_lines[line_start] = bool(
                _STREET_IN_LINE.search(text, line_start, len(text) if line_end == -1 else line_end)
            )
        if street_lines[line_start]:
            continue  # "Avenida Pedro Ulisses 888", "Cinzia and Hammarvägen 15": a street named after someone
        spans.append(m.span(1))
    return spans


# Where a word is a place: after a locative preposition ("in Victoria", "the city of Florence") or before a region
# or postcode ("Austin, TX", "Florence, Italy 50100").
_LOCATIVE_BEFORE = regex.compile(
    r"(?i:\b(?:in|at|from|near|into|via|across|around|outside|inside|towards?|through|visit(?:ed|ing|s)?|"
    r"from[ \t]+[^\n,.;]{1,40}[ \t]+to|"
    r"(?:city|town|state|province|county|region|capital|country|village|island|republic|kingdom|port) of))[ \t]+$"
)
_PLACE_AFTER = regex.compile(rf"^,[ \t]*(?:[A-Z]{{2}}\b|[{_UPPER}][{_LOWER}]+[ \t]*(?:\d|$))", regex.MULTILINE)


def person_despite_place(text: str, start: int, end: int) -> bool:
    """A known given name that the NER calls a place is still a person's name unless its context is a place's: the
    small NER labels "Mette", "Rebecca" and "Magnus" places in "The true gender of Mette …", "Why is Rebecca so
    impulsive?"."""
    words = text[start:end].split()
    if not words or words[0].lower() not in given_names() or words[0].lower() in _NATIONALITIES:
        return False
    if _LOCATIVE_BEFORE.search(text, max(0, start - 30), start):
        return False  # "in Victoria", "from Austin to Charlotte"
    if _PLACE_BEFORE.search(text[max(0, start - 40) : start]):
        return False  # "flew to Charlotte"
    return _PLACE_AFTER.match(text, end, min(len(text), end + 40)) is None


# --- surnames known by their endings ------------------------------------------------------------------------
# Nordic, Slavic, Baltic, Greek and Romanian surnames are made with a few endings; with a capitalised word before
# them these and some broader ones ("-sen", "-berg", "-mann", "-ov") make a name the small NER often misses:
# "Elínborg Guðmundsdóttir", "Dobrosław Tomaszewski", "Amadeo Vitorović", "Tünde Hoffmann".
_STRONG_SURNAME = (
    r"(?:ss[oø]n|d[oó]tt[ie]r|ski|ska|cki|cka|dzki|dzka|wicz|czyk|czak|ovi[cć]|evi[cć]|ovich|evich|ovna|evna|enko|"
    r"chuk|sk[yýá]|ov[aá]|ev[aá]|ovs?ky|poulos|akis|escu)"
)
_BROAD_SURNAME = r"(?:s?son|sen|str[oö]m|[qk]vist|berg|gren|holm|lund|quist|mann|ov|ev|ova|eva|ić|uk|yk|ak|ek|ez)"
_STRONG_END = re.compile(rf"{_STRONG_SURNAME}$")
_SURNAME_END = re.compile(rf"(?:{_STRONG_SURNAME}|{_BROAD_SURNAME})$")
_CAPITALISED = re.compile(  # a possessive "'s" is not part of the word
    rf"(?<![\w\-])[{_UPPER}][{_LOWER}]+(?:-[{_LOWER}]+|['\u2019](?![sS]\b)[{_LOWER}]+)*(?![\w\-]|['\u2019]\w\w)"
)
_GIVEN_BEFORE = regex.compile(rf"(?<![\w\-])({NAME_WORD})[ \t]+(?:{INITIAL}[ \t]+)?$")


def surname_spans(text: str) -> list[tuple[int, int]]:
    """A capitalised word with a surname ending, and the capitalised word before it (the given name, known or not);
    alone only with one of the unambiguous endings ("Ásgeirsdóttir", "Živković")."""
    spans = []
    for m in _CAPITALISED.finditer(text):  # every capitalised word, its ending tested alone (linear, no backtracking)
        last = m.group(0)
        if _SURNAME_END.search(last) is None or not is_name_word(last) or last.lower() in _NATIONALITIES:
            continue
        before = _GIVEN_BEFORE.search(text, max(0, m.start() - 40), m.start())
        first = before.group(1) if before is not None else None
        if first is not None and (not is_name_word(first) or _common_lower(first)):
            first = None
        if first is None and _STRONG_END.search(last) is None:
            continue
        spans.append((before.start(1) if before is not None and first is not None else m.start(), m.end()))
    return spans


# --- what only people do ----------------------------------------------------------------------------------------
# A capitalised word before a verb of speech or thought ("Radomir shouted at the printer", "Thordis thinks …"),
# after a verb of speech ("said Maslin to Antonio", "asked Lukas"), or called at the
# start of a sentence ("Warrane, can I please speak to your boss?"). Organisations and places the NER saw veto it
# ("Google said"), as do everyday words.
_PERSON_VERBS = (
    r"said|says|asked|asks|replied|replies|shouted|whispered|told|tells|wrote|explained|added|laughed|smiled|cried|"
    r"apologi[sz]ed|promised|complained|insisted|admitted|agreed|decided|thinks|believes|feels"
)
_PERSON_BEFORE_VERB = regex.compile(rf"(?<![\w\-])({NAME_WORD})(?=[ \t]+(?:{_PERSON_VERBS})\b)")
_VERB_BEFORE_PERSON = regex.compile(
    rf"\b(?:said|asked|told|replied|thanked|emailed|messaged|texted|phoned|heard|met|ask|tell|thank)[ \t]+"
    rf"({NAME_WORD})(?![\w\-])"
)
_VOCATIVE = regex.compile(
    rf"(?:^|(?<=[.!?][ \t]{{1,3}}))({NAME_WORD}),[ \t]+(?=(?:can|could|would|will|please|do|did|are|have|thanks|"
    rf"thank|I|we|you)\b)",
    regex.MULTILINE,
)


def predicate_spans(text: str) -> list[tuple[int, int]]:
    """Names announced by what they do or by being called (see the patterns above)."""
    spans = []
    for pattern in (_PERSON_BEFORE_VERB, _VERB_BEFORE_PERSON, _VOCATIVE):
        for m in pattern.finditer(text):
            word = m.group(1)
            if is_name_word(word) and not _common_lower(word) and word.lower() not in _NATIONALITIES:
                spans.append(m.span(1))
    return spans


MAX_NAME_CHARS = 80  # longer PERSON spans are run-on matches, not names
_MAX_REPEATED_KEYS = 64
_NAME_WORD_RE = regex.compile(NAME_WORD)


def _is_word_char(text: str, i: int) -> bool:
    return 0 <= i < len(text) and (text[i].isalnum() or text[i] in "_-")


def repeated_spans(text: str, names: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Other occurrences of found names and of their words, whole words: as written, and in any case ("lukas",
    "LUKAS") for a word of three letters or more that is not an everyday word (a found "Will" leaves "will" alone).

    Plain substring search per name (at most 64 names of at most 80 characters): linear in the text, whatever it
    holds; overlapping results (a full name and its first word) are left to the caller's overlap resolution."""
    keys: set[str] = set()
    for start, end in names:
        span = text[start:end]
        if len(span) <= MAX_NAME_CHARS:
            keys.add(span)
            keys.update(w for w in _NAME_WORD_RE.findall(span) if len(w) > 1 and is_name_word(w))
    found = []
    lowered = text.lower()
    if len(lowered) != len(text):  # a character whose lower case is longer: offsets would shift
        lowered = text
    for key in sorted(keys, key=len, reverse=True)[:_MAX_REPEATED_KEYS]:
        haystack, needle = (lowered, key.lower()) if any_case(key) else (text, key)
        i = haystack.find(needle)
        while i != -1:
            j = i + len(needle)
            if not _is_word_char(text, i - 1) and not _is_word_char(text, j):
                found.append((i, j))
            i = haystack.find(needle, j)
    return found


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Keep a name on one line ("Jürgen\nCC" → "Jürgen"), drop trailing unit words a name pattern ran into
    ("Diana Usamov Suite" (913 ...) → "Diana Usamov") and leading greetings and titles ("Hej Søren" → "Søren")."""
    newline = text.find("\n", start, end)
    if newline != -1:
        end = newline if text[start:newline].strip() else end
    words = list(_NON_BLANK.finditer(text[start:end]))
    while len(words) > 1 and words[-1].group().strip(".,") in _UNIT_WORDS:
        words.pop()
    first = 0
    while first < len(words) - 1 and not is_name_word(words[first].group()):
        first += 1  # "Hej Søren", "Herr Müller", "Dear Lukas": the greeting or title is not the name
    return (start + words[first].start(), start + words[-1].end()) if words else (start, end)


# After a verb of going, living or working and a preposition comes a place or an employer, not a person: "flew to
# Coles", "arrived at Ettelgem", "I work for Flightstats" (a known given name there still counts: "went to Anna").
_PLACE_BEFORE = re.compile(
    r"\b(?:fl(?:ew|y|ying|own)|travel(?:l?ed|l?ing|s)?|mov(?:ed|e|ing)|return(?:ed|ing|s)?|arriv(?:ed|e|es|ing)|"
    r"went|go(?:es|ing)?|com(?:e|es|ing)|drove|driv(?:e|ing)|relocat(?:ed|e|ing)|based|located|liv(?:e|es|ed|ing)|"
    r"work(?:s|ed|ing)?|employed|born|grew up|stay(?:ed|ing|s)?)(?:[ \t]+(?:here|back|there|home))?"
    r"[ \t]+(?:to|at|in|from|for|near|into)[ \t]+$",
    re.IGNORECASE,
)


_PLACE_PREPOSITIONS = ("to", "at", "in", "from", "for", "near", "into")
_ANY_DIGIT = re.compile(r"\d")
_NEXT_WORD = re.compile(r"^[ \t]+([A-Z][\w'\-]*)")


# Address blocks: the line after a street or unit line is a town ("Suite 321\nLONDON"), the line before a postcode
# or region line is one too ("Cite Belle Vue\nTunisia 99827", "USS Mahler\nFPO AA 70489"); on a street line, what
# follows the house number is the street ("5112 39 Rue Ibn El-Jazzar"). A crossing ("the corner of Dalbraut 99 and
# Frederikke Coves", "Maarit and Hersnapvej 75") names streets.
_UNIT_LINE = regex.compile(
    r"^[ \t>?*\-]*(?:Suite|Ste\.?|Apt\.?|Apartment|Unit|Flat|Floor|Room|P\.?O\.? Box)[ \t]*\d", regex.I
)
_POSTCODE_LINE = regex.compile(
    rf"[ \t>?*\-]*(?:,[ \t]*[A-Z]{{2,3}}\b"
    rf"|(?:[{_UPPER}][\w.'\-]*,?[ \t]+){{1,3}}\d{{3,6}}(?:[ \t\-]?\d{{2,4}})?[ \t]*[.,]?[ \t]*$)"
)
_MAX_LINE = 300  # lines longer than this are prose, not address blocks (and the search stays bounded)
_CORNER_BEFORE = regex.compile(r"(?i:\bcorner of\b[^\n]{0,60}\band)[ \t]+$")
_AND_STREET_AFTER = regex.compile(r"[ \t]+and[ \t]+(?:[\w.'\-]+[ \t]+){0,4}?\d+[a-zA-Z]?\b")


def _line_at(text: str, position: int) -> tuple[int, int] | None:
    """(start, end) of the line holding ``position``, None when it is longer than _MAX_LINE."""
    start = text.rfind("\n", max(0, position - _MAX_LINE), position) + 1
    if start == 0 and position > _MAX_LINE:
        return None
    end = text.find("\n", position, position + _MAX_LINE)
    if end == -1:
        end = len(text)
        if end - position > _MAX_LINE:
            return None
    return start, end


# Streets named before their name ("Via Nuova", "Rue Ibn El-Jazzar", "ul. Długa") and ships of a military address
# ("USNS Sekerková", "USS Mahler").
_STREET_OR_SHIP_BEFORE = regex.compile(
    r"(?<![\w\-])(?:Via|Viale|Piazza|Rue|Calle|Carrer|Avenida|Avda\.?|Rua|Rúa|Plaza|Ulica|ul\.|al\.|USS|USNS|USNV|USCGC)"
    r"[ \t]+$"
)


def in_address(text: str, start: int, end: int) -> bool:
    """True when a span is a town, street or crossing of an address block (see above)."""
    if "corner" in text[max(0, start - 90) : start].lower() and _CORNER_BEFORE.search(text, max(0, start - 90), start):
        return True
    if text.startswith(" and ", end):
        after = _AND_STREET_AFTER.match(text, end, min(len(text), end + 60))
        if after is not None and _STREET_IN_LINE.search(text, end, after.end()):
            return True
    if "\n" not in text[max(0, start - _MAX_LINE) : end + _MAX_LINE]:
        return False
    line = _line_at(text, start)
    if line is None:
        return False
    line_start, line_end = line
    own = text[line_start:line_end]
    if _ADDRESS_LINE.match(own) and any(ch.isdigit() for ch in text[line_start:start]):
        return True
    if line_start > 0:
        previous = _line_at(text, line_start - 1)
        if previous is not None:
            above = text[previous[0] : previous[1]]
            if _ADDRESS_LINE.match(above) or _UNIT_LINE.match(above):
                return True
    if line_end < len(text) and not _ANY_DIGIT.search(own):  # a line of words only, above a postcode line
        following = _line_at(text, line_end + 1)
        if following is not None and _POSTCODE_LINE.match(text, following[0], following[1]):
            return True
    return False


def not_a_name(text: str, start: int, end: int) -> bool:
    """True when a PERSON span is a street, a company, a number, an honorific or a field label, not a person."""
    span = text[start:end]
    if len(span) > MAX_NAME_CHARS or any(ch.isdigit() for ch in span) or span.strip(". ").lower() in HONORIFICS:
        return True
    words = span.split()
    if any(w.strip(".,'") in _STREET_TYPES or w.strip(".,'") in _ORG_WORDS for w in words):
        return True
    if not any(is_name_word(w) for w in words):  # "Suite", "Dear Sir", "The"
        return True
    before, after = text[max(0, start - 12) : start], text[end : end + 80]
    # (each context pattern runs only when its cheap precondition holds: a preposition just before, a digit before;
    # this check runs for every name candidate, tens of thousands in 100 KB of names)
    place_window = text[max(0, start - 40) : start]
    if (
        place_window.rstrip(" \t").lower().endswith(_PLACE_PREPOSITIONS)
        and _PLACE_BEFORE.search(place_window)
        and not has_known_given_name(span)
    ):
        return True
    if in_address(text, start, end) or _STREET_OR_SHIP_BEFORE.search(text, max(0, start - 12), start):
        return True
    next_word = _NEXT_WORD.match(after)
    if next_word is not None and next_word.group(1) in _ORG_WORDS:  # "Victoria Station", "Lincoln Center"
        return True
    first_after = _FIRST_WORD.match(after)
    return bool(
        (_ANY_DIGIT.search(before) and _DIGIT_BEFORE.search(before))
        or _NUMBER_AFTER.match(after)
        or (first_after is not None and first_after.group(1) in _STREET_TYPES and _STREET_AFTER.match(after))
        or (not _ORG_SUFFIXES.isdisjoint(_WORD_RUN.findall(after)) and _ORG_AFTER.match(after))
    )
