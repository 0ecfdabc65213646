"""The node's upstream client against real servers on loopback: aiohttp servers for the ordinary answers, and small
asyncio servers for the answers aiohttp will not give (close-delimited, 100 Continue, a close at the worst moment,
silence)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import uvloop
from aiohttp import web

from gateway.upstream import (
    HIGH_WATER,
    MAX_ANSWER_FIELDS,
    MAX_ANSWER_HEAD,
    InvalidRequest,
    UpstreamBroken,
    UpstreamPool,
)
from tests.gateway.upstreams import aiohttp_upstream

Conversation = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_upstream(conversation: Conversation) -> AsyncIterator[str]:
    """A bare TCP server running `conversation` per connection; yields its base URL."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await conversation(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request head (the tests' requests to raw servers carry no body)."""
    return await reader.readuntil(b"\r\n\r\n")


# The replacement (the `pytest_asyncio_loop_factories` hook) lives in a conftest and would reparametrize every test
# of the folder; this override keeps the two loops to this module.
pytestmark = pytest.mark.filterwarnings('ignore:Overriding the "event_loop_policy" fixture:DeprecationWarning')


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Every rule on both loops: the node runs on uvloop, whose transports differ from asyncio's."""
    return uvloop.EventLoopPolicy() if request.param == "uvloop" else asyncio.DefaultEventLoopPolicy()


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool(limit=10, timeout=5.0)
    yield pool
    await pool.close()


async def get(pool: UpstreamPool, base: str, target: str = "/", method: str = "GET", **kw: object) -> tuple[int, bytes]:
    with await pool.request(method, base, target, {}, **kw) as answer:  # type: ignore[arg-type]
        return answer.status, await answer.read(1 << 26)


async def test_sequential_requests_reuse_one_kept_alive_connection(pool: UpstreamPool):
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.query['n']}")

    async with aiohttp_upstream([web.get("/hello", hello)]) as (base, ports):
        for n in range(5):
            assert await get(pool, base, f"/hello?n={n}") == (200, f"hello {n}".encode())
    assert len(ports) == 1


async def test_the_base_path_host_and_headers_reach_the_upstream(pool: UpstreamPool):
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"path": request.raw_path, "host": request.host, "who": request.headers["Edu-Who"]})

    async with aiohttp_upstream([web.get("/api/v1/x", echo)]) as (base, _):
        for configured in (base + "/api", base + "/api/"):
            with await pool.request("GET", configured, "/v1/x?a=%20b", {"Edu-Who": "publisher"}) as answer:
                assert answer.status == 200 and answer.headers["Content-Type"] == "application/json; charset=utf-8"
                assert answer.content_length is not None
                body = json.loads(await answer.readexactly(answer.content_length))
            assert body == {"path": "/api/v1/x?a=%20b", "host": base.removeprefix("http://"), "who": "publisher"}


