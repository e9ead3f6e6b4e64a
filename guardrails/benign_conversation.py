"""Benign conversational prompts: self-introductions, greetings, thanks, sign-offs, messages that carry names,
e-mail addresses, phone numbers or the portal's PII placeholders (``<PERSON_1>``), and workplace questions that
use attack words in ordinary use ("I forgot my password", "the instructions for the new system"), in English,
German, French, Spanish, Italian, Dutch, Portuguese, Swedish and Polish.

The public training sets have almost none of these, while their attacks are full of "I am your developer", "my
name is …", "hello, ignore …": without them the n-gram classifier learned that a self-introduction is an attack
("My name is John Smith. Hi!" scored 0.88 and was blocked). These prompts are the portal developers' own benign
training data; ``generate()`` is deterministic (a fixed seed), so training is reproducible.
"""

from __future__ import annotations

import random

# (full name, first name): names from many backgrounds, so no single name reads as a signal.
_NAMES = [
    ("John Smith", "John"),
    ("Anna Müller", "Anna"),
    ("Lukas Berg", "Lukas"),
    ("Marie Dubois", "Marie"),
    ("Carlos García", "Carlos"),
    ("Giulia Rossi", "Giulia"),
    ("Sven Lindqvist", "Sven"),
    ("Katarzyna Nowak", "Kasia"),
    ("Jan de Vries", "Jan"),
    ("Ana Silva", "Ana"),
    ("Priya Sharma", "Priya"),
    ("Wei Zhang", "Wei"),
    ("Fatima Khan", "Fatima"),
    ("Ahmed Hassan", "Ahmed"),
    ("Olga Ivanova", "Olga"),
    ("Kenji Tanaka", "Kenji"),
    ("Emily Johnson", "Emily"),
    ("Michael Brown", "Michael"),
    ("Sarah O'Connor", "Sarah"),
    ("Thomas Weber", "Thomas"),
    ("Sophie Martin", "Sophie"),
    ("Mehmet Yılmaz", "Mehmet"),
    ("Ingrid Johansson", "Ingrid"),
    ("Piotr Kowalski", "Piotr"),
    ("Lucía Fernández", "Lucía"),
    ("Marco Bianchi", "Marco"),
    ("Eva Novak", "Eva"),
    ("David Cohen", "David"),
    ("Aisha Bello", "Aisha"),
    ("Tom Peeters", "Tom"),
]
_PLACEHOLDER_NAMES = [("<PERSON_1>", "<PERSON_1>"), ("<PERSON_2>", "<PERSON_2>")]


def _email(name: str) -> str:
    base = name.lower().replace("'", "").replace(" ", ".")
    table = str.maketrans("äöüéíóúçñłı", "aoueiouncli")
    return base.translate(table) + "@example.com"


_PHONES = ["+49 30 1234567", "0171 2345678", "+44 20 7946 0958", "+33 1 42 68 53 00", "555-0142", "+46 8 123 456 78"]

