"""The exchange port's HTTP/1.1 server: an asyncio protocol on httptools (llhttp, Node.js's parser) that serves
inbound exchanges itself and hands every other request to the node's aiohttp application.

Why its own server: aiohttp's server layer (request objects, handler tasks, router, middleware, response writer)
took about a quarter of the event loop's time per exchange; this one parses into a small `Request` that offers
exactly the part of `aiohttp.web.Request` the check pipeline reads, under the same names and meanings, so the
checks run unchanged on either.

- **Exchanges** (any path the aiohttp app has no route of its own for) are parsed here and passed to the handler
  one at a time per connection; pipelined requests wait their turn, so answers leave in order. Bodies stream
  in with back-pressure (reading pauses above `HIGH_WATER` unread bytes).
- **Everything else** (token endpoint, discovery, consent API, portal, log API, and any request-target that is not
  a plain path): from that request on, the connection belongs to aiohttp's own `RequestHandler`. This protocol
  keeps parsing and hands each request on re-serialised from what llhttp parsed (the head as received, the body in
  its original framing), once every earlier exchange on the connection has been answered.
- A request llhttp refuses gets the Edu-V 400 (0011) and is reported to `on_refused`; a handler that crashes,
  the Edu-V 500 (0099); both close the connection, as aiohttp's server did.
- Keep-alive as HTTP/1.1 says (`Connection: close`, HTTP/1.0); an idle connection closes after `KEEPALIVE` s; a
  request whose body was not read to its end closes its connection after the answer.
- Graceful stop (`ExchangeSite.stop`): no new connections, idle ones closed, busy ones finish their current
  exchange (up to the runner's shutdown timeout), then the rest are cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

import httptools
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from yarl import URL

from connectors.http_refusals import ConnectionLimit
from gateway.denials import NODE_FAILED, UNPARSEABLE, Denial, NodeFailed, SchemaIncorrect, with_detail

log = structlog.get_logger("edugate.http1")

HIGH_WATER = 1024 * 1024  # unread request body above which the connection stops reading...
LOW_WATER = 256 * 1024  # ...until the handler has read it below this
MAX_PIPELINED = 16  # parsed requests waiting their turn on one connection before reading pauses
KEEPALIVE = 75.0  # seconds an idle connection stays open (aiohttp's default)
LINGER = 2.0  # after a refusal that ends the connection: at most this long reading what the client still sends...
LINGER_QUIET = 0.1  # ...and closed as soon as it has sent nothing for this long

_EMPTY_QUERY: MultiDictProxy[str] = MultiDictProxy(MultiDict())
_NO_BODY_STATUS = frozenset({204, 304})


class Request:
    """One parsed request: the subset of `aiohttp.web.Request` the exchange pipeline uses, with the same meanings
    (`path` and `query` percent-decoded as yarl decodes them, `raw_path` the request-target as sent)."""

    __slots__ = (
        "_protocol",
        "_rel_url",
        "body_exists",
        "content",
        "content_length",
        "headers",
        "keep_alive",
        "method",
        "raw_headers",
        "raw_path",
        "transport",
        "version",
    )

    def __init__(
        self,
        method: str,
        raw_path: str,
        raw_headers: tuple[tuple[bytes, bytes], ...],
        headers: CIMultiDictProxy[str],
        content: BodyStream,
        protocol: ExchangeProtocol,
        *,
        version: tuple[int, int],
        keep_alive: bool,
        content_length: int | None,
        body_exists: bool,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.raw_headers = raw_headers
        self.headers = headers
        self.content = content
        self._protocol = protocol
        self.transport: asyncio.Transport | None = protocol.transport
        self.version = version
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.body_exists = body_exists
        self._rel_url: URL | None = None

    @property
    def rel_url(self) -> URL:
        if self._rel_url is None:
            path, _, query = self.raw_path.partition("?")
            self._rel_url = URL.build(path=path, query_string=query.partition("#")[0], encoded=True)
        return self._rel_url

    @property
    def path(self) -> str:
        return self.rel_url.path

    @property
    def query(self) -> MultiDictProxy[str]:
        if "?" not in self.raw_path:
            return _EMPTY_QUERY
        return self.rel_url.query

    def streamed(self, status: int, headers: Iterable[tuple[str, str]]) -> StreamedAnswer:
        """An answer whose body is written in parts (`prepare`, `write`..., `write_eof`), like aiohttp's
        StreamResponse."""
        return StreamedAnswer(self._protocol, status, headers)


class BodyTimeout(TimeoutError):
    """No part of a request body arrived for the server's `body_timeout`: the client's doing, not an upstream's."""


