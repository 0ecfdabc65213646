"""The OIN (Organisatie-identificatienummer): 20 digits; a company's is `00000003` + KvK (8) + `0000`."""

from __future__ import annotations

import re

_OIN = re.compile(r"\d{20}")


class InvalidOin(ValueError):
    pass


def parse_oin(value: str) -> str:
    """Return `value` if it is a well-formed OIN, else raise InvalidOin naming the problem."""
    if not isinstance(value, str) or not _OIN.fullmatch(value):
        raise InvalidOin(f"an OIN is exactly 20 digits, got {value!r}")
    return value


def oin_for_kvk(kvk: str) -> str:
    """The OIN of a company registered in the KvK under the 8-digit number `kvk`."""
    if not re.fullmatch(r"\d{8}", kvk):
        raise InvalidOin(f"a KvK number is exactly 8 digits, got {kvk!r}")
    return f"00000003{kvk}0000"
