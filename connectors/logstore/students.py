"""Keyed student references: the log holds HMACs of ECK iDs, never the ECK iD itself.

One node secret; a key per school derived from it, so a school can ask "which exchanges concerned this
ECK iD?" (the node hashes the ECK iD with that school's key) while a hash leaked from one school's
records says nothing about the same student at another school, and nobody without the secret can test
a guessed ECK iD against the log. The log indexes each student once per exchange (`StudentIndex`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import TYPE_CHECKING

from trust.keys import load_or_create_file

if TYPE_CHECKING:
    from collections.abc import Sequence
    from hashlib import _Hash

    from connectors.logstore.base import Row
    from connectors.logstore.record import ExchangeRecord

SECRET_SIZE = 32
_KEY_LABEL = b"edugate student key v1\x00"


class StudentHasher:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < SECRET_SIZE:
            raise ValueError(f"the student-hash secret must be at least {SECRET_SIZE} bytes")
        self._secret = bytes(secret)
        self._keys: dict[str, bytes] = {}  # derived once per school: this runs for every exchange
        # Per school, the SHA-256 states after the HMAC's inner and outer key blocks (RFC 2104): a hash then copies
        # them instead of keying an HMAC afresh (OpenSSL 3 makes that slow): 2.0 -> 1.0 us per hash.
        self._pads: dict[str, tuple[_Hash, _Hash]] = {}

    def key_for(self, school: str) -> bytes:
        key = self._keys.get(school)
        if key is None:
            if len(self._keys) >= 100_000:  # bounded: a flood of made-up school ids cannot grow it forever
                self._keys.clear()
            key = self._keys[school] = hmac.new(self._secret, _KEY_LABEL + school.encode(), hashlib.sha256).digest()
        return key

    def hash(self, school: str, eck_id: str) -> str:
        """hex HMAC-SHA256(key_for(school), eck_id)."""
        pads = self._pads.get(school)
        if pads is None:
            if len(self._pads) >= 100_000:  # bounded like the keys
                self._pads.clear()
            pads = self._pads[school] = hmac_pads(self.key_for(school))
        inner = pads[0].copy()
        inner.update(eck_id.encode())
        outer = pads[1].copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    @classmethod
    def load_or_create(cls, path: Path) -> StudentHasher:
        """The secret at `path` (raw bytes), or 32 new random bytes written there with mode 0600, never overwriting."""
        return cls(load_or_create_file(path, lambda: os.urandom(SECRET_SIZE)))


_BLOCK = 64  # SHA-256's block size
_INNER = bytes(b ^ 0x36 for b in range(256))
_OUTER = bytes(b ^ 0x5C for b in range(256))


def hmac_pads(key: bytes) -> tuple[_Hash, _Hash]:
    """SHA-256 fed with the inner and the outer padded key of HMAC-SHA256 (RFC 2104, as Python's own hmac module
    builds them without OpenSSL): HMAC(key, m) = outer.update(inner.update(m).digest()).digest()."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return hashlib.sha256(key.translate(_INNER)), hashlib.sha256(key.translate(_OUTER))


class StudentIndex:
    """Which students each record adds to the log's student index. The index answers "which exchanges concerned
    this student": one row per student and exchange is enough, at the first record of the exchange that names it.
    An admitted exchange's outcome names the students of its decision again (and a pull answer's); indexing only
    the answer's saves a row with a random key per student, the costliest row a commit writes.

    It remembers what the committed decisions of admitted exchanges indexed, until their outcome is committed.
    What it forgets (past `limit` exchanges still open, or a restart) is indexed again: a spare row, never a
    missing one. Only committed rows are remembered, so a failed batch leaves nothing unindexed."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._open: dict[str, tuple[str, ...]] = {}  # exchange id -> students indexed, oldest first

    def adds(self, record: ExchangeRecord) -> tuple[str, ...]:
        """The student hashes to index for `record`, each once."""
        named = record.student_hashes
        if record.kind == "outcome":
            indexed = self._open.get(record.exchange_id)
            if indexed is not None:
                if named == indexed:  # a push: its outcome names what its decision named
                    return ()
                return tuple(h for h in dict.fromkeys(named) if h not in indexed)
        return named if len(named) < 2 else tuple(dict.fromkeys(named))

    def committed(self, rows: Sequence[Row]) -> None:
        """Note a committed batch: an admitted decision's students until its outcome comes."""
        remembered = self._open
        for row in rows:
            r = row.record
            if r.kind == "outcome":
                if remembered:
                    remembered.pop(r.exchange_id, None)
            elif row.students and r.decision == "allowed":
                remembered[r.exchange_id] = row.students
                if len(remembered) > self.limit:
                    del remembered[next(iter(remembered))]
