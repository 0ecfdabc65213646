"""Exchange ids are formatted by hand (a hot path); the text must be exactly what the uuid module writes."""

from __future__ import annotations

import uuid

from hypothesis import example, given
from hypothesis import strategies as st

from gateway.exchange import new_exchange_id, uuid_text


@given(st.integers(min_value=0, max_value=2**128 - 1))
@example(0)
@example(2**128 - 1)
def test_uuid_text_is_the_uuid_modules_text(value: int) -> None:
    assert uuid_text(value) == str(uuid.UUID(int=value))


def test_a_new_id_is_the_canonical_text_of_a_version_7_rfc_9562_uuid() -> None:
    for _ in range(1000):
        made = new_exchange_id()
        parsed = uuid.UUID(made)
        assert str(parsed) == made  # lowercase, hyphenated, 36 characters
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
