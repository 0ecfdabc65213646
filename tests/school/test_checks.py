"""The school, activation, purpose and attribute checks, on real aiohttp requests, with the Edu-V codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.checks.activation import activation
from gateway.checks.attributes import attributes, filter_response
from gateway.checks.purpose import purpose
from gateway.checks.school import school
from gateway.denials import (
    ConsentRequired,
    Denial,
    EduOrgUnknown,
    Forbidden,
    PayloadTooLarge,
    SchemaIncorrect,
    UpstreamUnavailable,
)
from gateway.exchange import Exchange
from tests.school.conftest import (
    DASHBOARD,
    ECK_ID,
    OTHER_ECK_ID,
    PUBLISHER,
    SCHOOL,
    STRANGER,
    CheckNode,
    ExchangeFactory,
    activate,
    node_config,
    progress,
)
from trust.eckid import EckId


async def admit(node: CheckNode, x: Exchange) -> Exchange:
    """The four school-control checks in pipeline order."""
    await school(node, x)
    await activation(node, x)
    await purpose(node, x)
    await attributes(node, x)
    return x


def refused_with(exc: Denial, cls: type[Denial], status: int, code: str, step: str) -> None:
    assert isinstance(exc, cls)
    assert (exc.http_status, exc.edu_status, exc.step) == (status, code, step)


# -- school ------------------------------------------------------------------------------------------------------


async def test_an_activated_school_passes_all_four_checks(node: CheckNode, exchange: ExchangeFactory) -> None:
    await activate(node.activations)
    x = await admit(node, exchange(body=progress()))
    assert (x.school, x.purpose, x.removed_fields, x.records) == (SCHOOL, "a", 0, 1)
    assert x.activation is not None and x.activation.counterparty == PUBLISHER
    assert x.students == [ECK_ID]
    assert json.loads(x.body or b"") == progress()


async def test_a_missing_school_reference_is_0023(node: CheckNode, exchange: ExchangeFactory) -> None:
    await activate(node.activations)
    body = progress()
    del body["school"]
    with pytest.raises(EduOrgUnknown) as refused:
        await school(node, exchange(body=body))
    refused_with(refused.value, EduOrgUnknown, 400, "0023", "school")


async def test_a_school_unknown_to_this_node_is_0023(node: CheckNode, exchange: ExchangeFactory) -> None:
    await activate(node.activations)
    with pytest.raises(EduOrgUnknown) as refused:
        await school(node, exchange(body=progress(school={"organisationMasterIdentifier": "99ZZ999"})))
    assert "99ZZ999" in refused.value.message


async def test_a_school_reference_that_is_not_a_string_is_0023(node: CheckNode, exchange: ExchangeFactory) -> None:
    await activate(node.activations)
    with pytest.raises(EduOrgUnknown):
        await school(node, exchange(body=progress(school={"organisationMasterIdentifier": 104})))


async def test_the_school_of_a_pull_comes_from_the_query(node: CheckNode, exchange: ExchangeFactory) -> None:
    await activate(node.activations, data_service="gebruiksoverzicht", purposes=("d",))
    x = exchange("gebruiksoverzicht", path=f"/v1/usage?school={SCHOOL}", caller=DASHBOARD, token_purposes={"d"})
    await school(node, x)
    assert x.school == SCHOOL
    with pytest.raises(EduOrgUnknown):
        await school(node, exchange("gebruiksoverzicht", path=f"/v1/usage?school={SCHOOL}&school=22XY001"))


async def test_malformed_json_is_0011_before_anything_else(node: CheckNode, exchange: ExchangeFactory) -> None:
    with pytest.raises(SchemaIncorrect) as refused:
        await school(node, exchange(raw=b'{"school": '))
    refused_with(refused.value, SchemaIncorrect, 400, "0011", "school")


async def test_a_body_over_the_limit_is_refused_before_it_is_read(
    node: CheckNode, exchange: ExchangeFactory, tmp_path: Any
) -> None:
    node.config = node_config(tmp_path, limits={"max_body_bytes": 64})
    with pytest.raises(PayloadTooLarge):
        await school(node, exchange(body=progress()))


# -- activation --------------------------------------------------------------------------------------------------


async def test_no_activation_for_this_counterparty_is_0022(node: CheckNode, exchange: ExchangeFactory) -> None:
    await activate(node.activations, counterparty=STRANGER)  # the school is known, but not for this caller
    x = exchange(body=progress())
    await school(node, x)
    with pytest.raises(ConsentRequired) as refused:
        await activation(node, x)
    refused_with(refused.value, ConsentRequired, 403, "0022", "activation")
    assert PUBLISHER in refused.value.message


async def test_a_revoked_activation_is_0022(node: CheckNode, exchange: ExchangeFactory) -> None:
    granted = await activate(node.activations)
    await node.activations.revoke(granted.id, school=SCHOOL)
    x = exchange(body=progress())
    await school(node, x)
    with pytest.raises(ConsentRequired) as refused:
        await activation(node, x)
    assert "revoked" in refused.value.message


async def test_an_activation_not_yet_started_or_ended_is_0022(node: CheckNode, exchange: ExchangeFactory) -> None:
    now = datetime.now(UTC)
    await activate(node.activations, valid_from=now + timedelta(hours=1))
    await activate(node.activations, valid_from=now - timedelta(days=9), valid_until=now - timedelta(days=1))
    x = exchange(body=progress())
    await school(node, x)
    with pytest.raises(ConsentRequired):
        await activation(node, x)


async def test_class_iv_without_a_processing_agreement_is_0022_and_says_so(
    node: CheckNode, exchange: ExchangeFactory
) -> None:
    await activate(node.activations, processing_agreement=None)
    x = exchange(body=progress())
    await school(node, x)
    with pytest.raises(ConsentRequired) as refused:
        await activation(node, x)
    assert "processing agreement" in refused.value.message


async def test_class_iv_with_an_expired_processing_agreement_is_0022(
    node: CheckNode, exchange: ExchangeFactory
) -> None:
    from gateway.activation import ProcessingAgreement

    now = datetime.now(UTC)
    expired = ProcessingAgreement(
        reference="VO-2024-1", valid_from=now - timedelta(days=700), valid_until=now - timedelta(days=1)
    )
    await activate(node.activations, processing_agreement=expired)
    x = exchange(body=progress())
    await school(node, x)
    with pytest.raises(ConsentRequired) as refused:
        await activation(node, x)
    assert "VO-2024-1" in refused.value.message and "not in force" in refused.value.message


# -- purpose -----------------------------------------------------------------------------------------------------


async def admitted_up_to_purpose(node: CheckNode, x: Exchange) -> Exchange:
    await school(node, x)
    await activation(node, x)
    return x


async def test_a_declared_purpose_may_narrow_the_tokens_purposes(node: CheckNode, exchange: ExchangeFactory) -> None:
    await activate(node.activations)
    x = await admitted_up_to_purpose(
        node, exchange(body=progress(), token_purposes={"a", "d"}, headers={"Edu-Purpose": "d"})
    )
    await purpose(node, x)
    assert x.purpose == "d"


async def test_a_purpose_outside_the_token_is_refused_naming_it(node: CheckNode, exchange: ExchangeFactory) -> None:
    await activate(node.activations)
    x = await admitted_up_to_purpose(
        node, exchange(body=progress(), token_purposes={"a"}, headers={"Edu-Purpose": "j"})
    )
    with pytest.raises(Forbidden) as refused:
        await purpose(node, x)
    assert refused.value.http_status == 403 and refused.value.step == "purpose"
    assert "'j' (monitoring and accountability" in refused.value.message and "never widen" in refused.value.message


async def test_a_purpose_the_service_does_not_allow_is_refused(node: CheckNode, exchange: ExchangeFactory) -> None:
    await activate(node.activations)
    x = await admitted_up_to_purpose(
        node, exchange(body=progress(), token_purposes={"a", "t"}, headers={"Edu-Purpose": "t"})
    )
    with pytest.raises(Forbidden) as refused:
        await purpose(node, x)
    assert "'t' (financial management) is not allowed for data service 'leermateriaalgebruik'" in refused.value.message


async def test_a_purpose_the_activation_does_not_cover_is_0022(node: CheckNode, exchange: ExchangeFactory) -> None:
    await activate(node.activations, purposes=("a",))
    x = await admitted_up_to_purpose(
        node, exchange(body=progress(), token_purposes={"a", "d"}, headers={"Edu-Purpose": "d"})
    )
    with pytest.raises(ConsentRequired) as refused:
        await purpose(node, x)
    assert refused.value.edu_status == "0022" and "'d'" in refused.value.message


async def test_without_a_declaration_a_token_with_several_purposes_is_refused(
    node: CheckNode, exchange: ExchangeFactory
) -> None:
    await activate(node.activations)
    x = await admitted_up_to_purpose(node, exchange(body=progress(), token_purposes={"a", "d"}))
    with pytest.raises(Forbidden) as refused:
        await purpose(node, x)
    assert "Edu-Purpose" in refused.value.message


@pytest.mark.parametrize("header", ["a, d", "zz", "a d"])
async def test_a_purpose_header_that_is_not_one_known_code_is_refused(
    node: CheckNode, exchange: ExchangeFactory, header: str
) -> None:
    await activate(node.activations)
    x = await admitted_up_to_purpose(
        node, exchange(body=progress(), token_purposes={"a", "d"}, headers={"Edu-Purpose": header})
    )
    with pytest.raises(Denial):
        await purpose(node, x)
    assert x.purpose is None


# -- attributes ----------------------------------------------------------------------------------------------------


async def test_an_extra_field_is_refused_with_0011_naming_it(node: CheckNode, exchange: ExchangeFactory) -> None:
    await activate(node.activations)
    x = await admitted_up_to_purpose(node, exchange(body=progress(student={"id": ECK_ID, "birthDate": "2014-03-01"})))
    await purpose(node, x)
    with pytest.raises(SchemaIncorrect) as refused:
        await attributes(node, x)
    refused_with(refused.value, SchemaIncorrect, 400, "0011", "attributes")
    assert "student.birthDate" in refused.value.message and "2014" not in refused.value.message


@pytest.mark.parametrize(
    ("changes", "found"),
    [
        ({"additionalInfo": "BSN 123456782"}, "BSN"),
        ({"additionalInfo": "mail ouder@example.nl"}, "e-mail"),
        ({"student": {"id": ECK_ID, "firstName": "Jan"}}, "name"),
        ({"student": {"id": "123456782"}}, "BSN"),  # a BSN in place of the ECK iD
        ({"student": {"id": "https://ketenid.nl/201703/abc"}}, "ECK iD"),
    ],
)
async def test_direct_identifiers_and_malformed_eck_ids_are_0011_and_never_forwarded(
    node: CheckNode, exchange: ExchangeFactory, changes: dict[str, Any], found: str
) -> None:
    await activate(node.activations)
    x = await admitted_up_to_purpose(node, exchange(body=progress(**changes)))
    await purpose(node, x)
    body_before = x.body
    with pytest.raises(SchemaIncorrect) as refused:
        await attributes(node, x)
    assert found in refused.value.message
    assert x.body == body_before  # nothing rewritten for forwarding


async def test_a_service_that_removes_extras_cuts_them_and_counts_them(
    node: CheckNode, catalogue: Any, exchange: ExchangeFactory
) -> None:
    removing = catalogue.services["leermateriaalgebruik"].model_copy(update={"extra_fields": "remove"})
    await activate(node.activations)
    x = exchange(body=progress(grade=6, student={"id": ECK_ID, "birthDate": "2014-03-01"}))
    x.service = removing
    await admit(node, x)
    assert x.removed_fields == 2
    forwarded = json.loads(x.body or b"")
    assert forwarded == progress()


async def test_a_pull_answer_is_cut_and_its_students_collected(node: CheckNode, exchange: ExchangeFactory) -> None:
    x = exchange("gebruiksoverzicht", path=f"/v1/usage?school={SCHOOL}", caller=DASHBOARD)
    answer = {
        "school": SCHOOL,
        "records": [
            {"student": {"id": ECK_ID, "grade": 6}, "courseId": "c1", "status": "started", "teacher": "x"},
            {"student": {"id": OTHER_ECK_ID}, "courseId": "c2", "status": "completed"},
        ],
        "nextPage": "abc",
    }
    filtered = json.loads(await filter_response(node, x, json.dumps(answer).encode()))
    assert filtered == {
        "school": SCHOOL,
        "records": [
            {"student": {"id": ECK_ID}, "courseId": "c1", "status": "started"},
            {"student": {"id": OTHER_ECK_ID}, "courseId": "c2", "status": "completed"},
        ],
    }
    assert (x.removed_fields, x.records, x.students) == (3, 2, [ECK_ID, OTHER_ECK_ID])


async def test_a_pull_answer_carrying_a_bsn_never_reaches_the_caller(
    node: CheckNode, exchange: ExchangeFactory
) -> None:
    x = exchange("gebruiksoverzicht", path=f"/v1/usage?school={SCHOOL}", caller=DASHBOARD)
    answer = {"school": SCHOOL, "records": [{"student": {"id": ECK_ID}, "status": "started 123456782"}]}
    with pytest.raises(UpstreamUnavailable) as refused:
        await filter_response(node, x, json.dumps(answer).encode())
    assert refused.value.step == "attributes" and "123456782" not in refused.value.message


async def test_a_malformed_pull_answer_is_refused(node: CheckNode, exchange: ExchangeFactory) -> None:
    x = exchange("gebruiksoverzicht", path=f"/v1/usage?school={SCHOOL}", caller=DASHBOARD)
    with pytest.raises(UpstreamUnavailable):
        await filter_response(node, x, b"<html>oops</html>")


async def test_pseudonymised_services_give_each_caller_its_own_consistent_pseudonym(
    node: CheckNode, catalogue: Any, exchange: ExchangeFactory
) -> None:
    service = catalogue.services["gebruiksoverzicht"].model_copy(update={"pseudonymise": True})
    answer = json.dumps({"school": SCHOOL, "records": [{"student": {"id": ECK_ID}}]}).encode()

    async def seen_by(caller: str) -> str:
        x = exchange("gebruiksoverzicht", path=f"/v1/usage?school={SCHOOL}", caller=caller)
        x.service = service
        filtered = json.loads(await filter_response(node, x, answer))
        assert x.students == [ECK_ID]  # the log keys the real ECK iD, for the school to look up
        return str(filtered["records"][0]["student"]["id"])

    first, again, other = await seen_by(DASHBOARD), await seen_by(DASHBOARD), await seen_by(STRANGER)
    assert first == again != ECK_ID
    assert other not in (first, ECK_ID)
    assert EckId.parse(first) and EckId.parse(other)  # still well-formed: schemas downstream accept them
    assert node.pseudonyms is not None
    assert node.pseudonyms.reveal(EckId.parse(first), DASHBOARD).value == ECK_ID


async def test_a_callers_pseudonym_in_a_pull_request_is_translated_back_before_it_reaches_the_source(
    node: CheckNode, catalogue: Any, exchange: ExchangeFactory
) -> None:
    from gateway.catalogue import ReferenceSpec

    service = catalogue.services["gebruiksoverzicht"].model_copy(
        update={"pseudonymise": True, "student": ReferenceSpec(request=("body:student.id",))}
    )
    assert node.pseudonyms is not None
    pseudonym = node.pseudonyms.pseudonymise(EckId.parse(ECK_ID), DASHBOARD).value
    x = exchange("gebruiksoverzicht", body={"student": {"id": pseudonym}}, caller=DASHBOARD)
    x.service = service
    await attributes(node, x)
    assert json.loads(x.body or b"") == {"student": {"id": ECK_ID}}
    assert x.students == [ECK_ID]
    other = exchange("gebruiksoverzicht", body={"student": {"id": pseudonym}}, caller=STRANGER)
    other.service = service
    await attributes(node, other)  # another caller's use of it names some other student, never this one
    assert json.loads(other.body or b"")["student"]["id"] != ECK_ID


@pytest.mark.parametrize(
    "query", ["school=104A158&bsn=111222333", "school=104A158&contact=a.b@school.nl", "school=104A158&111222333=x"]
)
async def test_a_bsn_or_e_mail_address_in_the_query_string_is_0011(
    node: CheckNode, exchange: ExchangeFactory, query: str
) -> None:
    x = exchange("gebruiksoverzicht", path=f"/v1/usage?{query}", caller=DASHBOARD)
    with pytest.raises(SchemaIncorrect) as refused:
        await attributes(node, x)
    assert "111222333" not in refused.value.message and "a.b@school.nl" not in refused.value.message


async def test_a_second_activation_in_force_may_cover_the_declared_purpose(
    node: CheckNode, exchange: ExchangeFactory
) -> None:
    await activate(node.activations, purposes=("a",))
    covering = await activate(node.activations, purposes=("d",))
    x = await admitted_up_to_purpose(
        node, exchange(body=progress(), token_purposes={"a", "d"}, headers={"Edu-Purpose": "d"})
    )
    await purpose(node, x)
    assert x.purpose == "d" and x.activation.id == covering.id
