"""Tokens: client assertions in (RFC 7523 private_key_jwt) and access tokens out (RFC 9068 `at+jwt`).

The authorisation server is the node that offers the API. A client proves who it is twice: with its TLS
client certificate (the OIN) and with an assertion signed by a key the register lists for one of that
participant's clients. The node answers with a short-lived access token bound to the certificate
(RFC 8705 `cnf.x5t#S256`) which only this node accepts.

In both directions the key pins the algorithm: nothing in a token's header chooses how it is verified.
Headers that point at other keys (`jku`, `x5u`, `jwk`, `x5c`) and any `crit` are refused outright.
Signatures are pyjwt's; the claim checks are written out here so each refusal says precisely why.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from connectors.replay import ReplayCache, ReplayCacheUnavailable
from trust.certificates import PeerIdentity
from trust.jwks import (
    FORBIDDEN_HEADERS,
    JwksFetcher,
    JwksUnavailable,
    KeyNotUsable,
    PrivateKey,
    PublicKey,
    algorithms_for,
    find_key,
    public_jwk,
)
from trust.register import Client, Participant, Register

__all__ = [
    "ACCESS_TOKEN_TYP",
    "ASSERTION_ALGORITHMS",
    "AccessToken",
    "AccessTokenIssuer",
    "ClientAssertionVerifier",
    "JwksFetcher",
    "PrivateKey",
    "PublicKey",
    "TokenRejected",
    "make_client_assertion",
    "public_jwk",
]

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 (a media type, not a secret)
MAX_ACCESS_TOKEN_LIFETIME = 300
ASSERTION_ALGORITHMS = frozenset({"ES256", "EdDSA", "PS256", "RS256"})
# An access token must never pass as a client assertion (or the reverse): refuse each other's typ.
ASSERTION_TYPS = frozenset({None, "JWT", "jwt", "client-authentication+jwt"})
MAX_TOKEN_BYTES = 8192


class TokenRejected(ValueError):
    """A token or client assertion that is refused. `error` is the OAuth error code to answer with."""

    def __init__(self, message: str, error: str = "invalid_token") -> None:
        super().__init__(message)
        self.message = message
        self.error = error


@dataclass(frozen=True)
class AccessToken:
    """A verified access token."""

    client_id: str
    oin: str
    scopes: frozenset[str]
    purposes: frozenset[str]
    thumbprint: str  # cnf["x5t#S256"]: the certificate this token is bound to
    jti: str
    issued_at: int
    expires_at: int


def _header(token: str, error: str) -> dict[str, Any]:
    if not isinstance(token, str) or not token:
        raise TokenRejected("no token", error)
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenRejected(f"token longer than {MAX_TOKEN_BYTES} bytes", error)
    if not token.isascii():  # a compact JWS is base64url and dots; pyjwt would fail to encode other text
        raise TokenRejected("malformed JWT: not ASCII (a JWT is base64url parts separated by dots)", error)
    # Read the header ourselves (pyjwt would refuse a `crit` before we could say so); pyjwt parses it again
    # when it checks the signature.
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRejected("malformed JWT: not three dot-separated parts (a JWE or JSON serialisation?)", error)
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise TokenRejected(f"malformed JWT header: {exc}", error) from exc
    except RecursionError as exc:  # JSON nested deeper than the interpreter follows: no header of ours
        raise TokenRejected("malformed JWT header: nested too deeply", error) from exc
    if not isinstance(header, dict):
        raise TokenRejected("malformed JWT header: not a JSON object", error)
    for name in FORBIDDEN_HEADERS:
        if name in header:
            raise TokenRejected(f"header parameter {name!r} is not accepted", error)
    return header


# The NumericDates this node reads: 1970 up to the last second of the year 9999, what `datetime` renders. Any
# other is no time a token of ours could hold (json reads NaN and Infinity too, which RFC 8259 has no room for).
_LAST_NUMERIC_DATE = 253_402_300_799


def _int_claim(claims: dict[str, Any], name: str, error: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected(f"claim {name!r} must be a NumericDate, got {value!r}", error)
    if not 0 <= value <= _LAST_NUMERIC_DATE:  # also False for NaN
        shown = repr(value) if len(repr(value)) <= 40 else f"a number of {len(repr(value))} characters"
        raise TokenRejected(f"claim {name!r} must be a NumericDate between 1970 and 9999, got {shown}", error)
    return int(value)


def _str_claim(claims: dict[str, Any], name: str, error: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise TokenRejected(f"claim {name!r} must be a non-empty string", error)
    return value


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _signed_claims(token: str, key: PublicKey, alg: str, required: list[str], error: str) -> dict[str, Any]:
    """Verify the signature with `key` and `alg` only, and that `required` claims are present.
    Time, issuer and audience are checked by the callers against their own clock and rules."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            options={
                "require": required,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )
    except jwt.InvalidSignatureError as exc:
        raise TokenRejected("signature does not verify", error) from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRejected(f"claim {exc.claim!r} is required", error) from exc
    except jwt.PyJWTError as exc:
        raise TokenRejected(f"token refused: {exc}", error) from exc
    return claims


