"""OpenID Connect login for schools with their own identity provider (authorization code flow with PKCE).

The relying party's security work is Authlib's (and joserfc's, which Authlib builds on): state, nonce and
PKCE values, the ID token's signature against the provider's published keys, and its claims (`iss`, `aud`,
`exp`, `iat`, `nonce`, `azp`, `at_hash`) via `authlib.oidc.core.CodeIDToken`. aiohttp carries the HTTP.

Which school a login acts for comes from one configured claim, mapped by configuration, and must be one of
the schools the provider is configured to speak for: an identity provider cannot log anyone in for a school
that is not its own.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import aiohttp
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from connectors.bodies import read_within
from gateway.activation.model import ORG_MASTER_ID
from gateway.config import OidcProviderSection

METADATA_MAX_AGE = 3600.0
MAX_PROVIDER_ANSWER = 1024 * 1024  # metadata, keys and token answers are kilobytes; more is not read
# ID tokens are verified with the provider's published public keys only: an HMAC algorithm would make a key in its
# JWKS (public by definition) a shared secret, whatever the metadata offers.
ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
LEEWAY = 60


class OidcLoginFailed(Exception):
    """The login did not complete; the message says why (shown to the user, logged)."""


@dataclass(frozen=True)
class OidcLogin:
    school: str
    subject: str  # `sub`, or the e-mail address when the provider gives one
    provider: str


@dataclass(frozen=True)
class Authorization:
    url: str
    state: str
    pending: dict[str, str]  # kept server-side under `state` until the callback


class OidcProvider:
    def __init__(self, config: OidcProviderSection, *, redirect_uri: str) -> None:
        self.config = config
        self.name = config.name
        self.title = config.title or config.name
        self.redirect_uri = redirect_uri
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: dict[str, Any] | None = None

    @property
    def _secret(self) -> str:
        if self.config.client_secret is not None:
            return self.config.client_secret
        assert self.config.client_secret_file is not None
        return self.config.client_secret_file.read_text().strip()

    def _basic_auth(self) -> str:
        """client_secret_basic: id and secret form-urlencoded before base64 (RFC 6749 §2.3.1)."""
        pair = f"{quote_plus(self.config.client_id)}:{quote_plus(self._secret)}"
        return "Basic " + base64.b64encode(pair.encode()).decode()

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with aiohttp.ClientSession() as http, http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
                if r.status != 200:
                    raise OidcLoginFailed(f"{url} answered {r.status}")
                data = await _json_within(r, url)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise OidcLoginFailed(f"cannot read {url}: {exc}") from exc
        if not isinstance(data, dict):
            raise OidcLoginFailed(f"{url} did not return a JSON object")
        return data

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._metadata_at > METADATA_MAX_AGE:
            url = self.config.metadata_url or self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            data = await self._get_json(url)
            if data.get("issuer") != self.config.issuer:
                raise OidcLoginFailed(f"the provider's metadata names issuer {data.get('issuer')!r}, "
                                      f"not the configured {self.config.issuer!r}")
            for needed in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(data.get(needed), str):
                    raise OidcLoginFailed(f"the provider's metadata has no {needed}")
            self._metadata, self._metadata_at, self._keys = data, time.monotonic(), None
        return self._metadata

    async def authorization(self, *, lang: str = "nl") -> Authorization:
        meta = await self.metadata()
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        url = add_params_to_uri(
            meta["authorization_endpoint"],
            [
                ("response_type", "code"),
                ("client_id", self.config.client_id),
                ("redirect_uri", self.redirect_uri),
                ("scope", self.config.scopes),
                ("state", state),
                ("nonce", nonce),
                ("code_challenge", create_s256_code_challenge(verifier)),
                ("code_challenge_method", "S256"),
                ("ui_locales", lang),
            ],
        )
        return Authorization(url, state, {"provider": self.name, "nonce": nonce, "verifier": verifier})

    async def _key_set(self, *, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            self._keys = await self._get_json((await self.metadata())["jwks_uri"])
        try:
            return KeySet.import_key_set(self._keys)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError) as exc:
            raise OidcLoginFailed(f"the provider's keys are unusable: {exc}") from exc

    async def complete(self, *, code: str, pending: dict[str, str]) -> OidcLogin:
        """Exchange the code (with the PKCE verifier), verify the ID token, and map it to a school."""
        meta = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": pending["verifier"],
        }
        try:
            async with aiohttp.ClientSession() as http, http.post(
                meta["token_endpoint"],
                data=form,
                headers={"Authorization": self._basic_auth()},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as r:
                token = await _json_within(r, "the provider's token endpoint")
                if r.status != 200 or not isinstance(token, dict):
                    raise OidcLoginFailed(f"the provider refused the code ({r.status}): {str(token)[:300]}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise OidcLoginFailed(f"cannot reach the provider's token endpoint: {exc}") from exc
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise OidcLoginFailed("the provider returned no ID token")
        claims = await self._verified_claims(id_token, token, pending["nonce"])
        return OidcLogin(self.school_for(claims), str(claims.get("email") or claims["sub"]), self.name)

    async def _verified_claims(self, id_token: str, token: dict[str, Any], nonce: str) -> dict[str, Any]:
        meta = await self.metadata()
        offered = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [a for a in offered if a in ASYMMETRIC] if isinstance(offered, list) else []
        if not algorithms:
            raise OidcLoginFailed(f"the provider offers no public-key algorithm for ID tokens ({str(offered)[:200]})")
        registry = JWSRegistry(algorithms=algorithms)
        try:
            try:
                decoded = jwt.decode(id_token, await self._key_set(), registry=registry)
            except JoseError:  # keys may have rolled over: fetch them once more
                decoded = jwt.decode(id_token, await self._key_set(refresh=True), registry=registry)
            params: dict[str, Any] = {"nonce": nonce, "client_id": self.config.client_id}
            if "access_token" in token:
                params["access_token"] = token["access_token"]
            claims = CodeIDToken(
                decoded.claims,
                decoded.header,
                {  # the audience must include this client; azp (when several) must be it: CodeIDToken checks
                    "iss": {"essential": True, "values": [self.config.issuer]},
                    "aud": {"essential": True, "values": [self.config.client_id]},
                    "nonce": {"essential": True},
                },
                params,
            )
            claims.validate(leeway=LEEWAY)
        except (JoseError, ValueError) as exc:
            raise OidcLoginFailed(f"the ID token is not acceptable: {exc}") from exc
        return dict(claims)

    def school_for(self, claims: dict[str, Any]) -> str:
        claim = self.config.school_claim
        value = claims.get(claim)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if not isinstance(value, str) or not value:
            raise OidcLoginFailed(f"the ID token has no single {claim!r} claim to name the school")
        if self.config.school_map:
            if value not in self.config.school_map:
                raise OidcLoginFailed(f"{claim} {value!r} is not mapped to a school")
            value = self.config.school_map[value]
        if not re.fullmatch(ORG_MASTER_ID, value) or value not in self.config.schools:
            raise OidcLoginFailed(f"provider {self.name!r} may not log in for school {value!r}")
        return value


async def _json_within(response: aiohttp.ClientResponse, what: str) -> Any:
    """The JSON of an answer from the provider, read no further than MAX_PROVIDER_ANSWER bytes (ValueError)."""
    raw = await read_within(response.content, MAX_PROVIDER_ANSWER)
    if raw is None:
        raise ValueError(f"{what} answered more than {MAX_PROVIDER_ANSWER} bytes")
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError(f"{what} answered JSON nested too deeply") from None