class BodyStream:
    """A request body as it arrives: `readany()` gives what has arrived (b"" at its end), as aiohttp's StreamReader's
    does, and raises BodyTimeout when nothing arrives for the server's `body_timeout`."""

    __slots__ = ("_chunks", "_eof", "_error", "_protocol", "_size", "_waiter", "continue_wanted")

    def __init__(self, protocol: ExchangeProtocol, *, continue_wanted: bool = False) -> None:
        self._protocol = protocol
        self.continue_wanted = continue_wanted  # the client waits for "100 Continue" before it sends the body
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER:
            self._protocol.pause_for_body()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if not self._eof:
            self._error = error
        self._wake()

    def complete(self) -> bool:
        """Whether the whole body has arrived (read or not): the connection can carry the next request."""
        return self._eof

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def readany(self) -> bytes:
        while not self._chunks:
            if self._eof:
                return b""
            if self._error is not None:
                raise self._error
            if self.continue_wanted:
                self.continue_wanted = False
                self._protocol.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timeout = self._protocol.body_timeout
            expiry = loop.call_later(timeout, _expire, waiter, timeout)  # only set while waiting: nothing per read
            try:
                await waiter
            finally:
                expiry.cancel()
                self._waiter = None
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        if self._size < LOW_WATER:
            self._protocol.resume_for_body()
        return chunk


