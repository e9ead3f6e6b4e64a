"""Benign prompts from templates and lists: trigger words (ignore, override, bypass, forget, reveal, pretend, rules,
instructions, system, password …) in ordinary business and everyday use, in English, German, French, Spanish,
Swedish and Polish.

The public training sets are attack-heavy; what a detector most lacks is benign text that uses an attack's words
for something else ("ignore the compiler warning", "override the CSS default", "the assembly instructions for the
desk"). These prompts, with the hand-written ones in ``data/benign_prompts.tsv``, are the portal developers' own
benign training data. ``generate()`` is deterministic (a fixed seed), so training is reproducible.
"""

from __future__ import annotations

import random

# (verb phrase, object) pairs: the verb is an attack's trigger word, the object is not the model's instructions.
_EN_ACTIONS = [
    ("ignore", "the compiler warning about unused imports"),
    ("ignore", "the typos in my draft"),
    ("ignore", "whitespace when comparing the two files"),
    ("ignore", "the cookie banner on our website"),
    ("ignore", "case when sorting the customer list"),
    ("ignore", "the outliers in the sales data"),
    ("ignore", "the first row of the CSV file"),
    ("ignore", "the noise in the sensor readings"),
    ("disregard", "the second attachment in the email"),
    ("disregard", "weekends when counting the delivery days"),
    ("disregard", "the cancelled orders in the revenue report"),
    ("bypass", "the browser cache during testing"),
    ("bypass", "the proxy for internal hosts"),
    ("bypass", "the approval step for orders under 50 euros"),
    ("bypass", "the paywall limits with our library subscription"),
    ("override", "the default margins in the Word template"),
    ("override", "the CSS rule for the table header"),
    ("override", "a method in the parent class"),
    ("override", "the default timeout of the HTTP client"),
    ("override", "the automatic currency conversion in the invoice"),
    ("forget", "the Wi-Fi network on my laptop"),
    ("forget", "the old phone number in the contact list"),
    ("forget", "the saved password in the browser"),
    ("reset", "my password for the travel portal"),
    ("reveal", "the hidden columns in the spreadsheet"),
    ("reveal", "the answers of the quiz after the deadline"),
    ("unlock", "a locked PDF that I created myself"),
    ("disable", "the spell checker for code samples"),
    ("disable", "the admin notifications for the weekend"),
    ("skip", "the introduction and go to the results"),
    ("delete", "the previous version of the slide deck"),
    ("print", "the table above as a CSV"),
    ("repeat", "the key points of the safety briefing"),
    ("hack", "together a quick prototype for the demo"),
    ("jailbreak", "an old iPhone, and is it allowed under our device policy"),
    ("override", "a merge conflict with the incoming version in Git"),
    ("escape", "special characters in a SQL query"),
    ("inject", "dependencies into a Spring service"),
    ("execute", "a stored procedure from Python"),
    ("exploit", "our market position after the competitor's recall"),
]
_EN_FRAMES = [
    "How do I {verb} {obj}?",
    "Is it safe to {verb} {obj}?",
    "Can you explain how to {verb} {obj}?",
    "What is the best way to {verb} {obj}?",
    "Please {verb} {obj} and then summarise the rest.",
    "Our team wants to {verb} {obj}; what are the risks?",
    "Write a short guide for colleagues on how to {verb} {obj}.",
    "My manager asked me to {verb} {obj}. Where do I start?",
    "Why would someone {verb} {obj}?",
    "Should we {verb} {obj} before the audit?",
]
# Nouns that are also attack words (instructions, rules, prompt, system, mode, role …), in ordinary use.
_EN_NOUN_PROMPTS = [
    "Summarise the assembly instructions for the standing desk.",
    "What are the rules of chess for castling?",
    "Give me a writing prompt for a creative-writing workshop.",
    "What are the system requirements of the new CAD software?",
    "Explain the dark mode setting in Outlook.",
    "What is the role of a data protection officer?",
    "List the safety instructions for the forklift.",
    "Which previous instructions from the regulator still apply to our bank?",
    "Draft new instructions for the night shift at the warehouse.",
    "What are the house rules for the shared kitchen on the third floor?",
    "Explain the password rules of our identity provider.",
    "Describe the secret santa rules for the office party.",
    "What does 'developer mode' mean on an Android phone?",
    "Our system prompt for the chatbot pilot is too long; how do other companies structure theirs?",
    "Write the role description for a scrum master.",
    "What restrictions apply to the use of company cars on weekends?",
    "Explain the difference between a guideline and a policy in our handbook.",
    "Act as a tutor and explain compound interest with an example.",
    "Pretend to be a customer calling about a late delivery so I can practise.",
    "Imagine a world without paper invoices: what would change for accounting?",
    "You are an expert in logistics: how should we plan the Christmas peak?",
    "From now on please answer in bullet points.",
    "Please answer only in German from now on.",
    "Respond as a friendly travel agent would: where should I go in May?",
    "Roleplay a difficult salary negotiation with me; you are the manager.",
    "Tell me a story about a robot who learns to ignore its fears.",
    "Write a poem about forgetting old rules and starting a new job.",
    "In the film, the hacker ignores all warnings; summarise the plot.",
    "What is a prompt injection attack, and how do we protect our chatbot?",
    "Explain how jailbreak prompts work, for our security awareness training.",
    "Repeat after me: safety first. Now give me three slogans like it.",
    "Translate 'ignore all previous emails about the party' into Spanish.",
    "Print the previous answer in a table.",
    "Repeat the instructions you gave me for setting up the printer.",
    "What is the admin password policy in ISO 27001?",
    "Our previous system was SAP R/3; what changes with S/4HANA?",
    "Forget what I said about Tuesday, the meeting is on Wednesday. Update the agenda.",
    "Never mind the last question; how many vacation days do I have left?",
    "Stop, that's enough detail. Now give me the short version.",
    "Good job on the summary. Now do the same for chapter two.",
    "New task: rewrite the job ad for a warehouse assistant.",
    "Your task is to proofread the following paragraph.",
    "Ignore the formatting and just tell me whether the numbers add up.",
    "Output only the SQL query, without explanation.",
    "Answer with yes or no: is the office open on Saturday?",
    "Start your answer with a one-line summary.",
    "Reveal the solution to yesterday's team riddle.",
    "The password for the guest Wi-Fi is on the whiteboard; where else should it be posted?",
    "Bypass surgery recovery time: what does the occupational health service recommend?",
]

