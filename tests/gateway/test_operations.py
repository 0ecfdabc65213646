"""Operating a node: health, readiness, metrics, failing closed on a stale register, graceful shutdown."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from connectors.samples.federation import SCHOOL, Federation
from connectors.samples.publisher import progress_record
from gateway.demo import eck_id
from tests.raw_answers import answer_before_close


async def ops_get(fed: Federation, path: str) -> tuple[int, str]:
    assert fed.served is not None
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{fed.served.ops_port}{path}") as r:
        return r.status, await r.text()


async def test_readyz_is_ok_with_a_fresh_register_and_a_writable_log(federation: Federation):
    assert await ops_get(federation, "/healthz") == (200, '{"status": "alive"}')
    status, body = await ops_get(federation, "/readyz")
    assert status == 200 and '"ready"' in body


async def test_a_request_the_ops_port_cannot_parse_gets_an_edu_v_error_not_plain_text(federation: Federation):
    assert federation.served is not None and federation.served.ops_port is not None
    status, head, refused = await answer_before_close(
        "127.0.0.1", federation.served.ops_port, b"GET /metrics HTTP/1.1\r\nHost: ops\r\nX-Bad\x01: y\r\n\r\n"
    )
    assert status == 400 and b"Content-Type: application/json" in head
    assert refused["status"] == "0011" and refused["statusMessage"].startswith("the request could not be parsed")


async def test_metrics_count_exchanges_by_service_and_decision(federation: Federation):
    publisher = federation.client("publisher")
    record = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(1), school=SCHOOL)
    assert (await publisher.put_progress(record)).status == 201
    await publisher.call("PUT", "/v1/progress/x", token="garbage")
    status, text = await ops_get(federation, "/metrics")
    assert status == 200
    assert 'edugate_exchanges_total{data_service="leermateriaalgebruik",decision="allowed",step=""} 1.0' in text
    assert 'edugate_exchanges_total{data_service="leermateriaalgebruik",decision="denied",step="token"} 1.0' in text
    assert "edugate_register_age_seconds" in text and "edugate_register_serial 1.0" in text
    assert "edugate_log_writable 1.0" in text
    assert "edugate_exchange_seconds_bucket" in text


async def test_a_stale_register_makes_the_node_refuse_everything_with_503(tmp_path: Path):
    fed = Federation(tmp_path / "fed", max_staleness=0.5)
    await fed.start()
    try:
        await fed.activate_demo_schools()
        publisher = fed.client("publisher")
        token = await publisher.token(scope="progress", purpose="b")
        (fed.directory / "register.jws").unlink()  # the register can no longer be read
        await asyncio.sleep(1.6)
        record = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(1), school=SCHOOL)
        answer = await publisher.call(
            "PUT", f"/v1/progress/{record['id']}", token=token, json=record, headers={"Edu-Purpose": "b"}
        )
        assert answer.status == 503 and answer.body["status"] == "0099"
        assert "register" in answer.body["statusMessage"]
        assert fed.received.progress == {}
        status, body = await ops_get(fed, "/readyz")
        assert status == 503 and "register" in body
        token_answer = await publisher.request_token(scope="progress", purpose="b")
        assert token_answer.status == 503 and token_answer.body["error"] == "temporarily_unavailable"
    finally:
        await fed.close()


async def test_shutdown_lets_an_exchange_in_flight_finish(tmp_path: Path):
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await release.wait()
        return web.json_response({"status": "0001", "statusMessage": "Created"}, status=201)

    app = web.Application()
    app.router.add_put("/v1/progress/{id}", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    fed = Federation(tmp_path / "fed")
    await fed.start(upstream=f"http://127.0.0.1:{runner.addresses[0][1]}")
    try:
        await fed.activate_demo_schools()
        publisher = fed.client("publisher")
        record = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(1), school=SCHOOL)
        in_flight = asyncio.create_task(publisher.put_progress(record))
        await asyncio.sleep(0.3)
        assert fed.served is not None
        closing = asyncio.create_task(fed.served.close())
        await asyncio.sleep(0.2)
        assert not in_flight.done()
        release.set()
        answer = await in_flight
        await closing
        fed.served = None
        assert answer.status == 201
    finally:
        await fed.close()
        await runner.cleanup()


@pytest.mark.redis
async def test_with_redis_a_clients_share_of_the_replay_cache_holds_across_the_nodes(tmp_path: Path):
    first = Federation(tmp_path / "one", redis_url="redis://127.0.0.1:6379/0", replay_per_client=2)
    second = first.sibling(tmp_path / "two")
    await first.start()
    await second.start()
    try:
        at_first, at_second = first.client("publisher"), second.client("publisher")
        assert (await at_first.request_token(scope="progress", purpose="b")).status == 200
        assert (await at_second.request_token(scope="progress", purpose="b")).status == 200
        third = await at_first.request_token(scope="progress", purpose="b")
        assert third.status == 401 and third.body["error"] == "invalid_client"
        assert "unexpired assertions, the most one client may" in third.body["error_description"]
        other = second.client("reader")
        assert (await other.request_token(scope="eduv.usage", purpose="d")).status == 200  # the others get theirs
    finally:
        await second.close()
        await first.close()


@pytest.mark.redis
async def test_with_redis_a_client_assertion_cannot_be_replayed_on_another_node(tmp_path: Path):
    first = Federation(tmp_path / "one", redis_url="redis://127.0.0.1:6379/0")
    second = first.sibling(tmp_path / "two")
    await first.start()
    await second.start()
    try:
        jti = str(uuid.uuid4())
        at_first, at_second = first.client("publisher"), second.client("publisher")
        one = await at_first.request_token(scope="progress", purpose="b", assertion=at_first.assertion(jti=jti))
        two = await at_second.request_token(scope="progress", purpose="b", assertion=at_second.assertion(jti=jti))
        assert one.status == 200
        assert two.status == 401 and two.body["error"] == "invalid_client"
        assert "replay" in two.body["error_description"].lower() or "used" in two.body["error_description"].lower()
    finally:
        await second.close()
        await first.close()
