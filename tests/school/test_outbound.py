"""The sender side over real mutual TLS: a publisher's application sends through its own node, which checks the
activation it holds before anything leaves, obtains and caches the receiver's token, and logs the exchange."""

from __future__ import annotations

import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from connectors.samples.federation import OTHER_SCHOOL, SCHOOL, SINCE, Federation
from connectors.samples.publisher import progress_record
from gateway.activation import ProcessingAgreement
from gateway.config import load_config
from gateway.demo import eck_id
from gateway.node import Node, start_node
from gateway.outbound import OutboundServed, serve_outbound
from trust.pki import issue_server
from trust.register import Endpoints


@dataclass
class Sending:
    receiving: Federation
    node: Node
    served: OutboundServed
    session: aiohttp.ClientSession

    @property
    def dashboard(self) -> str:
        return self.receiving.parties["dashboard"].oin

    async def send(self, body: dict[str, Any], **headers: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        sent = {"Edu-Receiver": self.dashboard, "Edu-Purpose": "b", **headers}
        url = f"http://127.0.0.1:{self.served.port}/v1/progress/{body['id']}"
        async with self.session.put(url, json=body, headers={k: v for k, v in sent.items() if v}) as answer:
            raw = await answer.read()
            return answer.status, json.loads(raw) if raw else {}, dict(answer.headers)


@pytest.fixture
async def sending(tmp_path: Path) -> AsyncIterator[Sending]:
    async with sending_through(tmp_path) as ready:
        yield ready


@asynccontextmanager
async def sending_through(
    tmp_path: Path, catalogue: Path | None = None, outbound: dict[str, str] | None = None
) -> AsyncIterator[Sending]:
    fed = Federation(tmp_path / "dashboard")
    await fed.start()
    await fed.activate_demo_schools()  # the receiver's own activations (it checks them inbound)
    endpoints = Endpoints(token=f"{fed.base_url}/oauth2/token", api=fed.base_url)
    await fed.apply(fed.participants_with("dashboard", endpoints=endpoints))
    config = fed.write_publisher_config(tmp_path / "publisher", catalogue=catalogue, outbound=outbound)
    node = await start_node(load_config(config))
    served = await serve_outbound(node, port=0)
    await node.activations.grant(  # the source side's record of the school's decision
        school=SCHOOL,
        data_service="leermateriaalgebruik",
        counterparty=fed.parties["dashboard"].oin,
        purposes=("a", "b", "d", "j"),
        valid_from=SINCE,
        processing_agreement=ProcessingAgreement(reference="VWO-2026-0042", valid_from=SINCE),
    )
    session = aiohttp.ClientSession()
    try:
        yield Sending(fed, node, served, session)
    finally:
        await session.close()
        await served.close()
        await node.close()
        await fed.close()


def record(n: int = 1, school: str = SCHOOL, **changes: Any) -> dict[str, Any]:
    return {**progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(n), school=school), **changes}


async def outbound_records(sending: Sending, exchange_id: str) -> list[Any]:
    stored = await sending.node.log.records(party_oin=sending.node.oin, exchange_id=exchange_id, oldest_first=True)
    return [s.record for s in stored]


async def test_an_activated_push_reaches_the_receiver_and_is_logged_on_the_sender_side(sending: Sending) -> None:
    body = record()
    status, _, headers = await sending.send(body)
    assert status == 201
    assert sending.receiving.received.progress[body["id"]] == body
    logged = await outbound_records(sending, headers["Edu-Exchange-Id"])
    assert [(r.kind, r.direction, r.decision) for r in logged] == [
        ("decision", "outbound", "allowed"),
        ("outcome", "outbound", "allowed"),
    ]
    assert (logged[0].counterparty_oin, logged[0].purpose, logged[0].school) == (sending.dashboard, "b", SCHOOL)
    assert logged[1].upstream_status == 201
    assert len(logged[0].student_hashes) == 1 and eck_id(1) not in logged[0].student_hashes[0]


async def test_the_receivers_token_is_obtained_once_and_reused(sending: Sending) -> None:
    for n in range(3):
        assert (await sending.send(record(n)))[0] == 201
    assert sending.receiving.node is not None
    issued = sending.receiving.node.metrics.tokens.labels("issued")._value.get()
    assert issued == 1
    assert len(sending.served.sender._tokens) == 1


async def test_without_an_activation_at_the_source_nothing_leaves(sending: Sending) -> None:
    await sending.node.activations.grant(  # the school is known here, but not for this receiver and service
        school=OTHER_SCHOOL, data_service="resultaten", counterparty=sending.dashboard, purposes=("a",)
    )
    body = record(school=OTHER_SCHOOL)
    status, answer, headers = await sending.send(body)
    assert (status, answer["status"]) == (403, "0022")
    assert body["id"] not in sending.receiving.received.progress
    (denied,) = await outbound_records(sending, headers["Edu-Exchange-Id"])
    assert (denied.decision, denied.step, denied.direction) == ("denied", "activation", "outbound")


