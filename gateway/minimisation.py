"""Data minimisation: a payload cut to an allowlist of JSON paths, with direct identifiers refused.

Paths name members from the root, `.` between members and `[]` for the items of an array:
`status`, `student.id`, `records[].student.id`, `[].id` (items of a root array), `grid[][].x`. A path names a
member and everything under it; a member whose path is not listed (and not under a listed one) is removed and
counted, or, where the data service says so, refused. A `null` in place of an expected object or array carries
nothing and is kept.

Whatever stays is also searched for direct identifiers that must not travel where the ECK iD serves
(`trust.direct_identifiers`): a PGN/BSN anywhere, an e-mail address outside the fields allowed to hold one, a
name member unless its own path is listed (a listed parent such as `additionalInfo` does not license a
`firstName` inside it). These refuse the payload in every mode: removing them would hide a sender's error.

Nothing here repeats a value: refusals and counts name paths only, as templates (`records[].note`, no indexes).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from trust.direct_identifiers import IdentifierKind, identifier_in, is_name_key, might_hold_identifier

_SEGMENT = re.compile(r"([A-Za-z0-9_$@\-]*)((?:\[\])*)")


class PathError(ValueError):
    """A JSON path that does not follow the grammar, or paths that disagree about a member's shape."""


class MinimisationRefused(ValueError):
    """The payload may not travel. `path` is the template of the offending member; never its value."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class FieldNotAllowed(MinimisationRefused):
    pass


class DirectIdentifier(MinimisationRefused):
    def __init__(self, message: str, path: str, kind: IdentifierKind) -> None:
        super().__init__(message, path)
        self.kind = kind


Step = tuple[Literal["key"], str] | tuple[Literal["item"], None]


@functools.lru_cache(maxsize=1024)
def parse_path(path: str) -> tuple[Step, ...]:
    """`records[].student.id` -> key records, item, key student, key id. Cached: the catalogue's paths are
    few and are looked up on every exchange."""
    if not path or path != path.strip():
        raise PathError(f"{path!r}: a JSON path is a non-empty string without surrounding spaces")
    steps: list[Step] = []
    for index, segment in enumerate(path.split(".")):
        found = _SEGMENT.fullmatch(segment)
        if found is None or (not found.group(1) and (index > 0 or not found.group(2))):
            raise PathError(f"{path!r}: segment {segment!r} is not a member name followed by any number of []")
        if found.group(1):
            steps.append(("key", found.group(1)))
        steps.extend([("item", None)] * (len(found.group(2)) // 2))
    return tuple(steps)


def template(steps: Iterable[Step]) -> str:
    """The path of parsed steps, as written in the catalogue: `records[].student.id`."""
    out = ""
    for kind, name in steps:
        out += "[]" if kind == "item" else (f".{name}" if out else str(name))
    return out


# The compiled allowlist is a tree: LEAF (everything under it), an object node (member -> node) or an array node.
@dataclass
class _Node:
    kind: Literal["leaf", "object", "array"]
    members: dict[str, _Node] = field(default_factory=dict)
    item: _Node | None = None


def _insert(node: _Node, steps: tuple[Step, ...], path: str) -> _Node:
    if not steps:
        return _Node("leaf")
    kind, name = steps[0]
    wanted: Literal["object", "array"] = "object" if kind == "key" else "array"
    if node.kind == "leaf":
        return node
    if node.kind != wanted:
        if node.members or node.item:
            raise PathError(f"{path!r}: another path makes this member an {node.kind}, this one an {wanted}")
        node.kind = wanted
    if kind == "key":
        assert name is not None
        child = node.members.get(name, _Node("object"))
        node.members[name] = _insert(child, steps[1:], path)
    else:
        node.item = _insert(node.item or _Node("object"), steps[1:], path)
    return node


@dataclass(frozen=True)
class Minimised:
    payload: Any
    removed: int  # members (or array items) cut, each counted once whatever it held
    removed_paths: tuple[str, ...]  # their templates, for a log message


class Allowlist:
    """The allowed JSON paths of a payload, compiled for filtering."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = tuple(paths)
        root = _Node("object")
        for path in self.paths:
            root = _insert(root, parse_path(path), path)
        self._root = root
        # Name members are only allowed where their own path is listed.
        self._named = {template(parse_path(p)) for p in self.paths}

    def allows(self, path: str) -> bool:
        """Whether a value at `path` (a template) may stay: its path, or a parent's, is listed."""
        return self._reach(path) == "leaf"

    def on_the_way(self, path: str) -> bool:
        """Whether `path` is a container on the way to a listed path (kept, holding only what is listed)."""
        return self._reach(path) in {"object", "array"}

    def _reach(self, path: str) -> str | None:
        node: _Node | None = self._root
        for kind, name in parse_path(path):
            if node is None:
                return None
            if node.kind == "leaf":
                return "leaf"
            if kind == "key" and node.kind == "object":
                assert name is not None
                node = node.members.get(name)
            elif kind == "item" and node.kind == "array":
                node = node.item
            else:
                return None
        return node.kind if node is not None else None

    def minimise(
        self, payload: Any, *, refuse_extra: bool, email_paths: Iterable[str] = ()
    ) -> Minimised:
        """`payload` cut to the allowlist. Raises FieldNotAllowed (extra member, when `refuse_extra`) or
        DirectIdentifier (a PGN, an e-mail address, a name member that may not travel)."""
        walk = _Walk(refuse_extra, frozenset(email_paths), self._named)
        result = walk.filter(payload, self._root, "")
        return Minimised(None if result is _REMOVED else result, walk.removed, tuple(walk.removed_paths))


