"""Operator accounts and their console sessions.

Passwords are hashed with Argon2id (argon2-cffi). A session id is random and stored only as its SHA-256,
so a leaked database does not hand out live sessions; each session carries its own CSRF token.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from trust.register_service.store import RegisterChangeRefused, RegisterStore

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verifying against this for unknown users keeps "no such user" and "wrong password" equally slow."""
    return _hasher.hash(secrets.token_urlsafe(16))

MIN_PASSWORD = 12


class OperatorRole(StrEnum):
    READ_ONLY = "read-only"
    ADMIN = "admin"


@dataclass(frozen=True)
class Operator:
    username: str
    role: OperatorRole

    @property
    def may_change(self) -> bool:
        return self.role is OperatorRole.ADMIN


@dataclass(frozen=True)
class Session:
    operator: Operator
    csrf: str
    expires_at: datetime


def _hash_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class OperatorAccounts:
    """Accounts, password checks and sessions. After `max_failures` wrong passwords for one username within
    `lockout`, that username cannot log in (not even with the right password) until the window has passed."""

    def __init__(self, store: RegisterStore, *, session_lifetime: timedelta = timedelta(hours=8),
                 max_failures: int = 5, lockout: timedelta = timedelta(minutes=15)) -> None:
        self.store = store
        self.session_lifetime = session_lifetime
        self.max_failures = max_failures
        self.lockout = lockout
        self._failures: dict[str, list[datetime]] = {}

    def locked(self, username: str) -> bool:
        since = self.store.clock() - self.lockout
        recent = [at for at in self._failures.get(username, []) if at > since]
        if recent:
            self._failures[username] = recent
        else:
            self._failures.pop(username, None)
        return len(recent) >= self.max_failures

    async def create(self, username: str, password: str, role: OperatorRole, *, actor: str) -> Operator:
        if not username or not username.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise RegisterChangeRefused("a username is letters, digits, '-', '_' or '.'")
        if len(password) < MIN_PASSWORD:
            raise RegisterChangeRefused(f"a password needs at least {MIN_PASSWORD} characters")
        hashed = await asyncio.to_thread(_hasher.hash, password)
        async with self.store.db.transaction() as conn:
            if await conn.fetchval("SELECT username FROM operators WHERE username = ?", username) is not None:
                raise RegisterChangeRefused(f"operator {username!r} already exists")
            await conn.execute("INSERT INTO operators (username, password_hash, role, created_at) VALUES (?, ?, ?, ?)",
                               username, hashed, role.value, self.store.clock().isoformat())
        await self.store.record(actor, "create operator", f"operator:{username}", None,
                                {"username": username, "role": role.value})
        return Operator(username, role)

    async def list(self) -> list[Operator]:
        async with self.store.db.transaction() as conn:
            rows = await conn.fetch("SELECT username, role FROM operators ORDER BY username")
        return [Operator(r["username"], OperatorRole(r["role"])) for r in rows]

    async def authenticate(self, username: str, password: str) -> Operator | None:
        async with self.store.db.transaction() as conn:
            row = await conn.fetchrow("SELECT password_hash, role FROM operators WHERE username = ?", username)
        try:
            await asyncio.to_thread(_hasher.verify, row["password_hash"] if row else _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            self._failures.setdefault(username, []).append(self.store.clock())
            return None
        if row is None:
            return None
        self._failures.pop(username, None)
        return Operator(username, OperatorRole(row["role"]))

    async def start_session(self, operator: Operator) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(operator, secrets.token_urlsafe(32), self.store.clock() + self.session_lifetime)
        async with self.store.db.transaction() as conn:
            await conn.execute("DELETE FROM sessions WHERE expires_at < ?", self.store.clock().isoformat())
            await conn.execute("INSERT INTO sessions (id_hash, username, csrf, expires_at) VALUES (?, ?, ?, ?)",
                               _hash_id(session_id), operator.username, session.csrf, session.expires_at.isoformat())
        return session_id, session

    async def session(self, session_id: str) -> Session | None:
        async with self.store.db.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT s.csrf, s.expires_at, o.username, o.role FROM sessions s"
                " JOIN operators o ON o.username = s.username WHERE s.id_hash = ?", _hash_id(session_id))
        if row is None:
            return None
        expires_at = datetime.fromisoformat(row["expires_at"])
        if expires_at <= self.store.clock():
            await self.end_session(session_id)
            return None
        return Session(Operator(row["username"], OperatorRole(row["role"])), row["csrf"], expires_at)

    async def end_session(self, session_id: str) -> None:
        async with self.store.db.transaction() as conn:
            await conn.execute("DELETE FROM sessions WHERE id_hash = ?", _hash_id(session_id))
