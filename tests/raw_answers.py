"""One raw HTTP/1.1 request on a connection of its own, and the answer the server gives before it closes it: for
requests no client library would send (a header byte HTTP does not allow)."""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any


async def answer_before_close(host: str, port: int, raw: bytes, *,
                              context: ssl.SSLContext | None = None) -> tuple[int, bytes, Any]:
    """(status, head, parsed JSON body) of the one answer to `raw`, read until the server closes."""
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        writer.write(raw)
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    head, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), head, json.loads(body)
