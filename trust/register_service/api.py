"""What nodes read: the signed snapshot (with ETag / If-None-Match) and the change feed (server-sent events).

Every feed event carries a whole signed snapshot, never a delta, so a node trusts nothing it has not verified.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web

from trust.register_service.keys import public_pem
from trust.register_service.publisher import SnapshotPublisher
from trust.register_service.store import MAX_SERIAL, RegisterStore

log = structlog.get_logger("edugate.register_service")

PUBLISHER = web.AppKey("publisher", SnapshotPublisher)
STORE = web.AppKey("store", RegisterStore)
HEARTBEAT = web.AppKey("heartbeat", float)

SNAPSHOT_TYPE = "application/jose"


def edu_error(status: int, message: str, code: str = "0099") -> web.Response:
    """An Edu-V error body."""
    return web.json_response({"status": code, "statusMessage": message}, status=status)


def _etag(serial: int) -> str:
    return f'"{serial}"'


def _matches(header: str, serial: int) -> bool:
    tags = [tag.strip().removeprefix("W/").strip('"') for tag in header.split(",")]
    return "*" in tags or str(serial) in tags


async def snapshot(request: web.Request) -> web.StreamResponse:
    serial, token = await request.app[PUBLISHER].latest()
    headers = {"ETag": _etag(serial), "Cache-Control": "no-cache", "Register-Serial": str(serial)}
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and _matches(if_none_match, serial):
        return web.Response(status=304, headers=headers)
    return web.Response(text=token, content_type=SNAPSHOT_TYPE, headers=headers)


def _resume_point(request: web.Request) -> int | None:
    """The last serial the reader has: `Last-Event-ID` (a reconnecting EventSource) wins over `?after=`."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("after")
    if raw is None or raw == "":
        return None
    # isdigit() alone takes '²' and other Unicode digits; 19 digits keep it within the databases' 64-bit integer.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_SERIAL)) or int(raw) > MAX_SERIAL:
        raise ValueError(f"the last serial seen must be a non-negative integer up to {MAX_SERIAL}, got {raw[:40]!r}")
    return int(raw)


def _event(event: str, data: str, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


async def feed(request: web.Request) -> web.StreamResponse:
    """One `snapshot` event per serial after the reader's, oldest first; `heartbeat` events in between.

    Without a resume point the reader gets the latest snapshot first. A reader that resumes before the
    oldest kept serial gets the latest (each snapshot is the whole register, so nothing is lost).
    """
    try:
        after = _resume_point(request)
    except ValueError as exc:
        return edu_error(400, str(exc))
    store, publisher, heartbeat = request.app[STORE], request.app[PUBLISHER], request.app[HEARTBEAT]
    current = await store.serial()
    last = current - 1 if after is None else after
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    log.info("feed opened", after=after, peer=request.remote)
    try:
        await response.write(b"retry: 1000\n\n")
        while True:
            serials = await store.serials_after(last)
            if serials and serials[0] != last + 1:
                serials = serials[-1:]
            for serial in serials:
                _, token = await publisher.signed(serial)
                await response.write(_event("snapshot", token, serial))
                last = serial
            current = await store.wait_for_change(last, heartbeat)
            if current <= last:
                await response.write(_event("heartbeat", json.dumps({"serial": current})))
    except (ConnectionResetError, ConnectionError):
        log.info("feed closed by reader", last=last, peer=request.remote)
    return response


async def operator_key(request: web.Request) -> web.Response:
    """The operator's public key, for convenience; nodes must pin it from a trusted channel, not from here."""
    return web.Response(body=public_pem(request.app[PUBLISHER].key), content_type="application/x-pem-file")


async def health(request: web.Request) -> web.Response:
    body: dict[str, Any] = {"status": "ok", "serial": await request.app[STORE].serial()}
    return web.json_response(body)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/register/snapshot", snapshot),
        web.get("/v1/register/feed", feed),
        web.get("/v1/register/operator-key", operator_key),
        web.get("/health", health),
    ]
