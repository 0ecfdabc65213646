"""`edugate demo`: a federation on loopback that shows what the gateway admits and what it refuses."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import click

from connectors.samples.federation import OTHER_SCHOOL, SCHOOL, Federation
from connectors.samples.publisher import progress_record
from gateway.portal.accounts import SchoolAccounts
from trust.pki import issue_participant


@dataclass
class Row:
    scene: str
    caller: str
    request: str
    status: int | str
    edu_status: str
    outcome: str


def eck_id(n: int) -> str:
    return "https://ketenid.nl/201703/" + hashlib.sha512(str(n).encode()).hexdigest()


async def scenario(fed: Federation) -> list[Row]:
    rows: list[Row] = []
    publisher = fed.client("publisher")

    def add(scene: str, caller: str, request: str, status: int | str, body: object) -> None:
        edu = body.get("status", "") if isinstance(body, dict) else ""
        message = body.get("statusMessage") or body.get("error_description") if isinstance(body, dict) else None
        rows.append(Row(scene, caller, request, status, str(edu), str(message or "OK")))

    await fed.activate_demo_schools()
    sender = await fed.start_publisher_node()
    dashboard_oin = fed.parties["dashboard"].oin

    async def via_own_node(record: dict[str, object]) -> tuple[int, object]:
        """The publisher's application pushes through the publisher's own node (sender side, plain HTTP on
        loopback); that node checks the school's activation before anything leaves and holds the keys."""
        async with (
            aiohttp.ClientSession() as session,
            session.put(
                f"{sender}/v1/progress/{record['id']}",
                json=record,
                headers={"Edu-Receiver": dashboard_oin, "Edu-Purpose": "b"},
            ) as response,
        ):
            return response.status, await response.json(content_type=None)

    for n in range(1, 4):
        record = progress_record(
            record_id=str(uuid.uuid4()),
            eck_id=eck_id(n),
            school=SCHOOL,
            status=["started", "completed", "started"][n - 1],
        )
        status, body = await via_own_node(record)
        add("allowed push", "De Polder app", "PUT via its own node", status, body)
    record = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(7), school=SCHOOL)
    answer = await publisher.put_progress(record)
    add("allowed push", "De Polder", "PUT /v1/progress/{id} direct", answer.status, answer.body)

    reader = fed.client("reader")
    token = await reader.token(scope="eduv.usage", purpose="j")
    answer = await reader.call("GET", f"/v1/usage?school={SCHOOL}", token=token, headers={"Edu-Purpose": "j"})
    kept = len(answer.body.get("records", [])) if isinstance(answer.body, dict) else 0
    rows.append(
        Row(
            "allowed pull",
            "Schooladministratie",
            "GET /v1/usage",
            answer.status,
            "",
            f"{kept} records, cut to the allowed attributes",
        )
    )

    # A certificate from a CA the register does not list: refused in the TLS handshake, and logged.
    rogue = issue_participant(fed.rogue_ca, oin=fed.parties["publisher"].oin, name="Uitgeverij De Polder")
    impostor = fed.client("publisher", identity=rogue)
    try:
        await impostor.request_token(scope="progress", purpose="b")
        rows.append(Row("unknown CA", "impostor", "POST /oauth2/token", "accepted?!", "", "SHOULD NOT HAPPEN"))
    except (aiohttp.ClientError, ssl.SSLError) as exc:
        rows.append(
            Row(
                "unknown CA",
                "impostor",
                "POST /oauth2/token",
                "TLS alert",
                "",
                f"handshake refused ({type(exc).__name__})",
            )
        )

    uncertified = fed.client("uncertified")
    answer = await uncertified.request_token(scope="progress", purpose="b")
    add("no keurmerk", "Zonder Keurmerk", "POST /oauth2/token", answer.status, answer.body)
    token = await uncertified.token(scope="eduv.result", purpose="b")
    record = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(9), school=SCHOOL)
    answer = await uncertified.call("PUT", f"/v1/progress/{record['id']}", token=token, json=record)
    add("no keurmerk", "Zonder Keurmerk", "PUT /v1/progress/{id}", answer.status, answer.body)

    suspended = fed.client("suspended")
    answer = await suspended.request_token(scope="progress", purpose="b")
    add("suspended", "Geschorst", "POST /oauth2/token", answer.status, answer.body)

    stolen = await publisher.token(scope="progress", purpose="b")
    record = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(4), school=SCHOOL)
    answer = await reader.call(
        "PUT", f"/v1/progress/{record['id']}", token=stolen, json=record, headers={"Edu-Purpose": "b"}
    )
    add("stolen token", "Schooladministratie", "PUT with De Polder's token", answer.status, answer.body)

    record = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(5), school=OTHER_SCHOOL)
    status, body = await via_own_node(record)
    add("not activated", "De Polder app", "PUT via own node, school 2", status, body)
    answer = await publisher.put_progress(record)
    add("not activated", "De Polder", "PUT direct, school 2", answer.status, answer.body)

    bad = progress_record(record_id=str(uuid.uuid4()), eck_id="123456782", school=SCHOOL)
    answer = await publisher.put_progress(bad)
    add("BSN as student", "De Polder", "PUT /v1/progress/{id}", answer.status, answer.body)

    # The operator suspends the publisher; its token, still valid, stops working at once.
    await fed.apply(fed.participants_with("publisher", status="suspended", status_reason="demo: suspended live"))
    record = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(6), school=SCHOOL)
    answer = await publisher.call(
        "PUT", f"/v1/progress/{record['id']}", token=stolen, json=record, headers={"Edu-Purpose": "b"}
    )
    add("suspended live", "De Polder", "PUT with a valid token", answer.status, answer.body)
    await fed.apply()  # and reinstates it
    return rows


