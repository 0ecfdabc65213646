"""A node follows the live register: from a file, or from the register service over HTTP(S).

Over HTTP the node polls the snapshot with `If-None-Match` (a 304 counts as fresh contact) and follows the
server-sent change feed, reconnecting with backoff, so a revocation arrives within moments; polling goes on
as the fallback. Every snapshot, whatever its route, is verified with the pinned operator key, and an older
serial is refused: the node keeps its last good register and, once that is older than the holder's
`max_staleness`, fails closed.

With Redis, one node per deployment holds the feed (a lock with a renewed TTL; another node takes over when
it dies) and every node that learns a newer snapshot from the register stores it in Redis and publishes it.
The others receive it there and verify it themselves: Redis is a courier, not a trusted party. A snapshot
from Redis installs the newer register but does not count as contact with the register; only the node's own
poll or feed does, so a node cut off from the register still goes stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import ssl as ssl_module
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from connectors.bodies import read_within
from trust.register import RegisterHolder, RollbackRefused
from trust.snapshot import PublicKey, SnapshotRejected, verify_snapshot

if TYPE_CHECKING:
    import redis.asyncio

log = structlog.get_logger("edugate.register_source")

SNAPSHOT_PATH = "/v1/register/snapshot"
FEED_PATH = "/v1/register/feed"
MAX_EVENT = 64 * 1024 * 1024  # a snapshot or feed event larger than this is not a register: refused unread

# Store and publish in one step, and only when newer than what Redis holds: a slow node cannot roll Redis back.
_STORE_AND_PUBLISH = """
local current = tonumber(redis.call('HGET', KEYS[1], 'serial') or '0')
if tonumber(ARGV[1]) > current then
  redis.call('HSET', KEYS[1], 'serial', ARGV[1], 'token', ARGV[2])
  redis.call('PUBLISH', KEYS[2], ARGV[2])
  return 1
end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class SourceState:
    """What the source knows of its own health (for readiness and metrics)."""

    accepted: int = 0  # newer snapshots installed
    refused: int = 0  # snapshots refused: bad signature, invalid, rollback
    last_error: str | None = None
    feed_connected: bool = False
    leader: bool = False
    events: list[str] = field(default_factory=list)  # the last few refusals, newest last

    def note_refusal(self, reason: str) -> None:
        self.refused += 1
        self.events = [*self.events[-9:], reason]


@dataclass
class _Event:
    event: str = "message"
    data: list[str] = field(default_factory=list)
    id: str | None = None
    size: int = 0  # the bytes of its lines so far


async def server_sent_events(
    response: aiohttp.ClientResponse, max_event: int = MAX_EVENT
) -> AsyncIterator[tuple[str, str, str | None]]:
    """(event, data, id) from a text/event-stream. No line-length limit below `max_event`, but an event whose lines
    add up to more than that (one long line, or many short ones) ends the stream with a ValueError."""
    partial = bytearray()  # the line the last chunk ended inside; only new bytes are searched for line ends
    current = _Event()
    async for chunk in response.content.iter_any():
        *complete, rest = chunk.split(b"\n")
        if complete:
            complete[0] = bytes(partial) + complete[0]
            partial = bytearray(rest)
        else:
            partial += rest
        if current.size + len(partial) > max_event:
            raise ValueError(f"feed event larger than {max_event} bytes")
        for raw in complete:
            current.size += len(raw) + 1
            if current.size > max_event:
                raise ValueError(f"feed event larger than {max_event} bytes")
            try:
                line = raw.rstrip(b"\r").decode()
            except UnicodeDecodeError as exc:
                raise ValueError(f"feed line is not UTF-8 (byte {exc.start})") from None
            if not line:
                if current.data:
                    yield current.event, "\n".join(current.data), current.id
                current = _Event()
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                current.event = value
            elif name == "data":
                current.data.append(value)
            elif name == "id":
                current.id = value


async def bounded_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body of `response`, refused (ValueError) once it is, or declares itself, larger than `limit`."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise ValueError(f"the answer declares {declared} bytes, more than the {limit} a register document may have")
    body = await read_within(response.content, limit)
    if body is None:
        raise ValueError(f"the answer runs past the {limit} bytes a register document may have")
    return body


