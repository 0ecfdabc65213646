"""What a school does in the portal: filter its exchanges, look up a student, read totals, manage activations,
export with proofs that verify offline."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from connectors.samples.federation import SCHOOL, Federation
from connectors.samples.publisher import progress_record
from gateway.cli import main
from gateway.demo import eck_id
from tests.portal.client import PortalClient
from tests.portal.conftest import PASSWORD, USER, push
from trust.eckid import ECK_ID_PREFIX


def shown(page_text: str) -> int:
    return page_text.count("data-index=")


async def revoke_progress(fed: Federation, client: PortalClient) -> str:
    (activation,) = [a for a in await fed.node.activations.find(school=SCHOOL)
                     if a.data_service == "leermateriaalgebruik"]
    page = await client.post(f"/portal/activations/{activation.id}/revoke",
                             {"csrf": await client.csrf(), "reason": "contract ended"})
    assert page.status == 200 and "Opgeslagen" in page.text
    return activation.id


async def test_the_exchange_filters_narrow_the_list(fed: Federation, school_a: PortalClient):
    await revoke_progress(fed, school_a)
    record = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(1), school=SCHOOL)
    assert (await fed.client("publisher").put_progress(record)).status == 403
    everything = await school_a.get("/portal/exchanges")
    assert shown(everything.text) == 7  # three exchanges of two records, and one denial
    denied = await school_a.get("/portal/exchanges", decision="denied")
    assert shown(denied.text) == 1 and "activation" in denied.text
    assert shown((await school_a.get("/portal/exchanges", decision="allowed")).text) == 6
    publisher = fed.parties["publisher"].oin
    assert shown((await school_a.get("/portal/exchanges", counterparty=publisher)).text) == 7
    assert shown((await school_a.get("/portal/exchanges", counterparty=fed.parties["reader"].oin)).text) == 0
    assert shown((await school_a.get("/portal/exchanges", data_service="resultaten")).text) == 0
    assert shown((await school_a.get("/portal/exchanges", purpose="b")).text) == 6  # refused before the purpose step
    assert shown((await school_a.get("/portal/exchanges", purpose="j")).text) == 0
    assert shown((await school_a.get("/portal/exchanges", since="2026-01-01", until="2026-01-02")).text) == 0
    today = fed.node.clock().date().isoformat()
    assert shown((await school_a.get("/portal/exchanges", since=today, until=today)).text) == 7


async def test_the_exchange_list_pages(fed: Federation, school_a: PortalClient):
    first = await school_a.get("/portal/exchanges", limit="4")
    second = await school_a.get("/portal/exchanges", limit="4", offset="4")
    assert shown(first.text) == 4 and shown(second.text) == 2
    assert "offset=4" in first.text


async def test_a_bad_filter_is_a_clear_400_not_an_empty_list(fed: Federation, school_a: PortalClient):
    page = await school_a.get("/portal/exchanges", since="gisteren")
    assert page.status == 400 and "since" in page.text
    assert (await school_a.get("/portal/exchanges", offset="-1")).status == 400


async def test_a_student_look_up_finds_every_exchange_about_that_student_and_only_those(fed: Federation,
                                                                                     school_a: PortalClient):
    await push(fed, SCHOOL, 2, status="completed")
    page = await school_a.post("/portal/student", {"csrf": await school_a.csrf(), "eck_id": eck_id(2)})
    assert page.status == 200 and shown(page.text) == 4
    await push(fed, SCHOOL, 0xABCDEF)  # hex letters: the same student whatever case the school types
    upper = ECK_ID_PREFIX + eck_id(0xABCDEF).removeprefix(ECK_ID_PREFIX).upper()
    assert shown((await school_a.post("/portal/student", {"csrf": await school_a.csrf(), "eck_id": upper})).text) == 2
    nobody = await school_a.post("/portal/student", {"csrf": await school_a.csrf(), "eck_id": eck_id(99)})
    assert shown(nobody.text) == 0


async def test_a_student_look_up_shows_a_pull_whole_when_only_its_answer_named_the_student(fed: Federation,
                                                                                       school_a: PortalClient):
    await push(fed, SCHOOL, 5)
    reader = fed.client("reader")
    token = await reader.token(scope="eduv.usage", purpose="j")
    answer = await reader.call("GET", f"/v1/usage?school={SCHOOL}", token=token, headers={"Edu-Purpose": "j"})
    assert answer.status == 200
    pulled = str(answer.headers["Edu-Exchange-Id"])
    page = await school_a.post("/portal/student", {"csrf": await school_a.csrf(), "eck_id": eck_id(5)})
    # the push's decision and outcome, and the pull's: its decision named no student, its answer did
    assert page.status == 200 and shown(page.text) == 4
    assert page.text.count(f"/exchanges/{pulled}\"") == 2  # each record links its exchange


async def test_a_student_look_up_refuses_what_is_not_an_eck_id(fed: Federation, school_a: PortalClient):
    page = await school_a.post("/portal/student", {"csrf": await school_a.csrf(), "eck_id": "123456782"})
    assert page.status == 400 and "ECK iD" in page.text


async def test_the_eck_id_of_a_look_up_is_neither_stored_nor_logged(fed: Federation, school_a: PortalClient,
                                                                   capsys):
    secret_student = eck_id(4242)
    await school_a.post("/portal/student", {"csrf": await school_a.csrf(), "eck_id": secret_student})
    captured = capsys.readouterr()
    assert secret_student[-128:] not in captured.out + captured.err
    state = fed.directory / "state"
    for path in state.rglob("*"):
        if path.is_file():
            assert secret_student[-128:].encode() not in path.read_bytes(), path


async def test_totals_show_counts_per_counterparty_and_service_and_an_svg_chart(fed: Federation,
                                                                               school_a: PortalClient):
    page = await school_a.get("/portal/totals", since="2026-01-01")
    assert page.status == 200
    assert "<svg" in page.text and 'class="allowed"' in page.text and "<title>" in page.text
    assert "Uitgeverij De Polder" in page.text and "leermateriaalgebruik" in page.text
    hourly = await school_a.get("/portal/totals", bucket="hour")
    assert "<svg" in hourly.text


@pytest.mark.parametrize("until", ["0001-01-10", "0001-01-01T00:00:00Z"])
async def test_totals_up_to_the_first_days_of_the_year_1_are_a_page_from_the_first_day_not_a_node_failure(
    school_a: PortalClient, until: str
):
    page = await school_a.get("/portal/totals", until=until)
    assert page.status == 200, page.text
    assert 'value="0001-01-01"' in page.text  # the month before it, as far back as there are days


async def test_the_portal_pages_work_without_javascript(fed: Federation, school_a: PortalClient):
    for path in ("/portal/exchanges", "/portal/student", "/portal/totals", "/portal/activations", "/portal/export"):
        page = await school_a.get(path)
        assert page.status == 200 and "<script" not in page.text, path


async def test_revoking_an_activation_refuses_the_next_exchange_at_once_with_0022(fed: Federation,
                                                                                school_a: PortalClient):
    await push(fed, SCHOOL, 1)
    activation_id = await revoke_progress(fed, school_a)
    record = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(1), school=SCHOOL)
    answer = await fed.client("publisher").put_progress(record)
    assert answer.status == 403 and answer.body["status"] == "0022"
    listing = await school_a.get("/portal/activations")
    assert f'data-activation="{activation_id}" class="state-revoked"' in listing.text


async def test_a_school_grants_confirms_and_ends_activations(fed: Federation, school_a: PortalClient):
    reader = fed.parties["reader"].oin
    page = await school_a.post("/portal/activations", {
        "csrf": await school_a.csrf(), "counterparty": reader, "data_service": "resultaten", "purposes": "a",
        "valid_until": "2030-07-31", "agreement_reference": "VO-2026-1"})
    assert page.status == 200
    (made,) = [a for a in await fed.node.activations.find(school=SCHOOL, counterparty=reader)
               if a.data_service == "resultaten"]
    assert made.state(fed.node.clock()) == "active" and made.processing_agreement.reference == "VO-2026-1"
    assert made.valid_until.date().isoformat() == "2030-08-01"  # the whole last day included

    requested = await fed.node.activations.request(school=SCHOOL, data_service="gebruiksoverzicht",
                                                   counterparty=reader, purposes=("d",))
    await school_a.post(f"/portal/activations/{requested.id}/confirm", {"csrf": await school_a.csrf()})
    assert (await fed.node.activations.get(requested.id)).state(fed.node.clock()) == "active"

    await school_a.post(f"/portal/activations/{made.id}/end",
                        {"csrf": await school_a.csrf(), "valid_until": "2029-12-31"})
    assert (await fed.node.activations.get(made.id)).valid_until.date().isoformat() == "2030-01-01"


async def test_an_activation_change_that_breaks_a_rule_is_shown_not_swallowed(fed: Federation,
                                                                             school_a: PortalClient):
    page = await school_a.post("/portal/activations", {
        "csrf": await school_a.csrf(), "counterparty": "not-an-oin", "data_service": "resultaten", "purposes": "a"})
    assert page.status == 400 and 'class="error"' in page.text


async def test_the_csv_export_follows_the_filters(fed: Federation, school_a: PortalClient):
    text = (await school_a.get("/portal/export.csv", decision="allowed")).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 6 and {r["decision"] for r in rows} == {"allowed"}
    assert all(r["student_count"] in ("0", "1") for r in rows)
    assert "ketenid" not in text


async def test_the_json_export_verifies_with_the_offline_verifier(fed: Federation, school_a: PortalClient,
                                                                 tmp_path: Path):
    await fed.node.log.checkpoint()
    await push(fed, SCHOOL, 7)  # a checkpoint before, records after: consistency is checked too
    export = tmp_path / "export.json"
    export.write_text((await school_a.get("/portal/export.json")).text)
    key = tmp_path / "log.pem"
    key.write_text((await school_a.get("/log/v1/public-key")).text)
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["log", "verify", str(export), "--public-key", str(key)]
    )
    assert result.exit_code == 0, result.output
    assert "8 records proven" in result.output

    tampered = json.loads(export.read_text())
    tampered["records"][0]["record"]["school"] = "30XY123"
    export.write_text(json.dumps(tampered))
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["log", "verify", str(export), "--public-key", str(key)]
    )
    assert result.exit_code == 1 and "does not match its leaf hash" in result.output


async def test_every_page_renders_in_english_too(fed: Federation, school_a: PortalClient):
    for path in ("/portal/exchanges", "/portal/student", "/portal/totals", "/portal/activations", "/portal/export"):
        page = await school_a.get(path, lang="en")
        assert page.status == 200 and '<html lang="en">' in page.text, path
    (exchange_id, *_) = [s.record.exchange_id for s in await fed.node.log.records(school=SCHOOL, limit=1)]
    detail = await school_a.get(f"/portal/exchanges/{exchange_id}", lang="en")
    assert detail.status == 200 and "Inclusion proof" in detail.text


async def test_the_stylesheet_is_served(fed: Federation, school_a: PortalClient):
    css = await school_a.get("/portal/static/portal.css")
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css") and "svg.chart" in css.text


async def test_pages_forbid_framing_and_caching(fed: Federation, school_a: PortalClient):
    page = await school_a.get("/portal/exchanges")
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


@pytest.mark.parametrize("bound", [6, 5])  # the school's six records: exactly the bound, and one past it
async def test_an_export_past_max_export_records_is_refused_whole_not_cut_short(tmp_path: Path, bound: int):
    federation = Federation(tmp_path / "fed", max_export_records=bound)
    await federation.start()
    try:
        await federation.activate_demo_schools()
        for n in (1, 2, 3):
            await push(federation, SCHOOL, n)
        await PortalClient.portal_of(federation).accounts.add(school=SCHOOL, email=USER, password=PASSWORD)
        client = PortalClient(federation)
        try:
            await client.login(USER, PASSWORD)
            pages = [await client.get(path) for path in ("/portal/export.csv", "/portal/export.json", "/log/v1/export")]
        finally:
            await client.close()
    finally:
        await federation.close()
    csv_page, json_page, api = pages
    if bound == 6:
        assert len(list(csv.reader(io.StringIO(csv_page.text)))) == 1 + 6
        assert len(json.loads(json_page.text)["records"]) == len(api.json()["records"]) == 6
        return
    assert csv_page.status == json_page.status == 400
    assert "more than 5 records, more than one export carries: ask for a shorter one" in csv_page.text
    assert "more than 5 records, more than one export carries: ask for a shorter one" in json_page.text
    assert api.status == 400 and api.json() == {
        "status": "0099",
        "statusMessage": "the period holds more than 5 records, more than one export carries: ask for a shorter one"
                         " (since, until)",
    }