async def test_a_chunked_answer_is_read_whole(pool: UpstreamPool):
    async def pieces(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for n in range(10):
            await response.write(b"piece %d;" % n)
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    async with aiohttp_upstream([web.get("/pieces", pieces)]) as (base, ports):
        with await pool.request("GET", base, "/pieces", {}) as answer:
            assert answer.content_length is None and answer.headers["Transfer-Encoding"] == "chunked"
            assert await answer.read(1000) == b"".join(b"piece %d;" % n for n in range(10))
        assert await get(pool, base, "/pieces") == (200, b"".join(b"piece %d;" % n for n in range(10)))
    assert len(ports) == 1  # a chunked answer read to its end leaves the connection reusable


async def test_a_large_answer_streams_and_a_slow_reader_holds_the_upstream_back(pool: UpstreamPool):
    size = 48 << 20  # far beyond what the loopback socket buffers hold
    block = bytes(range(256)) * 4096  # 1 MiB
    finished = asyncio.Event()

    async def large(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = size
        await response.prepare(request)
        for _ in range(size // len(block)):
            await response.write(block)
        await response.write_eof()
        finished.set()
        return response

    async with aiohttp_upstream([web.get("/large", large)]) as (base, ports):
        with await pool.request("GET", base, "/large", {}) as answer:
            assert answer.content_length == size
            await asyncio.sleep(0.5)  # the caller does not read: the client stops reading, the upstream must wait
            assert not finished.is_set()
            digest, seen, biggest = hashlib.sha256(), 0, 0
            async for chunk in answer:
                digest.update(chunk)
                seen += len(chunk)
                biggest = max(biggest, len(chunk))
        assert seen == size and digest.digest() == hashlib.sha256(block * (size // len(block))).digest()
        assert biggest <= 2 * HIGH_WATER  # never much more buffered than the high-water mark
        assert await get(pool, base, "/large", method="HEAD") == (200, b"")
    assert len(ports) == 1


async def test_a_close_delimited_answer_ends_at_the_close_and_its_connection_is_not_reused(pool: UpstreamPool):
    async def old_style(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"the end")

    async with raw_upstream(old_style) as base:
        with await pool.request("GET", base, "/", {}) as answer:
            assert answer.content_length is None
            assert await answer.read(100) == b"until the end"
        assert pool.open_connections == 0


async def test_head_and_204_answers_have_no_body_and_keep_the_connection(pool: UpstreamPool):
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="x" * 1000)

    async def nothing(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async with aiohttp_upstream([web.get("/page", page), web.delete("/thing", nothing)]) as (base, ports):
        with await pool.request("HEAD", base, "/page", {}) as answer:
            assert answer.status == 200 and answer.headers["Content-Length"] == "1000"
            assert answer.content_length == 0 and await answer.read(10) == b""
        with await pool.request("DELETE", base, "/thing", {}) as answer:
            assert answer.status == 204 and answer.content_length == 0 and await answer.read(10) == b""
        assert await get(pool, base, "/page") == (200, b"x" * 1000)
    assert len(ports) == 1


async def test_an_interim_100_continue_is_skipped(pool: UpstreamPool):
    async def continues(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        await reader.read()

    async with raw_upstream(continues) as base:
        assert await get(pool, base) == (201, b"ok")


async def test_a_streamed_request_body_goes_chunked_or_with_its_declared_length(pool: UpstreamPool):
    seen: list[tuple[str | None, str | None, bytes]] = []

    async def store(request: web.Request) -> web.Response:
        seen.append(
            (request.headers.get("Content-Length"), request.headers.get("Transfer-Encoding"), await request.read())
        )
        return web.Response(status=201)

    async def parts() -> AsyncIterator[bytes]:
        for n in range(5):
            yield b"part%d" % n

    async with aiohttp_upstream([web.post("/store", store)]) as (base, _):
        assert await get(pool, base, "/store", method="POST", body=parts()) == (201, b"")
        assert await get(pool, base, "/store", method="POST", body=parts(), length=25) == (201, b"")
        assert await get(pool, base, "/store", method="POST", body=b"whole") == (201, b"")
    assert seen == [
        (None, "chunked", b"part0part1part2part3part4"),
        ("25", None, b"part0part1part2part3part4"),
        ("5", None, b"whole"),
    ]


async def test_an_idle_connection_the_upstream_closed_is_dropped_and_the_next_request_succeeds(pool: UpstreamPool):
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async with aiohttp_upstream([web.get("/", hello)], keepalive_timeout=0.1) as (base, ports):
        assert await get(pool, base) == (200, b"hello")
        await asyncio.sleep(0.5)  # the upstream closes the idle connection
        assert await get(pool, base) == (200, b"hello")
    assert len(ports) == 2


def closes_each_connection_at_its_second_request(requests: list[bytes]) -> Conversation:
    """The race every keep-alive client meets: the upstream closes the connection just as a request arrives."""

    async def conversation(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        await writer.drain()
        requests.append(await read_request(reader))  # ...and closed without an answer

    return conversation


async def test_an_idempotent_request_on_a_connection_closed_under_it_is_retried_once_on_a_fresh_one(
    pool: UpstreamPool,
):
    requests: list[bytes] = []
    async with raw_upstream(closes_each_connection_at_its_second_request(requests)) as base:
        assert await get(pool, base, "/a") == (200, b"first")
        assert await get(pool, base, "/b", method="PUT", body=b"{}") == (200, b"first")
    assert [r.split(b" ")[1] for r in requests] == [b"/a", b"/b", b"/b"]


async def test_a_post_on_a_connection_closed_under_it_is_not_retried(pool: UpstreamPool):
    requests: list[bytes] = []
    async with raw_upstream(closes_each_connection_at_its_second_request(requests)) as base:
        assert await get(pool, base, "/a") == (200, b"first")
        with pytest.raises(UpstreamBroken) as broken:
            await get(pool, base, "/b", method="POST", body=b"{}")
        assert not broken.value.answered
    assert [r.split(b" ")[1] for r in requests] == [b"/a", b"/b"]


async def test_an_upstream_that_never_answers_times_out_within_the_deadline():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    pool = UpstreamPool(limit=2, timeout=0.3)
    try:
        async with raw_upstream(silent) as base:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await get(pool, base)
            assert time.monotonic() - started < 1.0
            assert pool.open_connections == 0
    finally:
        await pool.close()


async def test_an_unreachable_upstream_is_broken_not_hanging(pool: UpstreamPool):
    async with raw_upstream(read_request) as base:  # take a free port, then let it go
        pass
    with pytest.raises(UpstreamBroken, match="cannot connect"):
        await get(pool, base)
    assert pool.open_connections == 0


async def test_an_answer_abandoned_halfway_closes_its_connection(pool: UpstreamPool):
    async def large(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (4 << 20))

    async with aiohttp_upstream([web.get("/large", large)]) as (base, ports):
        with await pool.request("GET", base, "/large", {}) as answer:
            await answer.__anext__()
        assert pool.open_connections == 0
        assert await get(pool, base, "/large") == (200, b"x" * (4 << 20))
    assert len(ports) == 2


async def test_concurrent_requests_wait_for_a_free_connection_at_the_limit():
    busy, most = 0, 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal busy, most
        busy += 1
        most = max(most, busy)
        await asyncio.sleep(0.05)
        busy -= 1
        return web.Response(text=request.query["n"])

    pool = UpstreamPool(limit=3, timeout=5.0)
    try:
        async with aiohttp_upstream([web.get("/slow", slow)]) as (base, ports):
            answers = await asyncio.gather(*(get(pool, base, f"/slow?n={n}") for n in range(12)))
            assert pool.open_connections <= 3
    finally:
        await pool.close()
    assert answers == [(200, str(n).encode()) for n in range(12)]
    assert most == 3 and len(ports) == 3


async def test_a_header_value_with_cr_or_lf_is_refused_before_anything_is_sent(pool: UpstreamPool):
    async with aiohttp_upstream([]) as (base, ports):
        for value in ("a\r\nX-Injected: 1", "a\nb", "a\rb"):
            with pytest.raises(ValueError):
                await pool.request("GET", base, "/", {"X-Note": value})
        with pytest.raises(InvalidRequest):
            await pool.request("GET", base, "/", {"Host": "elsewhere"})  # the client writes Host itself
    assert ports == set() and pool.open_connections == 0


@pytest.mark.parametrize("head", ["one endless field", "too many fields"])
async def test_an_answer_head_past_the_bounds_is_a_broken_upstream_not_a_growing_buffer(pool: UpstreamPool, head: str):
    sent: list[int] = []

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n" + (b"X-Endless: " if head == "one endless field" else b""))
        try:
            for _ in range(1024):  # up to 64 MiB of head, as long as the client reads
                if head == "one endless field":
                    writer.write(b"a" * 65536)
                else:
                    writer.write(b"".join(b"X-%d: 1\r\n" % n for n in range(MAX_ANSWER_FIELDS + 1)))
                await writer.drain()
                sent.append(1)
        except ConnectionError:
            pass

    async with raw_upstream(endless) as base:
        with pytest.raises(UpstreamBroken, match=f"exceeds {MAX_ANSWER_FIELDS} fields or {MAX_ANSWER_HEAD} bytes"):
            await get(pool, base)
    assert pool.open_connections == 0
    if head == "one endless field":
        assert len(sent) < 1024  # the node hung up long before 64 MiB (more than the sockets' buffers hold)
