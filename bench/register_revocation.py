"""Revocation latency: from an operator's change in the register to every node's register having it.

One run, one machine: the register service (HTTPS off, loopback) on SQLite, and three followers — two sharing
Redis (one holds the feed, the other gets snapshots through Redis) and one on its own feed. Each round
suspends or reactivates a participant and times until every follower holds the new serial. The baseline is
the same with the feed off (polling every `--poll` seconds), so the ratio shows what the feed buys.

    .venv/bin/python bench/register_revocation.py [--rounds 50] [--poll 1.0] [--no-redis]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import structlog
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.register_source import RegisterSource
from trust.register import ParticipantStatus, RegisterHolder
from trust.register_service.app import create_app
from trust.register_service.store import RegisterStore

OIN = "00000003111111110000"
REDIS_URL = "redis://127.0.0.1:6379/0"


async def measure(*, rounds: int, feed: bool, poll: float, use_redis: bool) -> list[float]:
    key = ec.generate_private_key(ec.SECP256R1())
    with tempfile.TemporaryDirectory() as directory:
        store = await RegisterStore.open(Path(directory) / "register.sqlite")
        await store.add_participant(OIN, "Uitgeverij Noord", status=ParticipantStatus.ACTIVE, actor="bench")
        runner = web.AppRunner(create_app(store, key, secure_cookies=False), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        prefix = f"edugate-bench-{secrets.token_hex(6)}"
        redis_clients = []
        followers = []
        for index in range(3):
            redis = None
            if use_redis and index < 2:
                import redis.asyncio as aioredis

                redis = aioredis.from_url(REDIS_URL)
                redis_clients.append(redis)
            follower = RegisterSource(
                RegisterHolder(max_staleness=300),
                source=url,
                operator_key=key.public_key(),
                poll_interval=poll,
                feed=feed,
                redis=redis,
                redis_prefix=prefix,
            )
            await follower.start()
            followers.append(follower)
        while feed and sum(f.state.feed_connected for f in followers) < (2 if use_redis else 3):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        arrived = asyncio.Event()
        for follower in followers:
            follower.holder.listeners.append(lambda _: arrived.set())  # called on every newer register
        latencies = []
        try:
            for round_ in range(rounds):
                status = ParticipantStatus.SUSPENDED if round_ % 2 == 0 else ParticipantStatus.ACTIVE
                start = time.perf_counter()
                serial = await store.set_participant_status(OIN, status, reason="bench", actor="bench")
                while not all(f.holder.serial >= serial for f in followers):
                    arrived.clear()
                    if not all(f.holder.serial >= serial for f in followers):
                        await arrived.wait()
                latencies.append(time.perf_counter() - start)
        finally:
            for follower in followers:
                await follower.close()
            for client in redis_clients:
                async for stale in client.scan_iter(match=f"{prefix}:*"):
                    await client.delete(stale)
                await client.aclose()
            await runner.cleanup()
            await store.close()
    return latencies


def describe(name: str, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return (
        f"{name:<28} median {statistics.median(ordered) * 1000:8.1f} ms   p95 {p95 * 1000:8.1f} ms   "
        f"max {ordered[-1] * 1000:8.1f} ms   ({len(ordered)} changes)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--poll", type=float, default=1.0, help="poll interval of the followers, seconds")
    parser.add_argument("--no-redis", action="store_true", help="three followers each on their own feed")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # figures only
    use_redis = not args.no_redis
    live = await measure(rounds=args.rounds, feed=True, poll=args.poll, use_redis=use_redis)
    baseline = await measure(rounds=max(10, args.rounds // 5), feed=False, poll=args.poll, use_redis=use_redis)
    layout = "2 via Redis + 1 direct" if use_redis else "3 direct"
    print(f"revocation latency, register change -> all 3 followers ({layout}), SQLite register:")
    print(describe("feed (+ Redis fan-out)" if use_redis else "feed", live))
    print(describe(f"baseline: polling {args.poll:g} s", baseline))
    print(f"feed is {statistics.median(baseline) / statistics.median(live):.0f}x faster than polling (median)")


if __name__ == "__main__":
    asyncio.run(main())