def print_table(rows: list[Row]) -> None:
    widths = [16, 20, 30, 10, 5]
    header = ["scene", "caller", "request", "HTTP", "Edu-V"]
    click.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + "  outcome")
    click.echo("-" * 120)
    for row in rows:
        cells = [row.scene, row.caller, row.request, str(row.status), row.edu_status]
        outcome = row.outcome if len(row.outcome) <= 70 else row.outcome[:67] + "..."
        click.echo("  ".join(c[:w].ljust(w) for c, w in zip(cells, widths, strict=True)) + "  " + outcome)


async def run_demo(directory: Path, *, port: int = 8443, keep_serving: bool = True) -> list[Row]:
    fed = Federation(directory / uuid.uuid4().hex[:8])
    await fed.start(port=port)
    try:
        rows = await scenario(fed)
        click.echo(
            f"\nedugate demo federation: gateway node on {fed.base_url}, dashboard on "
            f"http://127.0.0.1:{fed.dashboard_port}, files in {fed.directory}\n"
        )
        print_table(rows)
        assert fed.node is not None
        await asyncio.sleep(0.2)  # a refused TLS handshake is logged from outside any request: let it land
        stored = await fed.node.log.records(party_oin=fed.node.oin, limit=10_000)
        denied = sum(1 for s in stored if s.record.decision == "denied")
        click.echo(f"\nexchange log: {len(stored)} records ({denied} denials), durable before forwarding.")
        if keep_serving:
            password = secrets.token_urlsafe(12)
            assert fed.node is not None
            accounts = SchoolAccounts(fed.node.config.node.state_dir / "portal-accounts.sqlite")
            await accounts.add(school=SCHOOL, email="ict@school.example", password=password)
            click.echo(
                f"\nSchool portal for {SCHOOL}: {fed.base_url}/portal/  (ict@school.example / {password}; "
                "the browser will warn about the development CA)"
            )
            click.echo(try_by_hand(fed))
            await asyncio.Event().wait()  # until Ctrl-C
        return rows
    finally:
        await fed.close()


def try_by_hand(fed: Federation) -> str:
    d = fed.directory
    pub = fed.parties["publisher"].identity.thumbprint[:16]
    cert, key = d / f"client-{pub}.pem", d / f"client-{pub}.key"
    ca = d / "ca.pem"
    ca.write_bytes(fed.ca.cert_pem())
    return f"""
Try it by hand (Ctrl-C stops the demo). The client assertion is a JWT signed with the certificate's key:

  ASSERTION=$(.venv/bin/python -c "from connectors.samples.federation import assertion_from_files as a; \\
print(a('{key}', 'publisher-app', '{fed.base_url}/oauth2/token'))")
  TOKEN=$(curl -s --cacert {ca} --cert {cert} --key {key} {fed.base_url}/oauth2/token \\
    -d grant_type=client_credentials -d scope=progress -d purpose=b \\
    -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer \\
    -d client_assertion=$ASSERTION | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s --cacert {ca} --cert {cert} --key {key} -X PUT \\
    {fed.base_url}/v1/progress/0d6f7d3e-5d0a-4b7e-9a3e-1b2c3d4e5f60 \\
    -H "Authorization: Bearer $TOKEN" -H "Edu-Purpose: b" -H "Content-Type: application/json" \\
    -d '{{"id": "0d6f7d3e-5d0a-4b7e-9a3e-1b2c3d4e5f60", "student": {{"id": "{eck_id(42)}"}},
         "school": {{"organisationMasterIdentifier": "{SCHOOL}"}}, "assignableUnitId": "unit-1",
         "courseId": "wiskunde-2a", "status": "completed"}}'
  curl -s --cacert {ca} {fed.base_url}/v1/progress/x          # no certificate: a 401 in the Edu-V format
  curl -s http://127.0.0.1:{fed.served.ops_port if fed.served else 0}/metrics | grep edugate_exchanges
"""