class AccessTokenIssuer:
    """Issues and verifies this node's RFC 9068 access tokens.

    `verify` is on the path of every exchange, so verified tokens are cached by their exact string in a
    bounded LRU; `exp` and `nbf` are checked against `now` on every hit, so a cached token expires on time.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        key: PrivateKey,
        kid: str,
        lifetime: int = MAX_ACCESS_TOKEN_LIFETIME,
        leeway: int = 5,
        cache_size: int = 4096,
    ) -> None:
        if not 0 < lifetime <= MAX_ACCESS_TOKEN_LIFETIME:
            raise ValueError(f"access token lifetime must be 1..{MAX_ACCESS_TOKEN_LIFETIME} s, got {lifetime}")
        algorithms = algorithms_for(key)
        if algorithms not in (("ES256",), ("EdDSA",)):
            raise ValueError("the access token signing key must be EC P-256 (ES256) or Ed25519 (EdDSA)")
        self.issuer = issuer
        self.audience = audience
        self.kid = kid
        self.algorithm = algorithms[0]
        self.lifetime = lifetime
        self.leeway = leeway
        self._key = key
        self._public = key.public_key()
        self._cache_size = cache_size
        self._cache: OrderedDict[str, AccessToken] = OrderedDict()

    def jwks(self) -> dict[str, Any]:
        """The public JWKS of this issuer (for `/.well-known/jwks.json`)."""
        return {"keys": [public_jwk(self._public, self.kid)]}

    def issue(
        self,
        *,
        client_id: str,
        oin: str,
        scopes: Iterable[str],
        purposes: Iterable[str],
        thumbprint: str,
        now: float | None = None,
    ) -> tuple[str, int]:
        """A signed access token bound to the certificate `thumbprint`. Returns (token, expires_in)."""
        if not thumbprint:
            raise ValueError("an access token must be bound to a certificate thumbprint")
        issued_at = int(now if now is not None else time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": client_id,
            "client_id": client_id,
            "oin": oin,
            "scope": " ".join(sorted(set(scopes))),
            "purpose": " ".join(sorted(set(purposes))),
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + self.lifetime,
            "jti": str(uuid.uuid4()),
            "cnf": {"x5t#S256": thumbprint},
        }
        headers = {"typ": ACCESS_TOKEN_TYP, "kid": self.kid}
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers), self.lifetime

    def verify(self, token: str, now: float | None = None) -> AccessToken:
        """Verify an access token issued by this node. Raises TokenRejected (error `invalid_token`)."""
        current = now if now is not None else time.time()
        cached = self._cache.get(token)
        if cached is not None:
            self._cache.move_to_end(token)
            self._check_window(cached.issued_at, cached.expires_at, current)
            return cached
        verified = self._verify(token, current)
        if self._cache_size:
            self._cache[token] = verified
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return verified

    def _check_window(self, not_before: int, expires_at: int, now: float) -> None:
        if now >= expires_at + self.leeway:
            raise TokenRejected(f"access token expired at {_when(expires_at)}")
        if now < not_before - self.leeway:
            raise TokenRejected(f"access token not valid before {_when(not_before)}")

    def _verify(self, token: str, now: float) -> AccessToken:
        header = _header(token, "invalid_token")
        if header.get("typ") != ACCESS_TOKEN_TYP:
            raise TokenRejected(f"typ must be {ACCESS_TOKEN_TYP!r}, got {header.get('typ')!r}")
        if header.get("alg") != self.algorithm:
            raise TokenRejected(f"alg {header.get('alg')!r} is not accepted (this node signs with {self.algorithm})")
        if header.get("kid") != self.kid:
            raise TokenRejected(f"kid {header.get('kid')!r} is not this node's signing key")
        required = ["iss", "aud", "sub", "client_id", "oin", "scope", "iat", "nbf", "exp", "jti", "cnf"]
        claims = _signed_claims(token, self._public, self.algorithm, required, "invalid_token")
        if claims["iss"] != self.issuer:
            raise TokenRejected(f"iss {claims['iss']!r} is not this node ({self.issuer!r})")
        if claims["aud"] != self.audience and claims["aud"] != [self.audience]:
            raise TokenRejected(f"aud {claims['aud']!r} is not this node ({self.audience!r})")
        issued_at = _int_claim(claims, "iat", "invalid_token")
        not_before = _int_claim(claims, "nbf", "invalid_token")
        expires_at = _int_claim(claims, "exp", "invalid_token")
        self._check_window(not_before, expires_at, now)
        if issued_at > now + self.leeway:
            raise TokenRejected(f"access token issued in the future ({_when(issued_at)})")
        cnf = claims["cnf"]
        bound = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
        if not isinstance(bound, str) or not bound:
            raise TokenRejected("access token is not bound to a certificate (cnf.x5t#S256 missing)")
        client_id = _str_claim(claims, "client_id", "invalid_token")
        if claims["sub"] != client_id:
            raise TokenRejected("sub and client_id differ")
        scope, purpose = claims["scope"], claims.get("purpose", "")
        if not isinstance(scope, str) or not isinstance(purpose, str):
            raise TokenRejected("scope and purpose must be space-separated strings")
        return AccessToken(
            client_id=client_id,
            oin=_str_claim(claims, "oin", "invalid_token"),
            scopes=frozenset(scope.split()),
            purposes=frozenset(purpose.split()),
            thumbprint=bound,
            jti=_str_claim(claims, "jti", "invalid_token"),
            issued_at=issued_at,
            expires_at=expires_at,
        )


class ClientAssertionVerifier:
    """Verifies RFC 7523 client assertions (private_key_jwt) at the token endpoint.

    The assertion's client must be one the register lists for the participant whose OIN the TLS client
    certificate carries, and its key must be one that client registered (inline JWKS or its registered
    `jwks_uri`). Whether the participant may exchange now (status, keurmerken) is the caller's decision.
    Every failure raises TokenRejected with error `invalid_client`; so does an unavailable replay cache
    or JWKS, because refusing is the only safe answer when a check cannot be made.
    """

    def __init__(
        self,
        *,
        audience: str,
        replay: ReplayCache,
        max_lifetime: int = 300,
        leeway: int = 5,
        jwks: JwksFetcher | None = None,
    ) -> None:
        self.audience = audience
        self.max_lifetime = max_lifetime
        self.leeway = leeway
        self._replay = replay
        self._jwks = jwks

    async def close(self) -> None:
        """Close the JWKS fetcher's HTTP session, if there is one."""
        if self._jwks is not None:
            await self._jwks.close()

    async def verify(
        self, assertion: str, *, peer: PeerIdentity, register: Register, now: float | None = None
    ) -> tuple[Participant, Client]:
        current = now if now is not None else time.time()
        header = _header(assertion, "invalid_client")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ASSERTION_ALGORITHMS:  # a list or object is not hashable
            raise TokenRejected(
                f"alg {alg!r} is not accepted for client assertions ({', '.join(sorted(ASSERTION_ALGORITHMS))})",
                "invalid_client",
            )
        typ = header.get("typ")
        if not (typ is None or isinstance(typ, str)) or typ not in ASSERTION_TYPS:
            raise TokenRejected(f"typ {header.get('typ')!r} is not a client assertion", "invalid_client")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("kid must be a string", "invalid_client")

        client_id = self._claimed_client(assertion)
        found = register.client(client_id)
        if found is None:
            raise TokenRejected(f"client_id {client_id!r} is not in the register", "invalid_client")
        participant, client = found
        if participant.oin != peer.oin:
            raise TokenRejected(
                f"client_id {client_id!r} belongs to another participant than the certificate's OIN {peer.oin}",
                "invalid_client",
            )

        key = await self._key(client, kid, alg)
        claims = _signed_claims(assertion, key, alg, ["iss", "sub", "aud", "exp", "iat", "jti"], "invalid_client")
        self._check_claims(claims, client_id, current)

        jti = _str_claim(claims, "jti", "invalid_client")
        expires_at = _int_claim(claims, "exp", "invalid_client")
        try:
            first = await self._replay.first_use(
                f"assertion:{client_id}:{jti}", expires_at + self.leeway, owner=client_id
            )
        except ReplayCacheUnavailable as exc:
            message = f"cannot check the assertion for replay, so it is refused: {exc}"
            raise TokenRejected(message, "invalid_client") from exc
        if not first:
            raise TokenRejected(f"client assertion jti {jti!r} was already used", "invalid_client")
        return participant, client

    @staticmethod
    def _claimed_client(assertion: str) -> str:
        # Read before the signature is checked only to find which client's keys to check it with.
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"malformed client assertion: {exc}", "invalid_client") from exc
        issuer, subject = unverified.get("iss"), unverified.get("sub")
        if not isinstance(issuer, str) or not issuer:
            raise TokenRejected("client assertion needs iss (the client_id)", "invalid_client")
        if subject != issuer:
            raise TokenRejected("client assertion iss and sub must both be the client_id", "invalid_client")
        return issuer

    async def _key(self, client: Client, kid: str | None, alg: str) -> PublicKey:
        if client.jwks is not None:
            try:
                return find_key(client.jwks, kid, alg)
            except KeyNotUsable as exc:
                raise TokenRejected(str(exc), "invalid_client") from exc
        if self._jwks is None:
            raise TokenRejected(
                f"client {client.client_id!r} registers a jwks_uri and this node fetches none", "invalid_client"
            )
        try:
            try:
                return find_key(await self._jwks.jwks(client), kid, alg)
            except KeyNotUsable:
                # The client may have rotated its keys since we fetched them: look once more (rate limited).
                return find_key(await self._jwks.jwks(client, refresh=True), kid, alg)
        except KeyNotUsable as exc:
            raise TokenRejected(str(exc), "invalid_client") from exc
        except JwksUnavailable as exc:
            raise TokenRejected(str(exc), "invalid_client") from exc

    def _check_claims(self, claims: dict[str, Any], client_id: str, now: float) -> None:
        def refuse(message: str) -> TokenRejected:
            return TokenRejected(message, "invalid_client")

        if claims["iss"] != client_id or claims["sub"] != client_id:
            raise refuse("client assertion iss and sub must both be the client_id")
        audience = claims["aud"]
        if isinstance(audience, list):
            if len(audience) != 1:
                raise refuse(f"client assertion must have exactly one aud, got {len(audience)}")
            audience = audience[0]
        if audience != self.audience:
            raise refuse(f"client assertion aud {audience!r} is not this token endpoint ({self.audience!r})")
        expires_at = _int_claim(claims, "exp", "invalid_client")
        issued_at = _int_claim(claims, "iat", "invalid_client")
        if now >= expires_at + self.leeway:
            raise refuse(f"client assertion expired at {_when(expires_at)}")
        if issued_at > now + self.leeway:
            raise refuse(f"client assertion issued in the future ({_when(issued_at)})")
        if expires_at - issued_at > self.max_lifetime:
            raise refuse(
                f"client assertion lifetime {expires_at - issued_at} s exceeds the maximum of {self.max_lifetime} s"
            )
        if "nbf" in claims and _int_claim(claims, "nbf", "invalid_client") > now + self.leeway:
            raise refuse(f"client assertion not valid before {_when(int(claims['nbf']))}")


def make_client_assertion(
    *,
    client_id: str,
    audience: str,
    key: PrivateKey,
    kid: str | None = None,
    lifetime: int = 60,
    now: float | None = None,
    jti: str | None = None,
) -> str:
    """A client assertion for `client_id` at the token endpoint `audience`, signed with `key`
    (ES256 for EC P-256, EdDSA for Ed25519, PS256 for RSA)."""
    issued_at = int(now if now is not None else time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + lifetime,
        "jti": jti if jti is not None else str(uuid.uuid4()),
    }
    headers = {"typ": "JWT"} if kid is None else {"typ": "JWT", "kid": kid}
    return jwt.encode(claims, key, algorithm=algorithms_for(key)[0], headers=headers)
