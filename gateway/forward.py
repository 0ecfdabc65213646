"""Forwarding an admitted exchange to the offered API (over the node's `UpstreamPool`): streamed, with credentials and
spoofable headers removed and the verified identity added."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from connectors.bodies import BodySource
from gateway.denials import Denial, PayloadTooLarge, RequestTimeout, UpstreamTimeout, UpstreamUnavailable
from gateway.exchange import Exchange, InboundRequest
from gateway.http1 import Answer, BodyTimeout, Request, StreamedAnswer, WholeAnswer
from gateway.upstream import InvalidRequest, ResponseTooLarge, UpstreamBroken, UpstreamResponse

if TYPE_CHECKING:
    from gateway.node import Node

# RFC 9110 §7.6.1 hop-by-hop fields, plus the legacy proxy ones.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Credentials and anything a client could use to pose as someone else upstream.
CLIENT_ONLY = frozenset(
    {
        "authorization",
        "forwarded",
        "host",
        "x-real-ip",
        "client-cert",
        "client-cert-chain",
        "ssl-client-cert",
        "x-client-cert",
        "x-client-verify",
        "x-forwarded-client-cert",
        "x-arr-clientcert",
    }
)
CLIENT_ONLY_PREFIXES = ("x-forwarded-", "x-ssl-", "edu-")

# The identity the node vouches for, passed upstream (documented in docs/PROTOCOL.md).
EXCHANGE_ID = "Edu-Exchange-Id"

OnComplete = Callable[[int, int], Awaitable[None]]

SMALL_ANSWER = 64 * 1024  # answers up to this size (with a Content-Length) are sent whole; larger ones stream


# Never passed upstream: the upstream client states the length of what it sends itself, and the node has met the
# client's 100-continue itself (the body it forwards is already on its way).
_NOT_UPSTREAM = HOP_BY_HOP | CLIENT_ONLY | {"content-length", "expect"}
# Never passed back: the length (the node states it), encodings and cookies, and an upstream's own exchange id.
_NOT_DOWNSTREAM = HOP_BY_HOP | {"content-length", "content-encoding", "set-cookie", EXCHANGE_ID.lower()}
_NONE: frozenset[str] = frozenset()


def _connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """The header names a Connection header lists (RFC 9110 §7.6.1): hop-by-hop too."""
    values = headers.getall("Connection", ())
    if not values:
        return _NONE
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def upstream_headers(x: Exchange) -> list[tuple[str, str]]:
    """The client's headers less hop-by-hop fields, credentials and anything spoofable, plus the verified identity."""
    incoming = x.request.headers
    listed = _connection_tokens(incoming)
    headers = []
    for name, value in incoming.items():
        lower = name.lower()
        if lower not in _NOT_UPSTREAM and lower not in listed and not lower.startswith(CLIENT_ONLY_PREFIXES):
            headers.append((name, value))
    assert x.peer is not None and x.token is not None and x.service is not None
    headers.append((EXCHANGE_ID, x.id))
    headers.append(("Edu-Caller-Oin", x.peer.oin))
    headers.append(("Edu-Client-Id", x.token.client_id))
    headers.append(("Edu-Data-Service", x.service.name))
    if x.purpose:
        headers.append(("Edu-Purpose", x.purpose))
    if x.school:
        headers.append(("Edu-School", x.school))
    return headers


def response_headers(upstream: UpstreamResponse, x: Exchange) -> list[tuple[str, str]]:
    listed = _connection_tokens(upstream.headers)
    headers = [
        (name, value)
        for name, value in upstream.headers.items()
        if (lower := name.lower()) not in _NOT_DOWNSTREAM and lower not in listed
    ]
    headers.append((EXCHANGE_ID, x.id))
    return headers


def _whole(request: InboundRequest, status: int, headers: list[tuple[str, str]], body: bytes) -> Answer:
    """An answer whose body is at hand, for whichever server the request came in on."""
    if isinstance(request, Request):
        return WholeAnswer(status, headers, body)
    return web.Response(status=status, body=body, headers=headers)


class _TooLarge(Exception):
    pass


