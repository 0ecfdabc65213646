"""A small keep-alive HTTP/1.1 load generator over (m)TLS, for the exchange benchmark.

Hand-written on asyncio streams because no load tool in Debian presents client certificates, and a full
HTTP client library would spend more CPU than the servers under test. Each connection sends its own fixed request
(the i-th of the requests given, round robin) in a loop, reads each response (Content-Length or chunked), and records
latencies.

Run it on uvloop (`bench/exchange.py` does): the load generator shares the machine's cores with the servers, and on
asyncio's own event loop it capped nginx's figure. Five interleaved pairs of 6-s runs against nginx, asyncio's loop
then uvloop: 10,021/15,273, 11,030/15,617, 8,862/12,384, 9,892/14,598, 8,168/9,392 req/s (+42% in the median), the
load generator's CPU 41-56 against 29-40 us per request; five such pairs against the gateway moved -9% to +19% (+1% in
the median), since there the gateway's own loop is the limit.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]
    server_cpu: float = 0.0  # CPU seconds the server spent meanwhile, when the caller measures it
    client_cpu: float = 0.0  # CPU seconds the load generator itself spent, when the caller measures it

    @property
    def ok(self) -> int:
        """Requests answered with a status below 400."""
        return sum(n for status, n in self.statuses.items() if status < 400)

    @property
    def rps(self) -> float:
        """Requests answered with a success per second: a refusal is not throughput (an expired token makes
        every answer a quick 401)."""
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100.0 * len(ordered)))] * 1000.0


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _worker(
    host: str, port: int, context: ssl.SSLContext | None, request: bytes, deadline: float, result: Result
) -> None:
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            try:
                status = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                result.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port, ssl=context)
                continue
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            result.requests += 1
    finally:
        writer.close()


class OpenConnections:
    """Keep-alive connections opened once and used for several known numbers of requests, so that a count taken
    over the later ones holds no TLS handshake."""

    def __init__(self, streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
        self.streams = streams

    @classmethod
    async def open(cls, host: str, port: int, context: ssl.SSLContext | None, connections: int) -> OpenConnections:
        return cls([await asyncio.open_connection(host, port, ssl=context) for _ in range(connections)])

    async def send(self, requests: Sequence[bytes], per_connection: int) -> Result:
        """`per_connection` requests on every connection (the i-th connection sends the i-th of `requests`, round
        robin), one after another on each, all connections at once."""
        result = Result(0, 0, 0.0, [], {})

        async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
            for _ in range(per_connection):
                writer.write(request)
                status = await _read_response(reader)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                result.requests += 1

        started = time.perf_counter()
        await asyncio.gather(
            *(one(reader, writer, requests[i % len(requests)]) for i, (reader, writer) in enumerate(self.streams))
        )
        result.seconds = time.perf_counter() - started
        return result

    def close(self) -> None:
        for _, writer in self.streams:
            writer.close()


def build_request(method: str, path: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def run(
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    requests: Sequence[bytes],
    *,
    connections: int,
    seconds: float,
    warmup: float = 1.0,
) -> Result:
    """Load from `connections` keep-alive connections for `seconds`; the i-th sends the i-th of `requests` (round
    robin)."""
    if warmup > 0:
        warm = Result(0, 0, 0.0, [], {})
        until = time.perf_counter() + warmup
        await asyncio.gather(
            *(_worker(host, port, context, requests[i % len(requests)], until, warm) for i in range(connections))
        )
    result = Result(0, 0, 0.0, [], {})
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _worker(host, port, context, requests[i % len(requests)], started + seconds, result)
            for i in range(connections)
        )
    )
    result.seconds = time.perf_counter() - started
    return result
