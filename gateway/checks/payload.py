"""The request body as JSON, read once (within the node's size limit) for the checks that need it, and the
values at a reference location (`body:<path>`, `query:<name>`, `path:<param>`, `header:<name>`)."""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import TYPE_CHECKING, Any

import msgspec

from connectors.bodies import read_within
from gateway.denials import AmbiguousRequest, PayloadTooLarge, RequestTimeout, SchemaIncorrect
from gateway.exchange import Exchange
from gateway.http1 import Request
from gateway.minimisation import values_at

if TYPE_CHECKING:
    from gateway.node import Node

_UNREAD = object()


async def read_body(node: Node, x: Exchange, *, step: str) -> bytes:
    """The whole request body, refused past `limits.max_body_bytes` (checked before and while reading)."""
    if x.body is not None:
        return x.body
    limit = node.config.limits.max_body_bytes
    declared = x.request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes", step=step)
    try:
        if isinstance(x.request, Request):  # the exchange port's body stream times out by itself, between packets
            body = await read_within(x.request.content, limit)
        else:  # aiohttp's is given the time in all
            async with asyncio.timeout(node.config.limits.body_timeout):
                body = await read_within(x.request.content, limit)
    except ConnectionError as exc:  # the client's doing, not the node's: refused and logged like any bad request
        raise AmbiguousRequest("the client closed the connection before the request body ended", step=step) from exc
    except TimeoutError as exc:  # only the body is awaited here: the client stopped sending it
        raise RequestTimeout(
            str(exc) or f"the request body did not arrive within {node.config.limits.body_timeout:g} s", step=step
        ) from exc
    if body is None:
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes", step=step)
    x.body = body
    return x.body


# A body is JSON as RFC 8259 has it: UTF-8, no NaN or Infinity, every number in range, every string Unicode (no
# unpaired surrogate escape). Defined as json.loads held to that (`_strict`), whose exact error a refusal gives; a
# body json.loads would take but RFC 8259 does not, or one past what the interpreter can hold (more digits than
# int() takes, deeper nesting than its recursion limit), is refused with 0011 like any other, never a crash, and
# never re-serialised into something that is not JSON.
#
# msgspec decodes a request body ~4x faster than json.loads (0.9 against 3.9 us for a Progress body). It is used
# only where it gives exactly what the definition gives: floats go through Python's float() (`_finite`), and
# whatever msgspec refuses (NaN/Infinity, lone surrogates, BOMs, UTF-16/32, invalid UTF-8, numbers out of range,
# errors of any kind) is parsed again by `_strict`, for its result or its exact error. Its recursion guard trips a
# few levels later than json's, so a body that may nest deeply (many brackets) goes to `_strict` directly.
_FAST_CONTAINERS = 200  # nesting far below the recursion limit, from any stack the checks run on
_SURROGATE = re.compile("[\ud800-\udfff]")


class _NotJson(ValueError):
    """What json.loads takes but RFC 8259 does not."""


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotJson("a number is out of range")
    return value


def _constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value")


_DECODER = msgspec.json.Decoder(float_hook=_finite)
_REFUSED = object()


def _decoded(body: bytes) -> Any:
    try:
        return _DECODER.decode(body)
    except Exception:  # the definition decides: the same value or the same error
        return _REFUSED


def _unpaired_surrogate(value: Any) -> bool:
    """Whether any string or key in `value` holds a surrogate (json.loads lets "\\ud800" through alone).
    Without recursion: `value` may nest as deep as json.loads went."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _strict(body: bytes, *, what: str, step: str) -> Any:
    """The definition: json.loads of the UTF-8 text, held to RFC 8259. The message names the position or the
    kind of problem, never the content."""
    try:
        text = body.decode("utf-8")  # strict: neither UTF-16/32 (which json.loads would detect) nor surrogates
    except UnicodeDecodeError as exc:
        raise SchemaIncorrect(f"the {what} is not UTF-8 JSON", step=step) from exc
    try:
        value = json.loads(text, parse_float=_finite, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise SchemaIncorrect(f"the {what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                              step=step) from exc
    except _NotJson as exc:
        raise SchemaIncorrect(f"the {what} is not valid JSON: {exc}", step=step) from exc
    except RecursionError as exc:
        raise SchemaIncorrect(f"the {what} nests deeper than this node reads", step=step) from exc
    except ValueError as exc:  # int(): more digits than sys.get_int_max_str_digits()
        raise SchemaIncorrect(f"the {what} holds a number with more digits than this node reads", step=step) from exc
    if _unpaired_surrogate(value):
        raise SchemaIncorrect(f"the {what} is not valid JSON: a string holds an unpaired surrogate", step=step)
    return value


def parse_json(body: bytes, *, what: str, step: str) -> Any:
    """JSON (RFC 8259), or 0011."""
    if body.count(b"[") + body.count(b"{") < _FAST_CONTAINERS:
        value = _decoded(body)
        if value is not _REFUSED:
            return value
    return _strict(body, what=what, step=step)


async def request_payload(node: Node, x: Exchange, *, step: str) -> Any:
    """The parsed JSON request body (kept in `x.payload`)."""
    if x.payload is None:
        x.payload = parse_json(await read_body(node, x, step=step), what="request body", step=step)
    return x.payload


async def reference_values(node: Node, x: Exchange, location: str, *, step: str) -> list[Any]:
    """Every value found at a catalogue location in the request."""
    kind, _, where = location.partition(":")
    if kind == "body":
        return values_at(await request_payload(node, x, step=step), where)
    if kind == "query":
        return list(x.request.query.getall(where, []))
    if kind == "path":
        return [x.path_params[where]] if where in x.path_params else []
    if kind == "header":
        return list(x.request.headers.getall(where, []))
    raise AssertionError(f"unknown location kind {kind!r}")  # the catalogue validates locations on load
