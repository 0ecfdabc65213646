"""A school sees only its own school's records: through every page, filter, export, proof and activation, whatever
parameter the request carries. Each test tries to reach the other school's data and must come back empty-handed."""

from __future__ import annotations

import csv
import io

from connectors.samples.federation import OTHER_SCHOOL, SCHOOL, Federation
from gateway.demo import eck_id
from tests.portal.client import PortalClient


async def _exchange_ids(fed: Federation, school: str) -> set[str]:
    return {s.record.exchange_id for s in await fed.node.log.records(school=school, limit=1000)}


async def _indices(fed: Federation, school: str) -> set[int]:
    return {s.index for s in await fed.node.log.records(school=school, limit=1000)}


async def test_the_exchange_list_shows_every_own_record_and_none_of_the_other_school(fed: Federation,
                                                                                   school_a: PortalClient):
    page = await school_a.get("/portal/exchanges")
    own, other = await _exchange_ids(fed, SCHOOL), await _exchange_ids(fed, OTHER_SCHOOL)
    assert own and other
    assert all(x in page.text for x in own)
    assert not any(x in page.text for x in other)


async def test_a_school_parameter_naming_another_school_is_refused_on_every_page(fed: Federation,
                                                                               school_a: PortalClient):
    for path in ("/portal/exchanges", "/portal/totals", "/portal/activations", "/portal/export",
                 "/portal/export.csv", "/portal/export.json", "/portal/student"):
        page = await school_a.get(path, school=OTHER_SCHOOL)
        assert page.status == 403, path
        assert not any(x in page.text for x in await _exchange_ids(fed, OTHER_SCHOOL))
    assert (await school_a.get("/portal/exchanges", school=SCHOOL)).status == 200  # its own: fine


async def test_another_schools_exchange_id_is_not_found(fed: Federation, school_a: PortalClient):
    for exchange_id in await _exchange_ids(fed, OTHER_SCHOOL):
        page = await school_a.get(f"/portal/exchanges/{exchange_id}")
        assert page.status == 404 and exchange_id not in page.text.replace(f"/portal/exchanges/{exchange_id}", "")
    (own,) = list(await _exchange_ids(fed, SCHOOL))[:1]
    assert (await school_a.get(f"/portal/exchanges/{own}")).status == 200


async def test_filtering_by_the_other_schools_exchange_id_finds_nothing(fed: Federation, school_a: PortalClient):
    other = next(iter(await _exchange_ids(fed, OTHER_SCHOOL)))
    page = await school_a.get("/portal/exchanges", exchange_id=other)
    assert page.status == 200 and 'id="no-records"' in page.text


async def test_exports_hold_only_the_own_schools_records(fed: Federation, school_a: PortalClient):
    rows = list(csv.DictReader(io.StringIO((await school_a.get("/portal/export.csv")).text)))
    assert {r["school"] for r in rows} == {SCHOOL}
    assert {r["exchange_id"] for r in rows} == await _exchange_ids(fed, SCHOOL)
    export = (await school_a.get("/portal/export.json")).json()
    assert export["scope"]["school"] == SCHOOL
    assert {e["record"]["school"] for e in export["records"]} == {SCHOOL}
    assert {e["index"] for e in export["records"]} == await _indices(fed, SCHOOL)


async def test_a_student_at_both_schools_is_found_only_in_the_own_schools_records(fed: Federation,
                                                                                school_a: PortalClient):
    page = await school_a.post("/portal/student", {"csrf": await school_a.csrf(), "eck_id": eck_id(3)})
    assert page.status == 200
    assert not any(x in page.text for x in await _exchange_ids(fed, OTHER_SCHOOL))
    assert page.text.count("data-index=") == 2  # decision + outcome of the one exchange about student 3 here
    only_other = await school_a.post("/portal/student", {"csrf": await school_a.csrf(), "eck_id": eck_id(11)})
    assert 'id="no-records"' in only_other.text


async def test_proofs_and_records_of_the_log_api_are_scoped_to_the_session_school(fed: Federation,
                                                                                 school_a: PortalClient):
    for index in await _indices(fed, OTHER_SCHOOL):
        answer = await school_a.get("/log/v1/proof/inclusion", index=str(index))
        assert answer.status == 404 and answer.json()["status"] == "0099"
    own = min(await _indices(fed, SCHOOL))
    assert (await school_a.get("/log/v1/proof/inclusion", index=str(own))).status == 200
    records = (await school_a.get("/log/v1/records", limit="1000")).json()["records"]
    assert {r["record"]["school"] for r in records} == {SCHOOL}
    assert (await school_a.get("/log/v1/records", school=OTHER_SCHOOL)).status == 403


async def test_another_schools_activation_cannot_be_revoked_ended_or_confirmed(fed: Federation,
                                                                              school_a: PortalClient):
    (theirs,) = [a for a in await fed.node.activations.find(school=OTHER_SCHOOL)
                 if a.data_service == "leermateriaalgebruik"]
    csrf = await school_a.csrf()
    for action, form in (("revoke", {}), ("end", {"valid_until": "2026-01-02"}), ("confirm", {})):
        page = await school_a.post(f"/portal/activations/{theirs.id}/{action}", {"csrf": csrf, **form})
        assert page.status == 404, action
    after = await fed.node.activations.get(theirs.id)
    assert after == theirs
    listing = await school_a.get("/portal/activations")
    assert theirs.id not in listing.text


async def test_a_grant_is_always_for_the_session_school_whatever_the_form_says(fed: Federation,
                                                                              school_a: PortalClient):
    form = {"csrf": await school_a.csrf(), "counterparty": fed.parties["reader"].oin, "data_service": "resultaten",
            "purposes": "a"}
    refused = await school_a.post("/portal/activations", {**form, "school": OTHER_SCHOOL})
    assert refused.status == 403
    assert not [a for a in await fed.node.activations.find(school=OTHER_SCHOOL) if a.data_service == "resultaten"]
    granted = await school_a.post("/portal/activations", form)
    assert granted.status == 200
    (made,) = [a for a in await fed.node.activations.find(counterparty=fed.parties["reader"].oin)
               if a.data_service == "resultaten"]
    assert made.school == SCHOOL


async def test_totals_count_only_the_own_schools_exchanges(fed: Federation, school_a: PortalClient):
    page = await school_a.get("/portal/totals", since="2026-01-01")
    own = await fed.node.log.records(school=SCHOOL, limit=1000)
    decisions = sum(1 for s in own if s.record.kind == "decision")
    # the one row (publisher, leermateriaalgebruik): exchanges, allowed, denied
    assert f"<td>{decisions}</td>\n  <td>{decisions}</td><td>0</td>" in page.text


async def test_without_a_session_nothing_is_shown(fed: Federation, users):
    anonymous = PortalClient(fed)
    try:
        for path in ("/portal/exchanges", "/portal/totals", "/portal/activations", "/portal/export.json"):
            page = await anonymous.get(path)
            assert page.url.endswith("/portal/login"), path
        assert (await anonymous.get("/log/v1/records")).status == 401
        assert (await anonymous.get("/log/v1/proof/inclusion", index="0")).status == 401
    finally:
        await anonymous.close()
