"""Access tokens this node issues, and the client assertions it accepts, admit nothing but what they should."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis.asyncio as redis_asyncio
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from federation import OIN_DASHBOARD, OIN_PUBLISHER, make_register, participant
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from connectors.replay import InProcessReplayCache, RedisReplayCache, ReplayCache
from trust.certificates import ClientCertificateVerifier, PeerIdentity
from trust.jwks import JwksFetcher
from trust.pki import Issued, issue_server
from trust.register import Register
from trust.tokens import (
    AccessTokenIssuer,
    ClientAssertionVerifier,
    TokenRejected,
    make_client_assertion,
    public_jwk,
)

NODE = "https://node.example.test"
TOKEN_ENDPOINT = f"{NODE}/oauth2/token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _forge(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    """A compact JWS assembled by hand, as an attacker would, with `sign(signing_input) -> bytes`."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{_b64(signature)}"


def _public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- access tokens --------------------------------------------------------------------------------------------

NODE_KEY = ec.generate_private_key(ec.SECP256R1())


def _issuer(**overrides: Any) -> AccessTokenIssuer:
    settings: dict[str, Any] = {"issuer": NODE, "audience": NODE, "key": NODE_KEY, "kid": "node-1"}
    settings.update(overrides)
    return AccessTokenIssuer(**settings)


def _claims(issuer: AccessTokenIssuer, now: int, **overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": issuer.issuer,
        "aud": issuer.audience,
        "sub": "publisher-app",
        "client_id": "publisher-app",
        "oin": OIN_PUBLISHER,
        "scope": "progress",
        "purpose": "b",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "1d9e8a43-3a4c-4c1b-9a0f-1b2c3d4e5f60",
        "cnf": {"x5t#S256": "thumb"},
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _issue(issuer: AccessTokenIssuer, now: float = 1_800_000_000) -> str:
    token, _ = issuer.issue(
        client_id="publisher-app",
        oin=OIN_PUBLISHER,
        scopes=["progress", "eduv.result"],
        purposes=["b", "a"],
        thumbprint="thumb",
        now=now,
    )
    return token


def test_an_issued_access_token_round_trips_with_all_its_claims() -> None:
    issuer = _issuer(lifetime=120)
    token, expires_in = issuer.issue(
        client_id="publisher-app", oin=OIN_PUBLISHER, scopes=["progress"], purposes=["b"], thumbprint="thumb", now=1000
    )
    assert expires_in == 120
    header = jwt.get_unverified_header(token)
    assert (header["typ"], header["alg"], header["kid"]) == ("at+jwt", "ES256", "node-1")
    verified = issuer.verify(token, now=1001)
    assert verified.client_id == "publisher-app" and verified.oin == OIN_PUBLISHER
    assert verified.scopes == {"progress"} and verified.purposes == {"b"}
    assert verified.thumbprint == "thumb"
    assert (verified.issued_at, verified.expires_at) == (1000, 1120)
    raw = jwt.decode(token, options={"verify_signature": False})
    assert raw["sub"] == raw["client_id"] == "publisher-app"
    assert raw["iss"] == raw["aud"] == NODE
    assert raw["cnf"] == {"x5t#S256": "thumb"} and raw["nbf"] == raw["iat"] == 1000
    assert raw["jti"] == verified.jti


def test_scopes_and_purposes_are_space_separated_lists() -> None:
    raw = jwt.decode(_issue(_issuer()), options={"verify_signature": False})
    assert raw["scope"].split() == ["eduv.result", "progress"] and raw["purpose"].split() == ["a", "b"]


def test_an_ed25519_issuer_signs_with_eddsa() -> None:
    issuer = _issuer(key=ed25519.Ed25519PrivateKey.generate())
    token = _issue(issuer)
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert issuer.verify(token, now=1_800_000_001).oin == OIN_PUBLISHER


def test_the_published_jwks_verifies_the_issued_tokens() -> None:
    issuer = _issuer()
    (jwk,) = issuer.jwks()["keys"]
    assert jwk["kid"] == "node-1" and jwk["alg"] == "ES256" and "d" not in jwk
    token = _issue(issuer, now=time.time())
    assert jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience=NODE)["oin"] == OIN_PUBLISHER


def test_access_tokens_live_at_most_300_seconds() -> None:
    with pytest.raises(ValueError, match="lifetime"):
        _issuer(lifetime=301)


def test_an_access_token_signing_key_must_be_es256_or_eddsa() -> None:
    with pytest.raises(ValueError, match="ES256"):
        _issuer(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))


def test_alg_none_is_refused() -> None:
    issuer = _issuer()
    token = _forge({"alg": "none", "typ": "at+jwt", "kid": "node-1"}, _claims(issuer, 1_800_000_000))
    with pytest.raises(TokenRejected, match="alg 'none' is not accepted") as refused:
        issuer.verify(token, now=1_800_000_001)
    assert refused.value.error == "invalid_token"


