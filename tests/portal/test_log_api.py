"""The log-reading API: public checkpoints and consistency proofs; records and inclusion proofs only for those
entitled (a participant by its client certificate, a school by its portal session); Edu-V errors for bad input."""

from __future__ import annotations

import pytest

from connectors.samples.federation import OTHER_SCHOOL, SCHOOL, Federation, expired_identity
from tests.portal.client import PortalClient
from trust.checkpoint import load_public_key, verify_checkpoint
from trust.transparency import ProofError, verify_consistency, verify_inclusion


def participant(fed: Federation, key: str) -> PortalClient:
    return PortalClient(fed, identity=fed.parties[key].identity)


async def test_the_latest_checkpoint_is_public_and_signed_with_the_published_log_key(fed: Federation):
    await fed.node.log.checkpoint()
    anyone = PortalClient(fed)
    try:
        answer = await anyone.get("/log/v1/checkpoint")
        assert answer.status == 200
        key = load_public_key((await anyone.get("/log/v1/public-key")).text.encode())
        checkpoint = verify_checkpoint(answer.json()["jws"], key)
        assert checkpoint.tree_size == answer.json()["tree_size"] == fed.node.log.size()
        assert checkpoint.root_hash.hex() == answer.json()["root_hash"] and checkpoint.node == fed.node.oin
        listed = (await anyone.get("/log/v1/checkpoints")).json()["checkpoints"]
        assert listed[-1]["jws"] == answer.json()["jws"]
    finally:
        await anyone.close()


async def test_a_consistency_proof_between_two_checkpoints_verifies(fed: Federation):
    first = await fed.node.log.checkpoint()
    from tests.portal.conftest import push

    await push(fed, SCHOOL, 5)
    second = await fed.node.log.checkpoint()
    anyone = PortalClient(fed)
    try:
        answer = await anyone.get("/log/v1/proof/consistency", first=str(first.tree_size),
                                  second=str(second.tree_size))
        proof = [bytes.fromhex(h) for h in answer.json()["proof"]]
        verify_consistency(first.tree_size, second.tree_size, proof, first.root_hash, second.root_hash)
        with pytest.raises(ProofError):
            verify_consistency(first.tree_size, second.tree_size, proof, second.root_hash, first.root_hash)
    finally:
        await anyone.close()


async def test_a_school_gets_an_inclusion_proof_for_its_record_that_verifies_against_a_checkpoint(
    fed: Federation, school_a: PortalClient
):
    (stored, *_) = await fed.node.log.records(school=SCHOOL, limit=1)
    answer = (await school_a.get("/log/v1/proof/inclusion", index=str(stored.index))).json()
    key = load_public_key((await school_a.get("/log/v1/public-key")).text.encode())
    checkpoint = verify_checkpoint(answer["checkpoint"]["jws"], key)
    assert answer["tree_size"] == checkpoint.tree_size > stored.index
    verify_inclusion(stored.leaf_hash, stored.index, checkpoint.tree_size,
                     [bytes.fromhex(h) for h in answer["proof"]], checkpoint.root_hash)


async def test_a_participant_reads_by_its_certificate_only_the_records_it_took_part_in(fed: Federation):
    publisher, reader = participant(fed, "publisher"), participant(fed, "reader")
    try:
        mine = (await publisher.get("/log/v1/records", limit="1000")).json()["records"]
        oin = fed.parties["publisher"].oin
        assert mine and all(oin in (r["record"]["caller_oin"], r["record"]["counterparty_oin"]) for r in mine)
        assert (await reader.get("/log/v1/records")).json()["records"] == []  # it took part in none
        index = mine[0]["index"]
        assert (await publisher.get("/log/v1/proof/inclusion", index=str(index))).status == 200
        refused = await reader.get("/log/v1/proof/inclusion", index=str(index))
        assert refused.status == 404 and refused.json()["status"] == "0099"
    finally:
        await publisher.close()
        await reader.close()


async def test_a_participant_filters_its_records_like_the_portal_does(fed: Federation):
    publisher = participant(fed, "publisher")
    try:
        only_a = (await publisher.get("/log/v1/records", school=SCHOOL, decision="allowed",
                                      data_service="leermateriaalgebruik", purpose="b", since="2026-01-01",
                                      limit="1000")).json()["records"]
        assert only_a and {r["record"]["school"] for r in only_a} == {SCHOOL}
        none = (await publisher.get("/log/v1/records", decision="denied")).json()["records"]
        assert none == []
        paged = (await publisher.get("/log/v1/records", limit="2", offset="1")).json()["records"]
        assert len(paged) == 2
    finally:
        await publisher.close()


