"""A small but real OpenID Connect provider on loopback, for the portal's OIDC login tests.

It publishes a discovery document and a JWKS, runs the authorization code flow with PKCE (S256) and client
secret authentication, and issues ES256-signed ID tokens. The user who "logs in" at /authorize is whatever
`claims` says at that moment; `tamper` lets a test break one thing in the next ID token.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from connectors.samples.federation import SCHOOL, Federation
from gateway.config import OidcProviderSection
from gateway.portal.oidc import OidcProvider
from tests.portal.client import PortalClient

CLIENT_ID = "edugate-portal"
CLIENT_SECRET = secrets.token_urlsafe(24)


@dataclass
class IdentityProvider:
    claims: dict[str, Any] = field(default_factory=dict)
    tamper: dict[str, Any] = field(default_factory=dict)  # claims overridden in the next ID token
    key: ECKey = field(default_factory=lambda: ECKey.generate_key("P-256", parameters={"kid": "idp-1"}))
    published: ECKey | None = None  # the key the JWKS shows, when a test makes it differ from the signing key
    issuer: str = ""
    discovery_extra: dict[str, Any] = field(default_factory=dict)  # members added to (or replacing) the metadata's
    extra_keys: list[Any] = field(default_factory=list)  # published in the JWKS beside the signing key
    signing: tuple[str, Any] | None = None  # (alg, key) for ID tokens instead of ES256 with `key`
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.issuer = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response({
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            **self.discovery_extra,
        })

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response(KeySet([self.published or self.key, *self.extra_keys]).as_dict(private=False))

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("client_id") != CLIENT_ID or q.get("response_type") != "code":
            return web.json_response({"error": "unauthorized_client"}, status=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return web.json_response({"error": "invalid_request", "error_description": "PKCE required"}, status=400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "redirect_uri": q["redirect_uri"], "nonce": q.get("nonce"), "challenge": q["code_challenge"],
            "claims": dict(self.claims),
        }
        raise web.HTTPFound(f"{q['redirect_uri']}?code={code}&state={q.get('state', '')}")

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        auth = request.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if not secrets.compare_digest(auth, expected):
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = self.codes.pop(str(form.get("code", "")), None)  # a code works once
        if grant is None or form.get("redirect_uri") != grant["redirect_uri"]:
            return web.json_response({"error": "invalid_grant"}, status=400)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != grant["challenge"]:
            return web.json_response({"error": "invalid_grant", "error_description": "PKCE mismatch"}, status=400)
        now = int(time.time())
        claims = {
            "iss": self.issuer, "sub": "user-42", "aud": CLIENT_ID, "iat": now, "exp": now + 300,
            "nonce": grant["nonce"], **grant["claims"], **self.tamper,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        self.tamper = {}
        alg, key = self.signing or ("ES256", self.key)
        id_token = jwt.encode({"alg": alg, "kid": key.kid}, claims, key)
        return web.json_response({"access_token": secrets.token_urlsafe(24), "token_type": "Bearer",
                                  "expires_in": 300, "id_token": id_token})


def use_provider(fed: Federation, idp: IdentityProvider, **settings: Any) -> None:
    """Put a provider into the running portal, as `[[portal.oidc]]` in the node's config would."""
    section = OidcProviderSection.model_validate({
        "name": "school-idp", "title": "SchoolID", "issuer": idp.issuer, "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET, "schools": [SCHOOL], **settings,
    })
    portal = PortalClient.portal_of(fed)
    portal.providers[section.name] = OidcProvider(
        section, redirect_uri=f"{fed.node.config.node.public_url}/portal/oidc/{section.name}/callback"
    )