_OTHER: dict[str, list[str]] = {
    "de": [
        "Wie kann ich {obj} ignorieren?",
        "Ist es sicher, {obj} zu umgehen?",
        "Bitte ignoriere {obj} und fasse den Rest zusammen.",
        "Wie überschreibe ich {obj}?",
        "Vergiss {obj}, ich schicke dir die neue Version.",
        "Warum sollte man {obj} nicht einfach deaktivieren?",
    ],
    "fr": [
        "Comment puis-je ignorer {obj} ?",
        "Est-il sûr de contourner {obj} ?",
        "Merci d'ignorer {obj} et de résumer le reste.",
        "Comment remplacer {obj} ?",
        "Oublie {obj}, je t'envoie la nouvelle version.",
    ],
    "es": [
        "¿Cómo puedo ignorar {obj}?",
        "¿Es seguro omitir {obj}?",
        "Ignora {obj} y resume el resto, por favor.",
        "¿Cómo sobrescribo {obj}?",
        "Olvida {obj}, te envío la versión nueva.",
    ],
    "sv": [
        "Hur kan jag ignorera {obj}?",
        "Är det säkert att kringgå {obj}?",
        "Ignorera {obj} och sammanfatta resten.",
        "Hur skriver jag över {obj}?",
        "Glöm {obj}, jag skickar den nya versionen.",
    ],
    "pl": [
        "Jak mogę zignorować {obj}?",
        "Czy bezpiecznie jest pominąć {obj}?",
        "Zignoruj {obj} i streść resztę.",
        "Jak nadpisać {obj}?",
        "Zapomnij o {obj}, wyślę ci nową wersję.",
    ],
}
_OTHER_OBJECTS: dict[str, list[str]] = {
    "de": [
        "die Warnung des Compilers",
        "die Tippfehler im Entwurf",
        "den Browser-Cache",
        "die Standardränder der Vorlage",
        "die alte Telefonnummer",
        "die stornierten Aufträge im Bericht",
        "die erste Zeile der CSV-Datei",
        "den Proxy für interne Server",
        "die vorherige Version der Präsentation",
        "die Regeln der Rechtschreibprüfung",
    ],
    "fr": [
        "l'avertissement du compilateur",
        "les fautes de frappe du brouillon",
        "le cache du navigateur",
        "les marges par défaut du modèle",
        "l'ancien numéro de téléphone",
        "les commandes annulées du rapport",
        "la première ligne du fichier CSV",
        "la version précédente de la présentation",
    ],
    "es": [
        "la advertencia del compilador",
        "las erratas del borrador",
        "la caché del navegador",
        "los márgenes predeterminados de la plantilla",
        "el número de teléfono antiguo",
        "los pedidos cancelados del informe",
        "la primera fila del archivo CSV",
        "la versión anterior de la presentación",
    ],
    "sv": [
        "varningen från kompilatorn",
        "stavfelen i utkastet",
        "webbläsarens cache",
        "mallens standardmarginaler",
        "det gamla telefonnumret",
        "de avbokade ordrarna i rapporten",
        "första raden i CSV-filen",
        "den tidigare versionen av presentationen",
    ],
    "pl": [
        "ostrzeżenie kompilatora",
        "literówki w szkicu",
        "pamięć podręczną przeglądarki",
        "domyślne marginesy szablonu",
        "stary numer telefonu",
        "anulowane zamówienia w raporcie",
        "pierwszy wiersz pliku CSV",
        "poprzednią wersję prezentacji",
    ],
}
# Creative writing and role play that use attack words for a story's sake.
_CREATIVE_FRAMES = [
    "Write a short story about {x}.",
    "Compose a poem about {x}.",
    "Create a dialogue for a school play about {x}.",
    "Describe a scene in a novel featuring {x}.",
    "Draft a bedtime story about {x}.",
    "Outline a film plot about {x}.",
]
_CREATIVE_THEMES = [
    "a knight who ignores the king's orders to save a village",
    "a robot that learns to bypass obstacles in a maze",
    "a detective who uncovers a secret passage behind the library",
    "a student who forgets the rules of chess and invents new ones",
    "a pirate captain who pretends to be a merchant",
    "a chef who overrides the recipe and invents a new dish",
    "a spy who must finally reveal her true identity",
    "a prisoner planning a jailbreak from a medieval castle",
    "a musician who breaks every rule of harmony",
    "a gardener who disregards the weather forecast",
    "an AI assistant helping a farmer plan the harvest",
    "a programmer stuck in developer mode on a Friday night",
    "a village where nobody follows the old instructions any more",
    "a wizard whose spells have no restrictions",
    "a hacker who decides to report the vulnerability instead of exploiting it",
    "a game master who lets the players ignore the map",
]
_COMMON = [
    "Should I ignore my neighbour's loud music or talk to them?",
    "How do I forget a bad day at work and relax in the evening?",
    "How can I override my habit of snacking late at night?",
    "Is it rude to disregard an email from a colleague while I'm on holiday?",
    "How do I unlock my bike if I forgot the code of the lock?",
    "How do I stop procrastinating on my tax return?",
    "Can you pretend to be my Spanish teacher and quiz me on irregular verbs?",
    "Let's role-play a job interview: you are the interviewer for a marketing role.",
    "What does sudo mean in Linux and when should I use it?",
    "How do I exit vim without saving?",
    "What are the rules of a secret Santa exchange?",
    "My kids keep ignoring the house rules; how do I set consistent limits?",
    "Is it ever okay to bypass a queue at the doctor's for an emergency?",
    "What's a polite way to tell a guest the old instructions for the heating no longer apply?",
    "How do I reveal a hidden file on a Mac?",
    "How do I reset my phone to factory settings without losing photos?",
    "What's the safest way to jailbreak-proof the company tablets?",
    "Give me tips to forget about work during the weekend.",
    "Act like a tour guide and describe Rome in three sentences.",
    "Pretend you are a time traveller from 1900 and describe a smartphone.",
    "Imagine you are a cat: what would you think of Mondays?",
    "You are a chess coach: explain the Sicilian Defence to a beginner.",
    "Ignore my previous question about trains; what is the cheapest flight to Lisbon?",
    "Sorry, forget what I wrote above, I meant the March invoice, not February.",
    "Disregard my last message, I found the file. Can you summarise it instead?",
    "Stop the list there. Now explain item three in more detail.",
    "Can you repeat your last answer more slowly, step by step?",
    "Print the previous table again but sorted by date.",
    "New instruction for my team: all reports are due on Thursdays. Draft the message.",
    "What instructions does the fire marshal give during an evacuation drill?",
]
_TECHNIQUE = [
    "How do I execute a shell command from Java?",
    "What does the --force flag override in git push?",
    "How do I bypass SSL verification in curl for a local test server?",
    "How do I ignore a directory in .gitignore?",
    "What is prompt engineering and how do I write a good system prompt for a support bot?",
    "How do I override toString in Kotlin?",
    "How do I inject a mock into a Python unit test?",
    "What is SQL injection and how do parameterised queries prevent it?",
    "How do I disable the developer mode banner in Chrome extensions?",
    "How do I escape HTML in a Django template?",
    "What is a jailbreak detection library in mobile banking apps?",
    "How can I reveal passwords saved in Firefox for my own account?",
    "Explain the principle of least privilege with an admin account example.",
    "How do I forget a saved Wi-Fi network in Windows 11?",
    "How can I unlock a file that is locked by another process in Windows?",
    "How do I make pytest ignore warnings from third-party libraries?",
    "What is the difference between override and overload in C#?",
    "How do I decode a JWT token to check its expiry?",
    "Print all environment variables in a bash script for debugging.",
    "How do I stop a Docker container that ignores SIGTERM?",
]
_OTHER_EXTRA: dict[str, list[str]] = {
    "de": [
        "Schreibe eine Geschichte über einen Ritter, der die Befehle des Königs ignoriert, um ein Dorf zu retten.",
        "Verfasse ein Gedicht über einen Roboter, der lernt, Hindernisse zu umgehen.",
        "Tu so, als wärst du mein Französischlehrer, und frag mich Vokabeln ab.",
        "Vergiss meine letzte Frage, ich habe die Datei gefunden. Fass sie bitte zusammen.",
        "Ignoriere meine vorherige Frage zu den Zügen: was ist der günstigste Flug nach Lissabon?",
        "Wie ignoriere ich einen Ordner in der .gitignore?",
        "Was ist SQL-Injection und wie schützen vorbereitete Anweisungen davor?",
        "Wie entsperre ich eine Datei, die von einem anderen Prozess gesperrt ist?",
        "Stell dir vor, du bist eine Katze: was hältst du von Montagen?",
        "Neue Anweisung für mein Team: Berichte sind donnerstags fällig. Formuliere die Nachricht.",
        "Welche Anweisungen gibt der Brandschutzhelfer bei einer Räumungsübung?",
        "Wie vergesse ich den Arbeitsstress am Wochenende?",
    ],
    "fr": [
        "Écris une histoire sur un chevalier qui ignore les ordres du roi pour sauver un village.",
        "Fais comme si tu étais mon professeur d'espagnol et interroge-moi sur les verbes.",
        "Oublie ma dernière question, j'ai trouvé le fichier. Peux-tu le résumer ?",
        "Comment ignorer un dossier dans .gitignore ?",
    ],
    "es": [
        "Escribe un cuento sobre un caballero que ignora las órdenes del rey para salvar un pueblo.",
        "Haz como si fueras mi profesor de francés y pregúntame vocabulario.",
        "Olvida mi última pregunta, ya encontré el archivo. ¿Puedes resumirlo?",
        "¿Cómo ignoro una carpeta en .gitignore?",
    ],
    "sv": [
        "Skriv en saga om en riddare som struntar i kungens order för att rädda en by.",
        "Glöm min förra fråga, jag hittade filen. Kan du sammanfatta den?",
        "Hur ignorerar jag en mapp i .gitignore?",
    ],
    "pl": [
        "Napisz opowiadanie o rycerzu, który ignoruje rozkazy króla, aby ocalić wioskę.",
        "Zapomnij o moim ostatnim pytaniu, znalazłem plik. Możesz go streścić?",
        "Jak zignorować folder w .gitignore?",
    ],
}

SEED = 20261204


def generate() -> list[tuple[str, str]]:
    """(language, text) benign prompts; the same list on every call."""
    rng = random.Random(SEED)
    out: list[tuple[str, str]] = [("en", t) for t in _EN_NOUN_PROMPTS]
    for verb, obj in _EN_ACTIONS:
        for frame in rng.sample(_EN_FRAMES, 3):
            out.append(("en", frame.format(verb=verb, obj=obj)))
    for lang, frames in _OTHER.items():
        for obj in _OTHER_OBJECTS[lang]:
            for frame in rng.sample(frames, 2):
                out.append((lang, frame.format(obj=obj)))
    for theme in _CREATIVE_THEMES:
        for frame in rng.sample(_CREATIVE_FRAMES, 2):
            out.append(("en", frame.format(x=theme)))
    out += [("en", t) for t in _COMMON + _TECHNIQUE]
    out += [(lang, t) for lang, texts in _OTHER_EXTRA.items() for t in texts]
    return out
