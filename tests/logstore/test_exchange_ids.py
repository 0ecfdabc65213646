"""Exchange ids are formatted by hand (a hot path); the text must be exactly what the uuid module writes."""

from __future__ import annotations

import uuid

from hypothesis import example, given
from hypothesis import strategies as st

from gateway.exchange import new_exchange_id, uuid_text


@given(st.binary(min_size=16, max_size=16))
@example(bytes(16))
@example(b"\xff" * 16)
def test_uuid_text_is_the_uuid_modules_text(raw: bytes) -> None:
    assert uuid_text(raw) == str(uuid.UUID(bytes=raw))


def test_a_new_id_is_the_canonical_text_of_a_version_7_rfc_9562_uuid() -> None:
    for _ in range(1000):
        made = new_exchange_id()
        parsed = uuid.UUID(made)
        assert str(parsed) == made  # lowercase, hyphenated, 36 characters
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
