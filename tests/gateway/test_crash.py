"""A node killed with SIGKILL in the middle of a stream of exchanges loses no record of an exchange that it
forwarded (the decision record is durable before forwarding) or answered (the outcome record is durable before
the answer completes). Proven against a node in its own process, on both log stores."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from connectors.logstore import open_log
from connectors.samples.publisher import ParticipantClient, progress_record
from gateway.config import load_config
from gateway.demo import eck_id
from gateway.tls import client_context
from tests.databases import postgres_database
from trust.pki import load_issued

SCHOOL = "104A158"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(path: Path, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the process died while starting"
        assert time.monotonic() < deadline, f"{path} did not appear"
        await asyncio.sleep(0.1)


@pytest.fixture
async def postgres_dsn() -> AsyncIterator[str]:
    async with postgres_database() as dsn:
        yield dsn


async def stream_until_killed(tmp_path: Path, log_dsn: str | None) -> tuple[set[str], set[str], dict[str, set[str]]]:
    upstream_port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    dashboard = subprocess.Popen([sys.executable, "-m", "connectors.samples.dashboard", str(upstream_port)], env=env)
    arguments = [
        sys.executable,
        "-m",
        "connectors.samples.node_process",
        str(tmp_path / "fed"),
        f"http://127.0.0.1:{upstream_port}",
    ]
    node = subprocess.Popen([*arguments, *(["--log-dsn", log_dsn] if log_dsn else [])], env=env)
    try:
        await wait_for(tmp_path / "fed" / "ready.json", node)
        ready = json.loads((tmp_path / "fed" / "ready.json").read_text())
        identity = load_issued(Path(ready["cert"]), Path(ready["key"]))
        trust = client_context(cafile=Path(ready["ca"]))
        trust.load_cert_chain(ready["cert"], ready["key"])
        client = ParticipantClient(
            base_url=f"https://127.0.0.1:{ready['port']}",
            client_id=ready["client_id"],
            identity=identity,
            trust=trust,
            kid="cert",
        )
        answered: set[str] = set()
        stop = asyncio.Event()

        async def worker(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                record = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(n * 1000 + i), school=SCHOOL)
                try:
                    answer = await client.put_progress(record)
                except (TimeoutError, aiohttp.ClientError, OSError):
                    return
                if answer.status in (200, 201):
                    answered.add(answer.headers["Edu-Exchange-Id"])

        workers = [asyncio.create_task(worker(n)) for n in range(16)]
        while len(answered) < 150:  # well into the stream
            await asyncio.sleep(0.02)
        node.send_signal(signal.SIGKILL)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers, return_exceptions=True), 30)
        await client.close()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{upstream_port}/_sample/received") as response,
        ):
            forwarded = set(await response.json())

        config = load_config(Path(ready["config"]))
        log = open_log(config.log, state_dir=config.node.state_dir, node_oin=ready["node_oin"])
        await log.start()
        try:
            kinds: dict[str, set[str]] = {}
            offset = 0
            while True:
                page = await log.records(party_oin=ready["node_oin"], limit=1000, offset=offset)
                for stored in page:
                    kinds.setdefault(stored.record.exchange_id, set()).add(stored.record.kind)
                if len(page) < 1000:
                    break
                offset += 1000
        finally:
            await log.close()
        return answered, forwarded, kinds
    finally:
        for process in (node, dashboard):
            if process.poll() is None:
                process.kill()
            process.wait(10)


def check(answered: set[str], forwarded: set[str], kinds: dict[str, set[str]]) -> None:
    assert len(answered) >= 150 and answered <= forwarded
    missing_decision = [x for x in forwarded if "decision" not in kinds.get(x, set())]
    missing_outcome = [x for x in answered if "outcome" not in kinds.get(x, set())]
    assert missing_decision == [], f"{len(missing_decision)} forwarded exchanges have no decision record"
    assert missing_outcome == [], f"{len(missing_outcome)} answered exchanges have no outcome record"


@pytest.mark.slow
async def test_sigkill_loses_no_record_on_sqlite(tmp_path: Path):
    check(*await stream_until_killed(tmp_path, None))


@pytest.mark.slow
@pytest.mark.postgres
async def test_sigkill_loses_no_record_on_postgresql(tmp_path: Path, postgres_dsn: str):
    check(*await stream_until_killed(tmp_path, postgres_dsn))
