"""The floor of edugate's own stack: its exchange-port server (gateway.http1) and upstream client (gateway.upstream)
as a bare mTLS reverse proxy, with no checks and no log, on uvloop.

    python bench/floor_proxy.py PORT UPSTREAM_URL SERVER_CERT SERVER_KEY CA

The exchange benchmark runs it beside nginx and edugate: the gap between it and edugate's full path is what the
checks and the durable log cost; the gap between it and nginx is the price of the Python HTTP/TLS stack itself.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvloop
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))
from bare_proxy import HOP, mtls_context

from connectors.bodies import read_within
from gateway.http1 import Answer, ExchangeServer, Request, WholeAnswer
from gateway.upstream import UpstreamPool


async def main(port: int, upstream: str, cert: str, key: str, ca: str) -> None:
    context = mtls_context(cert, key, ca)
    pool = UpstreamPool(limit=100, timeout=30.0)

    async def proxy(request: Request) -> Answer:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP]
        body = await read_within(request.content, 1 << 20)
        if body is None:
            return WholeAnswer(413, [], b"")
        with await pool.request(request.method, upstream, request.raw_path, headers, body) as answer:
            data = await answer.readexactly(answer.content_length or 0)
            content_type = answer.headers.get("Content-Type", "application/octet-stream")
            return WholeAnswer(answer.status, [("Content-Type", content_type)], data)

    runner = web.AppRunner(web.Application(), access_log=None)  # nothing is handed to aiohttp here
    await runner.setup()
    assert runner.server is not None
    server = ExchangeServer(proxy, runner.server, lambda path: False, on_refused=lambda reason: None)
    listener = await asyncio.get_running_loop().create_server(server, "127.0.0.1", port, ssl=context)
    async with listener:
        await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]))