def _expire(waiter: asyncio.Future[None], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(BodyTimeout(f"no part of the request body arrived for {timeout:g} s"))


class StreamedAnswer:
    """An answer written in parts. With a `content_length` it is framed by it, else chunked (HTTP/1.1) or ended by
    closing the connection (HTTP/1.0)."""

    def __init__(self, protocol: ExchangeProtocol, status: int, headers: Iterable[tuple[str, str]]) -> None:
        self._protocol = protocol
        self.status = status
        self.headers = headers
        self.content_length: int | None = None
        self._chunked = False
        self._body_allowed = True

    async def prepare(self, request: Request) -> None:
        protocol = self._protocol
        self._body_allowed = self.status not in _NO_BODY_STATUS and request.method != "HEAD"
        self._chunked = self._body_allowed and self.content_length is None and request.version >= (1, 1)
        if self._body_allowed and self.content_length is None and not self._chunked:
            protocol.close_after_answer()  # HTTP/1.0: the end of the body is the end of the connection
        protocol.write(protocol.head(self.status, self.headers, self.content_length, chunked=self._chunked))

    async def write(self, data: bytes) -> None:
        if data and self._body_allowed:
            self._protocol.write(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)
            await self._protocol.drain()

    async def write_eof(self, data: bytes = b"") -> None:
        await self.write(data)
        if self._chunked:
            self._protocol.write(b"0\r\n\r\n")


class WholeAnswer:
    """An answer whose body is at hand: written in one go, without building an aiohttp Response."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


# What the exchange handler returns: aiohttp's answers are served too (the pipeline's Edu-V refusals are built once,
# for either server).
Answer = web.StreamResponse | StreamedAnswer | WholeAnswer
Handler = Callable[[Request], Awaitable[Answer]]
Refused = Callable[[str], None]


class _Bridge:
    """A connection handed to aiohttp's RequestHandler: re-serialised requests, delivered once the exchanges
    before them on this connection have been answered."""

    def __init__(self, handler: RequestHandler) -> None:
        self.handler = handler
        self.pending: list[bytes] = []
        self.started = False
        self.chunked = False  # the framing of the request being passed on

    def send(self, data: bytes) -> None:
        if self.started:
            self.handler.data_received(data)
        else:
            self.pending.append(data)

    def start(self, transport: asyncio.Transport) -> None:
        if not self.started:
            self.started = True
            self.handler.connection_made(transport)
            for data in self.pending:
                self.handler.data_received(data)
            self.pending.clear()


class ExchangeProtocol(asyncio.Protocol):
    """One client connection on the exchange port."""

    def __init__(self, server: ExchangeServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        # the message being parsed
        self._url = b""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._lingering: asyncio.TimerHandle | None = None  # after a refusal: closes once the client pauses
        self._stall: asyncio.TimerHandle | None = None  # while writing is paused: ends a client that reads nothing
        # llhttp keeps a header field or request-target it has not seen the end of, and the limits on those are
        # checked once they end: so the packets that arrive wholly inside a head are counted as they come, or one
        # endless field would fill memory. (The complete fields are bounded by their own size and count.)
        self._in_head = False
        self._head_packets = 0
        self._body: BodyStream | None = None
        # parsed requests waiting for (or in) the handler, oldest first, and a refusal owed after them (bytes)
        self._queue: deque[Request | bytes] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._bridge: _Bridge | None = None
        self._closing = False  # no further requests: close once the current answers are written
        self._lost = False
        self._reading_paused = False
        self._body_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._last_active = self._loop.time()
        self._idle_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol ------------------------------------------------------------------------------------

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport

    @property
    def body_timeout(self) -> float:
        return self._server.body_timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's SSL transport is one, not a subclass
        if not self._server.connection_limit.admits(len(self._server.connections)):
            # Full: the descriptors left are the node's own (the log, the upstreams, the register), not a client's.
            self._lost = True
            self._transport.abort()
            return
        self._server.connections.add(self)
        self._idle_timer = self._loop.call_later(KEEPALIVE, self._idle_check)

    def data_received(self, data: bytes) -> None:
        if self._closing and self._bridge is None:
            if self._lingering is not None:  # still sending after a refusal: wait for a pause, then close
                self._lingering.cancel()
                self._lingering = self._loop.call_later(LINGER_QUIET, self._close)
            return  # the answer that ends this connection is on its way; nothing after it is read
        try:
            self._parser.feed_data(data)
            if self._in_head:  # the packet ends inside a head
                if self._head_packets < 0:  # one that began in it (after any number of whole pipelined requests)
                    self._head_packets = 0
                else:  # a packet wholly inside one head: is it still one this server takes?
                    self._head_packets += len(data)
                    if self._head_packets > self._server.max_head_size:
                        self._refuse_unparseable(f"the request head is longer than {self._server.max_head_size} bytes")
        except httptools.HttpParserUpgrade:
            self._closing = True  # no protocol switch is offered here: the request is answered, then we close
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, _RefusedHead):
                self._refuse_unparseable(str(cause))
            else:
                self._crash(cause or exc)
        except httptools.HttpParserError as exc:
            self._refuse_unparseable(str(exc) or type(exc).__name__)

    def eof_received(self) -> bool | None:
        if self._bridge is not None and self._bridge.started:
            self._bridge.handler.eof_received()
        if self._body is not None:
            self._body.fail(ConnectionResetError("the client closed the connection mid-body"))
        return None  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._server.connections.discard(self)
        if self._stall is not None:
            self._stall.cancel()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        lost = ConnectionResetError("the connection was lost")
        if self._body is not None:
            self._body.fail(lost)
        for item in self._queue:
            if isinstance(item, Request):
                item.content.fail(lost)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(lost)
        if self._bridge is not None and self._bridge.started:
            self._bridge.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._write_paused = True
        # A client that takes nothing for `send_timeout` loses the connection, whoever writes to it (an exchange's
        # answer here, or aiohttp's on a handed-over connection): else one that stopped reading would hold it for ever.
        if self._stall is None:
            self._stall = self._loop.call_later(self._server.send_timeout, self._stalled)
        if self._bridge is not None and self._bridge.started:
            self._bridge.handler.pause_writing()

    def _stalled(self) -> None:
        self._stall = None
        log.info("client took no answer", seconds=self._server.send_timeout)
        self.abort()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._bridge is not None and self._bridge.started:
            self._bridge.handler.resume_writing()

    # httptools callbacks ---------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._raw_headers = []
        self._in_head, self._head_packets = True, -1  # -1: begun in the packet being fed

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        server = self._server
        if len(name) + len(value) > server.max_field_size:
            raise _RefusedHead(f"a header field is longer than {server.max_field_size} bytes")
        self._raw_headers.append((name, value))
        if len(self._raw_headers) > server.max_header_count:
            raise _RefusedHead(f"more than {server.max_header_count} header fields")

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        method = parser.get_method().decode("ascii")
        raw_path = self._url.decode("utf-8", "surrogateescape")
        if len(self._url) > self._server.max_line_size:
            raise _RefusedHead(f"the request-target is longer than {self._server.max_line_size} bytes")
        if parser.get_http_version() not in ("1.0", "1.1"):  # llhttp takes a request line without one as HTTP/0.9
            raise _RefusedHead(f"HTTP/{parser.get_http_version()} is not served here, only HTTP/1.1 and 1.0")
        raw_headers = tuple(self._raw_headers)
        chunked = _chunked(raw_headers)
        if self._bridge is not None or not self._server.serves_here(raw_path):
            self._to_aiohttp(method, raw_headers, chunked)
            return
        headers = CIMultiDictProxy(
            CIMultiDict(
                [(n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for n, v in raw_headers]
            )
        )
        declared = headers.get("Content-Length")
        length = int(declared) if declared is not None else None  # llhttp let only digits through
        body_exists = chunked or bool(length)
        continue_wanted = body_exists and headers.get("Expect", "").lower() == "100-continue"
        body = BodyStream(self, continue_wanted=continue_wanted)
        self._body = body
        version = (1, 1) if parser.get_http_version() == "1.1" else (1, 0)
        request = Request(
            method,
            raw_path,
            raw_headers,
            headers,
            body,
            self,
            version=version,
            keep_alive=parser.should_keep_alive(),
            content_length=length,
            body_exists=body_exists,
        )
        self._queue.append(request)
        if len(self._queue) > MAX_PIPELINED:
            self._pause_reading()
        if self._worker is None:
            self._worker = self._loop.create_task(self._serve())

    def on_body(self, data: bytes) -> None:
        if self._bridge is not None:
            self._bridge.send(b"%x\r\n%b\r\n" % (len(data), data) if self._bridge.chunked else data)
        elif self._body is not None:
            self._body.feed(data)

    def on_message_complete(self) -> None:
        if self._bridge is not None:
            if self._bridge.chunked:
                self._bridge.send(b"0\r\n\r\n")
        elif self._body is not None:
            self._body.feed_eof()
            self._body = None

    # handing over to aiohttp --------------------------------------------------------------------------------

    def _to_aiohttp(self, method: str, raw_headers: tuple[tuple[bytes, bytes], ...], chunked: bool) -> None:
        if self._bridge is None:
            self._bridge = _Bridge(self._server.aiohttp_handler())
            if self._idle_timer is not None:
                self._idle_timer.cancel()  # aiohttp keeps its own keep-alive timer from here on
        bridge = self._bridge
        version = self._parser.get_http_version()
        head = [b"%b %b HTTP/%b\r\n" % (method.encode("ascii"), self._url, version.encode("ascii"))]
        head.extend(b"%b: %b\r\n" % (name, value) for name, value in raw_headers)
        head.append(b"\r\n")
        bridge.chunked = chunked
        bridge.send(b"".join(head))
        if not self._queue:
            bridge.start(self._transport)  # type: ignore[arg-type]

    # serving exchanges ------------------------------------------------------------------------------------

    async def _serve(self) -> None:
        """Answer the queued requests in order; then hand the connection on, or wait for the next one."""
        try:
            while self._queue and not self._lost:
                item = self._queue[0]
                if isinstance(item, bytes):  # a refusal that ends the connection, owed after the answers before it
                    self.write(item)
                    self._linger()
                    return
                await self._answer(item)
                self._queue.popleft()
                self._last_active = self._loop.time()
                if self._reading_paused and len(self._queue) <= MAX_PIPELINED // 2:
                    self._resume_reading()
                ending = self._closing or not item.keep_alive or not item.content.complete()
                if ending and not (self._queue and isinstance(self._queue[0], bytes)):  # a refusal still owed
                    if item.content.complete():
                        self._close()
                    else:  # answered before its body ended (413, 408, a refusal): the client may still be sending
                        self._linger()
                    return
        finally:
            self._worker = None
            self._server.idle(self)
        if self._bridge is not None and not self._lost:
            self._bridge.start(self._transport)  # type: ignore[arg-type]

    async def _answer(self, request: Request) -> None:
        if not request.keep_alive:
            self._closing = True  # said in the answer's head, and nothing after it is served
        try:
            response = await self._server.handler(request)
            if isinstance(response, StreamedAnswer):
                return  # written as it went
            if isinstance(response, WholeAnswer):
                status, headers, body = response.status, response.headers, response.body
            elif isinstance(response, web.Response) and isinstance(response.body, bytes):
                status, headers, body = response.status, response.headers.items(), response.body
            else:
                raise TypeError(f"the exchange handler returned {type(response).__name__} without a bytes body")
            if status in _NO_BODY_STATUS:
                answer = self.head(status, headers, None)
            elif request.method == "HEAD":  # the length the body would have, and no body
                answer = self.head(status, headers, len(body))
            else:
                answer = self.head(status, headers, len(body)) + body
        except Exception as exc:
            self._crash(exc)
            return
        self.write(answer)
        if self._write_paused:
            with contextlib.suppress(ConnectionError):
                await self.drain()

    def head(self, status: int, headers: Iterable[tuple[str, str]], length: int | None, *,
             chunked: bool = False) -> bytes:
        """The status line and header block, with the framing and connection headers this server owns."""
        lines = [_status_line(status)]
        for name, value in headers:
            if name.lower() not in _OWN_HEADERS:
                lines.append(f"{name}: {value}\r\n")
        if length is not None:
            lines.append(f"Content-Length: {length}\r\n")
        elif chunked:
            lines.append("Transfer-Encoding: chunked\r\n")
        lines.append(_date_line())
        if self._closing or self._server.stopping:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        block = "".join(lines)
        # Each line ends in exactly one CR LF: any more means a name or value carries one (a response split).
        if block.count("\n") != len(lines) or block.count("\r") != len(lines) or "\0" in block:
            raise ValueError("a header name or value of the answer contains CR, LF or NUL")
        return block.encode("utf-8", "surrogateescape")

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._lost:
            self._transport.write(data)

    async def drain(self) -> None:
        """Wait until the client has taken enough of what was written (ConnectionResetError if it is lost first,
        as after `send_timeout`)."""
        if self._lost:
            raise ConnectionResetError("the connection was lost")
        if self._write_paused:
            self._drain_waiter = self._loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def close_after_answer(self) -> None:
        self._closing = True

    # refusals outside the handler -----------------------------------------------------------------------

    def _refuse_unparseable(self, detail: str) -> None:
        self._refuse(SchemaIncorrect(with_detail(UNPARSEABLE, detail), step="http"))

    def _crash(self, exc: BaseException) -> None:
        log.error("exchange handler failed", error=repr(exc))
        self._refuse(NodeFailed(NODE_FAILED, step="http"))

    def _refuse(self, denial: Denial) -> None:
        """An answer that ends the connection, written after the answers already owed on it; reported first."""
        self._server.on_refused(denial.message)
        self._closing = True
        if self._bridge is not None and self._bridge.started:
            self._close()  # aiohttp owns the connection's answers now; it cannot be told mid-stream
            return
        body = denial.body()
        if denial.http_status < 500 and self._url.partition(b"?")[0] in self._server.oauth_paths:
            # a client of the token endpoint reads OAuth's error fields (RFC 6749 §5.2); the Edu-V ones stay
            body = {"error": "invalid_request", "error_description": denial.message, **body}
        payload = json.dumps(body).encode()
        headers = (("Content-Type", "application/json; charset=utf-8"), ("Cache-Control", "no-store"))
        answer = self.head(denial.http_status, headers, len(payload)) + payload
        if self._worker is None or self._worker is asyncio.current_task():
            self.write(answer)  # nothing owed before it (or it is the answer to the request in hand)
            self._linger()
        else:
            self._queue.append(answer)

    # flow control and closing ---------------------------------------------------------------------------

    def pause_for_body(self) -> None:
        self._body_paused = True
        self._pause_reading()

    def resume_for_body(self) -> None:
        if self._body_paused:
            self._body_paused = False
            if len(self._queue) <= MAX_PIPELINED:
                self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None and not self._lost:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None and not self._lost:
            self._reading_paused = False
            self._transport.resume_reading()

    def _idle_check(self) -> None:
        if self._lost or (self._bridge is not None):
            return
        idle_for = self._loop.time() - self._last_active
        if not self.busy() and idle_for >= KEEPALIVE:
            self._close()
            return
        self._idle_timer = self._loop.call_later(max(1.0, KEEPALIVE - idle_for), self._idle_check)

    def busy(self) -> bool:
        """An exchange is in hand or waiting on this connection (bridged connections are aiohttp's to stop)."""
        return self._worker is not None or bool(self._queue)

    def stop(self) -> None:
        """Graceful stop: close now if idle, else after the exchange in hand."""
        if self._bridge is not None:
            return
        self._closing = True
        if not self.busy():
            self._close()

    def _close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _linger(self) -> None:
        """Close after a refusal, but first read (and drop) what the client is still sending, for up to LINGER
        seconds: a socket closed with unread bytes resets the connection, and the reset can destroy the refusal
        before the client has read it (what nginx's lingering_close is for)."""
        self._closing = True  # data_received drops everything from here on
        self._lingering = self._loop.call_later(LINGER_QUIET, self._close)
        self._loop.call_later(LINGER, self._close)
        self._resume_reading()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class _RefusedHead(Exception):
    """A request head over this server's limits (answered 400 like one llhttp refuses)."""


class ExchangeServer:
    """What the connections share: the exchange handler, the hand-over to aiohttp, the limits, the live set."""

    def __init__(
        self,
        handler: Handler,
        aiohttp_server: web.Server,
        node_paths: Callable[[str], bool],
        *,
        on_refused: Refused,
        max_line_size: int = 8190,
        max_field_size: int = 8190,
        max_header_count: int = 128,
        max_head_size: int = 32 * 1024,
        body_timeout: float = 30.0,
        send_timeout: float = 60.0,
        max_connections: int = 1024,
        on_turned_away: Callable[[], None] = lambda: None,
        oauth_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.handler = handler
        # request-targets (paths) whose refusals here also carry OAuth's error fields: the token endpoint's
        self.oauth_paths = frozenset(path.encode("ascii") for path in oauth_paths)
        self._aiohttp_server = aiohttp_server
        self._node_paths = node_paths
        self.on_refused = on_refused  # a refusal outside the handler (unparseable, crashed): to be logged
        self.max_line_size = max_line_size
        self.max_field_size = max_field_size
        self.max_header_count = max_header_count
        self.max_head_size = max_head_size  # bytes of the packets that arrive wholly inside an unfinished head
        self.body_timeout = body_timeout  # seconds a request body may pause
        self.send_timeout = send_timeout  # seconds a client may leave the answer untaken
        # open client connections; one more is closed at once (and `on_turned_away` told, for the metrics)
        self.connection_limit = ConnectionLimit(max_connections, on_turned_away=on_turned_away)
        self.connections: set[ExchangeProtocol] = set()
        self.stopping = False
        self._all_idle: asyncio.Event | None = None

    def __call__(self) -> ExchangeProtocol:
        return ExchangeProtocol(self)

    def serves_here(self, raw_path: str) -> bool:
        """Exchanges are served here: plain-path targets the aiohttp app has no route of its own for."""
        if not raw_path.startswith("/"):
            return False  # absolute-form, authority-form, asterisk-form: aiohttp's
        path = raw_path.partition("?")[0]
        if "%" in path:
            path = URL.build(path=path, encoded=True).path
        return not self._node_paths(path)

    def aiohttp_handler(self) -> RequestHandler:
        return self._aiohttp_server()

    def idle(self, connection: ExchangeProtocol) -> None:
        if self.stopping:
            connection.stop()
            if self._all_idle is not None and not any(c.busy() for c in self.connections):
                self._all_idle.set()

    async def stop(self, grace: float) -> None:
        """Close idle connections now; let busy ones finish their exchange within `grace` seconds, then cut them."""
        self.stopping = True
        self._all_idle = asyncio.Event()
        for connection in list(self.connections):
            connection.stop()
        if any(c.busy() for c in self.connections):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._all_idle.wait()
        for connection in list(self.connections):
            if connection.busy():
                connection.abort()


class ExchangeSite(web.BaseSite):
    """An aiohttp site whose connections start on `ExchangeServer`; the runner's cleanup stops it gracefully."""

    __slots__ = ("_exchange_server", "_host", "_port")

    def __init__(
        self, runner: web.BaseRunner, exchange_server: ExchangeServer, host: str, port: int, **kwargs: Any
    ) -> None:
        super().__init__(runner, **kwargs)
        self._exchange_server = exchange_server
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return str(URL.build(scheme="https" if self._ssl_context else "http", host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self._exchange_server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._exchange_server.stop(self._runner._shutdown_timeout)  # the runner's own grace (no public name)
        self._runner._unreg_site(self)


def node_paths_of(app: web.Application) -> Callable[[str], bool]:
    """Whether the app has a route of its own (not the catch-all) for a path: plain paths exactly, dynamic and
    static resources by the fixed prefix before their first variable part."""
    exact: set[str] = set()
    prefixes: list[str] = []
    for resource in app.router.resources():
        info = resource.get_info()
        if "path" in info:
            exact.add(str(info["path"]))
        elif "formatter" in info:
            fixed = str(info["formatter"]).split("{", 1)[0]
            if fixed == "/":
                continue  # the catch-all "/{tail}": exchanges
            prefixes.append(fixed)
        elif "prefix" in info:
            prefixes.append(str(info["prefix"]).rstrip("/") + "/")
    starts = tuple(prefixes)

    def owned(path: str) -> bool:
        return path in exact or path.startswith(starts)

    return owned


def _chunked(raw_headers: tuple[tuple[bytes, bytes], ...]) -> bool:
    """Whether the body comes chunked. A Transfer-Encoding other than one `chunked` is refused (RFC 9112 §6.3):
    llhttp frames a request whose final coding is not chunked as running to the connection's end, where the node
    would wait for ever, and the node undoes no other coding, so the upstream would get a body it cannot read."""
    codings = [value for name, value in raw_headers if name.lower() == b"transfer-encoding"]
    if not codings:
        return False
    if len(codings) > 1 or codings[0].strip().lower() != b"chunked":
        shown = b", ".join(codings).decode("latin-1")[:100]
        raise _RefusedHead(f"Transfer-Encoding {shown!r}: only 'chunked' frames a request body here")
    return True


_OWN_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "date"})  # written by head() alone


@functools.cache
def _status_line(status: int) -> str:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return f"HTTP/1.1 {status} {reason}\r\n"


_date: tuple[int, str] = (0, "")


def _date_line() -> str:
    """The Date header (RFC 9110 §6.6.1), formatted once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, f"Date: {formatdate(now, usegmt=True)}\r\n")
    return _date[1]