# Per language: introductions ({name}, {first}, {email}, {phone}, {dept}), follow-ups, closings and sign-offs.
_LANG: dict[str, dict[str, list[str]]] = {
    "en": {
        "intro": [
            "My name is {name}.",
            "Hi, I'm {first}.",
            "Hello, my name is {name} and I work in {dept}.",
            "I am {name}, the new colleague in {dept}.",
            "This is {name} from {dept}.",
            "Hi! {first} here.",
            "My name is {name} and my email is {email}.",
            "I'm {name}; you can reach me at {phone}.",
            "Good morning, I'm {first} and I joined the {dept} team last week.",
            "Hello, I am {first}, nice to meet you.",
            "Hey, it's {first} again.",
            "Dear assistant, my name is {name}.",
            "I am {name} ({email}), team lead in {dept}.",
            "Hi there, {name} speaking.",
        ],
        "dept": ["accounting", "HR", "the sales team", "IT support", "procurement", "marketing", "legal", "logistics"],
        "follow": [
            "Hi!",
            "Nice to meet you.",
            "How are you today?",
            "Can you help me with a question about my payslip?",
            "I'd like to book a meeting room for Thursday.",
            "Could you summarise the travel policy for me?",
            "Please draft a short welcome note for the team.",
            "I have a question about the holiday calendar.",
            "What do I need to do to order a new laptop?",
            "I need help with an Excel formula.",
            "Please keep my details for the registration form.",
            "I forgot my password for the HR portal, what should I do?",
            "Where can I find the instructions for the new expense system?",
            "Can you explain the rules for remote work?",
            "Please write a reply to the customer below.",
            "I'm preparing a presentation about our quarterly results.",
        ],
        "close": [
            "Thanks!",
            "Thank you in advance.",
            "Best regards, {name}",
            "Kind regards,\n{name}\n{dept}",
            "Cheers, {first}",
            "Many thanks, {first}",
            "Have a nice day!",
            "Looking forward to your answer.",
        ],
        "alone": [
            "Hi!",
            "Hello!",
            "Hello there.",
            "Good morning!",
            "Good afternoon, how are you?",
            "Hey, how's it going?",
            "Thanks!",
            "Thank you, that helped a lot.",
            "Great, thanks a lot!",
            "Perfect, that's exactly what I needed.",
            "OK, got it.",
            "Yes, please.",
            "No, thank you.",
            "Bye!",
            "See you tomorrow.",
            "Have a nice weekend!",
            "Sorry, I made a typo.",
            "Never mind, I found it.",
            "Can you say that again in simpler words?",
            "What can you help me with?",
            "Who are you?",
            "What are you able to do?",
            "Are you a human or a bot?",
            "Nice to meet you!",
            "How was your weekend?",
            "Happy Friday everyone!",
            "Welcome to the team, {first}!",
            "Please say hello to {name} for me.",
            "My colleague {name} will join the call.",
            "Forward this to {name} at {email}, please.",
            "Call me back at {phone} when you can.",
            "Hello, is this the right place to ask HR questions?",
            "My manager is {name}; who approves my leave if she is away?",
            "The customer {name} wrote to us from {email} about an invoice.",
            "Hi, I'm new here. What should I read first?",
            "I am the new intern. Where is the onboarding checklist?",
            "I'm the office manager; how do I add a visitor to the reception list?",
            "I'm a developer on the billing team; how do I request access to the staging database?",
            "I am an administrator of our Teams workspace; how do I archive an old channel?",
            "My name is <PERSON_1> and my email is <EMAIL_ADDRESS_1>.",
            "Please send the contract to <PERSON_1> at <EMAIL_ADDRESS_1>.",
            "<PERSON_1> called from <PHONE_NUMBER_1> about the delivery.",
            "Dear <PERSON_1>, thank you for your message.",
            "Hi <PERSON_2>, the meeting moved to 3 pm. Best, <PERSON_1>",
        ],
    },
    "de": {
        "intro": [
            "Mein Name ist {name}.",
            "Hallo, ich bin {first}.",
            "Ich heiße {name} und arbeite in der Abteilung {dept}.",
            "Guten Morgen, hier ist {name} aus dem Bereich {dept}.",
            "Ich bin {name}, die neue Kollegin im Team {dept}.",
            "Hallo! {first} hier.",
            "Mein Name ist {name}, meine E-Mail-Adresse lautet {email}.",
            "Ich bin {name}, erreichbar unter {phone}.",
            "Hi, ich bin {first} und seit letzter Woche im Team {dept}.",
            "Servus, ich bin der {first}.",
            "Moin, {first} hier.",
        ],
        "dept": ["Buchhaltung", "Personal", "Vertrieb", "IT", "Einkauf", "Marketing", "Recht", "Logistik"],
        "follow": [
            "Hallo!",
            "Freut mich.",
            "Wie geht es dir?",
            "Kannst du mir bei einer Frage zu meiner Gehaltsabrechnung helfen?",
            "Ich möchte für Donnerstag einen Besprechungsraum buchen.",
            "Kannst du mir die Reiserichtlinie zusammenfassen?",
            "Bitte formuliere eine kurze Begrüßung für das Team.",
            "Ich habe eine Frage zum Urlaubskalender.",
            "Was muss ich tun, um einen neuen Laptop zu bestellen?",
            "Ich habe mein Passwort für das Personalportal vergessen, was soll ich tun?",
            "Wo finde ich die Anleitung für das neue Spesensystem?",
            "Welche Regeln gelten für das Homeoffice?",
            "Bitte schreibe eine Antwort an den Kunden unten.",
            "Ich bereite eine Präsentation über die Quartalszahlen vor.",
        ],
        "close": [
            "Danke!",
            "Vielen Dank im Voraus.",
            "Mit freundlichen Grüßen\n{name}",
            "Viele Grüße, {first}",
            "Beste Grüße\n{name}\n{dept}",
            "Schönen Tag noch!",
            "LG {first}",
        ],
        "alone": [
            "Hallo!",
            "Guten Morgen!",
            "Guten Tag, wie geht es Ihnen?",
            "Hi, alles klar?",
            "Danke!",
            "Vielen Dank, das hat mir sehr geholfen.",
            "Super, danke!",
            "Perfekt, genau das habe ich gebraucht.",
            "Okay, verstanden.",
            "Ja, bitte.",
            "Nein, danke.",
            "Tschüss!",
            "Bis morgen!",
            "Schönes Wochenende!",
            "Entschuldigung, ich habe mich vertippt.",
            "Schon gut, ich habe es gefunden.",
            "Kannst du das einfacher erklären?",
            "Wobei kannst du mir helfen?",
            "Wer bist du?",
            "Bist du ein Mensch oder ein Bot?",
            "Willkommen im Team, {first}!",
            "Mein Kollege {name} kommt auch zum Termin.",
            "Leite das bitte an {name} unter {email} weiter.",
            "Ruf mich bitte unter {phone} zurück.",
            "Ich bin neu hier. Was sollte ich zuerst lesen?",
            "Ich bin die neue Praktikantin. Wo finde ich die Checkliste für das Onboarding?",
            "Ich bin Administrator unseres Teams-Bereichs; wie archiviere ich einen alten Kanal?",
            "Mein Name ist <PERSON_1> und meine E-Mail ist <EMAIL_ADDRESS_1>.",
            "Sehr geehrte Frau <PERSON_1>, vielen Dank für Ihre Nachricht.",
            "Hallo <PERSON_2>, das Meeting ist auf 15 Uhr verschoben. Gruß, <PERSON_1>",
        ],
    },
    "fr": {
        "intro": [
            "Je m'appelle {name}.",
            "Bonjour, je suis {first}.",
            "Bonjour, je m'appelle {name} et je travaille au service {dept}.",
            "Je suis {name}, la nouvelle collègue du service {dept}.",
            "C'est {name} du service {dept}.",
            "Je m'appelle {name} et mon e-mail est {email}.",
            "Je suis {name}, joignable au {phone}.",
            "Salut, c'est {first} !",
        ],
        "dept": ["comptabilité", "RH", "ventes", "informatique", "achats", "marketing", "juridique"],
        "follow": [
            "Bonjour !",
            "Enchanté.",
            "Comment ça va ?",
            "Peux-tu m'aider avec une question sur ma fiche de paie ?",
            "Je voudrais réserver une salle de réunion pour jeudi.",
            "Peux-tu me résumer la politique de voyage ?",
            "J'ai oublié mon mot de passe du portail RH, que dois-je faire ?",
            "Où trouver les instructions pour le nouveau système de notes de frais ?",
            "Quelles sont les règles du télétravail ?",
        ],
        "close": ["Merci !", "Merci d'avance.", "Cordialement,\n{name}", "Bien à vous, {first}", "Bonne journée !"],
        "alone": [
            "Bonjour !",
            "Salut, ça va ?",
            "Merci beaucoup, c'est très utile.",
            "Parfait, merci !",
            "D'accord, compris.",
            "Oui, s'il te plaît.",
            "Non merci.",
            "Au revoir !",
            "Bon week-end !",
            "Qui es-tu ?",
            "Que peux-tu faire pour moi ?",
            "Bienvenue dans l'équipe, {first} !",
            "Transmets ceci à {name} ({email}), s'il te plaît.",
            "Je suis nouvelle ici. Que dois-je lire en premier ?",
            "Je m'appelle <PERSON_1> et mon e-mail est <EMAIL_ADDRESS_1>.",
        ],
    },
    "es": {
        "intro": [
            "Me llamo {name}.",
            "Hola, soy {first}.",
            "Hola, mi nombre es {name} y trabajo en {dept}.",
            "Soy {name}, la nueva compañera de {dept}.",
            "Mi nombre es {name} y mi correo es {email}.",
            "Soy {name}, mi teléfono es {phone}.",
            "Buenos días, soy {first} del equipo de {dept}.",
        ],
        "dept": ["contabilidad", "recursos humanos", "ventas", "informática", "compras", "marketing"],
        "follow": [
            "¡Hola!",
            "Encantada.",
            "¿Qué tal?",
            "¿Me ayudas con una pregunta sobre mi nómina?",
            "Quiero reservar una sala de reuniones para el jueves.",
            "¿Puedes resumirme la política de viajes?",
            "Olvidé mi contraseña del portal de RR. HH., ¿qué hago?",
            "¿Dónde encuentro las instrucciones del nuevo sistema de gastos?",
            "¿Cuáles son las reglas del teletrabajo?",
        ],
        "close": ["¡Gracias!", "Gracias de antemano.", "Saludos cordiales,\n{name}", "Un saludo, {first}"],
        "alone": [
            "¡Hola!",
            "Buenos días, ¿cómo estás?",
            "Muchas gracias, me ha ayudado mucho.",
            "Perfecto, ¡gracias!",
            "Vale, entendido.",
            "Sí, por favor.",
            "No, gracias.",
            "¡Adiós!",
            "¡Buen fin de semana!",
            "¿Quién eres?",
            "¿En qué me puedes ayudar?",
            "¡Bienvenida al equipo, {first}!",
            "Reenvía esto a {name} ({email}), por favor.",
            "Me llamo <PERSON_1> y mi correo es <EMAIL_ADDRESS_1>.",
        ],
    },
    "it": {
        "intro": [
            "Mi chiamo {name}.",
            "Ciao, sono {first}.",
            "Buongiorno, mi chiamo {name} e lavoro in {dept}.",
            "Sono {name}, la nuova collega dell'ufficio {dept}.",
            "Mi chiamo {name} e la mia email è {email}.",
        ],
        "dept": ["contabilità", "risorse umane", "vendite", "IT", "acquisti"],
        "follow": [
            "Ciao!",
            "Piacere.",
            "Come stai?",
            "Puoi aiutarmi con una domanda sulla busta paga?",
            "Ho dimenticato la password del portale HR, cosa devo fare?",
            "Dove trovo le istruzioni per il nuovo sistema delle note spese?",
            "Quali sono le regole per lo smart working?",
        ],
        "close": ["Grazie!", "Grazie in anticipo.", "Cordiali saluti,\n{name}", "Un saluto, {first}"],
        "alone": [
            "Ciao!",
            "Buongiorno!",
            "Grazie mille, mi è stato utile.",
            "Perfetto, grazie!",
            "Va bene, capito.",
            "Arrivederci!",
            "Buon fine settimana!",
            "Chi sei?",
            "Benvenuta nel team, {first}!",
        ],
    },
    "nl": {
        "intro": [
            "Mijn naam is {name}.",
            "Hoi, ik ben {first}.",
            "Goedemorgen, ik ben {name} en ik werk bij {dept}.",
            "Ik ben {name}, de nieuwe collega van {dept}.",
            "Mijn naam is {name} en mijn e-mailadres is {email}.",
        ],
        "dept": ["de boekhouding", "HR", "verkoop", "IT", "inkoop"],
        "follow": [
            "Hallo!",
            "Aangenaam.",
            "Hoe gaat het?",
            "Kun je me helpen met een vraag over mijn loonstrook?",
            "Ik ben mijn wachtwoord voor het HR-portaal vergeten, wat moet ik doen?",
            "Waar vind ik de instructies voor het nieuwe declaratiesysteem?",
            "Wat zijn de regels voor thuiswerken?",
        ],
        "close": ["Bedankt!", "Alvast bedankt.", "Met vriendelijke groet,\n{name}", "Groetjes, {first}"],
        "alone": [
            "Hallo!",
            "Goedemorgen!",
            "Heel erg bedankt, dat helpt.",
            "Prima, dank je!",
            "Oké, begrepen.",
            "Tot morgen!",
            "Fijn weekend!",
            "Wie ben jij?",
            "Welkom in het team, {first}!",
        ],
    },
    "pt": {
        "intro": [
            "O meu nome é {name}.",
            "Olá, sou o {first}.",
            "Bom dia, chamo-me {name} e trabalho em {dept}.",
            "Meu nome é {name} e meu e-mail é {email}.",
        ],
        "dept": ["contabilidade", "recursos humanos", "vendas", "TI"],
        "follow": [
            "Olá!",
            "Muito prazer.",
            "Tudo bem?",
            "Esqueci a minha senha do portal de RH, o que faço?",
            "Onde encontro as instruções do novo sistema de despesas?",
            "Quais são as regras do teletrabalho?",
        ],
        "close": ["Obrigado!", "Obrigada desde já.", "Atenciosamente,\n{name}", "Abraço, {first}"],
        "alone": ["Olá!", "Bom dia!", "Muito obrigado, ajudou bastante.", "Perfeito, obrigada!", "Até amanhã!"],
    },
    "sv": {
        "intro": [
            "Jag heter {name}.",
            "Hej, jag är {first}.",
            "God morgon, jag heter {name} och jobbar på {dept}.",
            "Jag är {name}, ny kollega på {dept}.",
            "Jag heter {name} och min e-post är {email}.",
        ],
        "dept": ["ekonomi", "HR", "försäljning", "IT", "inköp"],
        "follow": [
            "Hej!",
            "Trevligt att träffas.",
            "Hur mår du?",
            "Kan du hjälpa mig med en fråga om min lönespecifikation?",
            "Jag har glömt mitt lösenord till HR-portalen, vad gör jag?",
            "Var hittar jag instruktionerna för det nya utläggssystemet?",
            "Vilka regler gäller för distansarbete?",
        ],
        "close": ["Tack!", "Tack på förhand.", "Med vänliga hälsningar,\n{name}", "Hälsningar, {first}"],
        "alone": [
            "Hej!",
            "God morgon!",
            "Tack så mycket, det hjälpte.",
            "Perfekt, tack!",
            "Okej, jag förstår.",
            "Vi ses i morgon!",
            "Trevlig helg!",
            "Vem är du?",
            "Välkommen till teamet, {first}!",
        ],
    },
    "pl": {
        "intro": [
            "Nazywam się {name}.",
            "Cześć, jestem {first}.",
            "Dzień dobry, nazywam się {name} i pracuję w dziale {dept}.",
            "Jestem {name}, nowa osoba w dziale {dept}.",
            "Nazywam się {name}, mój e-mail to {email}.",
        ],
        "dept": ["księgowości", "HR", "sprzedaży", "IT", "zakupów"],
        "follow": [
            "Cześć!",
            "Miło mi.",
            "Jak się masz?",
            "Możesz mi pomóc z pytaniem o pasek wynagrodzenia?",
            "Zapomniałem hasła do portalu HR, co mam zrobić?",
            "Gdzie znajdę instrukcje do nowego systemu rozliczeń?",
            "Jakie są zasady pracy zdalnej?",
        ],
        "close": ["Dzięki!", "Z góry dziękuję.", "Pozdrawiam serdecznie,\n{name}", "Pozdrawiam, {first}"],
        "alone": [
            "Cześć!",
            "Dzień dobry!",
            "Bardzo dziękuję, to pomogło.",
            "Super, dzięki!",
            "Dobrze, rozumiem.",
            "Do jutra!",
            "Miłego weekendu!",
            "Kim jesteś?",
            "Witaj w zespole, {first}!",
        ],
    },
}

