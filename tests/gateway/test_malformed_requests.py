"""Malformed requests on the exchange port, over real mutual TLS: each gets an Edu-V answer (never a crash, never a
plain-text error), nothing ambiguous reaches the offered API, and each is on record."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
import time
from collections.abc import Iterator

import pytest

from connectors.samples.federation import Federation
from gateway.demo import eck_id
from tests.gateway.test_exchange_path import last_denial, logged
from tests.gateway.test_http1 import Answer, connect, put, read_answer, record


@pytest.fixture
async def token(federation: Federation) -> str:
    return await federation.client("publisher").token(scope="progress", purpose="b")


def request(token: str, body: bytes, *, headers: list[tuple[bytes, bytes]] | None = None,
            method: bytes = b"PUT", target: bytes | None = None) -> bytes:
    """A Progress PUT with the given body and header fields (Host, Content-Type, Edu-Purpose and the token unless
    `headers` says otherwise), framed by Content-Length."""
    if target is None:
        target = b"/v1/progress/" + str(json.loads(body)["id"]).encode() if body.startswith(b"{") else b"/v1/progress/1"
    fields = headers if headers is not None else [
        (b"Host", b"node"),
        (b"Content-Type", b"application/json"),
        (b"Edu-Purpose", b"b"),
        (b"Authorization", b"Bearer " + token.encode()),
    ]
    head = b"%b %b HTTP/1.1\r\n" % (method, target) + b"".join(b"%b: %b\r\n" % field for field in fields)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def standard(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"Host", b"node"), (b"Content-Type", b"application/json"), (b"Edu-Purpose", b"b"),
            (b"Authorization", b"Bearer " + token.encode())]


async def exchange(federation: Federation, raw: bytes) -> Answer:
    reader, writer = await connect(federation)
    try:
        writer.write(raw)
        return await read_answer(reader)
    finally:
        writer.close()


def assert_edu_v(answer: Answer, status: int, edu: str) -> str:
    code, headers, body = answer
    assert code == status, body
    assert headers["content-type"].startswith("application/json"), headers
    parsed = json.loads(body)
    assert parsed["status"] == edu and parsed["statusMessage"], parsed
    return str(parsed["statusMessage"])


async def test_a_request_line_without_an_http_version_is_refused_as_unparseable(federation: Federation):
    message = assert_edu_v(await exchange(federation, b"PUT /v1/progress/1\r\n\r\n"), 400, "0011")
    assert "HTTP/0.9 is not served here" in message


@pytest.mark.parametrize("target", [b"/oauth2/token", b"/oauth2/token?x=1", b"/v1/progress/1"])
async def test_a_token_request_the_node_cannot_parse_gets_oauths_error_fields_beside_edu_vs(
    federation: Federation, target: bytes
):
    raw = b"POST %b HTTP/1.1\r\nHost: node\r\nContent-Length: -1\r\n\r\n" % target
    answer = await exchange(federation, raw)
    message = assert_edu_v(answer, 400, "0011")
    parsed = json.loads(answer[2])
    if target.startswith(b"/oauth2/token"):
        assert (parsed["error"], parsed["error_description"]) == ("invalid_request", message)
    else:
        assert "error" not in parsed  # an exchange's refusal is Edu-V's alone


@pytest.mark.parametrize("name", [b"Content-Type", b"Host"])
async def test_a_repeated_singleton_header_is_refused_before_it_reaches_the_offered_api(
    federation: Federation, token: str, name: bytes
):
    body = record()
    raw = request(token, json.dumps(body).encode(), headers=[*standard(token), (name, b"text/plain")])
    message = assert_edu_v(await exchange(federation, raw), 400, "0099")
    assert message == f"the request has more than one {name.decode()} header"
    assert str(body["id"]) not in federation.received.progress
    assert (await last_denial(federation)).step == "head"


async def test_an_http_1_1_request_without_host_is_refused(federation: Federation, token: str):
    fields = [field for field in standard(token) if field[0] != b"Host"]
    message = assert_edu_v(await exchange(federation, request(token, json.dumps(record()).encode(), headers=fields)),
                           400, "0099")
    assert message == "an HTTP/1.1 request must have a Host header"


async def test_an_expectation_other_than_100_continue_gets_417_and_nothing_is_forwarded(
    federation: Federation, token: str
):
    body = record()
    raw = request(token, json.dumps(body).encode(), headers=[*standard(token), (b"Expect", b"200-ok")])
    assert_edu_v(await exchange(federation, raw), 417, "0099")
    assert str(body["id"]) not in federation.received.progress


async def test_the_node_meets_100_continue_itself_and_does_not_pass_expect_upstream(
    federation: Federation, token: str
):
    body = record()
    reader, writer = await connect(federation)
    writer.write(put(token, body, extra="Expect: 100-continue\r\n").split(b"\r\n\r\n")[0] + b"\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 100 Continue")
    writer.write(json.dumps(body).encode())
    status, _, _ = await read_answer(reader)
    writer.close()
    assert status == 201
    assert "Expect" not in federation.received.headers[-1] and "expect" not in federation.received.headers[-1]


async def test_a_target_no_route_takes_gets_an_edu_v_404_and_is_on_record(federation: Federation):
    message = assert_edu_v(await exchange(federation, b"OPTIONS * HTTP/1.1\r\nHost: node\r\n\r\n"), 404, "0099")
    assert message == "nothing is served at this request-target"
    denial = await last_denial(federation)
    assert (denial.step, denial.reason) == ("route", message)


async def test_a_path_no_data_service_takes_is_refused_without_putting_the_path_on_record(
    federation: Federation, token: str
):
    student = eck_id(7)
    raw = request(token, json.dumps(record()).encode(), target=f"/v1/students/{student}".encode())
    message = assert_edu_v(await exchange(federation, raw), 404, "0099")
    denial = await last_denial(federation)
    assert message == denial.reason == "no data service is offered at this path"
    assert student not in json.dumps(denial.json_form())


async def test_a_raw_byte_outside_ascii_in_the_token_is_refused_as_a_malformed_token(
    federation: Federation, token: str
):
    mangled = token.encode()[:60] + b"\xff" + token.encode()[61:]
    fields = [*standard(token)[:3], (b"Authorization", b"Bearer " + mangled)]
    answer = await exchange(federation, request(token, json.dumps(record()).encode(), headers=fields))
    message = assert_edu_v(answer, 401, "0099")
    assert "malformed JWT: not ASCII" in message and 'error="invalid_token"' in answer[1]["www-authenticate"]


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked, gzip\r\nContent-Length: 5\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: xchunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Content-Length: +5\r\n",
        b"Content-Length: 5, 5\r\n",
        b"X-A: a\r\n b\r\nContent-Length: 5\r\n",  # obs-fold
        b"Content-Length : 5\r\n",
    ],
    ids=["cl+te", "te not last", "te gzip", "te xchunked", "te twice", "cl plus", "cl list", "obs-fold", "space"],
)
async def test_a_request_whose_body_could_be_framed_two_ways_is_refused_and_the_connection_closed(
    federation: Federation, token: str, framing: bytes
):
    # Request smuggling needs two parsers to disagree on where a body ends; the node takes one framing or none.
    head = (f"PUT /v1/progress/x HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nEdu-Purpose: b\r\n").encode() + framing + b"\r\n"
    smuggled = b"0\r\n\r\nGET /v1/usage?school=104A158 HTTP/1.1\r\nHost: node\r\n\r\n"
    reader, writer = await connect(federation)
    writer.write(head + smuggled)
    answer = await read_answer(reader)
    assert await asyncio.wait_for(reader.read(), 10) == b""  # nothing after the refusal is served
    writer.close()
    assert_edu_v(answer, 400, "0011")
    assert federation.received.progress == {}


async def test_a_token_whose_header_nests_past_the_recursion_limit_is_a_401_not_a_node_failure(
    federation: Federation, token: str
):
    nested = base64.urlsafe_b64encode(b"[" * 5000).rstrip(b"=")
    fields = [*standard(token)[:3], (b"Authorization", b"Bearer " + nested + b".e30.c2ln")]
    answer = await exchange(federation, request(token, json.dumps(record()).encode(), headers=fields))
    assert "malformed JWT header: nested too deeply" in assert_edu_v(answer, 401, "0099")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"9" * 5000, "holds a number with more digits than this node reads"),
        (b"1e999", "is not valid JSON: a number is out of range"),
        (b"NaN", "is not valid JSON: NaN is not a JSON value"),
        (b'"\\ud800"', "is not valid JSON: a string holds an unpaired surrogate"),
    ],
)
async def test_a_body_json_loads_would_take_but_rfc_8259_does_not_is_a_0011_and_not_forwarded(
    federation: Federation, token: str, value: bytes, problem: str
):
    body = record()
    raw = json.dumps({**body, "progress": "@"}).encode().replace(b'"@"', value)
    target = f"/v1/progress/{body['id']}".encode()
    message = assert_edu_v(await exchange(federation, request(token, raw, target=target)), 400, "0011")
    assert message == f"the request body {problem}"
    assert str(body["id"]) not in federation.received.progress


async def test_a_client_that_closes_mid_body_is_on_record_as_its_own_refusal_not_a_node_failure(
    federation: Federation, token: str
):
    _, writer = await connect(federation)
    data = json.dumps(record()).encode()
    head, _, body = request(token, data).partition(b"\r\n\r\n")
    writer.write(head.replace(b"Content-Length: %d" % len(data), b"Content-Length: %d" % (len(data) + 100))
                 + b"\r\n\r\n" + body)  # a hundred bytes short of what the head declares
    await asyncio.sleep(0.2)
    writer.close()
    deadline = time.monotonic() + 5
    while (denial := await last_denial(federation)).reason is None or "closed the connection" not in denial.reason:
        assert time.monotonic() < deadline, f"no record of the broken-off request; last denial: {denial}"
        await asyncio.sleep(0.05)
    assert denial.reason == "the client closed the connection before the request body ended"
    assert denial.http_status == 400 and denial.step == "school"  # the first check that reads the body


def malformed(token: str, rng: random.Random) -> Iterator[bytes]:
    """Requests broken in the ways a careless or hostile client breaks them, each complete enough to be answered:
    a body with bytes changed, a field of the wrong type, a token changed, odd header fields, methods, targets."""
    valid = json.dumps(record()).encode()
    junk = [b'"', b"{", b"[", b"\\", b"\\u0000", b"\\ud800", b"1e999", b",", b"\x00", b"\xff", b"NaN"]
    while True:
        family = rng.choice(["body", "field", "token", "header", "method", "target"])
        fields, body, method, target = standard(token), valid, b"PUT", None
        if family == "body":
            at = rng.randrange(len(valid))
            body = valid[:at] + rng.choice(junk) + valid[at + rng.randint(0, 3):]
            target = b"/v1/progress/1"
        elif family == "field":
            value = json.loads(valid)
            value[rng.choice(list(value))] = rng.choice([None, 10**30, "", [], {}, True, "123456782", "x@y.nl", 1.5])
            body = json.dumps(value).encode()
        elif family == "token":
            at = 7 + rng.randrange(len(token))
            raw = fields[3][1]
            changed = rng.choice([b"\xff", b".", b"A", b"", b"\xc3\xa9"])
            fields[3] = (b"Authorization", raw[:at] + changed + raw[at + 1:])
        elif family == "header":
            fields.append(rng.choice([(b"X-A", b"a\x01b"), (b"Content-Type", b"text/plain"), (b"Expect", b"nothing"),
                                      (b"Edu-Caller-Oin", b"00000001"), (b"X-Big", b"a" * 9000), (b"Host", b"other")]))
        elif family == "method":
            method = rng.choice([b"GET", b"POST", b"DELETE", b"PATCH", b"OPTIONS", b"FOO", b"put"])
        else:
            target = rng.choice([b"/v1/progress/", b"/v1/progress/%00", b"/v1/progress/..%2f..%2fetc", b"*",
                                 b"/v1//progress/1", b"/v1/progress/1?bsn=123456782", b"/" + b"a" * 9000])
        yield request(token, body, headers=fields, method=method, target=target)


async def test_seeded_malformed_requests_all_get_edu_v_answers_and_each_is_on_record(
    federation: Federation, token: str
):
    """Each answer of the pipeline names its exchange, whose decision (and, if forwarded, outcome) is on record
    with the status the client saw; a request refused before the pipeline has a record of its own, unnamed."""
    assert federation.node is not None
    log = federation.node.log
    before = log.size()
    expected, unnamed = 0, 0
    for raw in itertools.islice(malformed(token, random.Random(20261207)), 120):
        status, headers, body = await exchange(federation, raw)
        assert status < 500, (raw[:200], body)
        if status >= 300:
            parsed = json.loads(body)
            assert len(parsed["status"]) == 4 and parsed["statusMessage"], (raw[:200], body)
        if "edu-exchange-id" not in headers:
            unnamed += 1
            continue
        records = await logged(federation, headers["edu-exchange-id"])
        decision = records[0]
        if decision.decision == "allowed":
            assert [r.kind for r in records] == ["decision", "outcome"] and records[1].upstream_status == status
        else:
            assert len(records) == 1 and decision.http_status == status, (raw[:200], records)
        expected += len(records)
    assert unnamed > 0 and expected > unnamed  # the seed reaches both kinds of refusal, and the pipeline
    deadline = time.monotonic() + 10
    while log.size() - before < expected + unnamed and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # refusals outside the pipeline are written by a task of their own
    assert log.size() - before == expected + unnamed
