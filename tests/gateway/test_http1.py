"""The exchange port's own HTTP/1.1 server (gateway.http1), over real mutual TLS: keep-alive, pipelining, body
framings, the hand-over of node-API requests to aiohttp on the same connection, streamed answers, and refusals
that never reach the pipeline."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import structlog
from aiohttp import web

from connectors.samples.federation import SCHOOL, Federation
from connectors.samples.publisher import progress_record
from gateway.demo import eck_id
from gateway.http1 import Request, node_paths_of
from tests.gateway.upstreams import aiohttp_upstream

Answer = tuple[int, dict[str, str], bytes]


def record(n: int = 1) -> dict[str, object]:
    return progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(n), school=SCHOOL)


def put(token: str, body: dict[str, object], *, extra: str = "", chunked: bool = False) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"PUT /v1/progress/{body['id']} HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nEdu-Purpose: b\r\n{extra}"
    )
    if chunked:
        middle = len(data) // 2
        parts = [data[:middle], data[middle:]]
        framed = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + framed
    return (head + f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readexactly(2)
        body = b"".join(parts)
    else:
        body = await reader.read() if status >= 200 and status not in (204, 304) else b""
    return status, headers, body


@pytest.fixture
async def token(federation: Federation) -> str:
    return await federation.client("publisher").token(scope="progress", purpose="b")


async def connect(federation: Federation) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert federation.served is not None
    context = federation.trust(federation.parties["publisher"].identity)
    return await asyncio.open_connection("127.0.0.1", federation.served.port, ssl=context)


@asynccontextmanager
async def behind(tmp_path: Path, routes: list[web.RouteDef], **settings: Any) -> AsyncIterator[Federation]:
    """A running federation (with `settings`) whose node forwards to an aiohttp upstream serving `routes`."""
    async with aiohttp_upstream(routes) as (base, _), Federation(tmp_path / "fed", **settings).running(
        upstream=base
    ) as fed:
        yield fed


async def test_pipelined_exchanges_on_one_connection_are_answered_in_order(federation: Federation, token: str):
    reader, writer = await connect(federation)
    bodies = [record(n) for n in (1, 2, 3)]
    writer.write(b"".join(put(token, body) for body in bodies))  # all three before any answer
    answers = [await read_answer(reader) for _ in bodies]
    writer.close()
    assert [status for status, _, _ in answers] == [201, 201, 201]
    assert list(federation.received.progress) == [body["id"] for body in bodies]
    ids = [headers["edu-exchange-id"] for _, headers, _ in answers]
    assert len(set(ids)) == 3


async def test_pipelined_requests_arriving_in_packets_larger_than_the_head_limit_are_each_answered(
    federation: Federation,
):
    # The limit on an unfinished head counts the packets that arrive wholly inside one head; a large read that
    # holds many whole requests and ends inside the next one's head is not such a packet.
    asked = 20_000
    reader, writer = await connect(federation)
    writer.write(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: node\r\n\r\n" * asked)  # 1 MB at once
    chunks, answers, tail = [], 0, b""  # the tail: shorter than b"HTTP/1.1 ", so no answer is counted twice
    while answers < asked and (chunk := await asyncio.wait_for(reader.read(1 << 20), 10)):
        chunks.append(chunk)
        answers, tail = answers + (tail + chunk).count(b"HTTP/1.1 "), (tail + chunk)[-8:]
    writer.close()
    assert b"".join(chunks).count(b"HTTP/1.1 200 OK\r\n") == asked


async def test_a_chunked_request_body_is_checked_and_forwarded_whole(federation: Federation, token: str):
    reader, writer = await connect(federation)
    body = record()
    writer.write(put(token, body, chunked=True))
    status, _, _ = await read_answer(reader)
    writer.close()
    assert status == 201
    assert federation.received.progress[str(body["id"])] == body


async def test_a_client_that_expects_100_continue_gets_it_before_sending_the_body(federation: Federation, token: str):
    reader, writer = await connect(federation)
    body = record()
    data = json.dumps(body).encode()
    writer.write(
        (
            f"PUT /v1/progress/{body['id']} HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nEdu-Purpose: b\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(data)
    status, _, _ = await read_answer(reader)
    writer.close()
    assert status == 201


async def test_connection_close_is_honoured_after_the_answer(federation: Federation, token: str):
    reader, writer = await connect(federation)
    writer.write(put(token, record(), extra="Connection: close\r\n"))
    status, headers, _ = await read_answer(reader)
    assert status == 201 and headers.get("connection") == "close"
    assert await asyncio.wait_for(reader.read(), 10) == b""  # the node closed the connection
    writer.close()


async def test_a_node_api_request_first_hands_the_connection_to_aiohttp_and_exchanges_still_work(
    federation: Federation, token: str
):
    reader, writer = await connect(federation)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
    status, _, body = await read_answer(reader)
    assert status == 200 and json.loads(body) == {"status": "alive"}
    writer.write(put(token, record()))  # the same connection, now served by aiohttp
    status, headers, body = await read_answer(reader)
    writer.close()
    assert status == 201 and json.loads(body)["status"] == "0001" and "edu-exchange-id" in headers


async def test_a_node_api_request_after_pipelined_exchanges_is_answered_after_them(
    federation: Federation, token: str
):
    reader, writer = await connect(federation)
    writer.write(put(token, record(1)) + put(token, record(2)) + b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
    first, second, health = [await read_answer(reader) for _ in range(3)]
    writer.close()
    assert (first[0], second[0]) == (201, 201)
    assert health[0] == 200 and json.loads(health[2]) == {"status": "alive"}


async def test_a_request_after_a_valid_one_that_cannot_be_parsed_gets_the_edu_v_400_after_the_first_answer(
    federation: Federation, token: str
):
    reader, writer = await connect(federation)
    writer.write(put(token, record()) + b"PUT /v1/progress/x HTTP/1.1\r\nContent-Length: abc\r\n\r\n")
    first = await read_answer(reader)
    refused = await read_answer(reader)
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    assert first[0] == 201
    assert refused[0] == 400 and json.loads(refused[2])["status"] == "0011"


async def test_a_request_target_longer_than_the_limit_is_refused_before_the_pipeline(federation: Federation):
    reader, writer = await connect(federation)
    writer.write(b"GET /v1/progress/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: node\r\n\r\n")
    status, _, body = await read_answer(reader)
    writer.close()
    assert status == 400 and json.loads(body)["status"] == "0011"
    assert "request-target is longer" in json.loads(body)["statusMessage"]


async def _send_without_end(writer: asyncio.StreamWriter, start: bytes, total: int) -> int:
    """`start`, then `total` bytes of one field or target that never ends, as long as the node takes them."""
    sent = 0
    try:
        writer.write(start)
        while sent < total:
            writer.write(b"a" * 65536)
            await writer.drain()
            sent += 65536
    except ConnectionError:
        pass
    return sent


@pytest.mark.parametrize(
    "start",
    [b"PUT /v1/progress/x HTTP/1.1\r\nHost: node\r\nX-Endless: ", b"GET /v1/progress/"],
    ids=["header field", "request-target"],
)
async def test_a_head_that_never_ends_is_refused_once_it_passes_the_bound_and_the_refusal_reaches_the_client(
    federation: Federation, start: bytes
):
    # llhttp keeps an unfinished field or target whole until its end, so the server counts the bytes as they come
    # (before, such a head was held in memory as long as the client went on, and never answered); and it reads
    # on for a moment after the refusal, since closing with unread bytes resets the connection over the answer.
    reader, writer = await connect(federation)
    sending = asyncio.create_task(_send_without_end(writer, start, 8 << 20))
    status, _, body = await read_answer(reader)
    assert status == 400 and json.loads(body)["status"] == "0011"
    assert "request head is longer than 32760 bytes" in json.loads(body)["statusMessage"]
    assert await asyncio.wait_for(reader.read(), 10) == b""  # and the connection is closed
    await sending
    writer.close()


async def test_a_413_reaches_a_client_still_sending_its_oversized_body(federation: Federation, token: str):
    # Refused on its declared length before its body is read: the node reads on for a moment before it closes,
    # since a close with unread bytes resets the connection, and the reset can destroy the answer in flight.
    size = 8 << 20
    head = (f"PUT /v1/progress/x HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nEdu-Purpose: b\r\nContent-Length: {size}\r\n\r\n").encode()
    reader, writer = await connect(federation)
    sending = asyncio.create_task(_send_without_end(writer, head, size))
    status, _, body = await read_answer(reader)
    assert status == 413 and json.loads(body)["status"] == "0099"
    assert await asyncio.wait_for(reader.read(), 10) == b""
    await sending
    writer.close()


async def test_head_gets_the_answer_without_a_body(federation: Federation, token: str):
    reader, writer = await connect(federation)
    writer.write(f"HEAD /v1/progress/x HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.write(put(token, record()))  # the connection stays usable: no stray body bytes came before this
    status, _, _ = await read_answer(reader)
    writer.close()
    assert head.startswith(b"HTTP/1.1 405") and b"Content-Length: " in head
    assert status == 201


async def test_a_handler_that_crashes_gets_the_edu_v_500_and_is_logged(
    federation: Federation, token: str, monkeypatch: pytest.MonkeyPatch
):
    assert federation.node is not None

    def broken(method: str, path: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(federation.node.routes, "match", broken)
    reader, writer = await connect(federation)
    writer.write(put(token, record()))
    status, _, body = await read_answer(reader)
    writer.close()
    assert status == 500 and json.loads(body)["status"] == "0099"
    await asyncio.sleep(0.2)
    denied = await federation.node.log.records(party_oin=federation.node.oin, decision="denied", limit=1)
    assert denied and denied[0].record.step == "http"


# --- answers larger than one write ---------------------------------------------------------------------------

BIG = 300 * 1024


@pytest.fixture
async def big_answers(tmp_path: Path) -> AsyncIterator[Federation]:
    """A federation whose upstream answers progress pushes with 300 KiB: with a Content-Length for ids starting
    with 'L', chunked otherwise."""
    payload = b"x" * BIG

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        if request.match_info["id"].startswith("L"):
            return web.Response(status=200, body=payload, content_type="application/octet-stream")
        response = web.StreamResponse(status=200)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, BIG, 50 * 1024):
            await response.write(payload[start : start + 50 * 1024])
        await response.write_eof()
        return response

    async with behind(tmp_path, [web.put("/v1/progress/{id}", answer)]) as fed:
        yield fed


@pytest.mark.parametrize("prefix", ["L", "C"], ids=["content-length", "chunked"])
async def test_a_large_answer_streams_through_whole_and_the_connection_is_reused(big_answers: Federation, prefix: str):
    token = await big_answers.client("publisher").token(scope="progress", purpose="b")
    reader, writer = await connect(big_answers)
    for _ in range(2):
        body = record()
        body["id"] = prefix + str(body["id"])[1:]
        writer.write(put(token, body))
        status, headers, received = await read_answer(reader)
        assert status == 200 and received == b"x" * BIG
        assert ("content-length" in headers) == (prefix == "L")
    writer.close()
    assert big_answers.node is not None
    outcomes = await big_answers.node.log.records(party_oin=big_answers.node.oin, decision="allowed", limit=10)
    sizes = [s.record.bytes_out for s in outcomes if s.record.kind == "outcome"]
    assert sizes == [BIG, BIG]


# --- which requests are the node's own ---------------------------------------------------------------------


def test_the_node_api_paths_go_to_aiohttp_and_everything_else_is_an_exchange():
    app = web.Application()

    async def nothing(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_post("/oauth2/token", nothing)
    app.router.add_get("/consent/v1/statuses/{id}", nothing)
    app.router.add_route("*", "/{tail:.*}", nothing)
    owned = node_paths_of(app)
    assert owned("/oauth2/token") and owned("/consent/v1/statuses/abc")
    assert not owned("/v1/progress/abc") and not owned("/oauth2/token/more") and not owned("/")


def test_path_and_query_are_decoded_as_aiohttp_decodes_them():
    request = Request.__new__(Request)
    request.raw_path = "/v1/a%20b/c?x=1&x=%32&y=a+b"
    request._rel_url = None
    assert request.path == "/v1/a b/c"
    assert request.query.getall("x") == ["1", "2"] and request.query["y"] == "a b"


# --- the hand-over and old clients ----------------------------------------------------------------------------


async def test_a_token_request_with_a_chunked_body_reaches_the_token_endpoint_whole(federation: Federation):
    publisher = federation.client("publisher")
    form = urlencode(
        {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": publisher.assertion(),
            "scope": "progress",
            "purpose": "b",
        }
    ).encode()
    parts = [form[:100], form[100:]]
    chunked = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    reader, writer = await connect(federation)
    writer.write(
        b"POST /oauth2/token HTTP/1.1\r\nHost: node\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked
    )
    status, _, body = await read_answer(reader)
    writer.close()
    assert status == 200, body
    assert json.loads(body)["token_type"].lower() in ("bearer", "dpop")


async def test_an_http_1_0_client_gets_its_answer_and_the_connection_closes(federation: Federation, token: str):
    body = record()
    data = json.dumps(body).encode()
    reader, writer = await connect(federation)
    writer.write(
        (
            f"PUT /v1/progress/{body['id']} HTTP/1.0\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nEdu-Purpose: b\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode()
        + data
    )
    status, headers, _ = await read_answer(reader)
    assert status == 201 and headers.get("connection") == "close"
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


# --- bodies that stop arriving ------------------------------------------------------------------------------------


@pytest.fixture
async def impatient(tmp_path: Path) -> AsyncIterator[Federation]:
    """The federation with a node that waits 0.3 s for the next part of a request body."""
    async with Federation(tmp_path / "fed", body_timeout=0.3).running() as fed:
        yield fed


async def test_an_exchange_body_that_stops_arriving_is_refused_with_408_and_logged(impatient: Federation):
    token = await impatient.client("publisher").token(scope="progress", purpose="b")
    whole = put(token, record())
    reader, writer = await connect(impatient)
    writer.write(whole[:-20])  # the head and all but the last bytes of the body, then nothing
    status, _, body = await read_answer(reader)
    assert status == 408 and json.loads(body) == {
        "status": "0099", "statusMessage": "no part of the request body arrived for 0.3 s"}
    assert await asyncio.wait_for(reader.read(), 10) == b""  # the rest of the body would be read as a request
    writer.close()
    assert impatient.node is not None
    (stored,) = await impatient.node.log.records(party_oin=impatient.node.oin, decision="denied", limit=1)
    assert stored.record.http_status == 408


async def answer_to_half(fed: Federation, path: str, content_type: str, start: bytes) -> tuple[int, bytes]:
    """The answer to a POST to the node's `path` that declares 400 bytes of body and sends only `start`."""
    reader, writer = await connect(fed)  # the publisher's certificate
    writer.write(f"POST {path} HTTP/1.1\r\nHost: node\r\nContent-Type: {content_type}\r\n"
                 "Content-Length: 400\r\n\r\n".encode() + start)
    status, _, body = await read_answer(reader)
    writer.close()
    return status, body


