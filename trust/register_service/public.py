"""The public keurmerkregister: who holds which keurmerk, since when, and in what status. Read-only, searchable,
server-rendered (no JavaScript needed), Dutch by default with English on request (`?lang=en`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from trust.register import KeurmerkStatus, Participant, ParticipantStatus, utcnow
from trust.register_service.api import STORE
from trust.register_service.pages import render

LABELS = {
    "nl": {
        "title": "Keurmerkregister Edu-V",
        "intro": "Deelnemers aan het afsprakenstelsel en de keurmerken die zij per gegevensdienst houden.",
        "search": "Zoeken", "search_hint": "naam, OIN of gegevensdienst", "participant": "Deelnemer",
        "oin": "OIN", "status": "Status", "keurmerk": "Keurmerk", "service": "Gegevensdienst", "role": "Rol",
        "since": "Sinds", "until": "Tot", "none": "Geen deelnemers gevonden.", "serial": "Registerversie",
        "withdrawal": "Uittreding per", "other_language": "English", "no_keurmerk": "geen keurmerk",
        "applied": "aangemeld", "intake": "intake", "declaration_of_intent": "intentieverklaring",
        "basic_qualification": "basiskwalificatie", "qualification": "kwalificatie", "active": "actief",
        "suspended": "geschorst", "withdrawn": "uitgetreden", "revoked": "ingetrokken", "expired": "verlopen",
        "bron": "Bron", "afnemer": "Afnemer", "verzender": "Verzender", "ontvanger": "Ontvanger",
    },
    "en": {
        "title": "Edu-V keurmerk register",
        "intro": "Participants in the trust framework and the keurmerken they hold per data service.",
        "search": "Search", "search_hint": "name, OIN or data service", "participant": "Participant",
        "oin": "OIN", "status": "Status", "keurmerk": "Keurmerk", "service": "Data service", "role": "Role",
        "since": "Since", "until": "Until", "none": "No participants found.", "serial": "Register version",
        "withdrawal": "Withdrawal effective", "other_language": "Nederlands", "no_keurmerk": "no keurmerk",
        "applied": "applied", "intake": "intake", "declaration_of_intent": "declaration of intent",
        "basic_qualification": "basic qualification", "qualification": "qualification", "active": "active",
        "suspended": "suspended", "withdrawn": "withdrawn", "revoked": "revoked", "expired": "expired",
        "bron": "Source (Bron)", "afnemer": "Consumer (Afnemer)", "verzender": "Sender (Verzender)",
        "ontvanger": "Receiver (Ontvanger)",
    },
}


@dataclass(frozen=True)
class PublicRow:
    participant: Participant
    status: str  # a label key: the participant's status, or `withdrawn` once a scheduled withdrawal bit
    marks: list[tuple[str, str, datetime, datetime | None, str]]  # service, role, since, until, status key


def _row(participant: Participant, now: datetime) -> PublicRow:
    status = participant.status.value
    if participant.status is ParticipantStatus.ACTIVE and participant.refusal(now):
        status = ParticipantStatus.WITHDRAWN.value
    marks = []
    for mark in participant.keurmerken:
        mark_status = mark.status.value
        if mark.status is KeurmerkStatus.ACTIVE and mark.valid_until is not None and now >= mark.valid_until:
            mark_status = "expired"
        marks.append((mark.data_service, mark.role.value, mark.valid_from, mark.valid_until, mark_status))
    return PublicRow(participant, status, marks)


def _matches(participant: Participant, query: str) -> bool:
    haystack = [participant.name, participant.oin, participant.kvk or ""]
    haystack += [mark.data_service for mark in participant.keurmerken]
    return any(query in value.casefold() for value in haystack)


def language(request: web.Request) -> str:
    chosen = request.query.get("lang")
    if chosen in LABELS:
        return chosen
    accept = request.headers.get("Accept-Language", "")
    return "en" if accept.lower().startswith("en") else "nl"


async def register_page(request: web.Request) -> web.Response:
    lang = language(request)
    query = request.query.get("q", "").strip()[:200]
    document = await request.app[STORE].register()
    now = utcnow()
    participants = [p for p in document.participants if not query or _matches(p, query.casefold())]
    rows = [_row(p, now) for p in sorted(participants, key=lambda p: p.name.casefold())]
    return render(request, "public.html", lang=lang, t=LABELS[lang], other="en" if lang == "nl" else "nl",
                  query=query, rows=rows, serial=document.serial, issued_at=document.issued_at)


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/register")


def routes() -> list[web.RouteDef]:
    return [web.get("/", root), web.get("/register", register_page)]