def test_hs256_signed_with_the_public_key_is_refused() -> None:
    # Algorithm confusion: an attacker HMACs with the (public) verification key as the secret.
    issuer = _issuer()
    secret = _public_pem(NODE_KEY)
    token = _forge(
        {"alg": "HS256", "typ": "at+jwt", "kid": "node-1"},
        _claims(issuer, 1_800_000_000),
        lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
    )
    with pytest.raises(TokenRejected, match="alg 'HS256' is not accepted"):
        issuer.verify(token, now=1_800_000_001)


def test_an_rs256_header_on_an_ec_signed_token_is_refused() -> None:
    issuer = _issuer()
    _, payload, signature = _issue(issuer).split(".")
    header = _b64(json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": "node-1"}).encode())
    with pytest.raises(TokenRejected, match="alg 'RS256' is not accepted"):
        issuer.verify(f"{header}.{payload}.{signature}", now=1_800_000_001)


def test_a_token_signed_by_another_key_is_refused() -> None:
    impostor = _issuer(key=ec.generate_private_key(ec.SECP256R1()))  # same iss, aud and kid
    with pytest.raises(TokenRejected, match="signature does not verify"):
        _issuer().verify(_issue(impostor), now=1_800_000_001)


def test_a_token_with_another_kid_is_refused() -> None:
    with pytest.raises(TokenRejected, match="kid 'node-0' is not this node's signing key"):
        _issuer().verify(_issue(_issuer(kid="node-0")), now=1_800_000_001)


@pytest.mark.parametrize("typ", ["JWT", None, "application/jwt", "eduv-register+jws"])
def test_a_token_whose_typ_is_not_at_jwt_is_refused(typ: str | None) -> None:
    issuer = _issuer()
    headers = {"kid": "node-1", "typ": typ}
    token = jwt.encode(_claims(issuer, 1_800_000_000), NODE_KEY, algorithm="ES256", headers=headers)
    with pytest.raises(TokenRejected, match="typ must be 'at\\+jwt'"):
        issuer.verify(token, now=1_800_000_001)


def test_a_token_for_another_issuer_is_refused() -> None:
    with pytest.raises(TokenRejected, match=r"iss 'https://elsewhere\.test' is not this node"):
        _issuer().verify(_issue(_issuer(issuer="https://elsewhere.test")), now=1_800_000_001)


def test_a_token_for_another_audience_is_refused() -> None:
    with pytest.raises(TokenRejected, match=r"aud 'https://elsewhere\.test' is not this node"):
        _issuer().verify(_issue(_issuer(audience="https://elsewhere.test")), now=1_800_000_001)


def test_an_expired_token_is_refused_after_the_leeway() -> None:
    issuer = _issuer(lifetime=300, leeway=5)
    token = _issue(issuer, now=1_800_000_000)
    assert issuer.verify(token, now=1_800_000_304).oin == OIN_PUBLISHER
    with pytest.raises(TokenRejected, match="access token expired at"):
        _issuer(lifetime=300, leeway=5).verify(token, now=1_800_000_305)


def test_a_cached_token_still_expires_on_time() -> None:
    issuer = _issuer(leeway=0)
    token = _issue(issuer, now=1_800_000_000)
    issuer.verify(token, now=1_800_000_001)
    with pytest.raises(TokenRejected, match="expired"):
        issuer.verify(token, now=1_800_000_300)


def test_a_token_that_is_not_yet_valid_is_refused() -> None:
    issuer = _issuer(leeway=5)
    token = _issue(issuer, now=1_800_000_000)
    with pytest.raises(TokenRejected, match="not valid before"):
        issuer.verify(token, now=1_800_000_000 - 6)


def test_a_token_issued_in_the_future_is_refused() -> None:
    issuer = _issuer(leeway=5)
    token = jwt.encode(
        _claims(issuer, 1_800_000_000, iat=1_800_000_100),
        NODE_KEY,
        algorithm="ES256",
        headers={"typ": "at+jwt", "kid": "node-1"},
    )
    with pytest.raises(TokenRejected, match="issued in the future"):
        issuer.verify(token, now=1_800_000_001)


@pytest.mark.parametrize("missing", ["cnf", "jti", "client_id", "oin", "scope", "exp", "iat", "nbf", "iss", "aud"])
def test_a_token_missing_a_required_claim_is_refused(missing: str) -> None:
    issuer = _issuer()
    claims = _claims(issuer, 1_800_000_000)
    del claims[missing]
    token = jwt.encode(claims, NODE_KEY, algorithm="ES256", headers={"typ": "at+jwt", "kid": "node-1"})
    with pytest.raises(TokenRejected, match=f"claim '{missing}' is required"):
        issuer.verify(token, now=1_800_000_001)


# json (and so pyjwt) reads NaN and Infinity, which RFC 8259 has no room for; nor does `datetime` for the rest.
UNREADABLE_TIMES = [float("nan"), float("inf"), float("-inf"), 1e300, -1e20, -1, 253_402_300_800]


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", UNREADABLE_TIMES, ids=repr)
def test_a_token_time_outside_1970_to_9999_is_refused_as_no_numeric_date(claim: str, value: float) -> None:
    issuer = _issuer()
    claims = _claims(issuer, 1_800_000_000, **{claim: value})
    token = jwt.encode(claims, NODE_KEY, algorithm="ES256", headers={"typ": "at+jwt", "kid": "node-1"})
    with pytest.raises(TokenRejected, match=f"claim '{claim}' must be a NumericDate between 1970 and 9999"):
        issuer.verify(token, now=1_800_000_001)


def test_a_token_bound_to_no_certificate_is_refused() -> None:
    issuer = _issuer()
    claims = _claims(issuer, 1_800_000_000, cnf={"x5t": "sha1-thumbprint"})
    token = jwt.encode(claims, NODE_KEY, algorithm="ES256", headers={"typ": "at+jwt", "kid": "node-1"})
    with pytest.raises(TokenRejected, match=r"cnf.x5t#S256 missing"):
        issuer.verify(token, now=1_800_000_001)


HOSTILE_HEADERS: dict[str, Any] = {
    "crit": ["exp"],
    "jku": "https://attacker.test/jwks.json",
    "x5u": "https://attacker.test/cert.pem",
    "jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},
    "x5c": ["MIIB"],
}


@pytest.mark.parametrize("name", sorted(HOSTILE_HEADERS))
def test_headers_that_choose_keys_or_demand_extensions_are_refused(name: str) -> None:
    issuer = _issuer()
    headers = {"typ": "at+jwt", "kid": "node-1", name: HOSTILE_HEADERS[name]}
    token = jwt.encode(_claims(issuer, 1_800_000_000), NODE_KEY, algorithm="ES256", headers=headers)
    with pytest.raises(TokenRejected, match=f"header parameter '{name}' is not accepted"):
        issuer.verify(token, now=1_800_000_001)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "x" * 10_000])