async def test_a_token_request_that_stops_arriving_is_refused_with_408_in_the_oauth_format(impatient: Federation):
    form = "application/x-www-form-urlencoded"
    status, body = await answer_to_half(impatient, "/oauth2/token", form, b"grant_type=client_credentials&")
    assert status == 408
    assert json.loads(body)["error"] == "invalid_request" and "within 0.3 s" in json.loads(body)["error_description"]


async def test_a_consent_request_that_stops_arriving_is_refused_with_408_in_the_edu_v_format(impatient: Federation):
    status, body = await answer_to_half(impatient, "/consent/v1/requests", "application/json", b'{"api": "le')
    assert status == 408 and json.loads(body) == {
        "status": "0099", "statusMessage": "the request body did not arrive within 0.3 s"}


async def test_a_portal_form_that_stops_arriving_is_refused_with_408(impatient: Federation):
    status, body = await answer_to_half(impatient, "/portal/login", "application/x-www-form-urlencoded", b"csrf=abc&")
    assert status == 408 and b"the form did not arrive within 0.3 s" in body


async def test_a_body_streamed_upstream_that_stops_arriving_is_the_clients_408_not_the_upstreams_504(
    tmp_path: Path,
):
    # A GET's body is no check's business, so it streams to the upstream as it comes; this upstream waits for it.
    async def whole_body_first(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"school": SCHOOL, "records": []})

    async with behind(tmp_path, [web.get("/v1/usage", whole_body_first)], body_timeout=0.3) as fed:
        token = await fed.client("reader").token(scope="eduv.usage", purpose="d")
        assert fed.served is not None
        context = fed.trust(fed.parties["reader"].identity)
        reader, writer = await asyncio.open_connection("127.0.0.1", fed.served.port, ssl=context)
        writer.write(f"GET /v1/usage?school={SCHOOL} HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {token}\r\n"
                     "Edu-Purpose: d\r\nContent-Length: 100\r\n\r\nthe first bytes of a body".encode())
        status, _, body = await read_answer(reader)
        writer.close()
        assert status == 408 and json.loads(body)["statusMessage"] == "no part of the request body arrived for 0.3 s"


