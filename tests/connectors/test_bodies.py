"""Bodies read whole within a limit: requests the node serves (checks, token and consent endpoints) and answers
it fetches (the sender side, jwks_uri)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from connectors.bodies import read_within


@asynccontextmanager
async def slow_answer(parts: list[bytes]) -> AsyncIterator[str]:
    """A server that sends its answer in `parts`, a pause between each (so they arrive as separate packets)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = sum(len(p) for p in parts)
        await response.prepare(request)
        for part in parts:
            await response.write(part)
            await asyncio.sleep(0.02)
        return response

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def test_an_answer_sent_in_several_packets_is_read_whole() -> None:
    parts = [b"a" * 1000, b"b" * 1000, b"c" * 1000]
    async with slow_answer(parts) as url, aiohttp.ClientSession() as session, session.get(url) as answer:
        assert await read_within(answer.content, 10_000) == b"".join(parts)


async def test_a_body_past_the_limit_gives_none_rather_than_a_cut_body() -> None:
    parts = [b"a" * 1000, b"b" * 1000]
    async with slow_answer(parts) as url, aiohttp.ClientSession() as session, session.get(url) as answer:
        assert await read_within(answer.content, 1500) is None


async def test_a_body_of_exactly_the_limit_is_allowed() -> None:
    parts = [b"a" * 1000, b"b" * 500]
    async with slow_answer(parts) as url, aiohttp.ClientSession() as session, session.get(url) as answer:
        assert await read_within(answer.content, 1500) == b"a" * 1000 + b"b" * 500
