"""The consent API over real TLS: a school manages only its own activations (API key), a participant reads and
requests only those that name it (client certificate checked against the live register)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.activation import ActivationStore
from gateway.activation.api import add_consent_routes
from gateway.catalogue import Catalogue
from gateway.purposes import Purposes
from gateway.tls import client_context, server_context
from tests.school.conftest import DASHBOARD, OTHER_SCHOOL, PUBLISHER, SCHOOL, STRANGER, activate
from trust.certificates import ClientCertificateVerifier
from trust.pki import Issued, create_ca, issue_participant, issue_server
from trust.register import Register, RegisterDocument, RegisterHolder

LMG = "leermateriaalgebruik"


@dataclass
class ConsentNode:
    """What the consent API reads from a node."""

    activations: ActivationStore
    catalogue: Catalogue
    purposes: Purposes
    registers: RegisterHolder
    certificates: ClientCertificateVerifier = field(default_factory=ClientCertificateVerifier)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)


@dataclass
class Consent:
    url: str
    ca: Issued
    certs: dict[str, tuple[Path, Path]]
    store: ActivationStore

    def session(self, oin: str | None = None) -> aiohttp.ClientSession:
        cert, key = self.certs[oin] if oin else (None, None)
        context = client_context(ca_pems=self.ca.cert_pem().decode(), certificate=cert, key=key)
        return aiohttp.ClientSession(self.url, connector=aiohttp.TCPConnector(ssl=context))


def keurmerk(service: str, role: str) -> dict[str, Any]:
    return {"data_service": service, "role": role, "valid_from": "2025-01-01T00:00:00Z"}


@pytest.fixture
async def consent(
    tmp_path: Path, store: ActivationStore, catalogue: Catalogue, purposes: Purposes
) -> AsyncIterator[Consent]:
    ca = create_ca("Test PKIoverheid stand-in")
    issued = {oin: issue_participant(ca, oin=oin, name=f"p{oin[-6:]}") for oin in (PUBLISHER, DASHBOARD, STRANGER)}
    participants = [
        {
            "oin": PUBLISHER,
            "name": "Publisher",
            "status": "active",
            "certificates": [issued[PUBLISHER].thumbprint],
            "keurmerken": [keurmerk(LMG, "verzender")],
        },
        {
            "oin": DASHBOARD,
            "name": "Dashboard",
            "status": "active",
            "certificates": [issued[DASHBOARD].thumbprint],
            "keurmerken": [keurmerk(LMG, "ontvanger")],
        },
        {
            "oin": STRANGER,
            "name": "Suspended",
            "status": "suspended",
            "certificates": [issued[STRANGER].thumbprint],
            "keurmerken": [keurmerk(LMG, "verzender")],
        },
    ]
    document = RegisterDocument.model_validate(
        {
            "serial": 1,
            "issued_at": datetime.now(UTC),
            "trusted_cas": [ca.cert_pem().decode()],
            "participants": participants,
        }
    )
    holder = RegisterHolder()
    holder.offer(Register(document))
    app = web.Application()
    add_consent_routes(app, ConsentNode(store, catalogue, purposes, holder), body_timeout=30.0)
    server_cert, server_key = issue_server(ca).write(tmp_path / "tls", "server")
    context = server_context(server_cert, server_key)
    context.load_verify_locations(cadata=ca.cert_pem().decode())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    certs = {oin: cert.write(tmp_path / "tls", oin) for oin, cert in issued.items()}
    try:
        yield Consent(f"https://127.0.0.1:{port}", ca, certs, store)
    finally:
        await runner.cleanup()


def school_key(key: str) -> dict[str, str]:
    return {"Authorization": f"ApiKey {key}"}


async def test_a_participant_requests_and_the_school_confirms(consent: Consent) -> None:
    key = await consent.store.create_school_key(SCHOOL)
    async with consent.session(PUBLISHER) as publisher, consent.session() as school:
        asked = await publisher.post(
            "/consent/v1/requests", json={"orgMasterId": SCHOOL, "api": LMG, "purposes": ["a", "d"]}
        )
        assert asked.status == 201
        requested = await asked.json()
        assert (requested["status"], requested["counterparty"], requested["purposes"]) == (
            "requested",
            PUBLISHER,
            ["a", "d"],
        )
        agreement = {"reference": "VO-1", "validFrom": "2026-01-01T00:00:00Z"}
        confirmed = await school.post(
            f"/consent/v1/statuses/{requested['id']}/confirm",
            json={"purposes": ["d"], "processingAgreement": agreement},
            headers=school_key(key),
        )
        assert confirmed.status == 200
        body = await confirmed.json()
        assert (body["status"], body["purposes"], body["processingAgreement"]["reference"]) == ("active", ["d"], "VO-1")
        seen = await (await publisher.get("/consent/v1/statuses")).json()
        assert [s["status"] for s in seen["statuses"]] == ["active"]


async def test_a_school_sees_and_manages_only_its_own_activations(consent: Consent) -> None:
    key = await consent.store.create_school_key(SCHOOL)
    theirs = await activate(consent.store, school=OTHER_SCHOOL)
    ours = await activate(consent.store)
    async with consent.session() as school:
        listed = await (await school.get("/consent/v1/statuses", headers=school_key(key))).json()
        assert [s["id"] for s in listed["statuses"]] == [ours.id]
        other = await school.get(f"/consent/v1/statuses?orgMasterId={OTHER_SCHOOL}", headers=school_key(key))
        assert other.status == 403 and (await other.json())["status"] == "0099"
        revoke = await school.post(f"/consent/v1/statuses/{theirs.id}/revoke", headers=school_key(key))
        assert revoke.status == 404
    assert (await consent.store.get(theirs.id)).status.value == "active"


async def test_a_school_revokes_and_the_status_says_so_since_then(consent: Consent) -> None:
    key = await consent.store.create_school_key(SCHOOL)
    granted = await activate(consent.store)
    async with consent.session() as school:
        answer = await school.post(
            f"/consent/v1/statuses/{granted.id}/revoke", json={"reason": "contract ended"}, headers=school_key(key)
        )
        body = await answer.json()
    assert answer.status == 200
    assert (body["status"], body["revokedReason"]) == ("revoked", "contract ended")
    assert body["since"] == body["revokedAt"]


async def test_a_school_grants_directly_and_ends_at_a_date(consent: Consent) -> None:
    key = await consent.store.create_school_key(SCHOOL)
    async with consent.session() as school:
        granted = await school.post(
            "/consent/v1/activations",
            json={"counterparty": DASHBOARD, "api": LMG, "validFrom": "2026-01-01T00:00:00Z"},
            headers=school_key(key),
        )
        assert granted.status == 201
        body = await granted.json()
        assert body["purposes"] == ["a", "b", "d", "j"]  # all the service allows, when none are named
        until = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        ended = await school.post(
            f"/consent/v1/statuses/{body['id']}/end", json={"validUntil": until}, headers=school_key(key)
        )
        assert (await ended.json())["status"] == "ended"
        backwards = await school.post(
            f"/consent/v1/statuses/{body['id']}/end",
            json={"validUntil": "2025-01-01T00:00:00Z"},
            headers=school_key(key),
        )
        assert backwards.status == 400 and (await backwards.json())["status"] == "0011"


async def test_a_participant_reads_only_activations_that_name_it_and_cannot_change_them(consent: Consent) -> None:
    mine = await activate(consent.store)
    theirs = await activate(consent.store, counterparty=DASHBOARD)
    async with consent.session(PUBLISHER) as publisher:
        listed = await (await publisher.get("/consent/v1/statuses")).json()
        assert [s["id"] for s in listed["statuses"]] == [mine.id]
        assert (await publisher.get(f"/consent/v1/statuses/{theirs.id}")).status == 404
        revoke = await publisher.post(f"/consent/v1/statuses/{mine.id}/revoke")
        assert revoke.status == 403
        granted = await publisher.post("/consent/v1/activations", json={"counterparty": PUBLISHER, "api": LMG})
        assert granted.status == 403


async def test_a_suspended_participant_is_refused(consent: Consent) -> None:
    async with consent.session(STRANGER) as stranger:
        answer = await stranger.get("/consent/v1/statuses")
        assert answer.status == 403 and "suspended" in (await answer.json())["statusMessage"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "ApiKey nope.nope"}, {"Authorization": "ApiKey "}])
async def test_without_a_certificate_or_a_valid_school_key_nothing_is_shown(
    consent: Consent, headers: dict[str, str]
) -> None:
    await activate(consent.store)
    async with consent.session() as anonymous:
        answer = await anonymous.get("/consent/v1/statuses", headers=headers)
        assert answer.status == 401
        assert "statuses" not in await answer.json()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"orgMasterId": SCHOOL, "api": "nonexistent"}, "not a data service"),
        ({"orgMasterId": SCHOOL, "api": LMG, "purposes": ["t"]}, "'t' (financial management)"),
        ({"orgMasterId": "no spaces allowed", "api": LMG}, "orgMasterId"),
        ({"orgMasterId": SCHOOL, "api": LMG, "extra": 1}, "extra"),
    ],
)
async def test_a_bad_request_is_0011_naming_the_problem(consent: Consent, body: dict[str, Any], message: str) -> None:
    async with consent.session(PUBLISHER) as publisher:
        answer = await publisher.post("/consent/v1/requests", json=body)
        document = await answer.json()
    assert answer.status == 400 and document["status"] == "0011" and message in document["statusMessage"]


async def test_a_malformed_json_body_is_0011(consent: Consent) -> None:
    async with consent.session(PUBLISHER) as publisher:
        answer = await publisher.post(
            "/consent/v1/requests", data=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert answer.status == 400 and (await answer.json())["status"] == "0011"


async def test_a_participant_without_a_keurmerk_for_the_service_cannot_request_it(consent: Consent) -> None:
    async with consent.session(PUBLISHER) as publisher:
        answer = await publisher.post("/consent/v1/requests", json={"orgMasterId": SCHOOL, "api": "resultaten"})
        assert answer.status == 403 and "keurmerk" in (await answer.json())["statusMessage"]


async def test_since_returns_only_what_changed_after_it(consent: Consent) -> None:
    first = await activate(consent.store)
    mark = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    second = await activate(consent.store, data_service="resultaten", purposes=("a",))
    async with consent.session(PUBLISHER) as publisher:
        listed = await (await publisher.get("/consent/v1/statuses", params={"since": mark})).json()
        assert [s["id"] for s in listed["statuses"]] == [second.id]
        assert first.id not in str(listed)
        bad = await publisher.get("/consent/v1/statuses", params={"since": "yesterday"})
        assert bad.status == 400



async def test_an_activation_from_the_year_1_reads_back_and_leaves_the_schools_list_readable(consent: Consent) -> None:
    key = await consent.store.create_school_key(SCHOOL)
    async with consent.session() as school:
        granted = await school.post(
            "/consent/v1/activations",
            json={"counterparty": DASHBOARD, "api": LMG, "validFrom": "0001-01-01T00:00:00Z"},
            headers=school_key(key),
        )
        assert granted.status == 201
        listed = await school.get("/consent/v1/statuses", headers=school_key(key))
        assert listed.status == 200
        assert [s["validFrom"] for s in (await listed.json())["statuses"]] == ["0001-01-01T00:00:00Z"]


NAIVE, BEFORE_YEAR_1, AFTER_9999 = "2026-01-01T00:00:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/activations", {"counterparty": DASHBOARD, "api": LMG, "validFrom": BEFORE_YEAR_1}, "validFrom"),
        ("/activations", {"counterparty": DASHBOARD, "api": LMG, "validUntil": AFTER_9999}, "validUntil"),
        ("/activations", {"counterparty": DASHBOARD, "api": LMG, "validFrom": NAIVE}, "validFrom"),
        ("/activations", {"counterparty": DASHBOARD, "api": LMG,
                          "processingAgreement": {"reference": "VO-1", "validFrom": NAIVE}},
         "processingAgreement.validFrom"),
        ("/statuses/{id}/confirm", {"processingAgreement": {"reference": "VO-1", "validFrom": BEFORE_YEAR_1}},
         "processingAgreement.validFrom"),
        ("/statuses/{id}/end", {"validUntil": AFTER_9999}, "validUntil"),
    ],
)
async def test_a_body_time_without_an_offset_or_outside_the_years_1_to_9999_in_utc_is_0011_naming_the_field(
    consent: Consent, path: str, body: dict[str, Any], field: str
) -> None:
    key = await consent.store.create_school_key(SCHOOL)
    requested = await consent.store.request(school=SCHOOL, data_service=LMG, counterparty=PUBLISHER, purposes=("a",))
    async with consent.session() as school:
        answer = await school.post(
            "/consent/v1" + path.format(id=requested.id), json=body, headers=school_key(key)
        )
        document = await answer.json()
    assert answer.status == 400 and document["status"] == "0011", document
    assert f"{field}: " in document["statusMessage"]


async def test_a_since_outside_the_years_1_to_9999_in_utc_is_0011(consent: Consent) -> None:
    async with consent.session(PUBLISHER) as publisher:
        answer = await publisher.get("/consent/v1/statuses", params={"since": BEFORE_YEAR_1})
        document = await answer.json()
    assert answer.status == 400 and document["statusMessage"] == "since is outside the years 1 to 9999 in UTC"
