"""The ECK iD: the chain pseudonym of a student, `https://ketenid.nl/201703/` followed by 128 hex characters.

It is the primary student identifier in exchanges. The gateway never needs to know who it stands for; it only
checks the form (so that a name, a PGN or an e-mail address cannot travel in its place) and hashes or
pseudonymises it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ECK_ID_PREFIX = "https://ketenid.nl/201703/"
_ECK_ID = re.compile(re.escape(ECK_ID_PREFIX) + r"([0-9a-fA-F]{128})")


class InvalidEckId(ValueError):
    """Not a well-formed ECK iD. The message never repeats the value (it may be a direct identifier)."""


@dataclass(frozen=True, slots=True)
class EckId:
    """A well-formed ECK iD. `value` is the full URI exactly as received; `pseudonym` its 128 hex characters."""

    value: str

    @classmethod
    def parse(cls, value: object) -> EckId:
        if not isinstance(value, str):
            raise InvalidEckId(f"an ECK iD is a string, got {type(value).__name__}")
        if not value.startswith(ECK_ID_PREFIX):
            raise InvalidEckId(f"an ECK iD starts with {ECK_ID_PREFIX}")
        if _ECK_ID.fullmatch(value) is None:
            raise InvalidEckId(f"an ECK iD is {ECK_ID_PREFIX} followed by exactly 128 hexadecimal characters")
        return cls(value)

    @property
    def pseudonym(self) -> str:
        """The 128 hex characters, lower-cased: the same student whatever case the sender used."""
        return self.value[len(ECK_ID_PREFIX) :].lower()

    @property
    def canonical(self) -> str:
        """One form per student, whatever case the sender used: the prefix and the lower-cased hex (the form the
        log hashes and the school looks up)."""
        return ECK_ID_PREFIX + self.pseudonym

    @property
    def digest(self) -> bytes:
        """The 64 bytes the hex stands for."""
        return bytes.fromhex(self.pseudonym)

    @classmethod
    def from_digest(cls, digest: bytes) -> EckId:
        if len(digest) != 64:
            raise InvalidEckId("an ECK iD carries exactly 64 bytes")
        return cls(ECK_ID_PREFIX + digest.hex())

    def __str__(self) -> str:
        return self.value


def is_eck_id(value: object) -> bool:
    return isinstance(value, str) and _ECK_ID.fullmatch(value) is not None