def test_malformed_tokens_are_refused(garbage: str) -> None:
    with pytest.raises(TokenRejected):
        _issuer().verify(garbage, now=1_800_000_001)


@pytest.mark.parametrize("where", [0, 1, 2])
@pytest.mark.parametrize("character", ["\u00e9", "\udcff"])  # the second: a raw 0xff byte as the server decodes it
def test_a_token_with_text_outside_ascii_is_refused_as_malformed(where: int, character: str) -> None:
    issuer = _issuer()
    parts = _issue(issuer).split(".")
    parts[where] = parts[where][:5] + character + parts[where][5:]
    with pytest.raises(TokenRejected, match="malformed JWT: not ASCII"):
        issuer.verify(".".join(parts), now=1_800_000_001)


def _nested(depth: int) -> str:
    """The base64url of JSON nested `depth` arrays deep: deeper than the interpreter's recursion limit."""
    return base64.urlsafe_b64encode(b"[" * depth).rstrip(b"=").decode()


def test_a_token_whose_header_nests_past_the_recursion_limit_is_refused_as_malformed() -> None:
    with pytest.raises(TokenRejected, match="malformed JWT header: nested too deeply"):
        _issuer().verify(f"{_nested(5000)}.e30.c2ln", now=1_800_000_001)


# --- client assertions ----------------------------------------------------------------------------------------


@dataclass
class Federation:
    """Two participants with one client each; the publisher's client registers two keys inline."""

    ca: Issued
    publisher_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    dashboard_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    extra_keys: dict[str, Any] = field(default_factory=dict)
    jwks_uri: str | None = None

    def register(self) -> Register:
        publisher_keys = [public_jwk(self.publisher_key, "pub-1")]
        publisher_keys += [public_jwk(key, kid) for kid, key in self.extra_keys.items()]
        clients = [{"client_id": "publisher-app", "jwks": {"keys": publisher_keys}}]
        if self.jwks_uri:
            clients.append({"client_id": "publisher-remote", "jwks_uri": self.jwks_uri})
        return make_register(
            cas=[self.ca],
            participants=[
                participant(OIN_PUBLISHER, "Uitgeverij Noord", clients),
                participant(
                    OIN_DASHBOARD,
                    "Dashboard Zuid",
                    [{"client_id": "dashboard-app", "jwks": {"keys": [public_jwk(self.dashboard_key, "dash-1")]}}],
                ),
            ],
        )


@pytest.fixture
def federation(ca: Issued) -> Federation:
    return Federation(ca)


