"""Server-side portal sessions: the browser holds only a random id; what it stands for lives on the server.

Redis when the node has it (so every node behind a load balancer knows the session, and a logout ends it
everywhere), an in-process dictionary otherwise. Keys are the SHA-256 of the id, so a dump of the store
hands out no live sessions. The same store keeps short-lived login state (OIDC state, nonce, PKCE verifier).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import redis.asyncio as redis_asyncio


@dataclass(frozen=True)
class PortalSession:
    school: str  # organisationMasterIdentifier: every read and change is scoped to it
    user: str  # e-mail (local account) or the provider's subject
    method: str  # "password" or "oidc:<provider>"
    csrf: str
    expires_at: float  # epoch seconds

    @classmethod
    def new(cls, *, school: str, user: str, method: str, lifetime: float) -> PortalSession:
        return cls(school, user, method, secrets.token_urlsafe(32), time.time() + lifetime)


class Store(Protocol):
    async def put(self, key: str, value: dict[str, Any], ttl: float) -> None: ...
    async def get(self, key: str) -> dict[str, Any] | None: ...
    async def pop(self, key: str) -> dict[str, Any] | None: ...
    async def delete(self, key: str) -> None: ...


class InProcessStore:
    def __init__(self) -> None:
        self._items: dict[str, tuple[float, str]] = {}

    def _sweep(self) -> None:
        now = time.monotonic()
        for key in [k for k, (until, _) in self._items.items() if until <= now]:
            del self._items[key]

    async def put(self, key: str, value: dict[str, Any], ttl: float) -> None:
        self._sweep()
        self._items[key] = (time.monotonic() + ttl, json.dumps(value))

    async def get(self, key: str) -> dict[str, Any] | None:
        self._sweep()
        item = self._items.get(key)
        return json.loads(item[1]) if item else None

    async def pop(self, key: str) -> dict[str, Any] | None:
        value = await self.get(key)
        self._items.pop(key, None)
        return value

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)


class RedisStore:
    def __init__(self, redis: redis_asyncio.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = f"{prefix}:portal:"

    async def put(self, key: str, value: dict[str, Any], ttl: float) -> None:
        await self.redis.set(self.prefix + key, json.dumps(value), px=max(1, int(ttl * 1000)))

    async def get(self, key: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.prefix + key)
        return json.loads(raw) if raw else None

    async def pop(self, key: str) -> dict[str, Any] | None:
        raw = await self.redis.getdel(self.prefix + key)  # one use only (OIDC state)
        return json.loads(raw) if raw else None

    async def delete(self, key: str) -> None:
        await self.redis.delete(self.prefix + key)


def _hashed(kind: str, token: str) -> str:
    return f"{kind}:{hashlib.sha256(token.encode()).hexdigest()}"


class Sessions:
    """Portal sessions over a `Store`: created at login (a fresh id: no fixation), ended at logout or expiry."""

    def __init__(self, store: Store, *, lifetime: float) -> None:
        self.store = store
        self.lifetime = lifetime

    async def start(self, *, school: str, user: str, method: str) -> tuple[str, PortalSession]:
        session_id = secrets.token_urlsafe(32)
        session = PortalSession.new(school=school, user=user, method=method, lifetime=self.lifetime)
        await self.store.put(_hashed("session", session_id), asdict(session), self.lifetime)
        return session_id, session

    async def get(self, session_id: str) -> PortalSession | None:
        data = await self.store.get(_hashed("session", session_id))
        if data is None:
            return None
        session = PortalSession(**data)
        if session.expires_at <= time.time():
            await self.end(session_id)
            return None
        return session

    async def end(self, session_id: str) -> None:
        await self.store.delete(_hashed("session", session_id))

    async def put_login_state(self, state: str, value: dict[str, Any], ttl: float = 600.0) -> None:
        await self.store.put(_hashed("login", state), value, ttl)

    async def take_login_state(self, state: str) -> dict[str, Any] | None:
        """The login state for `state`, once: a replayed callback finds nothing."""
        return await self.store.pop(_hashed("login", state))