async def test_a_certificate_the_node_would_refuse_for_an_exchange_reads_nothing(fed: Federation):
    suspended, expired = participant(fed, "suspended"), PortalClient(
        fed, identity=expired_identity(fed.ca, fed.parties["publisher"])
    )
    try:
        answer = await suspended.get("/log/v1/records")
        assert answer.status == 403 and answer.json()["status"] == "0099" and "suspended" in answer.text.lower()
        answer = await expired.get("/log/v1/records")
        assert answer.status == 401 and answer.json()["statusMessage"]
    finally:
        await suspended.close()
        await expired.close()


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("/log/v1/records", {"since": "yesterday"}, "since"),
        ("/log/v1/records", {"until": "2026-13-45"}, "until"),
        ("/log/v1/records", {"since": "2026-01-01T10:00:00"}, "time zone"),
        ("/log/v1/records", {"limit": "-1"}, "limit"),
        ("/log/v1/records", {"limit": "0"}, "limit"),
        ("/log/v1/records", {"limit": "100000"}, "limit"),
        ("/log/v1/records", {"offset": "-5"}, "offset"),
        ("/log/v1/records", {"counterparty": "123"}, "counterparty"),
        ("/log/v1/records", {"decision": "maybe"}, "decision"),
        ("/log/v1/records", {"purpose": "zz"}, "purpose"),
        ("/log/v1/records", {"school": "104A158' OR 1=1"}, "school"),
        ("/log/v1/records", {"since": "2026-02-01", "until": "2026-01-01"}, "before"),
        ("/log/v1/proof/inclusion", {"index": "-1"}, "index"),
        ("/log/v1/proof/inclusion", {"index": "abc"}, "index"),
        ("/log/v1/proof/inclusion", {}, "index"),
        ("/log/v1/proof/consistency", {"first": "-1", "second": "2"}, "first"),
        ("/log/v1/proof/consistency", {"first": "3", "second": "1"}, "first <= second"),
        ("/log/v1/proof/consistency", {"first": "1", "second": "99999"}, "log's size"),
        ("/log/v1/checkpoints", {"since": "not a date"}, "since"),
    ],
)
async def test_bad_parameters_are_answered_400_with_status_0011_naming_the_parameter(fed: Federation, path, params,
                                                                                    named):
    publisher = participant(fed, "publisher")
    try:
        answer = await publisher.get(path, **params)
        assert answer.status == 400, answer.text
        assert answer.json()["status"] == "0011" and named in answer.json()["statusMessage"]
    finally:
        await publisher.close()


@pytest.mark.parametrize("path", ["/log/v1/records", "/log/v1/checkpoints", "/log/v1/export"])
@pytest.mark.parametrize(
    ("name", "value"),
    [("until", "9999-12-31"), ("since", "0001-01-01T00:00:00+01:00"), ("until", "9999-12-31T23:59:59-01:00")],
    ids=["the day after 9999-12-31", "before the year 1 in UTC", "after 9999 in UTC"],
)
async def test_a_moment_outside_the_years_1_to_9999_in_utc_is_0011_not_a_node_failure(fed: Federation, path, name,
                                                                                    value):
    publisher = participant(fed, "publisher")
    try:
        answer = await publisher.get(path, **{name: value})
        assert answer.status == 400, answer.text
        assert answer.json() == {"status": "0011",
                                 "statusMessage": f"{name}: {value!r} is outside the years 1 to 9999 in UTC"}
    finally:
        await publisher.close()


async def test_a_since_before_the_year_1000_still_takes_every_record_after_it(fed: Federation):
    publisher = participant(fed, "publisher")
    try:
        everything = (await publisher.get("/log/v1/records")).json()["records"]
        since_999 = (await publisher.get("/log/v1/records", since="0999-01-01")).json()["records"]
        assert everything and since_999 == everything
    finally:
        await publisher.close()


async def test_an_inclusion_proof_for_an_index_past_the_log_is_not_found(fed: Federation, school_a: PortalClient):
    answer = await school_a.get("/log/v1/proof/inclusion", index=str(fed.node.log.size() + 10))
    assert answer.status == 404 and answer.json()["status"] == "0099"


async def test_an_inclusion_proof_by_index_and_exchange_id_is_one_look_up_and_still_scoped(fed: Federation,
                                                                                         school_a: PortalClient):
    (own, *_) = await fed.node.log.records(school=SCHOOL, limit=1)
    answer = await school_a.get("/log/v1/proof/inclusion", index=str(own.index), exchange_id=own.record.exchange_id)
    assert answer.status == 200 and answer.json()["leaf_hash"] == own.leaf_hash.hex()
    (theirs, *_) = await fed.node.log.records(school=OTHER_SCHOOL, limit=1)
    refused = await school_a.get("/log/v1/proof/inclusion", index=str(theirs.index),
                                 exchange_id=theirs.record.exchange_id)
    assert refused.status == 404
    mismatched = await school_a.get("/log/v1/proof/inclusion", index=str(theirs.index),
                                    exchange_id=own.record.exchange_id)
    assert mismatched.status == 404


async def test_a_participant_exports_its_records_with_proofs_that_verify(fed: Federation):
    from connectors.logstore.export import verify_export

    publisher, reader = participant(fed, "publisher"), participant(fed, "reader")
    try:
        export = (await publisher.get("/log/v1/export")).json()
        key = load_public_key((await publisher.get("/log/v1/public-key")).text.encode())
        assert verify_export(export, key) == []
        assert export["scope"]["party_oin"] == fed.parties["publisher"].oin and len(export["records"]) == 12
        assert (await reader.get("/log/v1/export")).json()["records"] == []
    finally:
        await publisher.close()
        await reader.close()


async def test_a_school_exports_through_the_api_only_its_own_records(fed: Federation, school_a: PortalClient):
    export = (await school_a.get("/log/v1/export", since="2026-01-01")).json()
    assert {r["record"]["school"] for r in export["records"]} == {SCHOOL} and len(export["records"]) == 6
    assert (await school_a.get("/log/v1/export", school=OTHER_SCHOOL)).status == 403
