"""A publisher's client: obtains a certificate-bound token with private_key_jwt and pushes progress.

It talks to a receiving node directly over mTLS (the sender-side node in `gateway.outbound` does the same on
behalf of applications that should not hold the keys themselves).
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from trust.pki import Issued
from trust.tokens import make_client_assertion


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class ParticipantClient:
    """An mTLS client for one participant application (one client_id)."""

    base_url: str
    client_id: str
    identity: Issued  # certificate and key: TLS client auth and the assertion's signature
    trust: ssl.SSLContext
    kid: str | None = None
    _session: aiohttp.ClientSession | None = None
    _tokens: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.trust, limit=64))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request_token(self, *, scope: str, purpose: str, assertion: str | None = None) -> Answer:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion or self.assertion(),
            "scope": scope,
            "purpose": purpose,
        }
        async with self.session.post(self.base_url + "/oauth2/token", data=form) as response:
            return Answer(response.status, await response.json(content_type=None), dict(response.headers))

    def assertion(self, **overrides: Any) -> str:
        arguments: dict[str, Any] = {
            "client_id": self.client_id,
            "audience": self.base_url + "/oauth2/token",
            "key": self.identity.key,
            "kid": self.kid,
        }
        arguments.update(overrides)
        return make_client_assertion(**arguments)

    async def token(self, *, scope: str, purpose: str) -> str:
        """A cached token, renewed 30 s before it expires."""
        cached = self._tokens.get((scope, purpose))
        if cached and cached[1] - 30 > time.time():
            return cached[0]
        answer = await self.request_token(scope=scope, purpose=purpose)
        if answer.status != 200:
            raise PermissionError(f"token refused ({answer.status}): {answer.body}")
        self._tokens[(scope, purpose)] = (answer.body["access_token"], time.time() + answer.body["expires_in"])
        return str(answer.body["access_token"])

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base_url + path, json=json, data=data, headers=sent) as response:
            raw = await response.read()
            try:
                import json as jsonlib

                body: Any = jsonlib.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            return Answer(response.status, body, dict(response.headers))

    async def put_progress(self, record: dict[str, Any], *, purpose: str = "b") -> Answer:
        token = await self.token(scope="progress", purpose=purpose)
        return await self.call(
            "PUT", f"/v1/progress/{record['id']}", token=token, json=record, headers={"Edu-Purpose": purpose}
        )


def progress_record(*, record_id: str, eck_id: str, school: str, status: str = "started") -> dict[str, Any]:
    return {
        "id": record_id,
        "student": {"id": eck_id},
        "school": {"organisationMasterIdentifier": school},
        "assignableUnitId": "unit-7",
        "courseId": "wiskunde-2a",
        "status": status,
    }
