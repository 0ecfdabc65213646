"""Fixtures for the identity tests: a development CA and a participant certificate issued by it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from federation import OIN_PUBLISHER

from trust.pki import Issued, create_ca, issue_participant


@pytest.fixture(scope="session")
def ca() -> Issued:
    return create_ca("edugate test CA")


@pytest.fixture(scope="session")
def publisher_cert(ca: Issued) -> Issued:
    return issue_participant(ca, oin=OIN_PUBLISHER, name="Uitgeverij Noord")


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)
