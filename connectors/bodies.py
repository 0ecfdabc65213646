"""HTTP bodies read whole, within a limit, from aiohttp streams (a request the node serves, an answer it fetched).

aiohttp's `content.read(n)` returns what has arrived so far, up to n bytes: not the whole of a body that comes in
several packets. Every bounded read goes through `read_within` instead.
"""

from __future__ import annotations

from typing import Protocol


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
