"""Keyed student references: the log holds HMACs of ECK iDs, never the ECK iD itself.

One node secret; a key per school derived from it, so a school can ask "which exchanges concerned this
ECK iD?" (the node hashes the ECK iD with that school's key) while a hash leaked from one school's
records says nothing about the same student at another school, and nobody without the secret can test
a guessed ECK iD against the log.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from trust.keys import load_or_create_file

SECRET_SIZE = 32
_KEY_LABEL = b"edugate student key v1\x00"


class StudentHasher:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < SECRET_SIZE:
            raise ValueError(f"the student-hash secret must be at least {SECRET_SIZE} bytes")
        self._secret = bytes(secret)
        self._keys: dict[str, bytes] = {}  # derived once per school: this runs for every exchange

    def key_for(self, school: str) -> bytes:
        key = self._keys.get(school)
        if key is None:
            if len(self._keys) >= 100_000:  # bounded: a flood of made-up school ids cannot grow it forever
                self._keys.clear()
            key = self._keys[school] = hmac.new(self._secret, _KEY_LABEL + school.encode(), hashlib.sha256).digest()
        return key

    def hash(self, school: str, eck_id: str) -> str:
        """hex HMAC-SHA256(key_for(school), eck_id)."""
        return hmac.new(self.key_for(school), eck_id.encode(), hashlib.sha256).hexdigest()

    @classmethod
    def load_or_create(cls, path: Path) -> StudentHasher:
        """The secret at `path` (raw bytes), or 32 new random bytes written there with mode 0600, never overwriting."""
        return cls(load_or_create_file(path, lambda: os.urandom(SECRET_SIZE)))