_REMOVED = object()
_WHAT = {"pgn": "a BSN/PGN (a 9-digit number passing the eleven-test)", "email": "an e-mail address", "name": "a name"}


class _Walk:
    """One pass over a payload. Paths are carried as template strings (`records[].student.id`), built as it goes."""

    def __init__(self, refuse_extra: bool, email_paths: frozenset[str], named: set[str]) -> None:
        self.refuse_extra = refuse_extra
        self.email_paths = email_paths
        self.named = named
        self.removed = 0
        self.removed_paths: list[str] = []

    def cut(self, path: str) -> object:
        path = path or "(root)"
        if self.refuse_extra:
            raise FieldNotAllowed(f"field {path!r} is not allowed for this data service", path)
        self.removed += 1
        if path not in self.removed_paths:
            self.removed_paths.append(path)
        return _REMOVED

    def filter(self, value: Any, node: _Node, path: str) -> Any:
        if node.kind == "leaf":
            self.inspect(value, path)
            return value
        if value is None:
            return None
        if node.kind == "object":
            if not isinstance(value, dict):
                return self.cut(path)
            kept: dict[str, Any] = {}
            members = node.members
            for key, member in value.items():
                here = f"{path}.{key}" if path else key
                if _key_kind(key) is not None:  # most member names are nothing: no call to check_key
                    self.check_key(key, here, path)
                child = members.get(key)
                if child is None:
                    self.cut(here)
                    continue
                if child.kind == "leaf" and type(member) is str:
                    # The most common member, an allowed text, inspected here as `inspect` would: one call, not three.
                    if might_hold_identifier(member):
                        self.refuse_identifier(member, here)
                    kept[key] = member
                    continue
                result = self.filter(member, child, here)
                if result is not _REMOVED:
                    kept[key] = result
            return kept
        if not isinstance(value, list):
            return self.cut(path)
        assert node.item is not None
        item_node, here = node.item, path + "[]"
        items = [self.filter(item, item_node, here) for item in value]
        return [item for item in items if item is not _REMOVED]

    def check_key(self, key: str, path: str, parent: str) -> None:
        """A member name that is a name field outside the allowlist, or is itself a PGN or e-mail address."""
        kind = _key_kind(key)
        if kind is None:
            return
        if kind == "name":
            if path not in self.named:
                raise DirectIdentifier(
                    f"field {path!r} holds a name, which may not travel where the ECK iD serves", path, "name"
                )
            return
        masked = f"{parent}.(identifier)" if parent else "(identifier)"  # the name itself is the identifier
        raise DirectIdentifier(f"a member name at {masked!r} is {_WHAT[kind]}, which may not travel", masked, kind)

    def inspect(self, value: Any, path: str) -> None:
        """An allowed value, searched (with everything under it) for direct identifiers."""
        if isinstance(value, dict):
            for key, member in value.items():
                here = f"{path}.{key}" if path else key
                if _key_kind(key) is not None:
                    self.check_key(key, here, path)
                self.inspect(member, here)
        elif isinstance(value, list):
            here = path + "[]"
            for item in value:
                self.inspect(item, here)
        elif isinstance(value, str):
            if might_hold_identifier(value):  # nearly every text is decided by this one scan
                self.refuse_identifier(value, path)
        elif isinstance(value, int) and not isinstance(value, bool):
            self.refuse_identifier(value, path)

    def refuse_identifier(self, value: str | int, path: str) -> None:
        """A scalar at `path` that is a PGN or an e-mail address (where none may stand) is refused."""
        found = identifier_in(value, email_allowed=path in self.email_paths)
        if found is not None:
            raise DirectIdentifier(f"field {path!r} holds {_WHAT[found]}, which may not travel", path, found)


