"""A bare aiohttp mTLS reverse proxy (no checks, no log) on uvloop: the floor of any aiohttp-based gateway.

    python bench/bare_proxy.py PORT UPSTREAM_URL SERVER_CERT SERVER_KEY CA

The exchange benchmark runs it beside nginx and edugate, to show how much of edugate's cost is the Python
HTTP stack itself and how much its checks and durable log add.
"""

from __future__ import annotations

import ssl
import sys

import aiohttp
import uvloop
from aiohttp import web

# Headers a bare proxy does not pass on (the bench's floor proxies share them).
HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length", "authorization"}


def mtls_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """The floor proxies' server side: client certificates required, from the bench CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


async def main(port: int, upstream: str, cert: str, key: str, ca: str) -> None:
    context = mtls_context(cert, key, ca)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), auto_decompress=False)

    async def proxy(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        body = await request.read()
        async with session.request(request.method, upstream + request.raw_path, headers=headers, data=body) as up:
            return web.Response(status=up.status, body=await up.read(), headers={"Content-Type": up.content_type})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    import asyncio

    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]))
