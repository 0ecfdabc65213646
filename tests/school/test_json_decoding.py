"""The checks decode request bodies as RFC 8259 JSON, defined as json.loads of the UTF-8 text held to that (no NaN or
Infinity, numbers in range, no unpaired surrogates), every failure a 0011 and never a crash. They use msgspec where
that gives exactly what the definition gives: the same value, of the same types, or the same error. Checked over
generated JSON texts and arbitrary bytes."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.checks.payload import parse_json
from gateway.denials import SchemaIncorrect


class NotJson(ValueError):
    pass


def finite(text: str) -> float:
    if math.isinf(value := float(text)):
        raise NotJson("a number is out of range")
    return value


def no_constant(name: str) -> Any:
    raise NotJson(f"{name} is not a JSON value")


def strings(value: Any) -> list[str]:
    """Every string and key in `value`, without recursion."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend([*item, *item.values()])
        elif isinstance(item, list):
            stack.extend(item)
    return found


def defined(body: bytes, *, what: str, step: str) -> Any:
    """parse_json as it is defined: json.loads of the UTF-8 text held to RFC 8259, every failure 0011."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaIncorrect(f"the {what} is not UTF-8 JSON", step=step) from exc
    try:
        value = json.loads(text, parse_float=finite, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise SchemaIncorrect(f"the {what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                              step=step) from exc
    except NotJson as exc:
        raise SchemaIncorrect(f"the {what} is not valid JSON: {exc}", step=step) from exc
    except RecursionError as exc:
        raise SchemaIncorrect(f"the {what} nests deeper than this node reads", step=step) from exc
    except ValueError as exc:
        raise SchemaIncorrect(f"the {what} holds a number with more digits than this node reads", step=step) from exc
    if any(0xD800 <= ord(c) <= 0xDFFF for s in strings(value) for c in s):
        raise SchemaIncorrect(f"the {what} is not valid JSON: a string holds an unpaired surrogate", step=step)
    return value


def typed(value: Any) -> list[Any]:
    """A value flattened with its types spelled out, so that 1 == 1.0 == True and -0.0 == 0.0 do not pass for
    equal. Without recursion, so that the deepest bodies either decoder accepts can be compared."""
    out: list[Any] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            out.append(("dict", len(item)))
            for key, member in reversed(item.items()):
                stack.extend((member, key))
        elif isinstance(item, list):
            out.append(("list", len(item)))
            stack.extend(reversed(item))
        elif isinstance(item, float):
            out.append(("float", "nan" if math.isnan(item) else float.hex(item)))
        else:
            out.append((type(item).__name__, item))
    return out


def outcome(parse: Any, body: bytes) -> tuple[str, Any]:
    """The value, or the error (for a denial: its message, status and step)."""
    try:
        return "value", typed(parse(body, what="request body", step="attributes"))
    except SchemaIncorrect as exc:
        return "denied", (exc.message, exc.http_status, exc.edu_status, exc.step)
    except Exception as exc:
        return "error", (type(exc), str(exc))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats()
    | st.text(st.characters(codec=None, exclude_categories=())),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(st.characters(codec=None, exclude_categories=()), max_size=6), children, max_size=4),
    max_leaves=20,
)


@given(value=json_values, ensure_ascii=st.booleans(), indent=st.none() | st.integers(0, 2))
@settings(max_examples=500)
def test_generated_json_decodes_as_json_loads_decodes_it(value: Any, ensure_ascii: bool, indent: int | None) -> None:
    try:
        body = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent).encode("utf-8", "surrogatepass")
    except ValueError:
        return
    assert outcome(parse_json, body) == outcome(defined, body)


@given(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
@settings(max_examples=500)
@example(b"NaN")
@example(b"[Infinity, -Infinity]")
@example(b'"\\ud800"')
@example(b'"\\udd1e\\ud834"')
@example(b'"\\ud834\\u0041"')
@example(b'"\xed\xa0\x80"')  # a surrogate encoded in UTF-8: json.loads decodes with surrogatepass
@example(b'"\xc0\x80"')  # overlong
@example(b'"\xf4\x90\x80\x80"')  # past U+10FFFF
@example(b"\xef\xbb\xbf{}")  # UTF-8 BOM
@example('{"a": "é"}'.encode("utf-16"))
@example('{"a": 1}'.encode("utf-32-le"))
@example(b'{"a":1,"a":2,"b":3,"a":4}')  # duplicate keys: the last value, at the first key's place
@example(b"1e400")
@example(b"-0")
@example(b"-0.0")
@example(b"1E5")
@example(b"9" * 4301)
@example(b"-" + b"9" * 4300)
@example(b"")
@example(b" ")
@example(b"[1,]")
@example(b'{"a":1}x')
@example(b'"a\x01"')
def test_any_bytes_give_the_value_or_the_error_json_loads_gives(body: bytes) -> None:
    assert outcome(parse_json, body) == outcome(defined, body)


@pytest.mark.parametrize("depth", [490, 497, 498, 499, 500, 990, 994, 995, 996, 998, 999, 1000, 5000])
def test_deep_nesting_fails_or_passes_as_with_json_loads(depth: int) -> None:
    arrays, objects, both = b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth, b'[{"a":' * depth
    for body in (arrays, objects, both + b"}]" * depth):
        assert outcome(parse_json, body) == outcome(defined, body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[NaN]", "is not valid JSON: NaN is not a JSON value"),
        (b'{"a": -Infinity}', "is not valid JSON: -Infinity is not a JSON value"),
        (b"[1e400]", "is not valid JSON: a number is out of range"),
        (b'{"a": "\\ud800"}', "is not valid JSON: a string holds an unpaired surrogate"),
        (b'{"\\udc00": 1}', "is not valid JSON: a string holds an unpaired surrogate"),
        (b'"\xed\xa0\x80"', "is not UTF-8 JSON"),
        ('{"a": 1}'.encode("utf-16"), "is not UTF-8 JSON"),
        (b"[" + b"9" * 5000 + b"]", "holds a number with more digits than this node reads"),
        (b"[" * 100_000 + b"]" * 100_000, "nests deeper than this node reads"),
    ],
)
def test_what_json_loads_takes_but_rfc_8259_does_not_and_what_no_interpreter_holds_is_a_0011(
    body: bytes, message: str
) -> None:
    with pytest.raises(SchemaIncorrect) as refused:
        parse_json(body, what="request body", step="attributes")
    assert refused.value.message == f"the request body {message}" and refused.value.edu_status == "0011"