async def _limited(content: BodySource, limit: int) -> AsyncIterator[bytes]:
    seen = 0
    while chunk := await content.readany():
        seen += len(chunk)
        if seen > limit:
            raise _TooLarge
        yield chunk


async def _streamed(
    request: InboundRequest, status: int, headers: list[tuple[str, str]], length: int | None
) -> web.StreamResponse | StreamedAnswer:
    """An answer to be written in parts, its head sent, on whichever server the request came in."""
    response: web.StreamResponse | StreamedAnswer
    if isinstance(request, Request):
        response = request.streamed(status, headers)
        response.content_length = length
        await response.prepare(request)
    else:
        response = web.StreamResponse(status=status, headers=headers)
        if length is not None:
            response.content_length = length
        await response.prepare(request)
    return response


async def forward(node: Node, x: Exchange, on_complete: OnComplete) -> Answer:
    """Send the exchange upstream and stream the answer back. `on_complete(status, bytes_out)` runs before the
    last byte reaches the client, so an answered exchange always has its outcome on record."""
    request = x.request
    limits = node.config.limits
    data: bytes | AsyncIterator[bytes] | None
    length = None
    if x.body is not None:
        data = x.body
    elif request.body_exists:
        data = _limited(request.content, limits.max_body_bytes)
        length = request.content_length  # kept as the client declared it; None: sent chunked
    else:
        data = None
    assert x.upstream is not None
    target = request.rel_url.raw_path_qs if request.rel_url.raw_query_string else request.raw_path
    filter_response = node.response_filter(x)
    try:
        with await node.upstream.request(
            request.method,
            x.upstream,
            target,
            upstream_headers(x),
            data,
            length=length,
        ) as upstream:
            headers = response_headers(upstream, x)
            if filter_response is not None:
                body = await upstream.read(limits.max_body_bytes)
                if 200 <= upstream.status < 300 and body:
                    body = await filter_response(node, x, body)
                await on_complete(upstream.status, len(body))
                return _whole(request, upstream.status, headers, body)
            length = upstream.content_length
            if length is not None and length <= SMALL_ANSWER:
                # A small answer goes back in one write: one TLS record and one send instead of three.
                body = await upstream.readexactly(length) if length else b""
                await on_complete(upstream.status, length)
                return _whole(request, upstream.status, headers, body)
            response = await _streamed(request, upstream.status, headers, length)
            sent = 0
            held = b""  # the last chunk waits for the outcome record, so a complete answer implies a record
            try:
                async for chunk in upstream:
                    sent += len(chunk)
                    if held:
                        await response.write(held)
                    held = chunk
            except OSError:  # UpstreamBroken, TimeoutError, or the client went away
                # Too late for an error answer: record the broken exchange and cut the connection, so the
                # client sees a truncated response rather than a complete-looking one.
                await on_complete(502, sent)
                if request.transport is not None:
                    request.transport.abort()
                return response
            await on_complete(upstream.status, sent)
            await response.write_eof(held)
            return response
    except _TooLarge as exc:
        raise PayloadTooLarge(f"the request body exceeds {limits.max_body_bytes} bytes", step="limits") from exc
    except ResponseTooLarge as exc:
        raise UpstreamUnavailable("the upstream answer exceeds the size limit", step="forward") from exc
    except InvalidRequest as exc:
        raise Denial(f"the request cannot be passed on: {exc}", step="forward") from exc
    except BodyTimeout as exc:  # the client stopped sending the body it was streaming through us
        raise RequestTimeout(str(exc), step="forward") from exc
    except TimeoutError as exc:
        raise UpstreamTimeout(
            f"the offered API did not answer within {limits.upstream_timeout:g} s", step="forward"
        ) from exc
    except UpstreamBroken as exc:
        raise UpstreamUnavailable(
            f"the offered API broke off its answer: {exc}"
            if exc.answered
            else f"the offered API cannot be reached: {exc}",
            step="forward",
        ) from exc
    except (aiohttp.ClientError, OSError) as exc:  # reading the client's body
        raise UpstreamUnavailable(f"the offered API cannot be reached: {type(exc).__name__}", step="forward") from exc
