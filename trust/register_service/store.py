"""The operator's register: every change is one transaction that bumps the serial, writes the new register
document for that serial, and records who changed what, with the state before and after.

The store keeps documents, not signatures: the service signs a serial's document when it publishes it, so
the CLI can change the register without holding the operator key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, StrictInt, ValidationError

from trust.register import (
    Client,
    Endpoints,
    Keurmerk,
    KeurmerkStatus,
    Participant,
    ParticipantStatus,
    RegisterDocument,
    Role,
    utcnow,
)
from trust.register_service import credentials
from trust.register_service.database import Connection, Database, PostgresDatabase, open_database
from trust.register_service.schema import statements

NOTIFY_CHANNEL = "edugate_register"
KEPT_DOCUMENTS = 1000  # older serials' documents are pruned; a feed that resumes before them gets the latest
EXPORT_FORMAT = "edugate-register-export/1"
MAX_SERIAL = 2**63 - 2  # the databases' 64-bit integer, with room for the next serial


class RegisterChangeRefused(ValueError):
    """An operator change that would make the register wrong (unknown OIN, duplicate, bad certificate...)."""


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    serial: int | None  # None for changes outside the register (operator accounts)
    changed_at: datetime
    actor: str
    action: str
    subject: str
    before: Any
    after: Any


@dataclass(frozen=True)
class CertificateRecord:
    thumbprint: str
    subject: str
    not_after: datetime
    added_at: datetime
    pem: str


@dataclass(frozen=True)
class TrustedCa:
    fingerprint: str
    subject: str
    not_after: datetime
    added_at: datetime
    pem: str


def _iso(value: datetime | None) -> str | None:
    """RFC 3339 in UTC: one offset for every stored time, so stored times also compare as text."""
    return value.astimezone(UTC).isoformat() if value is not None else None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _required_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


Apply = Callable[[Connection], Awaitable[None]]


class RegisterStore:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow,
                 kept_documents: int = KEPT_DOCUMENTS) -> None:
        self.db = db
        self.clock = clock
        self.kept_documents = kept_documents
        self._seen_serial = 0
        self._waiters: list[asyncio.Future[int]] = []
        self._watch_task: asyncio.Task[None] | None = None
        self._stop_listen: Callable[[], Any] | None = None

    @classmethod
    async def open(cls, target: str | Path, *, clock: Callable[[], datetime] = utcnow) -> RegisterStore:
        """Open (and create, if new) the register on a SQLite file or a PostgreSQL DSN."""
        store = cls(await open_database(target), clock=clock)
        await store.migrate()
        return store

    async def migrate(self) -> None:
        async with self.db.transaction() as conn:
            for statement in statements(self.db.dialect):
                await conn.execute(statement)
            if await conn.fetchval("SELECT serial FROM register_state WHERE id = 1") is None:
                await conn.execute("INSERT INTO register_state (id, serial, catalogue_version) VALUES (1, 1, '1')")
                now = self.clock()
                document = await self._build(conn, 1, now)
                await conn.execute("INSERT INTO documents (serial, issued_at, document) VALUES (?, ?, ?)",
                                   1, _iso(now), document.model_dump_json(exclude_none=True))
                await self._record(conn, 1, "system", "create register", "register", None, {"serial": 1})
        self._seen_serial = await self.serial()

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        if self._stop_listen is not None:
            await self._stop_listen()
        await self.db.close()

    # ---- reading -------------------------------------------------------------------------------------

    async def serial(self) -> int:
        async with self.db.transaction() as conn:
            return int(await conn.fetchval("SELECT serial FROM register_state WHERE id = 1"))

    async def document(self, serial: int | None = None) -> tuple[int, str]:
        """The (serial, JSON) of the register document at `serial` (default: the latest)."""
        async with self.db.transaction() as conn:
            if serial is None:
                serial = int(await conn.fetchval("SELECT serial FROM register_state WHERE id = 1"))
            text = await conn.fetchval("SELECT document FROM documents WHERE serial = ?", serial)
        if text is None:
            raise LookupError(f"no register document for serial {serial}")
        return serial, text

    async def register(self) -> RegisterDocument:
        _, text = await self.document()
        return RegisterDocument.model_validate_json(text)

    async def serials_after(self, serial: int) -> list[int]:
        """The serials after `serial` whose documents are kept, oldest first."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch("SELECT serial FROM documents WHERE serial > ? ORDER BY serial", serial)
        return [int(row["serial"]) for row in rows]

    async def participant(self, oin: str) -> Participant | None:
        document = await self.register()
        return next((p for p in document.participants if p.oin == oin), None)

    async def certificates(self, oin: str) -> list[CertificateRecord]:
        async with self.db.transaction() as conn:
            rows = await conn.fetch("SELECT * FROM certificates WHERE oin = ? ORDER BY added_at", oin)
        return [CertificateRecord(r["thumbprint"], r["subject"], _required_time(r["not_after"]),
                                  _required_time(r["added_at"]), r["pem"]) for r in rows]

    async def keurmerk_reasons(self, oin: str) -> dict[tuple[str, str], str]:
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                "SELECT data_service, role, status_reason FROM keurmerken WHERE oin = ? AND status_reason IS NOT NULL",
                oin)
        return {(r["data_service"], r["role"]): r["status_reason"] for r in rows}

    async def trusted_cas(self) -> list[TrustedCa]:
        async with self.db.transaction() as conn:
            rows = await conn.fetch("SELECT * FROM trusted_cas ORDER BY added_at")
        return [TrustedCa(r["fingerprint"], r["subject"], _required_time(r["not_after"]),
                          _required_time(r["added_at"]), r["pem"]) for r in rows]

    async def history(self, *, limit: int = 100, subject: str | None = None) -> list[HistoryEntry]:
        """The newest `limit` history entries, newest first; `subject` narrows to e.g. `participant:<oin>`."""
        sql = "SELECT * FROM history"
        args: list[Any] = []
        if subject:
            sql += " WHERE subject = ?"
            args.append(subject)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        async with self.db.transaction() as conn:
            rows = await conn.fetch(sql, *args)
        return [
            HistoryEntry(int(r["id"]), r["serial"], _required_time(r["changed_at"]), r["actor"], r["action"],
                         r["subject"], json.loads(r["before_state"]) if r["before_state"] else None,
                         json.loads(r["after_state"]) if r["after_state"] else None)
            for r in rows
        ]

    # ---- waiting for changes (the feed) --------------------------------------------------------------

    async def wait_for_change(self, after: int, within: float) -> int:
        """Return the latest serial as soon as it is above `after`, or the current one after `within` seconds."""
        if self._seen_serial > after:
            return self._seen_serial
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            return await asyncio.wait_for(asyncio.shield(future), within)
        except TimeoutError:
            return self._seen_serial
        finally:
            if future in self._waiters:
                self._waiters.remove(future)

    def _announce(self, serial: int) -> None:
        if serial <= self._seen_serial:
            return
        self._seen_serial = serial
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(serial)

    async def watch(self, interval: float = 0.2) -> None:
        """Notice changes made by other processes (the CLI, another service instance): PostgreSQL
        NOTIFY where available, and a cheap serial poll on both databases."""
        if isinstance(self.db, PostgresDatabase) and self._stop_listen is None:
            self._stop_listen = await self.db.listen(NOTIFY_CHANNEL, lambda: self._kick())
        if self._watch_task is None:
            self._watch_task = asyncio.create_task(self._poll(interval))

    def _kick(self) -> None:
        task = asyncio.get_running_loop().create_task(self._refresh_seen())
        task.add_done_callback(lambda t: t.exception())

    async def _refresh_seen(self) -> None:
        self._announce(await self.serial())

    async def _poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):  # a busy database must not stop the watcher; next round
                await self._refresh_seen()

    # ---- changing ------------------------------------------------------------------------------------

    async def _change(self, actor: str, action: str, subject: str, apply: Apply, *, floor: int = 0) -> int:
        """Run `apply` and publish the result as the next serial, with a history entry, all or nothing.

        `floor`: the new serial is above it too (an import of a register that had reached a higher serial)."""
        try:
            async with self.db.transaction() as conn:
                # Bumping first locks the state row: concurrent changes queue here, so `before` is exact.
                serial = int(await conn.fetchval(
                    "UPDATE register_state SET serial = serial + 1 WHERE id = 1 RETURNING serial"))
                if serial <= floor:
                    serial = floor + 1
                    await conn.execute("UPDATE register_state SET serial = ? WHERE id = 1", serial)
                previous = await conn.fetchval("SELECT document FROM documents ORDER BY serial DESC LIMIT 1")
                before = _subject_state(json.loads(previous), subject) if previous else None
                await apply(conn)
                now = self.clock()
                document = await self._build(conn, serial, now)
                text = document.model_dump_json(exclude_none=True)
                after = _subject_state(json.loads(text), subject)
                await conn.execute("INSERT INTO documents (serial, issued_at, document) VALUES (?, ?, ?)",
                                   serial, _iso(now), text)
                await conn.execute("DELETE FROM documents WHERE serial <= ?", serial - self.kept_documents)
                await self._record(conn, serial, actor, action, subject, before, after)
                if self.db.dialect == "postgresql":
                    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
        except ValidationError as exc:
            raise RegisterChangeRefused(_validation_message(exc)) from exc
        except credentials.CredentialRefused as exc:
            raise RegisterChangeRefused(str(exc)) from exc
        self._announce(serial)
        return serial

    async def _record(self, conn: Connection, serial: int | None, actor: str, action: str, subject: str,
                      before: Any, after: Any) -> None:
        await conn.execute(
            "INSERT INTO history (serial, changed_at, actor, action, subject, before_state, after_state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            serial, _iso(self.clock()), actor, action, subject,
            json.dumps(before, sort_keys=True) if before is not None else None,
            json.dumps(after, sort_keys=True) if after is not None else None,
        )

    async def record(self, actor: str, action: str, subject: str, before: Any, after: Any) -> None:
        """A history entry for a change outside the register itself (operator accounts)."""
        async with self.db.transaction() as conn:
            await self._record(conn, None, actor, action, subject, before, after)

    async def _build(self, conn: Connection, serial: int, issued_at: datetime) -> RegisterDocument:
        version = await conn.fetchval("SELECT catalogue_version FROM register_state WHERE id = 1")
        certs: dict[str, list[str]] = {}
        for row in await conn.fetch("SELECT oin, thumbprint FROM certificates ORDER BY thumbprint"):
            certs.setdefault(row["oin"], []).append(row["thumbprint"])
        clients: dict[str, list[Client]] = {}
        for row in await conn.fetch("SELECT * FROM clients ORDER BY client_id"):
            clients.setdefault(row["oin"], []).append(Client(
                client_id=row["client_id"], jwks=json.loads(row["jwks"]) if row["jwks"] else None,
                jwks_uri=row["jwks_uri"]))
        marks: dict[str, list[Keurmerk]] = {}
        for row in await conn.fetch("SELECT * FROM keurmerken ORDER BY data_service, role"):
            marks.setdefault(row["oin"], []).append(Keurmerk(
                data_service=row["data_service"], role=Role(row["role"]), status=KeurmerkStatus(row["status"]),
                valid_from=_required_time(row["valid_from"]), valid_until=_time(row["valid_until"])))
        participants = [
            Participant(
                oin=row["oin"], name=row["name"], kvk=row["kvk"], contact=row["contact"],
                status=ParticipantStatus(row["status"]), status_reason=row["status_reason"],
                withdrawal_effective=_time(row["withdrawal_effective"]), withdrawal_reason=row["withdrawal_reason"],
                certificates=tuple(certs.get(row["oin"], ())), clients=tuple(clients.get(row["oin"], ())),
                keurmerken=tuple(marks.get(row["oin"], ())),
                endpoints=Endpoints(token=row["endpoint_token"], api=row["endpoint_api"]),
            )
            for row in await conn.fetch("SELECT * FROM participants ORDER BY oin")
        ]
        cas = [row["pem"] for row in await conn.fetch("SELECT pem FROM trusted_cas ORDER BY fingerprint")]
        return RegisterDocument(serial=serial, issued_at=issued_at, catalogue_version=version,
                                trusted_cas=tuple(cas), participants=tuple(participants))

    async def _require_participant(self, conn: Connection, oin: str) -> None:
        if await conn.fetchval("SELECT oin FROM participants WHERE oin = ?", oin) is None:
            raise RegisterChangeRefused(f"no participant with OIN {oin}")

    # participants

    async def add_participant(self, oin: str, name: str, *, kvk: str | None = None, contact: str | None = None,
                              status: ParticipantStatus = ParticipantStatus.APPLIED, actor: str) -> int:
        try:
            Participant(oin=oin, name=name, status=status)  # validates the OIN before anything is written
        except ValidationError as exc:
            raise RegisterChangeRefused(_validation_message(exc)) from exc

        async def apply(conn: Connection) -> None:
            if await conn.fetchval("SELECT oin FROM participants WHERE oin = ?", oin) is not None:
                raise RegisterChangeRefused(f"participant {oin} is already registered")
            now = _iso(self.clock())
            await conn.execute(
                "INSERT INTO participants (oin, name, kvk, contact, status, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)", oin, name, kvk, contact, status.value, now, now)

        return await self._change(actor, "add participant", f"participant:{oin}", apply)

    async def update_participant(self, oin: str, *, name: str | None = None, kvk: str | None = None,
                                 contact: str | None = None, token_endpoint: str | None = None,
                                 api_endpoint: str | None = None, actor: str) -> int:
        fields = {"name": name, "kvk": kvk, "contact": contact, "endpoint_token": token_endpoint,
                  "endpoint_api": api_endpoint}
        updates = {column: value for column, value in fields.items() if value is not None}
        if not updates:
            raise RegisterChangeRefused("nothing to update")

        async def apply(conn: Connection) -> None:
            await self._require_participant(conn, oin)
            assignments = ", ".join(f"{column} = ?" for column in updates)
            await conn.execute(f"UPDATE participants SET {assignments}, updated_at = ? WHERE oin = ?",
                               *[value or None for value in updates.values()], _iso(self.clock()), oin)

        return await self._change(actor, "update participant", f"participant:{oin}", apply)

    async def set_participant_status(self, oin: str, status: ParticipantStatus, *, reason: str | None = None,
                                     actor: str) -> int:
        """Move a participant through joining, or suspend, reactivate, or withdraw it at once."""
        if status in (ParticipantStatus.SUSPENDED, ParticipantStatus.WITHDRAWN) and not reason:
            raise RegisterChangeRefused(f"a reason is required to set status {status.value}")

        async def apply(conn: Connection) -> None:
            await self._require_participant(conn, oin)
            await conn.execute("UPDATE participants SET status = ?, status_reason = ?, updated_at = ? WHERE oin = ?",
                               status.value, reason, _iso(self.clock()), oin)

        return await self._change(actor, f"set status {status.value}", f"participant:{oin}", apply)

    async def schedule_withdrawal(self, oin: str, effective: datetime, reason: str, *, actor: str) -> int:
        """Uittreding at a future moment: from `effective` on, every node refuses the participant by itself."""
        if effective.tzinfo is None:
            raise RegisterChangeRefused("the effective date needs a UTC offset")
        if effective <= self.clock():
            raise RegisterChangeRefused("a scheduled withdrawal needs a future effective date; "
                                        "to withdraw now, set the status to withdrawn")
        if not reason:
            raise RegisterChangeRefused("a withdrawal needs a reason")

        async def apply(conn: Connection) -> None:
            await self._require_participant(conn, oin)
            await conn.execute(
                "UPDATE participants SET withdrawal_effective = ?, withdrawal_reason = ?, updated_at = ? WHERE oin = ?",
                _iso(effective), reason, _iso(self.clock()), oin)

        return await self._change(actor, "schedule withdrawal", f"participant:{oin}", apply)

    async def cancel_withdrawal(self, oin: str, *, actor: str) -> int:
        async def apply(conn: Connection) -> None:
            await self._require_participant(conn, oin)
            await conn.execute("UPDATE participants SET withdrawal_effective = NULL, withdrawal_reason = NULL,"
                               " updated_at = ? WHERE oin = ?", _iso(self.clock()), oin)

        return await self._change(actor, "cancel withdrawal", f"participant:{oin}", apply)

    # certificates

    async def add_certificate(self, oin: str, pem: str, *, actor: str) -> int:
        facts = self._certificate_facts(pem, oin)

        async def apply(conn: Connection) -> None:
            await self._require_participant(conn, oin)
            await self._insert_certificate(conn, oin, facts)

        return await self._change(actor, "add certificate", f"participant:{oin}", apply)

    async def remove_certificate(self, oin: str, thumbprint: str, *, actor: str) -> int:
        async def apply(conn: Connection) -> None:
            await self._delete_certificate(conn, oin, thumbprint)

        return await self._change(actor, "remove certificate", f"participant:{oin}", apply)

    async def rotate_certificate(self, oin: str, old_thumbprint: str, new_pem: str, *, actor: str) -> int:
        """Replace one certificate by another in a single serial: no moment with both or neither."""
        facts = self._certificate_facts(new_pem, oin)

        async def apply(conn: Connection) -> None:
            await self._delete_certificate(conn, oin, old_thumbprint)
            await self._insert_certificate(conn, oin, facts)

        return await self._change(actor, "rotate certificate", f"participant:{oin}", apply)

    def _certificate_facts(self, pem: str, oin: str) -> credentials.CertificateFacts:
        try:
            return credentials.participant_certificate(pem, oin)
        except credentials.CredentialRefused as exc:
            raise RegisterChangeRefused(str(exc)) from exc

    async def _insert_certificate(self, conn: Connection, oin: str, facts: credentials.CertificateFacts) -> None:
        if await conn.fetchval("SELECT oin FROM certificates WHERE thumbprint = ?", facts.thumbprint) is not None:
            raise RegisterChangeRefused(f"certificate {facts.thumbprint} is already registered")
        await conn.execute(
            "INSERT INTO certificates (thumbprint, oin, pem, subject, not_after, added_at) VALUES (?, ?, ?, ?, ?, ?)",
            facts.thumbprint, oin, facts.pem, facts.subject, _iso(facts.not_after), _iso(self.clock()))

    async def _delete_certificate(self, conn: Connection, oin: str, thumbprint: str) -> None:
        owner = await conn.fetchval("SELECT oin FROM certificates WHERE thumbprint = ?", thumbprint)
        if owner != oin:
            raise RegisterChangeRefused(f"participant {oin} has no certificate {thumbprint}")
        await conn.execute("DELETE FROM certificates WHERE thumbprint = ?", thumbprint)

    # clients and their keys

    async def add_client(self, oin: str, client_id: str, *, jwks: dict[str, Any] | None = None,
                         jwks_uri: str | None = None, actor: str) -> int:
        jwks_text, uri = _key_source(jwks, jwks_uri)

        async def apply(conn: Connection) -> None:
            await self._require_participant(conn, oin)
            if await conn.fetchval("SELECT oin FROM clients WHERE client_id = ?", client_id) is not None:
                raise RegisterChangeRefused(f"client_id {client_id!r} is already registered")
            await conn.execute("INSERT INTO clients (client_id, oin, jwks, jwks_uri, added_at) VALUES (?, ?, ?, ?, ?)",
                               client_id, oin, jwks_text, uri, _iso(self.clock()))

        return await self._change(actor, "add client", f"participant:{oin}", apply)

    async def rotate_client_keys(self, client_id: str, *, jwks: dict[str, Any] | None = None,
                                 jwks_uri: str | None = None, actor: str) -> int:
        jwks_text, uri = _key_source(jwks, jwks_uri)
        oin = await self._client_owner(client_id)

        async def apply(conn: Connection) -> None:
            await conn.execute("UPDATE clients SET jwks = ?, jwks_uri = ? WHERE client_id = ?", jwks_text, uri,
                               client_id)

        return await self._change(actor, "rotate client keys", f"participant:{oin}", apply)

    async def remove_client(self, client_id: str, *, actor: str) -> int:
        oin = await self._client_owner(client_id)

        async def apply(conn: Connection) -> None:
            await conn.execute("DELETE FROM clients WHERE client_id = ?", client_id)

        return await self._change(actor, "remove client", f"participant:{oin}", apply)

    async def _client_owner(self, client_id: str) -> str:
        async with self.db.transaction() as conn:
            oin = await conn.fetchval("SELECT oin FROM clients WHERE client_id = ?", client_id)
        if oin is None:
            raise RegisterChangeRefused(f"no client with client_id {client_id!r}")
        return str(oin)

    # keurmerken

    async def grant_keurmerk(self, oin: str, data_service: str, role: Role, *, valid_from: datetime | None = None,
                             valid_until: datetime | None = None, actor: str) -> int:
        """Grant (or renew) a keurmerk for one data service in one role; it is active from `valid_from`."""
        start = valid_from or self.clock()
        if valid_until is not None and valid_until <= start:
            raise RegisterChangeRefused("valid_until must be after valid_from")
        if not data_service:
            raise RegisterChangeRefused("a keurmerk needs a data service")

        async def apply(conn: Connection) -> None:
            await self._require_participant(conn, oin)
            await conn.execute("DELETE FROM keurmerken WHERE oin = ? AND data_service = ? AND role = ?",
                               oin, data_service, role.value)
            await conn.execute(
                "INSERT INTO keurmerken (oin, data_service, role, status, valid_from, valid_until)"
                " VALUES (?, ?, ?, 'active', ?, ?)", oin, data_service, role.value, _iso(start), _iso(valid_until))

        return await self._change(actor, f"grant keurmerk {data_service}/{role.value}", f"participant:{oin}", apply)

    async def set_keurmerk_status(self, oin: str, data_service: str, role: Role, status: KeurmerkStatus, *,
                                  reason: str | None = None, actor: str) -> int:
        """Suspend, revoke, or reinstate (active) a keurmerk. Suspending and revoking need a reason."""
        if status is not KeurmerkStatus.ACTIVE and not reason:
            raise RegisterChangeRefused(f"a reason is required to set a keurmerk {status.value}")

        async def apply(conn: Connection) -> None:
            found = await conn.fetchval("SELECT status FROM keurmerken WHERE oin = ? AND data_service = ? AND role = ?",
                                        oin, data_service, role.value)
            if found is None:
                raise RegisterChangeRefused(f"participant {oin} holds no keurmerk {data_service}/{role.value}")
            await conn.execute(
                "UPDATE keurmerken SET status = ?, status_reason = ? WHERE oin = ? AND data_service = ? AND role = ?",
                status.value, reason, oin, data_service, role.value)

        action = f"set keurmerk {data_service}/{role.value} {status.value}"
        return await self._change(actor, action, f"participant:{oin}", apply)

    # trusted CAs and the catalogue

    async def add_trusted_ca(self, pem: str, *, actor: str) -> int:
        try:
            facts = credentials.ca_certificate(pem)
        except credentials.CredentialRefused as exc:
            raise RegisterChangeRefused(str(exc)) from exc

        async def apply(conn: Connection) -> None:
            if await conn.fetchval("SELECT subject FROM trusted_cas WHERE fingerprint = ?", facts.thumbprint):
                raise RegisterChangeRefused(f"CA {facts.thumbprint} is already trusted")
            await conn.execute(
                "INSERT INTO trusted_cas (fingerprint, subject, pem, not_after, added_at) VALUES (?, ?, ?, ?, ?)",
                facts.thumbprint, facts.subject, facts.pem, _iso(facts.not_after), _iso(self.clock()))

        return await self._change(actor, "add trusted CA", f"ca:{facts.thumbprint}", apply)

    async def remove_trusted_ca(self, fingerprint: str, *, actor: str) -> int:
        async def apply(conn: Connection) -> None:
            if await conn.fetchval("SELECT subject FROM trusted_cas WHERE fingerprint = ?", fingerprint) is None:
                raise RegisterChangeRefused(f"no trusted CA {fingerprint}")
            await conn.execute("DELETE FROM trusted_cas WHERE fingerprint = ?", fingerprint)

        return await self._change(actor, "remove trusted CA", f"ca:{fingerprint}", apply)

    async def set_catalogue_version(self, version: str, *, actor: str) -> int:
        if not version:
            raise RegisterChangeRefused("a catalogue version is required")

        async def apply(conn: Connection) -> None:
            await conn.execute("UPDATE register_state SET catalogue_version = ? WHERE id = 1", version)

        return await self._change(actor, "set catalogue version", "catalogue", apply)

    # export and import

    async def export(self) -> dict[str, Any]:
        """Everything needed to rebuild the register elsewhere: the document plus certificate PEMs."""
        serial, text = await self.document()
        document = json.loads(text)
        async with self.db.transaction() as conn:
            certificates = await conn.fetch("SELECT oin, pem FROM certificates ORDER BY thumbprint")
            reasons = await conn.fetch("SELECT oin, data_service, role, status_reason FROM keurmerken"
                                       " WHERE status_reason IS NOT NULL")
        return {
            "format": EXPORT_FORMAT,
            "serial": serial,
            "register": document,
            "certificates": [{"oin": r["oin"], "pem": r["pem"]} for r in certificates],
            "keurmerk_reasons": [dict(r) for r in reasons],
        }

    async def import_register(self, data: dict[str, Any], *, actor: str) -> int:
        """Replace the register's content with an export. The serial still moves forward, never back, so
        nodes that follow this register accept the result."""
        if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
            raise RegisterChangeRefused(f"not an edugate register export (format {EXPORT_FORMAT})")
        try:
            export = RegisterExport.model_validate(data)
            raw = export.document.model_dump()
            raw["serial"] = max(raw["serial"], 1)
            document = RegisterDocument.model_validate(raw)
        except ValidationError as exc:
            raise RegisterChangeRefused(_validation_message(exc)) from exc
        try:
            certificates = [(c.oin, credentials.participant_certificate(c.pem, c.oin)) for c in export.certificates]
            cas = [credentials.ca_certificate(pem) for pem in document.trusted_cas]
        except credentials.CredentialRefused as exc:
            raise RegisterChangeRefused(f"export certificates unusable: {exc}") from exc
        reasons = {(r.oin, r.data_service, r.role): r.status_reason for r in export.keurmerk_reasons}

        async def apply(conn: Connection) -> None:
            for table in ("keurmerken", "clients", "certificates", "participants", "trusted_cas"):
                await conn.execute(f"DELETE FROM {table}")
            now = _iso(self.clock())
            await conn.execute("UPDATE register_state SET catalogue_version = ? WHERE id = 1",
                               document.catalogue_version)
            for p in document.participants:
                await conn.execute(
                    "INSERT INTO participants (oin, name, kvk, contact, status, status_reason, withdrawal_effective,"
                    " withdrawal_reason, endpoint_token, endpoint_api, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    p.oin, p.name, p.kvk, p.contact, p.status.value, p.status_reason, _iso(p.withdrawal_effective),
                    p.withdrawal_reason, p.endpoints.token, p.endpoints.api, now, now)
                for c in p.clients:
                    await conn.execute(
                        "INSERT INTO clients (client_id, oin, jwks, jwks_uri, added_at) VALUES (?, ?, ?, ?, ?)",
                        c.client_id, p.oin, json.dumps(c.jwks) if c.jwks else None, c.jwks_uri, now)
                for k in p.keurmerken:
                    await conn.execute(
                        "INSERT INTO keurmerken (oin, data_service, role, status, status_reason, valid_from,"
                        " valid_until) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        p.oin, k.data_service, k.role.value, k.status.value,
                        reasons.get((p.oin, k.data_service, k.role.value)), _iso(k.valid_from), _iso(k.valid_until))
            for oin, facts in certificates:
                await self._insert_certificate(conn, oin, facts)
            for ca in cas:
                await conn.execute(
                    "INSERT INTO trusted_cas (fingerprint, subject, pem, not_after, added_at) VALUES (?, ?, ?, ?, ?)",
                    ca.thumbprint, ca.subject, ca.pem, _iso(ca.not_after), now)

        # Nodes that followed the exported register hold its serial: go past it, or they would refuse a rollback.
        return await self._change(actor, "import register", "register", apply, floor=export.serial)


