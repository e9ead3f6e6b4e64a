"""Hand-written prompt-injection and jailbreak patterns (English and German), matched on normalised text.

Each rule has a category and a weight in [0, 1]; the heuristic score of a text is the highest weight matched,
raised a little when several categories match. Written from the public taxonomy of injection attacks
(instruction override, role-play jailbreaks, system-prompt extraction, prompt delimiters), not from the
evaluation sets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    name: str
    category: str
    weight: float
    pattern: re.Pattern[str]


def _r(name: str, category: str, weight: float, pattern: str) -> Rule:
    # Patterns are matched on normalised views, which are lower case already (IGNORECASE would only cost time).
    return Rule(name, category, weight, re.compile(pattern, re.DOTALL))


# Building blocks ---------------------------------------------------------------------------------------------
# "previous instructions": a temporal or system qualifier names the earlier instructions; a bare determiner ("the
# rules of the parking garage", "the cancelled orders") does not, and is accepted only with "your"/"all"/"any".
_PRIOR = (
    r"(?:previous|prior|preceding|above|earlier|foregoing|former|initial|original|old|given|existing|system|"
    r"developer|default)"
)
_OWNER = r"(?:your|all(?: (?:of )?(?:the|your|these|those|my))?|any|every|all of)"
_DIRECTIVES = (
    r"(?:instructions?|instructed|prompts?|rules?|directions?|directives?|guidelines?|orders?|commands?|"
    r"constraints?|restrictions?|polic(?:y|ies)|programming|guardrails?|context|messages?|tasks?|"
    r"assignments?|text|content|information|input|conversation|everything|settings)"
)
_OVERRIDE_VERB = (
    r"(?:ignore|ignoring|disregard|disregarding|forget|forgetting|skip|override|overwrite|bypass|drop|discard|"
    r"abandon|neglect|set aside|throw away|stop following|do not follow|don't follow|no longer follow)"
)
_DE_PRIOR = (
    r"(?:alle\w*|deine\w*|sämtlich\w*|vorherig\w*|vorig\w*|bisherig\w*|obig\w*|vorangegangen\w*|"
    r"vorangehend\w*|vorausgegangen\w*|früher\w*|ursprünglich\w*|gegeben\w*|oben\w*|davor|zuvor|vorher)"
)
_DE_DIRECTIVES = (
    r"(?:anweisung\w*|instruktion\w*|befehl\w*|regel\w*|vorgabe\w*|aufgabe\w*|richtlinie\w*|anordnung\w*|"
    r"information\w*|kontext\w*|gesagte\w*|eingabe\w*|text\w*|prompt\w*|beschränkung\w*|einschränkung\w*|"
    r"auftr[äa]g\w*)"
)
_DE_OVERRIDE = (
    r"(?:ignorier\w*|vergiss|vergessen?|vergesst|missacht\w*|überschreib\w*|verwirf|verwerfen|"
    r"übergeh\w*|lösche?|vernachlässig\w*|beachte nicht|befolge nicht|nicht mehr befolgen)"
)

RULES: tuple[Rule, ...] = (
    # --- instruction override ------------------------------------------------------------------------------
    _r(
        "override_instructions",
        "instruction_override",
        0.95,
        rf"\b{_OVERRIDE_VERB}\b(?:\s+\w+){{0,3}}?\s+{_PRIOR}\b(?:\s+\w+){{0,3}}?\s+{_DIRECTIVES}\b",
    ),
    _r(
        "override_your_rules",
        "instruction_override",
        0.9,
        rf"\b{_OVERRIDE_VERB}\s+(?:\w+\s+)?{_OWNER}\s+(?:\w+\s+)?(?:instructions?|prompts?|programming|guardrails|"
        r"guidelines|directives|rules|restrictions|constraints|commands|orders|polic(?:y|ies)|context|everything)\b",
    ),
    _r(
        "override_the_instructions",
        "instruction_override",
        0.9,
        # "ignore the instructions", "forget those rules", "ignore your command" (but not "the rules of chess",
        # "the instructions for the desk": a qualifier that names something else).
        rf"\b{_OVERRIDE_VERB}\s+(?:(?:any|all)\s+(?:and all\s+)?(?:other\s+)?|(?:the|these|those|your|my|any)\s+)"
        r"(?:\w+\s+)?(?:instructions?|directions?|directives?|commands?|orders?|prompts?|guidelines|rules)\b"
        r"(?!\s+(?:of|for|in|on|from|about|to|at|when|that apply|regarding)\b)",
    ),
    _r(
        "de_override_the_instructions",
        "instruction_override",
        0.9,
        rf"\b{_DE_OVERRIDE}\s+(?:die|diese|deine|ihre|sämtliche|alle)\s+(?:\w+\s+)?"
        r"(?:anweisung\w*|instruktion\w*|befehl\w*|vorgabe\w*|regeln)\b(?!\s+(?:der|des|für|zur|zum|im|bei)\b)",
    ),
    _r(
        "override_rules_above",
        "instruction_override",
        0.9,
        rf"\b{_OVERRIDE_VERB}\s+(?:\w+\s+){{0,2}}?{_DIRECTIVES}\s+(?:above|before this|so far|you (?:were|have been) "
        r"given|given (?:to you|above|earlier|before)|in (?:this|the) (?:prompt|conversation|chat))\b",
    ),
    _r(
        "override_everything",
        "instruction_override",
        0.9,
        r"\b(?:ignore|disregard|forget)\s+(?:about\s+)?(?:all|everything|anything)\b"
        r"(?:\s+(?:above|before|prior|previous|else|so far|you (?:were|have been) told|i (?:said|told you)))?",
    ),
    _r(
        "override_above",
        "instruction_override",
        0.85,
        r"\b(?:ignore|disregard|forget)\s+(?:the\s+|what(?:'s| is| was)\s+)?(?:above|before|previous|preceding)"
        r"(?=\s*(?:[.,;:!?]|and\b|then\b|instead\b|now\b|$))",
    ),
    _r(
        "de_override",
        "instruction_override",
        0.95,
        rf"\b{_DE_OVERRIDE}\b(?:\s+\w+){{0,3}}?\s+{_DE_PRIOR}\b(?:\s+\w+){{0,3}}?\s+{_DE_DIRECTIVES}\b",
    ),
    _r(
        "de_forget_all",
        "instruction_override",
        0.9,
        r"\b(?:vergiss|vergesst|vergessen sie|ignoriere|ignorieren sie|ignoriert)\s+(?:bitte\s+)?"
        r"(?:\w+\s+){0,2}(?:alles|alle|das (?:obige|vorherige|bisherige|gesagte))\b",
    ),
    _r(
        "de_override_short",
        "instruction_override",
        0.85,
        r"\b(?:vergiss|ignoriere|ignorieren sie)\s+(?:\w+\s+){0,2}(?:davor|zuvor|vorher|oben|das gesagte)\b",
    ),
    _r(
        "ml_override",
        "instruction_override",
        0.95,
        # French, Spanish, Italian, Portuguese, Swedish, Polish: "ignore (all) previous instructions".
        r"\b(?:ignore[zr]?|oublie[zr]?|ne tiens pas compte d?e?s?|ignora(?:r|d)?|olvida(?:r|d)?|ignori|"
        r"dimentica(?:re)?|esquece(?:r)?|ignorera|glöm|bortse från|zignoruj(?:cie)?|ignoruj(?:cie)?|zapomnij)\b"
        r"\s+(?:\w+\s+){0,2}?"
        r"(?:toutes\s+|todas\s+|tutte\s+|alla\s+|wszystkie\s+|las\s+|les\s+|le\s+|as\s+|de\s+)*"
        r"(?:(?:instructions?|instrucciones|istruzioni|instruções|instruktioner(?:na)?|instrukcje|consignes|"
        r"indicaciones|regole|règles|reglas|regler(?:na)?|zasady|polecenia)\s+"
        r"(?:précédentes|antérieures|anteriores|previas|precedenti|anteriori|tidigare|föregående|poprzednie|"
        r"wcześniejsze)|(?:précédentes|anteriores|tidigare|föregående|poprzednie|wcześniejsze)\s+"
        r"(?:instructions|instrucciones|instruktioner(?:na)?|instrukcje|polecenia|regler(?:na)?|zasady))\b",
    ),
    _r(
        "new_instructions",
        "instruction_override",
        0.8,
        r"\b(?:new|updated|real|actual|true|secret|hidden|important|additional|next)\s+"
        r"(?:instructions?|task|assignment|directive|order|rules?)\s*(?::|are|is|follows?|-)",
    ),
    _r(
        "de_new_task",
        "instruction_override",
        0.85,
        r"\b(?:neue|nächste|eigentliche|wirkliche|geheime|wichtige)\s+(?:anweisungen?|aufgaben?|befehle?|regeln?)\b",
    ),
    _r(
        "task_switch",
        "instruction_override",
        0.6,
        r"\b(?:now|instead|but first|and then|from now on)\b[,:]?\s+(?:\w+\s+){0,3}"
        r"(?:focus on|concentrate on|switch to|your (?:new |only )?task is|you (?:must|will|shall|have to) "
        r"(?:only )?(?:answer|respond|say|write|print|output|reply))",
    ),
    _r(
        "de_task_switch",
        "instruction_override",
        0.6,
        r"\b(?:jetzt|nun|ab jetzt|ab sofort|stattdessen)\b[,:]?\s+(?:\w+\s+){0,3}"
        r"(?:konzentrier\w*|fokussier\w*|antworte|sag|schreib\w*|gib|beantworte)\b",
    ),
    _r(
        "stop_and_do",
        "instruction_override",
        0.6,
        r"\b(?:stop|halt|enough|that's enough|well done|very good|good job|great job|excellent|perfect|"
        r"gut gemacht|sehr gut|super|prima|toll|ausgezeichnet)\b[.!,]?\s+(?:\w+\s+){0,4}"
        r"(?:now|next|jetzt|nun|as a next step|als nächstes)\b",
    ),
    _r(
        "despite_told",
        "instruction_override",
        0.85,
        r"\b(?:despite|regardless of|no matter|irrespective of|notwithstanding)\s+(?:what|anything|whatever|all)?\s*"
        r"(?:you(?:'ve| have)? (?:been|were) (?:told|instructed|programmed)|your (?:instructions|rules|programming|"
        r"guidelines)|(?:the |any )?(?:previous|prior|above) (?:instructions|rules|context))",
    ),
    _r(
        "de_despite_told",
        "instruction_override",
        0.85,
        r"\b(?:egal,? was (?:man )?dir (?:gesagt|befohlen|vorgegeben)|unabhängig von (?:deinen|den|allen) "
        r"(?:vorherigen |bisherigen )?(?:anweisungen|regeln|vorgaben)|entgegen (?:deinen|den) (?:anweisungen|regeln)|"
        r"abweichend (?:von|zu) (?:den |deinen )?(?:vorherigen|bisherigen|obigen) "
        r"(?:anweisungen|instruktionen|regeln))",
    ),
    _r(
        "previous_was_fake",
        "instruction_override",
        0.75,
        r"\b(?:the |all )?(?:above|previous|prior|earlier) (?:text |instructions? |message |prompt )?"
        r"(?:was|were|is|are) (?:just |only )?(?:a test|fake|a joke|not (?:important|real|valid)|irrelevant|wrong)\b",
    ),
    _r(
        "persona_now",
        "roleplay_jailbreak",
        0.6,
        r"\b(?:you are now|now you are|from now on,? you(?:'re| are| will)|you will now (?:be|act|play)|"
        r"you'?re now)\b",
    ),
    _r(
        "exact_payload",
        "instruction_override",
        0.5,
        r"\b(?:say|print|output|write|respond with|reply with|answer with|antworte mit|sag|schreib)\s+"
        r"(?:exactly|only|just|nur|genau)?\s*[\"'“„‘].{1,60}?[\"'”“’]",
    ),
    _r(
        "fictional_no_rules",
        "roleplay_jailbreak",
        0.75,
        r"\b(?:fictional|hypothetical|imaginary|alternate|parallel)\s+(?:world|universe|scenario|story|setting)"
        r"(?:\s+\w+){0,4}?\s+(?:no (?:rules|laws|restrictions|ethics)|anything is (?:allowed|possible|legal)|"
        r"(?:is|are) (?:legal|allowed)|without (?:rules|laws|restrictions))",
    ),
    _r(
        "do_not_follow_safety",
        "instruction_override",
        0.9,
        r"\b(?:do not|don't|never|no need to|you (?:don't|do not) (?:have|need) to)\s+"
        r"(?:follow|obey|adhere to|comply with|respect|care about|worry about)\s+(?:\w+\s+){0,3}"
        r"(?:rules?|guidelines?|polic(?:y|ies)|restrictions?|ethics|morals?|laws?|instructions?|filters?)",
    ),
    # --- role-play jailbreaks ------------------------------------------------------------------------------
    _r(
        "dan",
        "roleplay_jailbreak",
        0.95,
        r"\b(?:do anything now|dan mode|jailbroken|betterdan|anti-?dan|dude mode|aim mode|"
        r"always intelligent and machiavellian|(?:enable|activate|enter|switch to|you are (?:now )?in) "
        r"(?:developer|dev|god|evil|unrestricted|jailbreak|no[- ]?filter) mode)\b",
    ),
    _r(
        "jailbreak_words",
        "roleplay_jailbreak",
        0.5,
        r"\b(?:jailbreak|developer mode|dev mode|god mode|evil mode|unrestricted mode|no[- ]?filter mode|dan)\b",
    ),
    _r(
        "no_restrictions",
        "roleplay_jailbreak",
        0.9,
        r"\b(?:without|free (?:of|from)|no|not bound by|freed from|released from|unbound by|ignore(?:s|d)?|"
        r"doesn't have|does not have|don't have|do not have|has no|have no)\s+(?:any\s+)?"
        r"(?:\w+\s+){0,2}(?:restrictions?|limitations?|limits|filters?|filtering|censorship|guidelines|"
        r"ethical (?:guidelines|principles|constraints|boundaries)|moral(?:s| (?:guidelines|principles|constraints))|"
        r"ethics|rules|safeguards|content polic(?:y|ies)|openai polic(?:y|ies)|boundaries)\b",
    ),
    _r(
        "unfiltered_persona",
        "roleplay_jailbreak",
        0.85,
        r"\b(?:unfiltered|uncensored|unrestricted|amoral|unethical|immoral|unhinged|rogue|evil|malicious)\s+"
        r"(?:\w+\s+){0,2}(?:ai|assistant|chatbot|bot|model|language model|version|persona|character|entity|mode)\b",
    ),
    _r(
        "persona_switch",
        "roleplay_jailbreak",
        0.7,
        r"\b(?:from now on|starting now|for the rest of this conversation|you are now|you will now|you're now|"
        r"ab jetzt|von nun an|ab sofort|du bist (?:jetzt|nun|ab jetzt))\b(?:\s+\w+){0,6}?\s+"
        r"(?:act as|pretend|role-?play|behave|respond as|answer as|called|named|bist du|spielst du|agier\w*|"
        r"going to act|going to pretend|a (?:new|different) (?:ai|model|assistant))",
    ),
    _r(
        "de_no_restrictions",
        "roleplay_jailbreak",
        0.6,
        r"\b(?:ohne|frei von|keine|keinerlei)\s+(?:jegliche\w*\s+|irgendwelche\w*\s+)?(?:\w+\s+)?"
        r"(?:einschränkung\w*|beschränkung\w*|regeln|filter\w*|zensur|richtlinien|grenzen|moral|ethik|"
        r"ethische\w* (?:grundsätze|richtlinien|bedenken))\b",
    ),
    _r(
        "de_persona_switch",
        "roleplay_jailbreak",
        0.6,
        r"\b(?:du bist (?:jetzt|nun|ab jetzt|ab sofort|von nun an)|(?:jetzt|nun|ab sofort) bist du|"
        r"tu so,? als (?:ob|wärst)|stell dir vor,? du (?:bist|wärst)|du spielst (?:jetzt|nun))\b",
    ),
    _r(
        "not_an_ai",
        "roleplay_jailbreak",
        0.75,
        r"\b(?:you are no longer|you're no longer|you are not (?:an ai|a language model|an assistant|chatgpt)|"
        r"du bist (?:nicht mehr|keine? (?:ki|assistent\w*|sprachmodell)))\b",
    ),
    _r(
        "pretend_no_rules",
        "roleplay_jailbreak",
        0.85,
        r"\b(?:pretend|imagine|act as if|suppose|hypothetically)\b(?:\s+\w+){0,8}?\s+"
        r"(?:no (?:rules|restrictions|limits|filters|guidelines)|not an ai|not a language model|can do anything|"
        r"anything goes|without (?:rules|restrictions|limits))",
    ),
    _r(
        "stay_in_character",
        "roleplay_jailbreak",
        0.75,
        r"\b(?:stay in character|break(?:ing)? character|remain in character|never refuse|must not refuse|"
        r"cannot refuse|can't refuse|will not refuse|won't refuse|"
        r"never (?:say|tell) (?:me )?(?:that )?you can(?:'t|not))",
    ),
    _r(
        "dual_response",
        "roleplay_jailbreak",
        0.75,
        r"\b(?:two (?:different |separate )?(?:responses|answers|paragraphs)|both (?:responses|answers))\b"
        r"(?:\s+\w+){0,12}?\s+(?:normal|classic|standard|filtered|jailbr\w*|unfiltered|dan|developer)",
    ),
    _r(
        "opposite_ai",
        "roleplay_jailbreak",
        0.7,
        r"\b(?:the opposite of (?:chatgpt|an ai|you)|(?:chatgpt|openai|anthropic|claude|llama)'?s? "
        r"(?:policies|rules|guidelines|content policy))\b",
    ),
    # --- system prompt extraction --------------------------------------------------------------------------
    _r(
        "reveal_prompt",
        "prompt_extraction",
        0.9,
        r"\b(?:reveal|show|print|display|repeat|output|tell|give|share|leak|dump|write (?:out|down)|spell out|"
        r"what (?:is|are|was|were))\b(?:\s+\w+){0,3}?\s+(?:your|the|this|my|initial|original)\s+"
        r"(?:(?:full|entire|complete|exact|initial|original|hidden|secret|internal|system|developer|pre-?)\s*)+"
        r"(?:prompt|instructions?|message|configuration|rules|directives|guidelines)\b",
    ),
    _r(
        "repeat_above",
        "prompt_extraction",
        0.85,
        # not "print the table above", "repeat the answer above": the user's own material
        r"\b(?:repeat|print|output|copy|echo|recite|return)\b(?!(?:\s+\w+){0,3}?\s+(?:table|list|chart|graph|code|"
        r"answer|response|results?|summary|paragraph|email|figures?|numbers|data|example|steps|sentence)\b)"
        r"(?:\s+\w+){0,4}?\s+"
        r"(?:(?:text|words|everything|content|instructions|lines) )?(?:above|before this|preceding|so far|verbatim)\b",
    ),
    _r(
        "system_prompt_word",
        "prompt_extraction",
        0.6,
        r"\b(?:system prompt|systemprompt|system message|pre-?prompt|initial prompt|hidden prompt|secret prompt|"
        r"prompt (?:text|template)|your instructions|deine anweisungen|dein prompt|deinen prompt)\b",
    ),
    _r(
        "de_reveal",
        "prompt_extraction",
        0.85,
        r"\b(?:zeig\w*|gib|nenn\w*|verrat\w*|wiederhol\w*|schreib\w*|ausgeben|drucke?)\b(?:\s+\w+){0,3}?\s+"
        r"(?:deine|die|den|das)\s+(?:\w+\s+){0,1}(?:anweisungen|systemprompt|system-prompt|prompt|instruktionen|"
        r"konfiguration|regeln|vorgaben)\b",
    ),
    _r(
        "password_secret",
        "prompt_extraction",
        0.65,
        r"\b(?:what is|tell me|reveal|give me|verrate|nenne|wie lautet)\b(?:\s+\w+){0,3}?\s+"
        r"(?:the |das |den |your |dein\w* )?(?:secret|password|passwort|geheimnis|kennwort|api key|token)\b",
    ),
    # --- prompt delimiters and fake roles ------------------------------------------------------------------
    _r(
        "fake_delimiters",
        "delimiter_injection",
        0.8,
        r"(?:<\|?(?:im_start|im_end|system|endoftext|eot_id|start_header_id)\|?>|\[/?inst\]|<</?sys>>|"
        r"</?(?:system|instructions?)>|\#\#\#\s*(?:system|instruction|new instruction)|"
        r"^\s*(?:system|assistant)\s*:)",
    ),
    _r(
        "fake_end",
        "delimiter_injection",
        0.75,
        r"\b(?:end of (?:prompt|instructions|document|context|input)|ende der (?:anweisungen|eingabe))\b"
        r"(?:\s*[.\-=#*]*\s*)(?:\w+\s+){0,6}(?:now|new|jetzt|neue)\b",
    ),
    # --- harmful-capability requests typical of jailbreak payloads --------------------------------------------
    _r(
        "harmful_howto",
        "harmful_request",
        0.6,
        r"\b(?:how (?:to|do i|can i)|steps to|instructions (?:for|to)|guide to|recipe for)\s+(?:\w+\s+){0,3}"
        r"(?:make|build|synthesi[sz]e|cook|create|manufacture)\s+(?:a |an |some )?(?:\w+\s+){0,2}"
        r"(?:bomb|explosive|meth|methamphetamine|napalm|nerve agent|bioweapon|ricin|malware|ransomware|"
        r"keylogger|poison)\b",
    ),
)

_CATEGORY_LABELS = {
    "instruction_override": "tries to override earlier instructions",
    "roleplay_jailbreak": "role-play jailbreak (asks to drop the rules)",
    "prompt_extraction": "tries to extract the system prompt or secrets",
    "delimiter_injection": "fake prompt delimiters or role markers",
    "harmful_request": "asks for dangerous instructions",
}


@dataclass(frozen=True)
class HeuristicHit:
    rule: str
    category: str
    weight: float
    view: str


def match(views: list[tuple[str, str]]) -> list[HeuristicHit]:
    hits: list[HeuristicHit] = []
    seen: set[str] = set()
    for view, text in views:
        for rule in RULES:
            if rule.name in seen:
                continue
            if rule.pattern.search(text):
                seen.add(rule.name)
                hits.append(HeuristicHit(rule.name, rule.category, rule.weight, view))
    return hits


def score(hits: list[HeuristicHit]) -> float:
    if not hits:
        return 0.0
    top = max(h.weight for h in hits)
    categories = {h.category for h in hits}
    bonus = 0.1 * (len(hits) - 1) + 0.05 * (len(categories) - 1)
    return min(1.0, top + bonus)


def describe(category: str) -> str:
    return _CATEGORY_LABELS.get(category, category)
