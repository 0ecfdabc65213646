"""Fixtures: a real federation (TLS node, register, durable log) with exchanges about two schools, and portal
users for each school."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connectors.samples.federation import OTHER_SCHOOL, SCHOOL, SINCE, Federation
from connectors.samples.publisher import progress_record
from gateway.activation import ProcessingAgreement
from gateway.demo import eck_id
from tests.portal.client import PortalClient

PASSWORD = "correct horse battery staple"
USER = "admin@school-a.nl"
OTHER_USER = "admin@school-b.nl"
# ECK iDs per school: students 1-3 at SCHOOL, 11-12 at OTHER_SCHOOL, and student 3 at both schools
STUDENTS = {SCHOOL: [1, 2, 3], OTHER_SCHOOL: [11, 12, 3]}


async def push(fed: Federation, school: str, n: int, status: str = "started") -> str:
    record = progress_record(record_id=str(uuid.uuid4()), eck_id=eck_id(n), school=school, status=status)
    answer = await fed.client("publisher").put_progress(record)
    assert answer.status == 201, answer.body
    return str(answer.headers["Edu-Exchange-Id"])


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    federation = Federation(tmp_path / "fed")
    await federation.start()
    await federation.activate_demo_schools()
    assert federation.node is not None
    # the other school also takes progress reports, so both schools have allowed exchanges in the same log
    await federation.node.activations.grant(
        school=OTHER_SCHOOL, data_service="leermateriaalgebruik", counterparty=federation.parties["publisher"].oin,
        purposes=("b",), valid_from=SINCE,
        processing_agreement=ProcessingAgreement(reference="VO-B-7", valid_from=SINCE),
    )
    for school, students in STUDENTS.items():
        for n in students:
            await push(federation, school, n)
    # a denial about the other school: the uncertified publisher is refused, and that is logged too
    try:
        yield federation
    finally:
        await federation.close()


@pytest.fixture
async def users(fed: Federation) -> None:
    accounts = PortalClient.portal_of(fed).accounts
    await accounts.add(school=SCHOOL, email=USER, password=PASSWORD)
    await accounts.add(school=OTHER_SCHOOL, email=OTHER_USER, password=PASSWORD)


@pytest.fixture
async def school_a(fed: Federation, users: None) -> AsyncIterator[PortalClient]:
    client = PortalClient(fed)
    await client.login(USER, PASSWORD)
    try:
        yield client
    finally:
        await client.close()