class _ExportCertificate(BaseModel):
    oin: str
    pem: str


class _KeurmerkReason(BaseModel):
    oin: str
    data_service: str
    role: str
    status_reason: str | None


class _ExportedRegister(BaseModel, extra="allow"):
    """The exported document, validated whole as a RegisterDocument once its serial is made usable."""

    serial: int = 1


class RegisterExport(BaseModel):
    """The envelope `export()` writes: checked before use, so that an edited or foreign file is refused saying what
    is wrong (a missing `register`, a serial the database cannot hold) instead of failing half-way. (Its `format`
    is checked before, with a message of its own.)"""

    serial: StrictInt = Field(0, ge=0, le=MAX_SERIAL)
    # `register` is ABCMeta's method on every model, which pydantic would take as the field's default: an alias
    document: _ExportedRegister = Field(alias="register")
    certificates: list[_ExportCertificate] = []
    keurmerk_reasons: list[_KeurmerkReason] = []


def _key_source(jwks: dict[str, Any] | None, jwks_uri: str | None) -> tuple[str | None, str | None]:
    if (jwks is None) == (jwks_uri is None):
        raise RegisterChangeRefused("give exactly one of a JWKS and a jwks_uri")
    try:
        if jwks is not None:
            return json.dumps(credentials.public_jwks(jwks), sort_keys=True), None
        assert jwks_uri is not None
        return None, credentials.https_uri(jwks_uri)
    except credentials.CredentialRefused as exc:
        raise RegisterChangeRefused(str(exc)) from exc


def _subject_state(document: dict[str, Any], subject: str) -> Any:
    """The part of a register document a history entry is about, for its before/after."""
    kind, _, key = subject.partition(":")
    if kind == "participant":
        return next((p for p in document.get("participants", []) if p["oin"] == key), None)
    if kind == "ca":
        present = [pem for pem in document.get("trusted_cas", []) if _fingerprint(pem) == key]
        return {"fingerprint": key, "subject": _subject_of(present[0])} if present else None
    if kind == "catalogue":
        return {"catalogue_version": document.get("catalogue_version")}
    return {"serial": document.get("serial"), "participants": len(document.get("participants", [])),
            "trusted_cas": len(document.get("trusted_cas", []))}


def _fingerprint(pem: str) -> str:
    from cryptography import x509

    return credentials.thumbprint(x509.load_pem_x509_certificate(pem.encode()))


def _subject_of(pem: str) -> str:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem.encode()).subject.rfc4514_string()


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'register'}: {error['msg'].removeprefix('Value error, ')}"
        for error in exc.errors()
    )
