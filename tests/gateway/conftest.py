from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connectors.samples.federation import Federation


@pytest.fixture
async def federation(tmp_path: Path) -> AsyncIterator[Federation]:
    """A dashboard behind a real gateway node over real TLS, with the demo's participants and activations."""
    async with Federation(tmp_path / "fed").running() as fed:
        yield fed
