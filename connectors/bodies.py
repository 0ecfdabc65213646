"""HTTP bodies read whole, within a limit, from aiohttp streams (a request the node serves, an answer it fetched).

aiohttp's `content.read(n)` returns what has arrived so far, up to n bytes: not the whole of a body that comes in
several packets. Every bounded read goes through `read_within` instead; a form a page posts, through `form_within`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import structlog
from aiohttp import web
from multidict import MultiDictProxy

log = structlog.get_logger("edugate.bodies")


class BodySource(Protocol):
    """What a body is read from: aiohttp's StreamReader, or the exchange port's own (gateway.http1.BodyStream)."""

    async def readany(self) -> bytes: ...


async def read_within(stream: BodySource, limit: int) -> bytes | None:
    """Everything `stream` holds up to its end, or None as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def form_within(request: web.Request, seconds: float) -> MultiDictProxy[Any]:
    """The request's form (aiohttp's `post()`, within its client_max_size), or 408 when it has not arrived within
    `seconds`: a browser sends a form at once, and a client that trickles one would hold its connection as long as
    it liked. A form that cannot be decoded is 400."""
    try:
        async with asyncio.timeout(seconds):
            return await request.post()
    except TimeoutError:
        log.warning("form timed out", path=request.path, peer=request.remote, seconds=seconds)
        raise web.HTTPRequestTimeout(text=f"the form did not arrive within {seconds:g} s") from None
    except (ValueError, LookupError) as exc:
        # aiohttp decodes the form as it parses it: bytes that are not its charset (UnicodeDecodeError), a charset
        # Python does not know (LookupError), a multipart part without a name (ValueError). The client's fault.
        log.info("form refused", path=request.path, peer=request.remote, error=str(exc)[:200])
        raise web.HTTPBadRequest(text=f"the form cannot be read: {str(exc)[:200]}") from None
