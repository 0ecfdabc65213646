"""Per-recipient pseudonyms of the ECK iD: each receiving participant sees its own, consistent, pseudonym of a
student, so that two receivers cannot link their data through the shared chain identifier.

The transformation
    A keyed permutation of the ECK iD's 64 bytes: a four-round Feistel network (Luby-Rackoff) over two 32-byte
    halves, each round function HMAC-SHA256(round key, round number || half). Four rounds with a pseudorandom
    round function give a strong pseudorandom permutation, so the pseudonym is again 128 hex characters after
    `https://ketenid.nl/201703/` (it passes every schema that takes an ECK iD) and tells nothing about the ECK iD
    or about the same student's pseudonym at another receiver. The same key inverts it: a reply or a request
    naming a pseudonym is translated back on the way to the source.

Key handling
    - One node secret of 32 random bytes, in the file `[pseudonyms] key` of the node config, or
      `<state_dir>/pseudonym.key` when not set: created with mode 0600 on first start (never overwritten), read
      as raw bytes after that. It never leaves the node, is never logged, and is not in the register.
    - The key for a recipient is HKDF-SHA256(secret, salt="edugate pseudonym v1", info=recipient OIN), derived
      when first needed and kept in memory. Only the source's node (the one that releases the data) holds the
      secret; the recipient only ever sees pseudonyms.
    - All nodes of one participant that serve the same data must share the secret (copy the file), or the same
      student gets different pseudonyms depending on the node that answered.
    - Replacing the secret changes every pseudonym for every recipient: recipients then see new students. Do it
      only with the schools' agreement (e.g. after a leak), as it breaks the continuity of their data.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from trust.eckid import EckId
from trust.keys import load_or_create_file

if TYPE_CHECKING:
    from gateway.config import NodeConfig

SECRET_SIZE = 32
_SALT = b"edugate pseudonym v1"
_ROUNDS = 4
_HALF = 32


class Pseudonyms:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < SECRET_SIZE:
            raise ValueError(f"the pseudonym secret must be at least {SECRET_SIZE} bytes")
        self._secret = bytes(secret)
        self._keys: dict[str, bytes] = {}

    def _key(self, recipient: str) -> bytes:
        key = self._keys.get(recipient)
        if key is None:
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=recipient.encode()).derive(self._secret)
            self._keys[recipient] = key
        return key

    @staticmethod
    def _round(key: bytes, number: int, half: bytes) -> bytes:
        return hmac.new(key, bytes([number]) + half, hashlib.sha256).digest()

    def pseudonymise(self, eck_id: EckId, recipient: str) -> EckId:
        """The pseudonym of `eck_id` for the participant with OIN `recipient`."""
        key = self._key(recipient)
        digest = eck_id.digest
        left, right = digest[:_HALF], digest[_HALF:]
        for number in range(_ROUNDS):
            left, right = right, bytes(a ^ b for a, b in zip(left, self._round(key, number, right), strict=True))
        return EckId.from_digest(left + right)

    def reveal(self, pseudonym: EckId, recipient: str) -> EckId:
        """The ECK iD behind a pseudonym that was made for `recipient` (the inverse of `pseudonymise`)."""
        key = self._key(recipient)
        digest = pseudonym.digest
        left, right = digest[:_HALF], digest[_HALF:]
        for number in reversed(range(_ROUNDS)):
            left, right = bytes(a ^ b for a, b in zip(right, self._round(key, number, left), strict=True)), left
        return EckId.from_digest(left + right)

    @classmethod
    def load_or_create(cls, path: Path) -> Pseudonyms:
        """The secret at `path` (raw bytes), or 32 new random bytes written there with mode 0600, never overwriting."""
        return cls(load_or_create_file(path, lambda: os.urandom(SECRET_SIZE)))


def load_pseudonyms(config: NodeConfig) -> Pseudonyms | None:
    """The node's pseudonym keys, or None when no data service in the catalogue asks for pseudonyms (then no secret
    is made)."""
    from gateway.catalogue import load_catalogue

    catalogue = load_catalogue(config.catalogue)
    if not any(service.pseudonymise for service in catalogue.services.values()):
        return None
    return Pseudonyms.load_or_create(config.pseudonyms.key or config.node.state_dir / "pseudonym.key")
