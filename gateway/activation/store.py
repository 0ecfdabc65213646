"""The activation store: activations and school credentials, with a cache for the request path.

`lookup` and `is_known_school` run on every exchange and are served from a local cache that is dropped whenever
the store's version moves (see `freshness`); every change bumps the version after it is committed. The write
functions (`request`, `grant`, `confirm`, `end`, `revoke`, `create_school_key`) are what the consent API, the CLI
and the school portal call.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import ValidationError

from gateway.activation.backend import Backend, from_text, to_text
from gateway.activation.freshness import Freshness
from gateway.activation.model import Activation, ActivationStatus, ProcessingAgreement

log = structlog.get_logger("edugate.activation")

CACHE_MAX_AGE = 30.0  # seconds; a safety net should a version bump ever be lost (a Redis outage mid-change)
_COLUMNS = (
    "id, school, data_service, counterparty, purposes, status, valid_from, valid_until, agreement_reference, "
    "agreement_valid_from, agreement_valid_until, requested_at, updated_at, revoked_at, revoked_reason"
)


class ActivationError(ValueError):
    """A change that cannot be made (unknown id, wrong school, wrong state). The message says which."""


class NotFoundError(ActivationError):
    pass


class InvalidActivation(ActivationError):
    """The activation asked for breaks a rule of the model (an end before its start, an unknown OIN)."""


@dataclass(slots=True)
class VersionRead:
    """The store's version as one exchange read it first: its later lookups (school, then activation, then purpose)
    use that read instead of reading again (a Redis GET, or PRAGMA data_version, each). A change that finished
    before the exchange's first lookup began is still seen by all of them."""

    version: object | None = None
    done: bool = False


@dataclass(frozen=True)
class SchoolKey:
    key_id: str
    school: str
    label: str
    created_at: datetime
    revoked_at: datetime | None


def _now() -> datetime:
    return datetime.now(UTC)


def _row_to_activation(row: dict[str, Any]) -> Activation:
    agreement = None
    if row["agreement_reference"] is not None:
        agreement = ProcessingAgreement(
            reference=row["agreement_reference"],
            valid_from=from_text(row["agreement_valid_from"]),
            valid_until=from_text(row["agreement_valid_until"]),
        )
    return Activation(
        id=row["id"],
        school=row["school"],
        data_service=row["data_service"],
        counterparty=row["counterparty"],
        purposes=tuple(json.loads(row["purposes"])),
        status=ActivationStatus(row["status"]),
        valid_from=from_text(row["valid_from"]),
        valid_until=from_text(row["valid_until"]),
        processing_agreement=agreement,
        requested_at=from_text(row["requested_at"]),
        updated_at=from_text(row["updated_at"]),
        revoked_at=from_text(row["revoked_at"]),
        revoked_reason=row["revoked_reason"],
    )