async def test_a_client_that_stops_reading_an_answer_loses_the_connection_after_the_send_timeout(tmp_path: Path):
    huge = 64 << 20  # far more than the sockets' buffers hold

    async def streamed(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=200)
        response.content_length = huge
        await response.prepare(request)
        piece = b"x" * (1 << 20)
        try:
            for _ in range(huge // len(piece)):
                await response.write(piece)
        except ConnectionError:
            pass  # the node hung up on the client, and so on us
        return response

    async with behind(tmp_path, [web.put("/v1/progress/{id}", streamed)], send_timeout=0.5) as fed:
        token = await fed.client("publisher").token(scope="progress", purpose="b")
        reader, writer = await connect(fed)
        writer.write(put(token, record()))
        await asyncio.sleep(2.0)  # reads nothing: the node's buffers fill and stay full
        received = 0
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            while chunk := await asyncio.wait_for(reader.read(1 << 20), 10):
                received += len(chunk)
            raise asyncio.IncompleteReadError(b"", None)  # the answer ended short: the node closed the connection
        writer.close()
        assert received < huge
        assert fed.node is not None
        outcomes = await fed.node.log.records(party_oin=fed.node.oin, decision="allowed", limit=5)
        assert [s.record.upstream_status for s in outcomes if s.record.kind == "outcome"] == [502]


async def test_a_handed_over_connection_whose_client_stops_reading_is_closed_after_the_send_timeout_too(
    tmp_path: Path,
):
    # A connection for the node's own API is aiohttp's after its first request; the stall is timed on the transport
    # beneath it all the same. Pipelined requests for the key set: far more answer than the sockets' buffers hold
    # (the client's kept small), and more than the node answers in the time the test allows.
    asked = 200_000
    async with Federation(tmp_path / "fed", send_timeout=0.5).running() as fed:
        assert fed.served is not None
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 15)
        sock.connect(("127.0.0.1", fed.served.port))
        context = fed.trust(fed.parties["publisher"].identity)
        _, writer = await asyncio.open_connection(sock=sock, ssl=context, server_hostname="127.0.0.1")
        writer.write(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: node\r\n\r\n" * asked)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with structlog.testing.capture_logs() as logs:
            while not writer.transport.is_closing() and loop.time() - started < 30:  # reads nothing meanwhile
                await asyncio.sleep(0.1)
        writer.close()
    assert writer.transport.is_closing(), "the node still holds the connection of a client that reads nothing"
    assert [entry["seconds"] for entry in logs if entry["event"] == "client took no answer"] == [0.5]


async def test_a_connection_past_max_connections_is_closed_at_once_and_one_is_taken_again_when_a_place_frees(
    tmp_path: Path,
):
    async with Federation(tmp_path / "fed", max_connections=2).running() as fed:
        client = fed.client("publisher")
        token = await client.token(scope="progress", purpose="b")
        await client.close()  # its kept-alive connection would hold one of the two places
        await asyncio.sleep(0.1)
        held = [await connect(fed) for _ in range(2)]
        for reader, writer in held:  # both served: each is one of the two places
            writer.write(put(token, record()))
            assert (await read_answer(reader))[0] == 201
        reader, writer = await connect(fed)  # the TLS handshake completes; then the node hangs up
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        assert fed.node is not None
        metrics = fed.node.metrics.exposition().decode()
        assert "edugate_client_connections 2.0" in metrics and "edugate_client_connections_refused_total 1.0" in metrics
        held[0][1].close()
        await held[0][1].wait_closed()
        await asyncio.sleep(0.1)
        reader, writer = await connect(fed)
        writer.write(put(token, record()))
        assert (await read_answer(reader))[0] == 201
        writer.close()
        held[1][1].close()