@functools.lru_cache(maxsize=4096)
def _key_kind(key: str) -> IdentifierKind | None:
    """What a member name is, if it is anything that may not travel (member names repeat: cached)."""
    if is_name_key(key):
        return "name"
    return identifier_in(key)


# The walks below are module functions, not closures: a nested function that calls itself is a reference cycle
# (function, cell), which only the cyclic collector frees, and values_at runs twice per exchange.


def values_at(payload: Any, path: str) -> list[Any]:
    """Every value at `path` in `payload` (several where the path crosses arrays); absent members give nothing."""
    found: list[Any] = []
    _collect_at(payload, parse_path(path), found)
    return found


def _collect_at(value: Any, steps: tuple[Step, ...], found: list[Any]) -> None:
    if not steps:
        found.append(value)
        return
    kind, name = steps[0]
    if kind == "key" and isinstance(value, dict) and name in value:
        _collect_at(value[name], steps[1:], found)
    elif kind == "item" and isinstance(value, list):
        for item in value:
            _collect_at(item, steps[1:], found)


def replace_at(payload: Any, path: str, change: Callable[[Any], Any]) -> Any:
    """A copy of `payload` with every value at `path` replaced by `change(value)`."""
    return _replaced_at(payload, parse_path(path), change)


def _replaced_at(value: Any, steps: tuple[Step, ...], change: Callable[[Any], Any]) -> Any:
    if not steps:
        return change(value)
    kind, name = steps[0]
    if kind == "key" and isinstance(value, dict) and name in value:
        return {**value, name: _replaced_at(value[name], steps[1:], change)}
    if kind == "item" and isinstance(value, list):
        return [_replaced_at(item, steps[1:], change) for item in value]
    return value


def value_paths(payload: Any) -> tuple[set[str], set[str]]:
    """The templates of every container (object or array, not the root) and of every non-null scalar in
    `payload`: what a test compares with the allowlist."""
    containers: set[str] = set()
    scalars: set[str] = set()

    def walk(value: Any, steps: tuple[Step, ...]) -> None:
        if isinstance(value, dict | list):
            if steps:
                containers.add(template(steps))
        elif value is not None:
            scalars.add(template(steps) or "(root)")
        if isinstance(value, dict):
            for key, member in value.items():
                walk(member, (*steps, ("key", key)))
        elif isinstance(value, list):
            for item in value:
                walk(item, (*steps, ("item", None)))

    walk(payload, ())
    return containers, scalars


def scan_identifiers(payload: Any, *, email_paths: Iterable[str] = ()) -> None:
    """Raise DirectIdentifier if anything in `payload` is a direct identifier (for services with no allowlist:
    every member may travel, but not a PGN, an e-mail address outside `email_paths`, or a name member)."""
    _Walk(refuse_extra=False, email_paths=frozenset(email_paths), named=set()).inspect(payload, "")
