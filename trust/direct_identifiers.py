"""Direct identifiers that must not travel where the ECK iD serves: BSN/PGN numbers, e-mail addresses, names.

A PGN (persoonsgebonden nummer) is the student's BSN, or, for a student without one, an onderwijsnummer.
Both are 9 digits with an eleven-test:

- BSN: 9*d1 + 8*d2 + ... + 2*d8 - 1*d9 is divisible by 11 (and the number is not all zeros);
- onderwijsnummer: starts with 10, and 9*d1 + ... + 2*d8 + 1*d9 leaves remainder 5 when divided by 11.

A number is looked for where it stands alone (not inside a longer run of letters or digits, so that the hex of an
ECK iD or a uuid never counts), written plainly (`123456782`) or in the usual groupings (`1234.56.782`,
`123 456 782`). Values found are never repeated in messages: callers get the kind, not the value.
"""

from __future__ import annotations

import re
from typing import Literal

from trust.eckid import ECK_ID_PREFIX, is_eck_id

_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2)

# Nine digits on their own, plain or grouped 4.2.3 / 3.3.3 (dots, spaces or hyphens as in "123-45-6782" are not a
# Dutch habit; only dots and spaces are taken). The pattern begins with its first digit and looks behind it from there,
# so that the regex engine skips every non-digit at C speed instead of trying the alternatives at each position:
# 4.7 -> 2.1 us over an ECK iD's 154 characters.
_NINE_DIGITS = re.compile(
    r"\d(?<![0-9A-Za-z]\d)(?:\d{8}|\d{3}\.\d{2}\.\d{3}|\d{2}[ .]\d{3}[ .]\d{3}|\d{3} \d{2} \d{3})(?![0-9A-Za-z])"
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")

# Keys that hold a person's name, compared lower-case with separators removed (Edu-V/OneRoster, UWLR, Dutch).
NAME_KEYS = frozenset(
    {
        "name", "fullname", "displayname", "formattedname",
        "firstname", "givenname", "givennames", "preferredfirstname", "preferredname", "nickname",
        "middlename", "middlenames", "lastname", "familyname", "surname", "preferredlastname",
        "familynameprefix", "lastnameprefix", "nameprefix", "initials",
        "naam", "voornaam", "voornamen", "roepnaam", "achternaam", "geslachtsnaam", "tussenvoegsel",
        "voorvoegsel", "voorletters",
    }
)  # fmt: skip

IdentifierKind = Literal["pgn", "email", "name"]


def _digits(value: str) -> list[int] | None:
    if len(value) != 9 or not value.isascii() or not value.isdigit():
        return None
    return [int(c) for c in value]


def is_bsn(value: str) -> bool:
    """A BSN: 9 digits passing the eleven-test (weights 9..2 and -1), not all zeros."""
    digits = _digits(value)
    if digits is None or not any(digits):
        return False
    total = sum(w * d for w, d in zip(_WEIGHTS, digits, strict=False)) - digits[8]
    return total % 11 == 0


def is_onderwijsnummer(value: str) -> bool:
    """An onderwijsnummer: 9 digits starting with 10, weights 9..2 and +1, remainder 5 mod 11."""
    digits = _digits(value)
    if digits is None or not value.startswith("10"):
        return False
    total = sum(w * d for w, d in zip(_WEIGHTS, digits, strict=False)) + digits[8]
    return total % 11 == 5


def is_pgn(value: str) -> bool:
    """A number that can be a student's PGN: a BSN or an onderwijsnummer."""
    return is_bsn(value) or is_onderwijsnummer(value)


def contains_pgn(text: str) -> bool:
    """Whether `text` holds, standing alone, a 9-digit number that passes an eleven-test."""
    if _NINE_DIGITS.search(text) is None:  # the common case: one C-speed scan
        return False
    return any(is_pgn(m.group(0).replace(" ", "").replace(".", "")) for m in _NINE_DIGITS.finditer(text))


def contains_email(text: str) -> bool:
    return "@" in text and _EMAIL.search(text) is not None


def is_name_key(key: str) -> bool:
    """Whether a JSON member name is one that holds a person's name (`firstName`, `last_name`, `achternaam`)."""
    return re.sub(r"[^a-z]", "", key.lower()) in NAME_KEYS


def might_hold_identifier(text: str) -> bool:
    """False when `text` can hold neither a PGN nor an e-mail address: no nine digits standing alone, no "@".
    One C-speed scan, so that walks over many values can skip the full search for nearly all of them. A well-formed
    ECK iD, the most common text of all, is let through on its form: its 128 hex characters are one run of letters and
    digits, in which no number stands alone (3.0 -> 0.3 us, timeit, for hex with a real one's digits)."""
    if "@" in text:
        return True
    if text.startswith(ECK_ID_PREFIX) and is_eck_id(text):
        return False
    return _NINE_DIGITS.search(text) is not None


def identifier_in(value: object, *, email_allowed: bool = False) -> IdentifierKind | None:
    """The kind of direct identifier a scalar JSON value holds, if any. Integers are read as digit strings."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return "pgn" if 100_000_000 <= abs(value) <= 999_999_999 and is_pgn(str(abs(value))) else None
    if not isinstance(value, str) or not might_hold_identifier(value):
        return None
    if contains_pgn(value):
        return "pgn"
    if not email_allowed and contains_email(value):
        return "email"
    return None