async def test_a_revoked_activation_at_the_source_stops_the_next_send(sending: Sending) -> None:
    assert (await sending.send(record()))[0] == 201
    (activation,) = await sending.node.activations.find(school=SCHOOL)
    await sending.node.activations.revoke(activation.id, school=SCHOOL)
    status, answer, _ = await sending.send(record())
    assert (status, answer["status"]) == (403, "0022") and "revoked" in answer["statusMessage"]


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"additionalInfo": "BSN 111222333"}, 400, "0011"),
        ({"student": {"id": "jan.jansen@school.nl"}}, 400, "0011"),
        ({"student": {"id": eck_id(1), "lastName": "Jansen"}}, 400, "0011"),
        ({"grade": 6}, 400, "0011"),  # progress refuses extra fields
    ],
)
async def test_a_body_that_may_not_travel_is_refused_before_it_leaves(
    sending: Sending, changes: dict[str, Any], status: int, code: str
) -> None:
    body = record(**changes)
    answer = await sending.send(body)
    assert (answer[0], answer[1]["status"]) == (status, code)
    assert body["id"] not in sending.receiving.received.progress


async def test_a_purpose_outside_the_activation_is_refused_naming_it(sending: Sending) -> None:
    status, answer, _ = await sending.send(record(), **{"Edu-Purpose": "t"})
    assert status == 403 and "'t' (financial management)" in answer["statusMessage"]


@pytest.mark.parametrize(
    ("receiver", "status"),
    [("", 400), ("12345", 400), ("00000003999999990000", 403)],
)
async def test_the_receiver_must_be_named_and_in_the_register(sending: Sending, receiver: str, status: int) -> None:
    answer = await sending.send(record(), **{"Edu-Receiver": receiver})
    assert answer[0] == status and answer[1]["status"] == "0099"


async def test_a_receiver_without_the_receiving_keurmerk_is_refused(sending: Sending) -> None:
    reader = sending.receiving.parties["reader"].oin
    status, answer, _ = await sending.send(record(), **{"Edu-Receiver": reader})
    assert status == 403 and "keurmerk" in answer["statusMessage"]


async def test_a_route_not_in_the_catalogue_is_404(sending: Sending) -> None:
    async with sending.session.get(f"http://127.0.0.1:{sending.served.port}/v1/nothing") as answer:
        assert answer.status == 404 and (await answer.json())["status"] == "0099"


async def test_a_pseudonymising_service_sends_each_receiver_a_stable_pseudonym_and_logs_the_real_student(
    tmp_path: Path,
) -> None:
    text = (Path(__file__).resolve().parents[2] / "config" / "catalogue.toml").read_text()
    flagged = text.replace('extra_fields = "refuse"\n', 'extra_fields = "refuse"\npseudonymise = true\n', 1)
    assert flagged != text
    (tmp_path / "catalogue.toml").write_text(flagged)
    async with sending_through(tmp_path, tmp_path / "catalogue.toml") as sending:
        first, again = record(7), record(7)
        for body in (first, again):
            assert (await sending.send(body))[0] == 201
        received = sending.receiving.received.progress
        pseudonym = received[first["id"]]["student"]["id"]
        assert pseudonym != eck_id(7) and received[again["id"]]["student"]["id"] == pseudonym
        assert pseudonym.startswith("https://ketenid.nl/201703/") and len(pseudonym) == 26 + 128
        assert (tmp_path / "publisher" / "state" / "pseudonym.key").exists()
        (logged, *_) = await sending.node.log.records(party_oin=sending.node.oin, decision="allowed", limit=1)
        assert logged.record.student_hashes == (sending.node.students.hash(SCHOOL, eck_id(7)),)


async def test_a_token_the_receiver_refuses_stops_the_exchange_and_says_why(tmp_path: Path) -> None:
    async with sending_through(tmp_path, outbound={"client_id": '"someone-elses-app"'}) as sending:
        body = record()
        status, answer, _ = await sending.send(body)
        assert status == 403 and "refused an access token" in answer["statusMessage"]
        assert body["id"] not in sending.receiving.received.progress


async def test_calls_from_outside_the_allowed_networks_are_refused(tmp_path: Path) -> None:
    async with sending_through(tmp_path, outbound={"allowed_networks": '["10.0.0.0/8"]'}) as sending:
        status, answer, _ = await sending.send(record())
        assert status == 403 and "own network" in answer["statusMessage"]


