"""The data-service catalogue: what each data service is, who may call it, and where its data sits.

Loaded from `config/catalogue.toml` and validated on load; it drives routing, keurmerk and scope checks,
school and student references, purposes and attribute restrictions.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.minimisation import Allowlist
from trust.register import Role


class Direction(StrEnum):
    PULL = "pull"  # Afnemer asks the Bron
    PUSH = "push"  # Verzender sends to the Ontvanger

    @property
    def caller_role(self) -> Role:
        return Role.AFNEMER if self is Direction.PULL else Role.VERZENDER

    @property
    def offerer_role(self) -> Role:
        return Role.BRON if self is Direction.PULL else Role.ONTVANGER


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RouteSpec(_Model):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str = Field(pattern=r"^/v\d+/")  # Edu-V: the major version is in the path

    def compile(self) -> re.Pattern[str]:
        literal = re.escape(self.path).replace(r"\{", "{").replace(r"\}", "}")
        return re.compile("^" + _PARAM.sub(lambda m: f"(?P<{m.group(1)}>[^/]+)", literal) + "$")


class ReferenceSpec(_Model):
    """Where a reference sits: `body:<json path>`, `query:<name>`, `path:<param>` or `header:<name>`."""

    request: tuple[str, ...] = ()
    response: tuple[str, ...] = ()

    @field_validator("request", "response")
    @classmethod
    def _locations(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for location in value:
            kind, _, where = location.partition(":")
            if kind not in {"body", "query", "path", "header"} or not where:
                raise ValueError(f"{location!r}: expected body:<path>, query:<name>, path:<param> or header:<name>")
        return value


class DataService(_Model):
    name: str = ""  # filled from the table key
    title: str
    scope: str = Field(min_length=1)
    data_class: Literal["I", "II", "III", "IV"]
    direction: Direction
    routes: tuple[RouteSpec, ...] = Field(min_length=1)
    purposes: tuple[str, ...] = Field(min_length=1)
    # Allowed attributes per scope, as JSON paths (`a.b`, `items[].c`), for the payload that carries
    # the data: the request body of a push, the response body of a pull.
    attributes: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    extra_fields: Literal["remove", "refuse"] = "refuse"
    school: ReferenceSpec = ReferenceSpec()
    student: ReferenceSpec = ReferenceSpec()
    pseudonymise: bool = False  # per-recipient pseudonyms of the ECK iD
    # Paths (within the allowlist) whose values may be e-mail addresses; anywhere else one is refused.
    email_fields: tuple[str, ...] = ()

    @property
    def caller_role(self) -> Role:
        return self.direction.caller_role

    def allowlist(self, scopes: frozenset[str]) -> Allowlist | None:
        """The allowlist for a token with `scopes`: the union of the paths of those of them this service names;
        None if the service restricts no attributes. Compiled once per set of scopes (tokens carry a few known
        sets), not for every exchange."""
        if not self.attributes:
            return None
        found = self.compiled_allowlists.get(scopes)
        if found is None:
            paths = tuple(path for scope, paths in self.attributes.items() if scope in scopes for path in paths)
            found = self.compiled_allowlists[scopes] = Allowlist(paths)
        return found

    @cached_property
    def compiled_allowlists(self) -> dict[frozenset[str], Allowlist]:
        """`allowlist`'s cache, by set of scopes. A cached property lives in the instance's own dict: read with a
        plain look-up, where a pydantic private attribute goes through the model's `__getattr__` (1.5 -> 0.2 us
        for `allowlist`, timeit)."""
        return {}

    @model_validator(mode="after")
    def _attributes_for_own_scope(self) -> DataService:
        for scope in self.attributes:
            if scope != self.scope:
                raise ValueError(f"attributes are given for scope {scope!r}, but the service's scope is {self.scope!r}")
        return self

    @field_validator("purposes")
    @classmethod
    def _purpose_codes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for code in value:
            if not re.fullmatch(r"[a-u]", code):
                raise ValueError(f"purpose {code!r} is not a covenant art. 5.2 code (a to u)")
        return value

    @model_validator(mode="after")
    def _paths_and_pseudonyms(self) -> DataService:
        from gateway.minimisation import Allowlist, PathError, parse_path

        try:
            for paths in self.attributes.values():
                Allowlist(paths)
            for path in self.email_fields:
                parse_path(path)
            for location in (*self.school.request, *self.student.request, *self.student.response):
                if location.startswith("body:"):
                    parse_path(location.removeprefix("body:"))
        except PathError as exc:
            raise ValueError(str(exc)) from exc
        if self.pseudonymise and any(not loc.startswith("body:") for loc in self.student.request):
            raise ValueError("pseudonymise needs the student references of requests in the body (they are translated)")
        return self


class Catalogue(_Model):
    version: str
    services: dict[str, DataService]

    @model_validator(mode="after")
    def _names_and_unique_routes(self) -> Catalogue:
        seen: dict[tuple[str, str], str] = {}
        for name, service in self.services.items():
            object.__setattr__(service, "name", name)
            for route in service.routes:
                key = (route.method, route.path)
                if key in seen:
                    raise ValueError(f"route {route.method} {route.path} is in both {seen[key]!r} and {name!r}")
                seen[key] = name
        return self

    def by_scope(self, scope: str) -> DataService | None:
        return next((s for s in self.services.values() if s.scope == scope), None)


class CatalogueError(ValueError):
    pass


def load_catalogue(path: Path) -> Catalogue:
    from gateway.config import format_validation_error, read_toml  # one reader and formatter for every config file

    raw = read_toml(path, CatalogueError)
    try:
        return Catalogue.model_validate(raw)
    except ValueError as exc:
        raise CatalogueError(format_validation_error(path, exc)) from exc
