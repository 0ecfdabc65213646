"""Purposes of processing: the codes of covenant art. 5.2 (a-u), with their Dutch and English text.

A purpose is bound into the access token at the token request (`purpose` parameter, see `allowed_purposes`), and
each exchange declares one of the token's purposes (`Edu-Purpose` header, checked by `gateway.checks.purpose`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.catalogue import Catalogue, DataService


class Purpose(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field("", pattern=r"^$|^[a-z]$")
    nl: str = Field(min_length=1)
    en: str = Field(min_length=1)

    def describe(self) -> str:
        """`'d' (analysing and interpreting learning and test results)`: for messages."""
        return f"{self.code!r} ({self.en})"


class _PurposesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    purposes: dict[str, Purpose] = Field(min_length=1)


class Purposes:
    """The known purposes, by code."""

    def __init__(self, purposes: Iterable[Purpose]) -> None:
        self._by_code = {p.code: p for p in purposes}

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def __iter__(self) -> Iterator[Purpose]:
        return iter(self._by_code.values())

    def get(self, code: str) -> Purpose | None:
        return self._by_code.get(code)

    def describe(self, code: str) -> str:
        purpose = self._by_code.get(code)
        return purpose.describe() if purpose else f"{code!r} (not a covenant art. 5.2 purpose)"

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(self._by_code)


class PurposesError(ValueError):
    pass


class PurposeRefused(ValueError):
    """A purpose asked for at the token request that the token's data services do not allow."""


def load_purposes(path: Path) -> Purposes:
    from gateway.config import format_validation_error, read_toml

    raw = read_toml(path, PurposesError)
    try:
        parsed = _PurposesFile.model_validate(raw)
        purposes = [p.model_copy(update={"code": code}) for code, p in parsed.purposes.items()]
        for purpose in purposes:
            Purpose.model_validate(purpose.model_dump())  # the table key is the code: one letter
    except ValidationError as exc:
        raise PurposesError(format_validation_error(path, exc)) from exc
    return Purposes(purposes)


def allowed_purposes(
    catalogue: Catalogue, purposes: Purposes, services: Iterable[str | DataService], requested: list[str]
) -> set[str]:
    """The purposes to bind into an access token for `services` (names or entries of the catalogue).

    With nothing requested: every purpose any of the services allows. Otherwise the requested codes, each of which
    must be a known purpose that at least one of the services allows; else PurposeRefused names it (the token
    request fails rather than silently binding less than was asked).
    """
    entries = [s if isinstance(s, DataService) else catalogue.services[s] for s in services]
    offered = {code for service in entries for code in service.purposes if code in purposes}
    if not requested:
        return offered
    for code in requested:
        if code not in purposes:
            raise PurposeRefused(f"purpose {code!r} is not a covenant art. 5.2 purpose (a to u)")
        if code not in offered:
            names = ", ".join(sorted(s.name for s in entries)) or "(none)"
            raise PurposeRefused(f"purpose {purposes.describe(code)} is not allowed for data service(s) {names}")
    return set(requested)
