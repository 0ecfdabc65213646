"""Local school accounts: an e-mail address, the one school it acts for, an Argon2id password hash.

After `max_failed` consecutive wrong passwords the account is locked for `lockout`; while locked even the
right password is refused, so guessing cannot go on in the background. Unknown addresses cost the same
Argon2 work as known ones, so timing does not tell which addresses exist.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.activation.model import ORG_MASTER_ID

MIN_PASSWORD = 12
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    email TEXT PRIMARY KEY,
    school TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    failed INTEGER NOT NULL DEFAULT 0,
    locked_until TEXT,
    created_at TEXT NOT NULL
)
"""


class AccountError(ValueError):
    """An account that cannot be created or changed; the message says why."""


class AccountLocked(Exception):
    def __init__(self, until: datetime) -> None:
        super().__init__(f"account locked until {until.isoformat()}")
        self.until = until


@dataclass(frozen=True)
class Account:
    email: str
    school: str
    failed: int = 0
    locked_until: datetime | None = None


def _now() -> datetime:
    return datetime.now(UTC)


class SchoolAccounts:
    def __init__(self, path: Path, *, max_failed: int = 5, lockout: timedelta = timedelta(minutes=15)) -> None:
        self.path = path
        self.max_failed = max_failed
        self.lockout = lockout
        self._lock = asyncio.Lock()  # failure counting is read-modify-write
        # Failures for addresses without an account count and lock the same way, so a lockout does not
        # tell which addresses exist. In memory and bounded: it hides, it does not protect anything.
        self._unknown: dict[str, tuple[int, datetime | None]] = {}

    async def _connect(self) -> aiosqlite.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute(_SCHEMA)
        return db

    async def add(self, *, school: str, email: str, password: str) -> Account:
        email = email.strip().lower()
        if not re.fullmatch(ORG_MASTER_ID, school):
            raise AccountError(f"{school!r} is not an organisationMasterIdentifier (e.g. 104A158)")
        if not _EMAIL.match(email):
            raise AccountError(f"{email!r} is not an e-mail address")
        if len(password) < MIN_PASSWORD:
            raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
        hashed = await asyncio.to_thread(_hasher.hash, password)
        db = await self._connect()
        try:
            try:
                await db.execute(
                    "INSERT INTO accounts (email, school, password_hash, created_at) VALUES (?, ?, ?, ?)",
                    (email, school, hashed, _now().isoformat()),
                )
            except aiosqlite.IntegrityError as exc:
                raise AccountError(f"an account for {email} exists already") from exc
            await db.commit()
        finally:
            await db.close()
        return Account(email, school)

    async def set_password(self, email: str, password: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
        hashed = await asyncio.to_thread(_hasher.hash, password)
        await self._change("UPDATE accounts SET password_hash = ?, failed = 0, locked_until = NULL WHERE email = ?",
                           (hashed, email.strip().lower()))

    async def unlock(self, email: str) -> None:
        await self._change("UPDATE accounts SET failed = 0, locked_until = NULL WHERE email = ?",
                           (email.strip().lower(),))

    async def remove(self, email: str) -> None:
        await self._change("DELETE FROM accounts WHERE email = ?", (email.strip().lower(),))

    async def _change(self, sql: str, params: tuple[object, ...]) -> None:
        db = await self._connect()
        try:
            cursor = await db.execute(sql, params)
            if cursor.rowcount != 1:
                raise AccountError("no such account")
            await db.commit()
        finally:
            await db.close()

    async def list(self, school: str | None = None) -> list[Account]:
        db = await self._connect()
        try:
            sql = "SELECT email, school, failed, locked_until FROM accounts"
            params: tuple[str, ...] = ()
            if school:
                sql, params = sql + " WHERE school = ?", (school,)
            rows = await (await db.execute(sql + " ORDER BY school, email", params)).fetchall()
        finally:
            await db.close()
        return [
            Account(r["email"], r["school"], r["failed"],
                    datetime.fromisoformat(r["locked_until"]) if r["locked_until"] else None)
            for r in rows
        ]

    async def authenticate(self, email: str, password: str) -> Account | None:
        """The account, or None for a wrong address or password. Raises AccountLocked while locked."""
        email = email.strip().lower()
        async with self._lock:
            db = await self._connect()
            try:
                row = await (
                    await db.execute("SELECT school, password_hash, failed, locked_until FROM accounts WHERE email = ?",
                                     (email,))
                ).fetchone()
                now = _now()
                locked_until = datetime.fromisoformat(row["locked_until"]) if row and row["locked_until"] else None
                if row is None:
                    locked_until = self._unknown.get(email, (0, None))[1]
                if locked_until is not None and locked_until > now:
                    raise AccountLocked(locked_until)
                try:
                    await asyncio.to_thread(_hasher.verify, row["password_hash"] if row else _DUMMY_HASH, password)
                    good = row is not None
                except (VerificationError, InvalidHashError):
                    good = False
                if row is None:
                    self._fail_unknown(email, now)
                    return None
                if not good:
                    failed = (0 if locked_until is not None else row["failed"]) + 1  # a lapsed lock starts anew
                    until = now + self.lockout if failed >= self.max_failed else None
                    await db.execute("UPDATE accounts SET failed = ?, locked_until = ? WHERE email = ?",
                                     (failed, until.isoformat() if until else None, email))
                    await db.commit()
                    if until is not None:
                        raise AccountLocked(until)
                    return None
                if row["failed"] or locked_until is not None:
                    await db.execute("UPDATE accounts SET failed = 0, locked_until = NULL WHERE email = ?", (email,))
                    await db.commit()
                return Account(email, row["school"])
            finally:
                await db.close()

    def _fail_unknown(self, email: str, now: datetime) -> None:
        failed, until = self._unknown.get(email, (0, None))
        failed = (0 if until is not None else failed) + 1
        until = now + self.lockout if failed >= self.max_failed else None
        if len(self._unknown) >= 10_000:
            self._unknown.clear()
        self._unknown[email] = (failed, until)
        if until is not None:
            raise AccountLocked(until)
