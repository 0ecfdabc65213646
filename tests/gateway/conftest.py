from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connectors.samples.federation import Federation


@pytest.fixture
async def federation(tmp_path: Path) -> AsyncIterator[Federation]:
    """A dashboard behind a real gateway node over real TLS, with the demo's participants and activations."""
    fed = Federation(tmp_path / "fed")
    await fed.start()
    await fed.activate_demo_schools()
    try:
        yield fed
    finally:
        await fed.close()
