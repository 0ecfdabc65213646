"""The inbound exchange path over real mutual TLS: who is admitted, who is refused, and that every exchange is
on record before it is forwarded."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.samples.federation import SCHOOL, Federation, expired_identity
from connectors.samples.publisher import ParticipantClient, progress_record
from gateway.demo import eck_id
from trust.oin import oin_for_kvk
from trust.pki import issue_participant
from trust.register import Keurmerk, Role


def record(n: int = 1, school: str = SCHOOL) -> dict[str, object]:
    return progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(n), school=school)


async def push(client: ParticipantClient, token: str | None, body: dict[str, object], **headers: str):
    return await client.call(
        "PUT", f"/v1/progress/{body['id']}", token=token, json=body, headers={"Edu-Purpose": "b", **headers}
    )


async def logged(fed: Federation, exchange_id: str) -> list:
    assert fed.node is not None
    stored = await fed.node.log.records(party_oin=fed.node.oin, exchange_id=exchange_id, oldest_first=True)
    return [s.record for s in stored]


async def last_denial(fed: Federation, within: float = 2.0):
    """The newest denial on record. A refused TLS handshake is logged from outside the request, so allow a
    moment for its record to become durable."""
    assert fed.node is not None
    deadline = time.monotonic() + within
    while True:
        denied = [s.record for s in await fed.node.log.records(party_oin=fed.node.oin, decision="denied", limit=1)]
        if denied or time.monotonic() > deadline:
            assert denied, "no denial on record"
            return denied[0]
        await asyncio.sleep(0.05)


def assert_edu(answer, http: int, edu: str = "0099") -> None:
    assert answer.status == http, answer.body
    assert answer.body["status"] == edu, answer.body
    assert answer.body["statusMessage"]


# --- allowed ---------------------------------------------------------------------------------------------------


async def test_a_certified_publisher_pushes_progress_and_it_is_logged_before_and_after(federation: Federation):
    publisher = federation.client("publisher")
    body = record()
    answer = await publisher.put_progress(body)
    assert answer.status == 201 and answer.body == {"status": "0001", "statusMessage": "Created"}
    assert federation.received.progress[body["id"]]["student"] == body["student"]
    exchange_id = answer.headers["Edu-Exchange-Id"]
    records = await logged(federation, exchange_id)
    assert [r.kind for r in records] == ["decision", "outcome"]
    decision, outcome = records
    assert decision.decision == "allowed" and decision.caller_oin == federation.parties["publisher"].oin
    assert decision.data_service == "leermateriaalgebruik" and decision.route == "/v1/progress/{id}"
    assert decision.client_id == "publisher-app" and decision.school == SCHOOL and decision.purpose == "b"
    assert outcome.upstream_status == 201 and outcome.latency_ms is not None
    # the student only as a keyed hash, never in clear
    assert eck_id(1) not in json.dumps([r.json_form() for r in records])
    assert len(decision.student_hashes) == 1


async def test_the_upstream_gets_the_verified_identity_and_no_client_credentials(federation: Federation):
    publisher = federation.client("publisher")
    token = await publisher.token(scope="progress", purpose="b")
    body = record()
    answer = await push(
        publisher,
        token,
        body,
        **{
            "X-Forwarded-For": "10.0.0.1",
            "Forwarded": "for=10.0.0.1",
            "X-Client-Cert": "forged",
            "Edu-Caller-Oin": oin_for_kvk("99999999"),
            "Connection": "X-Secret",
            "X-Secret": "hop",
        },
    )
    assert answer.status == 201
    seen = {k.lower(): v for k, v in federation.received.headers[-1].items()}
    assert "authorization" not in seen and "forwarded" not in seen and "x-forwarded-for" not in seen
    assert "x-client-cert" not in seen and "x-secret" not in seen
    assert seen["edu-caller-oin"] == federation.parties["publisher"].oin
    assert seen["edu-client-id"] == "publisher-app"
    assert seen["edu-data-service"] == "leermateriaalgebruik"
    assert seen["edu-exchange-id"] == answer.headers["Edu-Exchange-Id"]


# --- certificates ----------------------------------------------------------------------------------------------


async def test_no_client_certificate_is_refused_with_an_edu_v_401(federation: Federation):
    context = federation.trust(None)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.put(federation.base_url + "/v1/progress/x", json={}) as response,
    ):
        body = await response.json()
    assert response.status == 401 and body["status"] == "0099"
    assert "client certificate is required" in body["statusMessage"]
    assert (await last_denial(federation)).step == "certificate"


async def test_a_certificate_from_an_unknown_ca_fails_the_handshake_and_is_logged(federation: Federation):
    rogue = issue_participant(federation.rogue_ca, oin=federation.parties["publisher"].oin, name="Impostor")
    impostor = federation.client("publisher", identity=rogue)
    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        await impostor.request_token(scope="progress", purpose="b")
    denial = await last_denial(federation)
    assert denial.step == "tls" and "TLS handshake refused" in (denial.reason or "")


async def test_an_expired_certificate_gets_a_clear_refusal(federation: Federation):
    old = expired_identity(federation.ca, federation.parties["publisher"])
    client = federation.client("publisher", identity=old)
    answer = await client.request_token(scope="progress", purpose="b")
    assert answer.status == 401 and answer.body["error"] == "invalid_client"
    assert "expired" in answer.body["error_description"]


async def test_a_certificate_without_digital_signature_key_usage_is_refused_in_the_handshake(
    federation: Federation,
):
    # OpenSSL's client-purpose check already refuses it; the pipeline's verifier would too.
    party = federation.parties["publisher"]
    wrong = issue_participant(federation.ca, oin=party.oin, name=party.name, digital_signature=False)
    client = federation.client("publisher", identity=wrong)
    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        await client.request_token(scope="progress", purpose="b")
    denial = await last_denial(federation)
    assert denial.step == "tls" and "purpose" in (denial.reason or "")


async def test_an_oin_unknown_to_the_register_is_refused(federation: Federation):
    stranger = issue_participant(federation.ca, oin=oin_for_kvk("77777777"), name="Onbekend BV")
    client = federation.client("publisher", identity=stranger)
    answer = await client.request_token(scope="progress", purpose="b")
    assert answer.status == 401 and "not a participant" in answer.body["error_description"]


async def test_an_unregistered_certificate_of_a_known_participant_is_refused(federation: Federation):
    party = federation.parties["publisher"]
    other = issue_participant(federation.ca, oin=party.oin, name=party.name)
    client = federation.client("publisher", identity=other)
    answer = await client.request_token(scope="progress", purpose="b")
    assert answer.status == 401 and "not registered" in answer.body["error_description"]


# --- participants and the live register --------------------------------------------------------------------------


async def test_a_suspended_participant_gets_no_token(federation: Federation):
    answer = await federation.client("suspended").request_token(scope="progress", purpose="b")
    assert answer.status == 401 and "suspended" in answer.body["error_description"]


async def test_a_participant_suspended_after_its_token_was_issued_is_refused_on_its_next_request(
    federation: Federation,
):
    publisher = federation.client("publisher")
    token = await publisher.token(scope="progress", purpose="b")
    assert (await push(publisher, token, record())).status == 201
    await federation.apply(federation.participants_with("publisher", status="suspended", status_reason="breach"))
    answer = await push(publisher, token, record())
    assert_edu(answer, 403)
    assert "suspended" in answer.body["statusMessage"]
    assert (await last_denial(federation)).step == "participant"


async def test_a_refused_attempt_shows_in_the_view_of_the_school_it_names(federation: Federation):
    publisher = federation.client("publisher")
    token = await publisher.token(scope="progress", purpose="b")
    await federation.apply(federation.participants_with("publisher", status="suspended", status_reason="breach"))
    answer = await push(publisher, token, record())
    assert_edu(answer, 403)
    assert federation.node is not None
    seen = await federation.node.log.records(school=SCHOOL, decision="denied")
    assert [(r.record.step, r.record.caller_oin) for r in seen] == [
        ("participant", federation.parties["publisher"].oin)
    ]
    assert seen[0].record.data_service == "leermateriaalgebruik"


async def test_a_withdrawal_bites_at_its_effective_time_without_further_action(federation: Federation):
    publisher = federation.client("publisher")
    token = await publisher.token(scope="progress", purpose="b")
    # Far enough ahead that a slow machine still pushes before it; the register does not change again after.
    soon = datetime.now(UTC) + timedelta(seconds=3)
    await federation.apply(
        federation.participants_with("publisher", withdrawal_effective=soon, withdrawal_reason="uittreding")
    )
    before = await push(publisher, token, record())
    assert datetime.now(UTC) < soon, "the machine was too slow to push before the effective time"
    assert before.status == 201
    while datetime.now(UTC) < soon:
        await asyncio.sleep(0.05)
    answer = await push(publisher, token, record())
    assert_edu(answer, 403)
    assert "withdrew" in answer.body["statusMessage"]


async def test_a_participant_without_the_keurmerk_is_refused(federation: Federation):
    uncertified = federation.client("uncertified")
    answer = await uncertified.request_token(scope="progress", purpose="b")
    assert answer.status == 400 and answer.body["error"] == "invalid_scope"
    token = await uncertified.token(scope="eduv.result", purpose="b")
    answer = await push(uncertified, token, record())
    assert_edu(answer, 403)
    assert "keurmerk" in answer.body["statusMessage"]
    assert (await last_denial(federation)).step == "keurmerk"


async def test_a_keurmerk_in_the_wrong_role_is_refused(federation: Federation):
    # The reader holds leermateriaalgebruik as Afnemer (pull) only; pushing needs Verzender.
    reader = federation.parties["reader"].participant()
    extra = Keurmerk(
        data_service="leermateriaalgebruik", role=Role.AFNEMER, valid_from=datetime(2026, 1, 1, tzinfo=UTC)
    )
    changed = [
        p.participant() if p.key != "reader" else reader.model_copy(update={"keurmerken": (*reader.keurmerken, extra)})
        for p in federation.parties.values()
    ]
    await federation.apply(changed)
    client = federation.client("reader")
    answer = await client.request_token(scope="progress", purpose="b")
    assert answer.status == 400 and answer.body["error"] == "invalid_scope"
    token = await client.token(scope="eduv.usage", purpose="j")
    answer = await push(client, token, record())
    assert_edu(answer, 403)
    assert "role verzender" in answer.body["statusMessage"]


async def test_a_token_without_the_data_services_scope_is_refused_with_0021(federation: Federation):
    publisher = federation.client("publisher")
    token = await publisher.token(scope="eduv.result", purpose="b")
    answer = await push(publisher, token, record())
    assert_edu(answer, 401, "0021")
    assert 'error="insufficient_scope"' in answer.headers["WWW-Authenticate"]


# --- tokens --------------------------------------------------------------------------------------------------------


async def test_a_request_without_a_token_gets_a_bearer_challenge(federation: Federation):
    answer = await push(federation.client("publisher"), None, record())
    assert_edu(answer, 401)
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_token_in_the_query_string_is_refused(federation: Federation):
    publisher = federation.client("publisher")
    token = await publisher.token(scope="progress", purpose="b")
    body = record()
    answer = await publisher.call("PUT", f"/v1/progress/{body['id']}?access_token={token}", token=None, json=body)
    assert_edu(answer, 401)


async def test_a_token_bound_to_another_certificate_is_refused(federation: Federation):
    stolen = await federation.client("publisher").token(scope="progress", purpose="b")
    thief = federation.client("reader")
    answer = await push(thief, stolen, record())
    assert_edu(answer, 401)
    assert "another certificate" in answer.body["statusMessage"]
    assert (await last_denial(federation)).step == "binding"


def _claims(fed: Federation, **changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": fed.node.config.node.public_url,
        "aud": fed.node.config.node.public_url,  # type: ignore[union-attr]
        "sub": "publisher-app",
        "client_id": "publisher-app",
        "oin": fed.parties["publisher"].oin,
        "scope": "progress",
        "purpose": "b",
        "iat": now,
        "nbf": now,
        "exp": now + 120,
        "jti": str(uuid.uuid4()),
        "cnf": {"x5t#S256": fed.parties["publisher"].identity.thumbprint},
    }
    claims.update(changes)
    return claims


def _node_key(fed: Federation):
    assert fed.node is not None
    return fed.node.tokens._key  # the node's own signing key: a forged token that only a claim makes wrong


@pytest.mark.parametrize(
    "change",
    [
        {"exp": int(time.time()) - 60, "iat": int(time.time()) - 200, "nbf": int(time.time()) - 200},
        {"nbf": int(time.time()) + 120},
        {"aud": "https://elsewhere.example"},
        {"iss": "https://elsewhere.example"},
    ],
    ids=["expired", "not-yet-valid", "wrong-aud", "wrong-iss"],
)
async def test_tokens_with_a_wrong_claim_are_refused(federation: Federation, change: dict[str, object]):
    headers = {"typ": "at+jwt", "kid": federation.node.tokens.jwks()["keys"][0]["kid"]}  # type: ignore[union-attr]
    forged = jwt.encode(_claims(federation, **change), _node_key(federation), algorithm="ES256", headers=headers)
    answer = await push(federation.client("publisher"), forged, record())
    assert_edu(answer, 401)
    assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_alg_none_is_refused(federation: Federation):
    unsigned = ".".join(
        [
            _b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode()),
            _b64(json.dumps(_claims(federation)).encode()),
            "",
        ]
    )
    assert_edu(await push(federation.client("publisher"), unsigned, record()), 401)


async def test_hmac_signed_with_the_public_key_is_refused(federation: Federation):
    import hashlib
    import hmac

    public_pem = (
        _node_key(federation)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "at+jwt"}).encode())
    payload = _b64(json.dumps(_claims(federation)).encode())
    signature = _b64(hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    assert_edu(await push(federation.client("publisher"), f"{header}.{payload}.{signature}", record()), 401)


async def test_a_token_signed_by_another_key_is_refused(federation: Federation):
    other = ec.generate_private_key(ec.SECP256R1())
    headers = {"typ": "at+jwt", "kid": federation.node.tokens.jwks()["keys"][0]["kid"]}  # type: ignore[union-attr]
    forged = jwt.encode(_claims(federation), other, algorithm="ES256", headers=headers)
    assert_edu(await push(federation.client("publisher"), forged, record()), 401)


async def test_a_replayed_client_assertion_is_refused(federation: Federation):
    publisher = federation.client("publisher")
    assertion = publisher.assertion()
    first = await publisher.request_token(scope="progress", purpose="b", assertion=assertion)
    assert first.status == 200
    again = await publisher.request_token(scope="progress", purpose="b", assertion=assertion)
    assert again.status == 401 and again.body["error"] == "invalid_client"
    assert "replay" in again.body["error_description"].lower() or "used" in again.body["error_description"].lower()


async def test_an_assertion_for_another_participants_client_id_is_refused(federation: Federation):
    publisher = federation.client("publisher", client_id="reader-app")
    answer = await publisher.request_token(scope="progress", purpose="b")
    assert answer.status == 401 and answer.body["error"] == "invalid_client"


async def test_issued_tokens_are_short_lived_and_certificate_bound(federation: Federation):
    publisher = federation.client("publisher")
    answer = await publisher.request_token(scope="progress", purpose="b")
    assert answer.status == 200 and answer.body["token_type"] == "Bearer" and answer.body["expires_in"] <= 300
    header = jwt.get_unverified_header(answer.body["access_token"])
    claims = jwt.decode(answer.body["access_token"], options={"verify_signature": False})
    assert header["typ"] == "at+jwt" and header["alg"] in {"ES256", "EdDSA"}
    assert claims["cnf"]["x5t#S256"] == federation.parties["publisher"].identity.thumbprint
    assert claims["scope"] == "progress" and claims["exp"] - claims["iat"] <= 300
    assert answer.headers["Cache-Control"] == "no-store"


# --- limits, upstream, log ---------------------------------------------------------------------------------------


async def test_an_oversized_body_is_refused_with_413(federation: Federation):
    publisher = federation.client("publisher")
    token = await publisher.token(scope="progress", purpose="b")
    big = b"{" + b" " * (federation.node.config.limits.max_body_bytes + 10) + b"}"  # type: ignore[union-attr]
    answer = await publisher.call(
        "PUT", "/v1/progress/x", token=token, data=big, headers={"Content-Type": "application/json", "Edu-Purpose": "b"}
    )
    assert_edu(answer, 413)
    assert federation.received.progress == {}


async def test_oversized_headers_are_refused_with_431(federation: Federation):
    publisher = federation.client("publisher")
    token = await publisher.token(scope="progress", purpose="b")
    answer = await push(publisher, token, record(), **{"X-Padding": "p" * 9000})
    assert_edu(answer, 431)


async def test_an_unreachable_upstream_gives_502_in_the_edu_v_format(federation: Federation):
    publisher = federation.client("publisher")
    token = await publisher.token(scope="progress", purpose="b")
    assert federation.dashboard is not None
    await federation.dashboard.cleanup()
    federation.dashboard = None
    answer = await push(publisher, token, record())
    assert_edu(answer, 502)


async def test_when_the_log_cannot_be_written_the_exchange_is_refused_and_not_forwarded(federation: Federation):
    from tests.logstore.faults import inject_write_failure, remove_write_failure

    publisher = federation.client("publisher")
    token = await publisher.token(scope="progress", purpose="b")
    assert federation.node is not None
    await inject_write_failure(federation.node.log)
    body = record()
    answer = await push(publisher, token, body)
    assert_edu(answer, 500)
    assert "not forwarded" in answer.body["statusMessage"]
    assert federation.received.progress == {}
    ready = await federation.client("publisher").call("GET", "/readyz", token=None)
    assert ready.status == 503
    await remove_write_failure(federation.node.log)
    assert (await push(publisher, token, record())).status == 201


async def test_an_unknown_path_is_refused_in_the_edu_v_format(federation: Federation):
    publisher = federation.client("publisher")
    token = await publisher.token(scope="progress", purpose="b")
    answer = await publisher.call("GET", "/v1/nothing-here", token=token)
    assert_edu(answer, 404)


async def test_malformed_token_requests_get_oauth_and_edu_v_errors(federation: Federation):
    publisher = federation.client("publisher")
    answer = await publisher.call(
        "POST",
        "/oauth2/token",
        token=None,
        data=b"grant_type=password",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status == 400 and answer.body["error"] == "unsupported_grant_type" and answer.body["status"] == "0099"
    answer = await publisher.call("POST", "/oauth2/token", token=None, json={"grant_type": "client_credentials"})
    assert answer.status == 400 and answer.body["error"] == "invalid_request"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "OPTIONS"])
async def test_the_token_endpoint_answers_any_method_but_post_with_an_oauth_405_not_a_call_for_a_token(
    federation: Federation, method: str
):
    answer = await federation.client("publisher").call(method, "/oauth2/token", token=None)
    assert answer.status == 405 and answer.headers["Allow"] == "POST"
    assert answer.body["error"] == "invalid_request"
    assert answer.body["error_description"] == f"the token endpoint takes POST (RFC 6749 §3.2), not {method}"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("POST", "/healthz", "GET, HEAD"), ("DELETE", "/.well-known/jwks.json", "GET, HEAD"),
     ("GET", "/consent/v1/requests", "POST"), ("PUT", "/consent/v1/statuses/some-id", "GET, HEAD"),
     ("POST", "/log/v1/records", "GET, HEAD")],
)
async def test_a_method_a_node_path_does_not_take_is_a_405_naming_those_it_does_not_a_call_for_a_token(
    federation: Federation, method: str, path: str, allowed: str
):
    answer = await federation.client("publisher").call(method, path, token=None)
    assert answer.status == 405 and answer.headers["Allow"] == allowed
    assert answer.body == {"status": "0099", "statusMessage": f"{method} is not offered on this path; use {allowed}"}


async def test_the_methods_a_node_path_takes_still_reach_it(federation: Federation):
    client = federation.client("publisher")
    assert (await client.call("GET", "/.well-known/jwks.json", token=None)).status == 200
    assert (await client.call("GET", "/consent/v1/statuses/some-id", token=None)).status == 404  # its own answer


@pytest.mark.parametrize(
    ("header", "claims"),
    [({"alg": ["ES256"]}, {}), ({"typ": {}}, {}), ({}, {"exp": float("nan")}), ({}, {"iat": float("-inf")}),
     ({}, {"exp": -1e20})],
    ids=["alg list", "typ object", "exp NaN", "iat -Infinity", "exp before 1970"],
)
async def test_a_signed_assertion_with_an_unreadable_header_or_time_is_an_oauth_401_not_a_node_failure(
    federation: Federation, header: dict[str, object], claims: dict[str, object]
):
    publisher = federation.client("publisher")
    now = int(time.time())
    signed = jwt.encode(
        {"iss": publisher.client_id, "sub": publisher.client_id, "aud": publisher.base_url + "/oauth2/token",
         "iat": now, "exp": now + 60, "jti": str(uuid.uuid4()), **claims},
        publisher.identity.key, algorithm="ES256", headers={"kid": "cert"},
    )
    if header:  # pyjwt writes alg itself, so the header is swapped in (refused before the signature is checked)
        forged = json.dumps({"alg": "ES256", "kid": "cert", **header}).encode()
        signed = base64.urlsafe_b64encode(forged).decode().rstrip("=") + signed[signed.index("."):]
    answer = await publisher.request_token(scope="progress", purpose="b", assertion=signed)
    assert answer.status == 401, answer.body
    assert answer.body["error"] == "invalid_client" and answer.body["error_description"].startswith(
        "client assertion refused: "
    )


@pytest.mark.parametrize("purpose", ["q", "zz"])
async def test_a_token_is_refused_for_a_purpose_its_data_services_do_not_allow(federation: Federation, purpose: str):
    answer = await federation.client("publisher").request_token(scope="progress", purpose=purpose)
    assert answer.status == 400 and answer.body["error"] == "invalid_request"
    assert repr(purpose)[1:-1] in answer.body["error_description"]


async def test_a_token_request_without_a_purpose_is_refused(federation: Federation):
    answer = await federation.client("publisher").request_token(scope="progress", purpose="")
    assert answer.status == 400 and "purpose" in answer.body["error_description"]


@pytest.mark.parametrize(
    "raw",
    [
        b"PUT /v1/progress/x HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        b"PUT /v1/progress/x HTTP/1.1\r\nHost: a\r\nBad Header Name: x\r\n\r\n",
        b"\x16\x03\x01garbage\r\n\r\n",
    ],
    ids=["bad-content-length", "bad-header-name", "not-http"],
)
async def test_a_request_that_cannot_be_parsed_gets_an_edu_v_400_and_is_logged(federation: Federation, raw: bytes):
    assert federation.served is not None
    context = federation.trust(federation.parties["publisher"].identity)
    reader, writer = await asyncio.open_connection("127.0.0.1", federation.served.port, ssl=context)
    writer.write(raw)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"400" and b"application/json" in head
    assert json.loads(body)["status"] == "0011"
    denial = await last_denial(federation)
    assert denial.step == "http" and "could not be parsed" in (denial.reason or "")
