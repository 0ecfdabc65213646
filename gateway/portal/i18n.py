"""The portal's words in Dutch (the default) and English. A missing translation is a test failure, not a blank."""

from __future__ import annotations

from aiohttp import web

LANGUAGES = ("nl", "en")
DEFAULT = "nl"
COOKIE = "edugate_lang"

MESSAGES: dict[str, tuple[str, str]] = {
    # key: (nl, en)
    "portal": ("Schoolportaal", "School portal"),
    "tagline": ("Wie ontving wat over onze leerlingen", "Who received what about our students"),
    "login": ("Inloggen", "Log in"),
    "logout": ("Uitloggen", "Log out"),
    "email": ("E-mailadres", "E-mail address"),
    "password": ("Wachtwoord", "Password"),
    "login_with": ("Inloggen met", "Log in with"),
    "login_failed": ("E-mailadres of wachtwoord onjuist.", "Wrong e-mail address or password."),
    "login_locked": (
        "Te veel mislukte pogingen. Het account is geblokkeerd tot",
        "Too many failed attempts. The account is locked until",
    ),
    "oidc_failed": ("Inloggen bij de identiteitsprovider is mislukt:", "Logging in with the identity provider failed:"),
    "school": ("School", "School"),
    "exchanges": ("Uitwisselingen", "Exchanges"),
    "student": ("Leerling opzoeken", "Look up a student"),
    "totals": ("Totalen", "Totals"),
    "activations": ("Activeringen", "Activations"),
    "export": ("Exporteren", "Export"),
    "filter": ("Filteren", "Filter"),
    "clear": ("Wissen", "Clear"),
    "from": ("Van", "From"),
    "to": ("Tot en met", "Up to and including"),
    "counterparty": ("Partij", "Counterparty"),
    "data_service": ("Gegevensdienst", "Data service"),
    "purpose": ("Doel", "Purpose"),
    "decision": ("Besluit", "Decision"),
    "any": ("(alle)", "(any)"),
    "allowed": ("toegestaan", "allowed"),
    "denied": ("geweigerd", "denied"),
    "time": ("Tijdstip", "Time"),
    "kind": ("Soort", "Kind"),
    "decision_record": ("besluit", "decision"),
    "outcome_record": ("afloop", "outcome"),
    "status": ("Status", "Status"),
    "reason": ("Reden", "Reason"),
    "records": ("Records", "Records"),
    "index": ("Nr.", "No."),
    "no_records": ("Geen uitwisselingen gevonden.", "No exchanges found."),
    "next": ("Volgende", "Next"),
    "previous": ("Vorige", "Previous"),
    "eck_id": ("ECK iD van de leerling", "The student's ECK iD"),
    "eck_id_help": (
        "Het ECK iD wordt alleen gebruikt om de gesleutelde hash te berekenen; het wordt niet opgeslagen of gelogd.",
        "The ECK iD is only used to compute the keyed hash; it is neither stored nor logged.",
    ),
    "look_up": ("Opzoeken", "Look up"),
    "eck_id_invalid": ("Dit is geen geldig ECK iD:", "This is not a valid ECK iD:"),
    "student_results": ("Uitwisselingen over deze leerling", "Exchanges about this student"),
    "exchanges_count": ("Uitwisselingen", "Exchanges"),
    "bytes_out": ("Bytes", "Bytes"),
    "chart_title": ("Uitwisselingen per dag", "Exchanges per day"),
    "per_day": ("per dag", "per day"),
    "per_hour": ("per uur", "per hour"),
    "grant": ("Activeren", "Activate"),
    "grant_title": ("Gegevensdienst activeren voor een partij", "Activate a data service for a counterparty"),
    "confirm": ("Bevestigen", "Confirm"),
    "end": ("Beëindigen per", "End on"),
    "revoke": ("Intrekken", "Revoke"),
    "revoke_reason": ("Reden (optioneel)", "Reason (optional)"),
    "purposes": ("Doelen", "Purposes"),
    "valid_from": ("Geldig vanaf", "Valid from"),
    "valid_until": ("Geldig tot", "Valid until"),
    "agreement": ("Verwerkersovereenkomst", "Processing agreement"),
    "agreement_reference": ("Kenmerk verwerkersovereenkomst", "Processing agreement reference"),
    "no_activations": ("Nog geen activeringen.", "No activations yet."),
    "state_requested": ("aangevraagd", "requested"),
    "state_pending": ("nog niet begonnen", "not yet started"),
    "state_active": ("actief", "active"),
    "state_ended": ("beëindigd", "ended"),
    "state_revoked": ("ingetrokken", "revoked"),
    "saved": ("Opgeslagen.", "Saved."),
    "export_csv": ("CSV (spreadsheet)", "CSV (spreadsheet)"),
    "export_json": (
        "JSON met bewijzen (controleerbaar met edugate log verify)",
        "JSON with proofs (verifiable with edugate log verify)",
    ),
    "export_help": (
        "De export bevat de uitwisselingen die bij het filter passen. De JSON-export bevat per record een "
        "inclusiebewijs en ondertekende controlepunten van deze node.",
        "The export holds the exchanges that match the filter. The JSON export holds an inclusion proof per "
        "record and signed checkpoints of this node.",
    ),
    "proof": ("Inclusiebewijs", "Inclusion proof"),
    "checkpoint": ("Controlepunt", "Checkpoint"),
    "tree_size": ("Boomgrootte", "Tree size"),
    "root_hash": ("Wortelhash", "Root hash"),
    "exchange": ("Uitwisseling", "Exchange"),
    "not_found": ("Niet gevonden.", "Not found."),
    "forbidden": ("Niet toegestaan.", "Not allowed."),
    "bad_request": ("Ongeldig verzoek:", "Bad request:"),
    "csrf_failed": (
        "Het formulier is verlopen of kwam niet van deze pagina. Probeer het opnieuw.",
        "The form expired or did not come from this page. Please try again.",
    ),
    "language": ("English", "Nederlands"),
    "node": ("Node", "Node"),
    "details": ("Details", "Details"),
}


class Translator:
    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGUAGES else DEFAULT
        self._column = LANGUAGES.index(self.lang)

    def __call__(self, key: str) -> str:
        return MESSAGES[key][self._column]

    @property
    def other(self) -> str:
        return "en" if self.lang == "nl" else "nl"


def language(request: web.Request) -> str:
    """`?lang=` wins (and is remembered in a cookie), then the cookie, then Dutch."""
    asked = request.query.get("lang")
    if asked in LANGUAGES:
        return asked
    remembered = request.cookies.get(COOKIE)
    return remembered if remembered in LANGUAGES else DEFAULT