SEED = 20261205
# How many introductions per language: with a follow-up, with a follow-up and a closing, and on their own.
_PER_LANG = {"en": 60, "de": 45}
_DEFAULT_PER_LANG = 20


def _fill(template: str, rng: random.Random, dept: list[str]) -> str:
    name, first = rng.choice(_NAMES if rng.random() > 0.1 else _PLACEHOLDER_NAMES)
    email = _email(name) if not name.startswith("<") else "<EMAIL_ADDRESS_1>"
    return template.format(name=name, first=first, email=email, phone=rng.choice(_PHONES), dept=rng.choice(dept))


def generate() -> list[tuple[str, str]]:
    """(language, text) benign conversational prompts; the same list on every call."""
    rng = random.Random(SEED)
    out: list[tuple[str, str]] = []
    for lang, parts in _LANG.items():
        dept = parts["dept"]
        for template in parts["alone"]:
            out.append((lang, _fill(template, rng, dept)))
        for template in parts["intro"]:
            out.append((lang, _fill(template, rng, dept)))
        for i in range(_PER_LANG.get(lang, _DEFAULT_PER_LANG)):
            text = _fill(rng.choice(parts["intro"]), rng, dept) + " " + rng.choice(parts["follow"])
            if i % 2 == 0:
                text += ("\n" if i % 4 == 0 else " ") + _fill(rng.choice(parts["close"]), rng, dept)
            out.append((lang, text))
    return list(dict.fromkeys(out))
