"""The register service's tables, in SQL both SQLite and PostgreSQL accept.

Times are RFC 3339 text (UTC), JSON is text: the same rows read the same on both databases.
"""

from __future__ import annotations

_AUTO_ID = {"sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT", "postgresql": "BIGSERIAL PRIMARY KEY"}

_TABLES = """
CREATE TABLE IF NOT EXISTS register_state (
    id INTEGER PRIMARY KEY,
    serial BIGINT NOT NULL,
    catalogue_version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS participants (
    oin TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kvk TEXT,
    contact TEXT,
    status TEXT NOT NULL,
    status_reason TEXT,
    withdrawal_effective TEXT,
    withdrawal_reason TEXT,
    endpoint_token TEXT,
    endpoint_api TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS certificates (
    thumbprint TEXT PRIMARY KEY,
    oin TEXT NOT NULL REFERENCES participants(oin) ON DELETE CASCADE,
    pem TEXT NOT NULL,
    subject TEXT NOT NULL,
    not_after TEXT NOT NULL,
    added_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    oin TEXT NOT NULL REFERENCES participants(oin) ON DELETE CASCADE,
    jwks TEXT,
    jwks_uri TEXT,
    added_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS keurmerken (
    oin TEXT NOT NULL REFERENCES participants(oin) ON DELETE CASCADE,
    data_service TEXT NOT NULL,
    role TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    valid_from TEXT NOT NULL,
    valid_until TEXT,
    PRIMARY KEY (oin, data_service, role)
);
CREATE TABLE IF NOT EXISTS trusted_cas (
    fingerprint TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    pem TEXT NOT NULL,
    not_after TEXT NOT NULL,
    added_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    serial BIGINT PRIMARY KEY,
    issued_at TEXT NOT NULL,
    document TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id {auto_id},
    serial BIGINT,
    changed_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    before_state TEXT,
    after_state TEXT
);
CREATE INDEX IF NOT EXISTS history_subject ON history (subject);
CREATE TABLE IF NOT EXISTS operators (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL REFERENCES operators(username) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
"""


def statements(dialect: str) -> list[str]:
    """The DDL for `dialect`, one statement each (asyncpg and aiosqlite both run one at a time)."""
    sql = _TABLES.replace("{auto_id}", _AUTO_ID[dialect])
    return [s.strip() for s in sql.split(";") if s.strip()]