class RegisterSource:
    def __init__(self, holder: RegisterHolder, *, source: str, operator_key: PublicKey, poll_interval: float = 5.0,
                 feed: bool = True, ssl: ssl_module.SSLContext | None = None,
                 redis: redis.asyncio.Redis | None = None, redis_prefix: str = "edugate",
                 lock_ttl: float = 10.0, feed_idle_timeout: float = 60.0, max_backoff: float = 30.0,
                 max_document: int = MAX_EVENT) -> None:
        self.holder = holder
        self.max_document = max_document  # bytes of one snapshot, polled or from the feed
        self.source = source
        self.operator_key = operator_key
        self.poll_interval = poll_interval
        self.feed = feed
        self.ssl = ssl
        self.redis = redis
        self.lock_ttl = lock_ttl
        self.feed_idle_timeout = feed_idle_timeout
        self.max_backoff = max_backoff
        self.state = SourceState()
        self._is_url = source.startswith(("https://", "http://"))
        self._base = source.split("/v1/register/")[0].rstrip("/") if self._is_url else ""
        self._etag: str | None = None
        self._file_seen: tuple[int, int, int] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._feed_task: asyncio.Task[None] | None = None
        self._lock_token = secrets.token_hex(16)
        self._snapshot_key = f"{redis_prefix}:register:snapshot"
        self._channel = f"{redis_prefix}:register:snapshots"
        self._leader_key = f"{redis_prefix}:register:feed-leader"
        self._log = log.bind(source=source if self._is_url else str(Path(source)))

    # ---- life cycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load what can be had now, then follow in the background. Never raises for an unreachable or bad
        register: the holder simply stays not-ready (fail closed) until a good snapshot arrives."""
        if self._is_url:
            connector = aiohttp.TCPConnector(ssl=self.ssl if self.ssl is not None else True)
            self._session = aiohttp.ClientSession(connector=connector)
        if self.redis is not None:
            self._spawn(self._subscribe())
            await self._catch_up_from_redis()
        await self.refresh()
        self._spawn(self._poll())
        if self._is_url and self.feed:
            if self.redis is not None:
                self._spawn(self._lead())
            else:
                self._feed_task = self._spawn(self._follow_feed())

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._feed_task] if self._feed_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.append(task)
        return task

    # ---- one snapshot --------------------------------------------------------------------------------------

    async def _accept(self, token: str, *, origin: str, confirmed: bool = True) -> bool:
        """Verify and offer one snapshot. True if it was newer and is now in force."""
        try:
            register = verify_snapshot(token, self.operator_key)
        except SnapshotRejected as exc:
            self.state.note_refusal(f"{origin}: {exc}")
            self._log.warning("register snapshot refused", origin=origin, reason=str(exc), kept=self.holder.serial)
            return False
        try:
            newer = self.holder.offer(register, confirmed=confirmed)
        except RollbackRefused as exc:
            self.state.note_refusal(f"{origin}: {exc}")
            self._log.warning("register rollback refused", origin=origin, offered=register.serial,
                              kept=self.holder.serial)
            return False
        if newer:
            self.state.accepted += 1
            self._log.info("register updated", origin=origin, serial=register.serial)
            if self.redis is not None and origin != "redis":
                await self._share(register.serial, token)
        return newer

    async def _share(self, serial: int, token: str) -> None:
        assert self.redis is not None
        try:
            await self.redis.eval(_STORE_AND_PUBLISH, 2, self._snapshot_key, self._channel,
                                  str(serial), token)
        except Exception as exc:  # Redis down: this node is fine, the others poll the register themselves
            self._log.warning("register fan-out failed", error=str(exc))

    # ---- polling -------------------------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Poll the source once now. True if a newer register was installed."""
        try:
            return await (self._refresh_url() if self._is_url else self._refresh_file())
        except Exception as exc:
            self.state.last_error = f"{type(exc).__name__}: {exc}"
            self._log.warning("register poll failed", error=self.state.last_error, age=self.holder.age())
            return False

    async def _refresh_file(self) -> bool:
        path = Path(self.source)
        stat = await asyncio.to_thread(path.stat)
        seen = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if seen == self._file_seen:
            self.holder.touch()  # the file is the register, and it still says the same
            return False
        token = (await asyncio.to_thread(path.read_text)).strip()
        newer = await self._accept(token, origin="file")
        self._file_seen = seen
        return newer

    async def _refresh_url(self) -> bool:
        assert self._session is not None
        headers = {"Accept": "application/jose"}
        if self._etag is not None and self.holder.register is not None:
            headers["If-None-Match"] = self._etag
        timeout = aiohttp.ClientTimeout(total=max(self.poll_interval, 5.0))
        async with self._session.get(self._base + SNAPSHOT_PATH, headers=headers, timeout=timeout) as response:
            if response.status == 304:
                self.holder.touch()
                return False
            if response.status != 200:
                raise RuntimeError(f"register answered {response.status}")
            body = await bounded_body(response, self.max_document)
            etag = response.headers.get("ETag")
        try:
            token = body.decode("ascii").strip()  # a compact JWS is base64url and dots
        except UnicodeDecodeError as exc:
            raise ValueError(f"register answered a body that is not a JWS (a non-ASCII byte at {exc.start})") from None
        newer = await self._accept(token, origin="poll")
        if self.holder.register is not None and etag == f'"{self.holder.serial}"':
            self._etag = etag
        return newer

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            await self.refresh()

    # ---- the change feed -----------------------------------------------------------------------------------

    async def _follow_feed(self) -> None:
        backoff = 0.25
        while True:
            try:
                received = await self._read_feed()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                received = False
                self.state.last_error = f"feed: {type(exc).__name__}: {exc}"
                self._log.info("register feed interrupted", error=self.state.last_error)
            finally:
                self.state.feed_connected = False
            backoff = 0.25 if received else min(backoff * 2, self.max_backoff)
            await asyncio.sleep(backoff * (0.5 + random.random()))  # jitter: nodes do not reconnect in step

    async def _read_feed(self) -> bool:
        """Read the feed until it ends. True if anything arrived (the connection was good)."""
        assert self._session is not None
        after = self.holder.serial
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(after)}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=self.feed_idle_timeout)
        received = False
        async with self._session.get(self._base + FEED_PATH, params={"after": str(after)}, headers=headers,
                                     timeout=timeout) as response:
            if response.status != 200:
                raise RuntimeError(f"register feed answered {response.status}")
            self.state.feed_connected = True
            self._log.info("register feed connected", after=after)
            async for event, data, _ in server_sent_events(response, self.max_document):
                received = True
                if event == "snapshot":
                    await self._accept(data, origin="feed")
                elif event == "heartbeat":
                    await self._heartbeat(data)
        return received

    async def _heartbeat(self, data: str) -> None:
        try:
            serial = int(json.loads(data)["serial"])
        except (ValueError, KeyError, TypeError, RecursionError):  # a heartbeat that says nothing usable
            return
        if serial == self.holder.serial:
            self.holder.touch()
        elif serial > self.holder.serial:
            await self.refresh()  # the feed says there is more than it sent: fetch it

    # ---- Redis: one feed per deployment, fan-out to the rest -------------------------------------------------

    async def _catch_up_from_redis(self) -> None:
        assert self.redis is not None
        try:
            token = await self.redis.hget(self._snapshot_key, "token")
        except Exception as exc:
            self._log.warning("register catch-up from Redis failed", error=str(exc))
            return
        if token:
            await self._accept(token.decode() if isinstance(token, bytes) else token, origin="redis",
                               confirmed=False)

    async def _subscribe(self) -> None:
        assert self.redis is not None
        backoff = 0.25
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                backoff = 0.25
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    data = message["data"]
                    await self._accept(data.decode() if isinstance(data, bytes) else data, origin="redis",
                                       confirmed=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._log.warning("register Redis subscription interrupted", error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _lead(self) -> None:
        """Hold the feed while holding the lock; try to take the lock over while another node holds it.

        If Redis cannot be reached, nobody can prove they hold the feed: this node then follows the feed
        itself (a second subscription costs little; a revocation that arrives late costs much)."""
        assert self.redis is not None
        ttl_ms = int(self.lock_ttl * 1000)
        while True:
            try:
                if self.state.leader:
                    renewed = await self.redis.eval(_RENEW, 1, self._leader_key, self._lock_token, str(ttl_ms))
                    if not renewed:
                        self.state.leader = False
                        self._log.warning("register feed leadership lost")
                if not self.state.leader:
                    acquired = await self.redis.set(self._leader_key, self._lock_token, nx=True, px=ttl_ms)
                    if acquired:
                        self.state.leader = True
                        self._log.info("register feed leadership taken")
                follow = self.state.leader
            except asyncio.CancelledError:
                await self._release()
                raise
            except Exception as exc:
                if self.state.leader or self._feed_task is None:
                    self._log.warning("register leadership unknown (Redis unreachable): following the feed directly",
                                      error=str(exc))
                self.state.leader = False
                follow = True
            try:
                if follow and self._feed_task is None:
                    self._feed_task = asyncio.create_task(self._follow_feed())
                elif not follow and self._feed_task is not None:
                    await self._stop_feed()
                await asyncio.sleep(self.lock_ttl / 3)
            except asyncio.CancelledError:
                await self._release()
                raise

    async def _release(self) -> None:
        """Let go of the feed and, if held, the lock (another node takes over at once, not after the TTL)."""
        if self.state.leader and self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.eval(_RELEASE, 1, self._leader_key, self._lock_token)
        self.state.leader = False
        await self._stop_feed()

    async def _stop_feed(self) -> None:
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._feed_task
            self._feed_task = None

    def status(self) -> dict[str, Any]:
        """For health/readiness endpoints and metrics."""
        return {
            "source": self.source, "serial": self.holder.serial, "fresh": self.holder.fresh(),
            "age": self.holder.age(), "feed_connected": self.state.feed_connected, "leader": self.state.leader,
            "accepted": self.state.accepted, "refused": self.state.refused, "last_error": self.state.last_error,
        }