async def test_a_token_the_receiver_no_longer_accepts_is_replaced_once(sending: Sending) -> None:
    assert (await sending.send(record()))[0] == 201
    (cached,) = sending.served.sender._tokens.values()
    cached.value = "no-longer-valid"  # as after the receiver rotated its signing key
    body = record()
    assert (await sending.send(body))[0] == 201
    assert body["id"] in sending.receiving.received.progress
    assert next(iter(sending.served.sender._tokens.values())).value != "no-longer-valid"


class TokenEndpointStandIn:
    """Stands where the receiver's token endpoint is registered, over TLS from the federation's CA, and answers
    every token request with `status` and `body` as the test sets them."""

    def __init__(self) -> None:
        self.status, self.body = 200, b""
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, fed: Federation, directory: Path) -> None:
        cert, key = issue_server(fed.ca).write(directory, "stand-in")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        app = web.Application()
        app.router.add_post("/oauth2/token", self._token)
        self.runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.url = f"https://localhost:{site._server.sockets[0].getsockname()[1]}/oauth2/token"  # type: ignore[union-attr]

    async def _token(self, request: web.Request) -> web.Response:
        return web.Response(status=self.status, body=self.body, content_type="application/json")

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@asynccontextmanager
async def sending_to_stand_in(tmp_path: Path) -> AsyncIterator[tuple[Sending, TokenEndpointStandIn]]:
    """A sending node whose receiver's registered token endpoint is the stand-in (its API is the real one)."""
    async with sending_through(tmp_path) as sending:
        stand_in = TokenEndpointStandIn()
        await stand_in.start(sending.receiving, tmp_path)
        fed = sending.receiving
        endpoints = Endpoints(token=stand_in.url, api=fed.base_url)
        await fed.apply(fed.participants_with("dashboard", endpoints=endpoints))
        await sending.node.register_source.refresh()
        try:
            yield sending, stand_in
        finally:
            await stand_in.close()


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (b'{"access_token": "' + b"a" * 70_000 + b'"}', "answered more than 65536 bytes"),
        (b"<html>token service down</html>", "answered no JSON object"),
        (b'["abc"]', "answered no JSON object"),
        (b"[" * 60_000, "answered no JSON object"),
        (b'{"access_token": "abc\\r\\nX-Injected: 1", "expires_in": 60}', "not a bearer token"),
        (b'{"access_token": "two words", "expires_in": 60}', "not a bearer token"),
        (b'{"access_token": "abc", "expires_in": "soon"}', "expires_in 'soon'"),
        (b'{"access_token": "abc", "expires_in": -5}', "expires_in -5"),
        (b'{"access_token": "abc", "expires_in": true}', "expires_in True"),
        (b'{"access_token": "abc", "expires_in": 1e999}', "expires_in inf"),
    ],
)
async def test_a_token_answer_that_is_no_token_answer_is_a_502_naming_the_fault_and_nothing_is_sent(
    tmp_path: Path, answer: bytes, said: str
) -> None:
    async with sending_to_stand_in(tmp_path) as (sending, stand_in):
        stand_in.body = answer
        body = record()
        status, refused, headers = await sending.send(body)
        assert status == 502 and said in refused["statusMessage"], refused
        assert body["id"] not in sending.receiving.received.progress
        assert not sending.served.sender._tokens  # nothing cached from it
        logged = await outbound_records(sending, headers["Edu-Exchange-Id"])
        assert [(r.decision, r.step) for r in logged] == [("denied", "token")]


async def test_a_refusal_from_the_receiver_is_quoted_only_in_part(tmp_path: Path) -> None:
    async with sending_to_stand_in(tmp_path) as (sending, stand_in):
        stand_in.status = 400
        stand_in.body = json.dumps({"error": "invalid_client", "error_description": "x" * 5000}).encode()
        status, refused, _ = await sending.send(record())
        assert status == 403 and "(400 invalid_client)" in refused["statusMessage"]
        assert "x" * 200 in refused["statusMessage"] and "x" * 201 not in refused["statusMessage"]


async def test_a_token_is_kept_no_longer_than_a_token_of_the_federation_may_live(tmp_path: Path) -> None:
    async with sending_to_stand_in(tmp_path) as (sending, stand_in):
        stand_in.body = b'{"access_token": "from-the-stand-in", "token_type": "Bearer", "expires_in": 86400}'
        await sending.send(record())  # the real receiver refuses the stand-in's token; what matters is the cache
        (cached,) = sending.served.sender._tokens.values()
        assert cached.value == "from-the-stand-in"
        assert cached.renew_at - time.monotonic() <= 300