class ActivationStore:
    def __init__(self, backend: Backend, freshness: Freshness) -> None:
        self.backend = backend
        self.freshness = freshness
        self._hasher = PasswordHasher()
        self._cache: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._cache_version: object | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        await self.backend.close()

    async def _bump(self) -> None:
        """After a committed change. A failure does not undo the change (it is in the store); other nodes then
        read the store directly while they cannot reach Redis either, and drop cached entries within
        CACHE_MAX_AGE otherwise."""
        self._cache.clear()
        try:
            await self.freshness.bump()
        except Exception as exc:
            log.error("activation changed, but the cache version could not be bumped", error=str(exc))

    # -- the request path ---------------------------------------------------------------------------------------

    async def _cached(self, key: tuple[str, ...], load: Any, read: VersionRead | None = None) -> Any:
        if read is not None and read.done:
            version = read.version
            if version != self._cache_version:  # the cache moved to another version meanwhile: ask the store
                return await load()
        else:
            version = await self.freshness.version()
            if read is not None:
                read.version, read.done = version, True
            if version is not None and version != self._cache_version:
                self._cache.clear()
                self._cache_version = version
        if version is None:  # no way to tell freshness: never cached
            return await load()
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < CACHE_MAX_AGE:
            return hit[1]
        value = await load()
        if self._cache_version == version:  # not dropped while loading
            self._cache[key] = (time.monotonic(), value)
        return value

    async def lookup(
        self, school: str, data_service: str, counterparty: str, *, read: VersionRead | None = None
    ) -> tuple[Activation, ...]:
        """Every activation recorded for (school, data service, counterparty OIN), in force or not: the caller
        decides with `model.decide`, so that a refusal can say why (revoked, ended, not yet confirmed). `read`:
        the exchange's version read, made by this lookup if not yet done."""

        async def load() -> tuple[Activation, ...]:
            rows = await self.backend.fetch(
                f"SELECT {_COLUMNS} FROM activations WHERE school = $1 AND data_service = $2 AND counterparty = $3",
                school, data_service, counterparty,
            )
            return tuple(_row_to_activation(row) for row in rows)

        result: tuple[Activation, ...] = await self._cached(("lookup", school, data_service, counterparty), load, read)
        return result

    async def is_known_school(self, school: str, *, read: VersionRead | None = None) -> bool:
        """A school is known to this node when it has any activation here (of any status). `read` as for lookup."""

        async def load() -> bool:
            rows = await self.backend.fetch("SELECT 1 AS one FROM activations WHERE school = $1 LIMIT 1", school)
            return bool(rows)

        known: bool = await self._cached(("school", school), load, read)
        return known

    # -- reading ------------------------------------------------------------------------------------------------

    async def get(self, activation_id: str) -> Activation:
        rows = await self.backend.fetch(f"SELECT {_COLUMNS} FROM activations WHERE id = $1", activation_id)
        if not rows:
            raise NotFoundError(f"no activation {activation_id!r}")
        return _row_to_activation(rows[0])

    async def find(
        self,
        *,
        school: str | None = None,
        counterparty: str | None = None,
        data_service: str | None = None,
        since: datetime | None = None,
    ) -> list[Activation]:
        """Activations matching every filter given, oldest change first (Edu-V: `since` for incremental sync)."""
        conditions: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("school", school), ("counterparty", counterparty), ("data_service", data_service),
        ):
            if value is not None:
                args.append(value)
                conditions.append(f"{column} = ${len(args)}")
        if since is not None:
            args.append(to_text(since))
            conditions.append(f"updated_at >= ${len(args)}")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = await self.backend.fetch(f"SELECT {_COLUMNS} FROM activations{where} ORDER BY updated_at, id", *args)
        return [_row_to_activation(row) for row in rows]

    # -- changes ------------------------------------------------------------------------------------------------

    async def _insert(self, activation: Activation) -> Activation:
        agreement = activation.processing_agreement
        await self.backend.execute(
            f"INSERT INTO activations ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, "
            "$14, $15)",
            activation.id, activation.school, activation.data_service, activation.counterparty,
            json.dumps(list(activation.purposes)), activation.status.value, to_text(activation.valid_from),
            to_text(activation.valid_until), agreement.reference if agreement else None,
            to_text(agreement.valid_from) if agreement else None, to_text(agreement.valid_until) if agreement else None,
            to_text(activation.requested_at), to_text(activation.updated_at), to_text(activation.revoked_at),
            activation.revoked_reason,
        )
        await self._bump()
        return activation

    async def request(
        self,
        *,
        school: str,
        data_service: str,
        counterparty: str,
        purposes: Sequence[str],
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        processing_agreement: ProcessingAgreement | None = None,
    ) -> Activation:
        """A counterparty asks a school to activate a data service: recorded as requested, admits nothing yet."""
        return await self._record(
            ActivationStatus.REQUESTED, school=school, data_service=data_service, counterparty=counterparty,
            purposes=purposes, valid_from=valid_from, valid_until=valid_until,
            processing_agreement=processing_agreement,
        )  # fmt: skip

    async def grant(
        self,
        *,
        school: str,
        data_service: str,
        counterparty: str,
        purposes: Sequence[str],
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        processing_agreement: ProcessingAgreement | None = None,
    ) -> Activation:
        """The school activates a data service for a counterparty directly (no request first)."""
        return await self._record(
            ActivationStatus.ACTIVE, school=school, data_service=data_service, counterparty=counterparty,
            purposes=purposes, valid_from=valid_from, valid_until=valid_until,
            processing_agreement=processing_agreement,
        )  # fmt: skip

    async def _record(
        self, status: ActivationStatus, *, purposes: Sequence[str], valid_from: datetime | None, **fields: Any
    ) -> Activation:
        now = _now()
        return await self._insert(
            _new(status=status, purposes=tuple(purposes), valid_from=valid_from or now, requested_at=now,
                 updated_at=now, **fields)
        )  # fmt: skip
    async def _owned(self, activation_id: str, school: str) -> Activation:
        activation = await self.get(activation_id)
        if activation.school != school:  # the same answer as for an unknown id: ids of others are not confirmed
            raise NotFoundError(f"no activation {activation_id!r}")
        return activation

    async def _update(self, activation: Activation, expected_status: ActivationStatus) -> Activation:
        agreement = activation.processing_agreement
        changed = await self.backend.execute(
            "UPDATE activations SET status = $1, purposes = $2, valid_until = $3, agreement_reference = $4, "
            "agreement_valid_from = $5, agreement_valid_until = $6, updated_at = $7, revoked_at = $8, "
            "revoked_reason = $9 WHERE id = $10 AND status = $11",
            activation.status.value, json.dumps(list(activation.purposes)), to_text(activation.valid_until),
            agreement.reference if agreement else None, to_text(agreement.valid_from) if agreement else None,
            to_text(agreement.valid_until) if agreement else None, to_text(activation.updated_at),
            to_text(activation.revoked_at), activation.revoked_reason, activation.id, expected_status.value,
        )
        if changed != 1:
            raise ActivationError(f"activation {activation.id!r} changed meanwhile; read it again")
        await self._bump()
        return activation

    async def confirm(
        self,
        activation_id: str,
        *,
        school: str,
        purposes: Sequence[str] | None = None,
        processing_agreement: ProcessingAgreement | None = None,
    ) -> Activation:
        """The school confirms a request (optionally narrowing its purposes, naming the processing agreement)."""
        activation = await self._owned(activation_id, school)
        if activation.status is not ActivationStatus.REQUESTED:
            raise ActivationError(f"activation {activation_id!r} is {activation.status.value}, not requested")
        if purposes is not None and not set(purposes) <= set(activation.purposes):
            raise ActivationError("a confirmation may narrow the requested purposes, not add to them")
        update: dict[str, Any] = {"status": ActivationStatus.ACTIVE, "updated_at": _now()}
        if purposes is not None:
            update["purposes"] = tuple(purposes)
        if processing_agreement is not None:
            update["processing_agreement"] = processing_agreement
        return await self._update(_validated(activation, update), ActivationStatus.REQUESTED)

    async def end(self, activation_id: str, *, school: str, valid_until: datetime) -> Activation:
        """The school sets (or brings forward) the end of an activation."""
        activation = await self._owned(activation_id, school)
        if activation.status is ActivationStatus.REVOKED:
            raise ActivationError(f"activation {activation_id!r} is already revoked")
        update = {"valid_until": valid_until, "updated_at": _now()}
        return await self._update(_validated(activation, update), activation.status)

    async def revoke(self, activation_id: str, *, school: str, reason: str | None = None) -> Activation:
        """The school withdraws an activation: the next exchange under it is refused, on every node."""
        activation = await self._owned(activation_id, school)
        if activation.status is ActivationStatus.REVOKED:
            return activation
        now = _now()
        update = {"status": ActivationStatus.REVOKED, "revoked_at": now, "revoked_reason": reason, "updated_at": now}
        return await self._update(_validated(activation, update), activation.status)

    # -- school credentials ---------------------------------------------------------------------------------------

    async def create_school_key(self, school: str, label: str = "") -> str:
        """A new API key for `school`, returned once (`<key id>.<secret>`); only its argon2 hash is stored."""
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        hashed = await asyncio.to_thread(self._hasher.hash, secret)
        await self.backend.execute(
            "INSERT INTO school_keys (key_id, school, hash, label, created_at) VALUES ($1, $2, $3, $4, $5)",
            key_id, school, hashed, label, to_text(_now()),
        )
        return f"{key_id}.{secret}"

    async def school_for_key(self, key: str) -> str | None:
        """The school an API key belongs to, or None (unknown, revoked, or wrong secret)."""
        key_id, _, secret = key.partition(".")
        if not key_id or not secret:
            return None
        rows = await self.backend.fetch(
            "SELECT school, hash FROM school_keys WHERE key_id = $1 AND revoked_at IS NULL", key_id
        )
        if not rows:
            return None
        try:
            await asyncio.to_thread(self._hasher.verify, rows[0]["hash"], secret)
        except (VerificationError, InvalidHashError):
            return None
        return str(rows[0]["school"])

    async def school_keys(self, school: str) -> list[SchoolKey]:
        rows = await self.backend.fetch(
            "SELECT key_id, school, label, created_at, revoked_at FROM school_keys WHERE school = $1 "
            "ORDER BY created_at",
            school,
        )
        return [
            SchoolKey(r["key_id"], r["school"], r["label"], from_text(r["created_at"]) or _now(),
                      from_text(r["revoked_at"]))
            for r in rows
        ]

    async def revoke_school_key(self, key_id: str) -> bool:
        changed = await self.backend.execute(
            "UPDATE school_keys SET revoked_at = $1 WHERE key_id = $2 AND revoked_at IS NULL", to_text(_now()), key_id
        )
        return changed == 1


def _validated(activation: Activation, update: dict[str, Any]) -> Activation:
    """`model_copy` does not validate; a change must meet the same rules as a new activation."""
    return _new(**{**activation.model_dump(), **update})


def _new(**fields: Any) -> Activation:
    try:
        return Activation.model_validate(fields)
    except ValidationError as exc:
        problems = (
            f"{'.'.join(str(p) for p in e['loc']) or 'activation'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_input=False)
        )
        raise InvalidActivation("; ".join(problems)) from exc