@pytest.fixture
def peer(ca: Issued, publisher_cert: Issued, federation: Federation, now: datetime) -> PeerIdentity:
    return ClientCertificateVerifier().verify(publisher_cert.der, federation.register(), now)


def _verifier(replay: ReplayCache | None = None, **settings: Any) -> ClientAssertionVerifier:
    cache = replay if replay is not None else InProcessReplayCache()  # an empty cache is falsy (its len is 0)
    return ClientAssertionVerifier(audience=TOKEN_ENDPOINT, replay=cache, **settings)


def _assertion(key: Any, kid: str | None = "pub-1", client_id: str = "publisher-app", **settings: Any) -> str:
    return make_client_assertion(client_id=client_id, audience=TOKEN_ENDPOINT, key=key, kid=kid, **settings)


def _signed(key: Any, claims: dict[str, Any], alg: str = "ES256", **headers: Any) -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": "pub-1", **headers})


def _assertion_claims(now: float, **overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": "publisher-app",
        "sub": "publisher-app",
        "aud": TOKEN_ENDPOINT,
        "iat": int(now),
        "exp": int(now) + 60,
        "jti": secrets.token_hex(8),
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


async def test_a_valid_assertion_names_the_participant_and_client(federation: Federation, peer: PeerIdentity) -> None:
    found, client = await _verifier().verify(
        _assertion(federation.publisher_key), peer=peer, register=federation.register()
    )
    assert found.oin == OIN_PUBLISHER and client.client_id == "publisher-app"


@pytest.mark.parametrize(
    ("kind", "alg"),
    [("ed25519", "EdDSA"), ("rsa-pss", "PS256"), ("rsa-pkcs1", "RS256")],
)
async def test_eddsa_ps256_and_rs256_client_keys_are_accepted(
    federation: Federation, peer: PeerIdentity, kind: str, alg: str
) -> None:
    key: Any = (
        ed25519.Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    federation.extra_keys["other"] = key
    token = _signed(key, _assertion_claims(datetime.now().timestamp()), alg=alg, kid="other")
    _, client = await _verifier().verify(token, peer=peer, register=federation.register())
    assert client.client_id == "publisher-app"


async def test_a_replayed_assertion_is_refused(federation: Federation, peer: PeerIdentity) -> None:
    verifier, register = _verifier(), federation.register()
    assertion = _assertion(federation.publisher_key)
    await verifier.verify(assertion, peer=peer, register=register)
    with pytest.raises(TokenRejected, match="was already used") as refused:
        await verifier.verify(assertion, peer=peer, register=register)
    assert refused.value.error == "invalid_client"


async def test_a_client_past_its_share_of_the_replay_cache_is_refused_as_such_not_as_a_replay(
    federation: Federation, peer: PeerIdentity
) -> None:
    verifier, register = _verifier(InProcessReplayCache(max_entries=40)), federation.register()  # a share of 2
    for _ in range(2):
        await verifier.verify(_assertion(federation.publisher_key), peer=peer, register=register)
    with pytest.raises(TokenRejected, match="publisher-app has 2 unexpired assertions, the most one client may"):
        await verifier.verify(_assertion(federation.publisher_key), peer=peer, register=register)


async def test_a_new_assertion_with_a_used_jti_is_refused(federation: Federation, peer: PeerIdentity) -> None:
    verifier, register = _verifier(), federation.register()
    await verifier.verify(_assertion(federation.publisher_key, jti="once"), peer=peer, register=register)
    with pytest.raises(TokenRejected, match="'once' was already used"):
        again = _assertion(federation.publisher_key, jti="once", lifetime=30)
        await verifier.verify(again, peer=peer, register=register)


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"edugate-test-{secrets.token_hex(6)}"
    yield prefix
    client = redis_asyncio.Redis(host="127.0.0.1", port=6379)
    async for key in client.scan_iter(match=f"{prefix}:*"):
        await client.delete(key)
    await client.aclose()


@pytest.mark.redis
async def test_an_assertion_replayed_to_another_node_sharing_redis_is_refused(
    federation: Federation, peer: PeerIdentity, redis_prefix: str
) -> None:
    register = federation.register()
    assertion = _assertion(federation.publisher_key)
    node_a = redis_asyncio.Redis(host="127.0.0.1", port=6379)
    node_b = redis_asyncio.Redis(host="127.0.0.1", port=6379)
    try:
        await _verifier(RedisReplayCache(node_a, prefix=redis_prefix)).verify(assertion, peer=peer, register=register)
        with pytest.raises(TokenRejected, match="was already used"):
            await _verifier(RedisReplayCache(node_b, prefix=redis_prefix)).verify(
                assertion, peer=peer, register=register
            )
    finally:
        await node_a.aclose()
        await node_b.aclose()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_assertion_is_refused_when_the_replay_cache_cannot_be_reached(
    federation: Federation, peer: PeerIdentity
) -> None:
    unreachable = redis_asyncio.Redis(host="127.0.0.1", port=_closed_port(), retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(TokenRejected, match="cannot check the assertion for replay"):
            await _verifier(RedisReplayCache(unreachable)).verify(
                _assertion(federation.publisher_key), peer=peer, register=federation.register()
            )
    finally:
        await unreachable.aclose()


async def test_an_assertion_for_two_audiences_is_refused(federation: Federation, peer: PeerIdentity) -> None:
    now = datetime.now().timestamp()
    token = _signed(federation.publisher_key, _assertion_claims(now, aud=[TOKEN_ENDPOINT, "https://other.test/token"]))
    with pytest.raises(TokenRejected, match="exactly one aud, got 2"):
        await _verifier().verify(token, peer=peer, register=federation.register())


async def test_a_one_element_audience_list_is_accepted(federation: Federation, peer: PeerIdentity) -> None:
    token = _signed(federation.publisher_key, _assertion_claims(datetime.now().timestamp(), aud=[TOKEN_ENDPOINT]))
    await _verifier().verify(token, peer=peer, register=federation.register())


async def test_an_assertion_for_another_token_endpoint_is_refused(federation: Federation, peer: PeerIdentity) -> None:
    token = _signed(federation.publisher_key, _assertion_claims(datetime.now().timestamp(), aud="https://x.test/t"))
    with pytest.raises(TokenRejected, match="is not this token endpoint"):
        await _verifier().verify(token, peer=peer, register=federation.register())


async def test_an_assertion_living_longer_than_allowed_is_refused(federation: Federation, peer: PeerIdentity) -> None:
    with pytest.raises(TokenRejected, match="lifetime 301 s exceeds the maximum of 300 s"):
        await _verifier(max_lifetime=300).verify(
            _assertion(federation.publisher_key, lifetime=301), peer=peer, register=federation.register()
        )


async def test_an_expired_assertion_is_refused(federation: Federation, peer: PeerIdentity) -> None:
    assertion = _assertion(federation.publisher_key, now=1_800_000_000, lifetime=60)
    with pytest.raises(TokenRejected, match="client assertion expired at"):
        await _verifier(leeway=5).verify(assertion, peer=peer, register=federation.register(), now=1_800_000_065)


async def test_an_assertion_not_yet_valid_is_refused(federation: Federation, peer: PeerIdentity) -> None:
    now = datetime.now().timestamp()
    token = _signed(federation.publisher_key, _assertion_claims(now, nbf=int(now) + 30))
    with pytest.raises(TokenRejected, match="not valid before"):
        await _verifier().verify(token, peer=peer, register=federation.register(), now=now)


@pytest.mark.parametrize("missing", ["exp", "iat", "jti", "aud"])
async def test_an_assertion_missing_a_required_claim_is_refused(
    federation: Federation, peer: PeerIdentity, missing: str
) -> None:
    token = _signed(federation.publisher_key, _assertion_claims(datetime.now().timestamp(), **{missing: None}))
    with pytest.raises(TokenRejected, match=f"claim '{missing}' is required"):
        await _verifier().verify(token, peer=peer, register=federation.register())


async def test_the_client_id_of_another_participant_is_refused(federation: Federation, peer: PeerIdentity) -> None:
    # Signed correctly with the dashboard's own key, but presented over the publisher's certificate.
    assertion = _assertion(federation.dashboard_key, kid="dash-1", client_id="dashboard-app")
    with pytest.raises(TokenRejected, match="belongs to another participant than the certificate's OIN"):
        await _verifier().verify(assertion, peer=peer, register=federation.register())


async def test_a_client_id_the_register_does_not_list_is_refused(federation: Federation, peer: PeerIdentity) -> None:
    with pytest.raises(TokenRejected, match="'ghost-app' is not in the register"):
        await _verifier().verify(
            _assertion(federation.publisher_key, client_id="ghost-app"), peer=peer, register=federation.register()
        )


async def test_iss_and_sub_must_both_be_the_client_id(federation: Federation, peer: PeerIdentity) -> None:
    token = _signed(federation.publisher_key, _assertion_claims(datetime.now().timestamp(), sub="dashboard-app"))
    with pytest.raises(TokenRejected, match="iss and sub must both be the client_id"):
        await _verifier().verify(token, peer=peer, register=federation.register())


async def test_a_key_id_not_in_the_clients_jwks_is_refused(federation: Federation, peer: PeerIdentity) -> None:
    with pytest.raises(TokenRejected, match="no key with kid 'pub-9'"):
        await _verifier().verify(
            _assertion(federation.publisher_key, kid="pub-9"), peer=peer, register=federation.register()
        )


async def test_an_assertion_signed_by_an_unregistered_key_is_refused(
    federation: Federation, peer: PeerIdentity
) -> None:
    stolen_kid = _assertion(ec.generate_private_key(ec.SECP256R1()), kid="pub-1")
    with pytest.raises(TokenRejected, match="signature does not verify"):
        await _verifier().verify(stolen_kid, peer=peer, register=federation.register())


async def test_without_a_kid_the_only_key_of_the_algorithms_type_is_used(
    federation: Federation, peer: PeerIdentity
) -> None:
    await _verifier().verify(_assertion(federation.publisher_key, kid=None), peer=peer, register=federation.register())


async def test_a_key_verifies_only_its_own_algorithm(federation: Federation, peer: PeerIdentity) -> None:
    # The registered key under kid "ed" is Ed25519; an ES256 signature under that kid must not be tried with it.
    federation.extra_keys["ed"] = ed25519.Ed25519PrivateKey.generate()
    token = _signed(federation.publisher_key, _assertion_claims(datetime.now().timestamp()), kid="ed")
    with pytest.raises(TokenRejected, match="registered for alg 'EdDSA', the token uses 'ES256'"):
        await _verifier().verify(token, peer=peer, register=federation.register())


async def test_an_rsa_key_registered_without_alg_still_refuses_an_ec_algorithm(
    federation: Federation, peer: PeerIdentity
) -> None:
    federation.extra_keys["rsa"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = _signed(federation.publisher_key, _assertion_claims(datetime.now().timestamp()), kid="rsa")
    with pytest.raises(TokenRejected, match="alg 'ES256' does not fit key 'rsa'"):
        await _verifier().verify(token, peer=peer, register=federation.register())


async def test_alg_none_and_hmac_assertions_are_refused(federation: Federation, peer: PeerIdentity) -> None:
    claims = _assertion_claims(datetime.now().timestamp())
    secret = _public_pem(federation.publisher_key)
    unsigned = _forge({"alg": "none", "kid": "pub-1"}, claims)
    confused = _forge(
        {"alg": "HS256", "kid": "pub-1"}, claims, lambda data: hmac.new(secret, data, hashlib.sha256).digest()
    )
    for token, alg in ((unsigned, "none"), (confused, "HS256")):
        with pytest.raises(TokenRejected, match=f"alg '{alg}' is not accepted for client assertions"):
            await _verifier().verify(token, peer=peer, register=federation.register())


@pytest.mark.parametrize("name", sorted(HOSTILE_HEADERS))
async def test_assertion_headers_that_choose_keys_are_refused(
    federation: Federation, peer: PeerIdentity, name: str
) -> None:
    token = _signed(
        federation.publisher_key, _assertion_claims(datetime.now().timestamp()), **{name: HOSTILE_HEADERS[name]}
    )
    with pytest.raises(TokenRejected, match=f"header parameter '{name}' is not accepted"):
        await _verifier().verify(token, peer=peer, register=federation.register())


@pytest.mark.parametrize(
    ("header", "refusal"),
    [
        ({"alg": ["ES256"]}, "alg ['ES256'] is not accepted"),
        ({"alg": {"ES256": True}}, "alg {'ES256': True} is not accepted"),
        ({"alg": "ES256", "typ": ["JWT"]}, "typ ['JWT'] is not a client assertion"),
        ({"alg": "ES256", "typ": {}}, "typ {} is not a client assertion"),
    ],
)
async def test_an_assertion_header_whose_alg_or_typ_is_a_list_or_object_is_refused_not_a_crash(
    federation: Federation, peer: PeerIdentity, header: dict[str, Any], refusal: str
) -> None:
    token = _forge({**header, "kid": "pub-1"}, _assertion_claims(datetime.now().timestamp()))
    with pytest.raises(TokenRejected, match=re.escape(refusal)) as refused:
        await _verifier().verify(token, peer=peer, register=federation.register())
    assert refused.value.error == "invalid_client"


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", UNREADABLE_TIMES, ids=repr)
async def test_an_assertion_time_outside_1970_to_9999_is_refused_as_no_numeric_date(
    federation: Federation, peer: PeerIdentity, claim: str, value: float
) -> None:
    token = _signed(federation.publisher_key, _assertion_claims(datetime.now().timestamp(), **{claim: value}))
    with pytest.raises(TokenRejected, match=f"claim '{claim}' must be a NumericDate between 1970 and 9999") as refused:
        await _verifier().verify(token, peer=peer, register=federation.register())
    assert refused.value.error == "invalid_client"


async def test_an_access_token_is_not_a_client_assertion(federation: Federation, peer: PeerIdentity) -> None:
    token = _signed(federation.publisher_key, _assertion_claims(datetime.now().timestamp()), typ="at+jwt")
    with pytest.raises(TokenRejected, match="is not a client assertion"):
        await _verifier().verify(token, peer=peer, register=federation.register())


def test_public_jwk_never_carries_private_material() -> None:
    for key in (
        ec.generate_private_key(ec.SECP256R1()),
        ed25519.Ed25519PrivateKey.generate(),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ):
        jwk = public_jwk(key, "k")
        assert jwk["kid"] == "k" and jwk["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)


async def test_a_registered_jwk_with_private_material_is_refused(federation: Federation, peer: PeerIdentity) -> None:
    register = federation.register()
    leaked = jwt.algorithms.ECAlgorithm.to_jwk(federation.publisher_key, as_dict=True) | {"kid": "pub-1"}
    document = register.document.model_copy(deep=True)
    client = document.participants[0].clients[0].model_copy(update={"jwks": {"keys": [leaked]}})
    publisher = document.participants[0].model_copy(update={"clients": (client,)})
    leaky = Register(document.model_copy(update={"participants": (publisher, *document.participants[1:])}))
    with pytest.raises(TokenRejected, match="contains private key material"):
        await _verifier().verify(_assertion(federation.publisher_key), peer=peer, register=leaky)


# --- keys fetched from a registered jwks_uri, over real TLS ----------------------------------------------------


@dataclass
class JwksServer:
    url: str
    keys: list[dict[str, Any]]
    status: int = 200
    hits: int = 0
    raw: bytes | None = None  # served instead of the keys when set


@pytest.fixture
async def jwks_server(ca: Issued, tmp_path: Path) -> AsyncIterator[JwksServer]:
    server_cert = issue_server(ca, ["127.0.0.1"])
    cert_path, key_path = server_cert.write(tmp_path, "jwks-server")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    state = JwksServer(url="", keys=[])

    async def serve(_: web.Request) -> web.Response:
        state.hits += 1
        if state.raw is not None:
            return web.Response(body=state.raw, status=state.status, content_type="application/json")
        return web.json_response({"keys": state.keys}, status=state.status)

    app = web.Application()
    app.router.add_get("/jwks.json", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"https://127.0.0.1:{port}/jwks.json"
    yield state
    await runner.cleanup()


def _trusting(ca: Issued) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.cert_pem().decode())


def _remote_assertion(key: Any, kid: str) -> str:
    return _assertion(key, kid=kid, client_id="publisher-remote")


async def test_keys_are_fetched_from_the_registered_jwks_uri_and_cached(
    ca: Issued, federation: Federation, peer: PeerIdentity, jwks_server: JwksServer
) -> None:
    remote_key = ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [public_jwk(remote_key, "remote-1")]
    federation.jwks_uri = jwks_server.url
    register = federation.register()
    async with JwksFetcher(ssl=_trusting(ca)) as fetcher:
        verifier = _verifier(jwks=fetcher)
        _, client = await verifier.verify(_remote_assertion(remote_key, "remote-1"), peer=peer, register=register)
        await verifier.verify(_remote_assertion(remote_key, "remote-1"), peer=peer, register=register)
    assert client.client_id == "publisher-remote"
    assert jwks_server.hits == 1


async def test_a_rotated_key_is_found_by_fetching_the_jwks_again(
    ca: Issued, federation: Federation, peer: PeerIdentity, jwks_server: JwksServer
) -> None:
    old, new = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [public_jwk(old, "old")]
    federation.jwks_uri = jwks_server.url
    register = federation.register()
    async with JwksFetcher(ssl=_trusting(ca), min_refresh_interval=0) as fetcher:
        verifier = _verifier(jwks=fetcher)
        await verifier.verify(_remote_assertion(old, "old"), peer=peer, register=register)
        jwks_server.keys = [public_jwk(new, "new")]
        await verifier.verify(_remote_assertion(new, "new"), peer=peer, register=register)
    assert jwks_server.hits == 2


async def test_unknown_kids_do_not_make_the_node_refetch_more_than_the_refresh_interval_allows(
    ca: Issued, federation: Federation, peer: PeerIdentity, jwks_server: JwksServer
) -> None:
    remote_key = ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [public_jwk(remote_key, "remote-1")]
    federation.jwks_uri = jwks_server.url
    register = federation.register()
    async with JwksFetcher(ssl=_trusting(ca), min_refresh_interval=60) as fetcher:
        verifier = _verifier(jwks=fetcher)
        for attempt in range(5):
            with pytest.raises(TokenRejected, match="no key with kid"):
                await verifier.verify(_remote_assertion(remote_key, f"unknown-{attempt}"), peer=peer, register=register)
    assert jwks_server.hits == 1


async def test_a_jwks_uri_whose_server_is_not_trusted_is_refused(
    federation: Federation, peer: PeerIdentity, jwks_server: JwksServer
) -> None:
    remote_key = ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [public_jwk(remote_key, "remote-1")]
    federation.jwks_uri = jwks_server.url
    async with JwksFetcher() as fetcher:  # the system trust store does not know the development CA
        with pytest.raises(TokenRejected, match="could not be fetched") as refused:
            await _verifier(jwks=fetcher).verify(
                _remote_assertion(remote_key, "remote-1"), peer=peer, register=federation.register()
            )
    assert refused.value.error == "invalid_client"
    assert jwks_server.hits == 0


async def test_a_failing_jwks_uri_refuses_the_assertion(
    ca: Issued, federation: Federation, peer: PeerIdentity, jwks_server: JwksServer
) -> None:
    remote_key = ec.generate_private_key(ec.SECP256R1())
    jwks_server.status = 500
    federation.jwks_uri = jwks_server.url
    async with JwksFetcher(ssl=_trusting(ca)) as fetcher:
        with pytest.raises(TokenRejected, match="answered HTTP 500"):
            await _verifier(jwks=fetcher).verify(
                _remote_assertion(remote_key, "remote-1"), peer=peer, register=federation.register()
            )


async def test_an_oversized_jwks_document_is_refused(
    ca: Issued, federation: Federation, peer: PeerIdentity, jwks_server: JwksServer
) -> None:
    remote_key = ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [public_jwk(remote_key, f"k{i}") for i in range(100)]
    federation.jwks_uri = jwks_server.url
    async with JwksFetcher(ssl=_trusting(ca), max_bytes=1024) as fetcher:
        with pytest.raises(TokenRejected, match="sent more than 1024 bytes"):
            await _verifier(jwks=fetcher).verify(
                _remote_assertion(remote_key, "k1"), peer=peer, register=federation.register()
            )


async def test_a_jwks_document_nested_past_the_recursion_limit_is_refused_not_a_crash(
    ca: Issued, federation: Federation, peer: PeerIdentity, jwks_server: JwksServer
) -> None:
    jwks_server.raw = b"[" * 5000
    federation.jwks_uri = jwks_server.url
    async with JwksFetcher(ssl=_trusting(ca)) as fetcher:
        with pytest.raises(TokenRejected, match="did not return JSON"):
            await _verifier(jwks=fetcher).verify(
                _remote_assertion(ec.generate_private_key(ec.SECP256R1()), "k1"), peer=peer,
                register=federation.register(),
            )


async def test_a_client_with_a_jwks_uri_is_refused_when_the_node_fetches_none(
    federation: Federation, peer: PeerIdentity
) -> None:
    federation.jwks_uri = "https://127.0.0.1:9/jwks.json"
    remote_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(TokenRejected, match="this node fetches none"):
        await _verifier().verify(_remote_assertion(remote_key, "remote-1"), peer=peer, register=federation.register())


async def test_concurrent_assertions_share_one_jwks_fetch(
    ca: Issued, federation: Federation, peer: PeerIdentity, jwks_server: JwksServer
) -> None:
    remote_key = ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [public_jwk(remote_key, "remote-1")]
    federation.jwks_uri = jwks_server.url
    register = federation.register()
    async with JwksFetcher(ssl=_trusting(ca)) as fetcher:
        verifier = _verifier(jwks=fetcher)
        assertions = [_remote_assertion(remote_key, "remote-1") for _ in range(10)]
        results = await asyncio.gather(*(verifier.verify(a, peer=peer, register=register) for a in assertions))
    assert {client.client_id for _, client in results} == {"publisher-remote"}
    assert jwks_server.hits == 1


async def test_a_cached_jwks_is_fetched_again_after_its_ttl(
    ca: Issued, federation: Federation, peer: PeerIdentity, jwks_server: JwksServer
) -> None:
    remote_key = ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [public_jwk(remote_key, "remote-1")]
    federation.jwks_uri = jwks_server.url
    register = federation.register()
    moment = [0.0]
    async with JwksFetcher(ssl=_trusting(ca), ttl=300, clock=lambda: moment[0]) as fetcher:
        verifier = _verifier(jwks=fetcher)
        await verifier.verify(_remote_assertion(remote_key, "remote-1"), peer=peer, register=register)
        moment[0] = 299.0
        await verifier.verify(_remote_assertion(remote_key, "remote-1"), peer=peer, register=register)
        assert jwks_server.hits == 1
        moment[0] = 300.0
        await verifier.verify(_remote_assertion(remote_key, "remote-1"), peer=peer, register=register)
    assert jwks_server.hits == 2


async def test_a_client_assertion_whose_payload_nests_past_the_recursion_limit_is_refused(
    federation: Federation, peer: PeerIdentity
) -> None:
    header = base64.urlsafe_b64encode(b'{"alg": "ES256", "kid": "pub-1"}').rstrip(b"=").decode()
    with pytest.raises(TokenRejected, match=r"malformed client assertion: .*recursion") as refused:
        await _verifier().verify(f"{header}.{_nested(5000)}.c2ln", peer=peer, register=federation.register())
    assert refused.value.error == "invalid_client"
