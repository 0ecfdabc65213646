"""The ECK iD: `https://ketenid.nl/201703/` followed by exactly 128 hexadecimal characters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trust.eckid import ECK_ID_PREFIX, EckId, InvalidEckId, is_eck_id

HEX = "0123456789abcdefABCDEF"


@given(st.text(alphabet=HEX, min_size=128, max_size=128))
def test_any_128_hex_characters_after_the_prefix_is_an_eck_id(tail: str) -> None:
    eck_id = EckId.parse(ECK_ID_PREFIX + tail)
    assert eck_id.value == ECK_ID_PREFIX + tail
    assert eck_id.pseudonym == tail.lower()
    assert EckId.from_digest(eck_id.digest).pseudonym == tail.lower()


@given(st.text(alphabet=HEX, min_size=128, max_size=128))
def test_the_canonical_form_is_one_per_student_whatever_case_was_sent(tail: str) -> None:
    eck_id = EckId.parse(ECK_ID_PREFIX + tail)
    assert eck_id.canonical == EckId.from_digest(eck_id.digest).value
    assert eck_id.canonical == EckId.parse(ECK_ID_PREFIX + tail.upper()).canonical == ECK_ID_PREFIX + tail.lower()


@given(st.text(alphabet=HEX, max_size=200).filter(lambda t: len(t) != 128))
def test_a_hex_tail_of_any_other_length_is_refused(tail: str) -> None:
    assert not is_eck_id(ECK_ID_PREFIX + tail)
    with pytest.raises(InvalidEckId):
        EckId.parse(ECK_ID_PREFIX + tail)


@pytest.mark.parametrize(
    "value",
    [
        "http://ketenid.nl/201703/" + "a" * 128,  # not https
        "https://ketenid.nl/201704/" + "a" * 128,  # another chain/version
        "https://ketenid.nl/201703" + "a" * 128,  # no slash
        "https://ketenid.nl/201703/" + "g" + "a" * 127,  # not hex
        "https://ketenid.nl/201703/" + "a" * 128 + "\n",  # trailing newline
        " https://ketenid.nl/201703/" + "a" * 128,
        "https://ketenid.nl/201703/" + "a" * 64 + " " + "a" * 63,
        "123456782",  # a BSN in its place
        "jan.jansen@school.nl",
    ],
)
def test_near_misses_are_not_eck_ids(value: str) -> None:
    with pytest.raises(InvalidEckId) as refused:
        EckId.parse(value)
    assert ECK_ID_PREFIX in str(refused.value)  # says what an ECK iD looks like
    assert value not in str(refused.value)  # and never repeats what was sent (it may be a BSN)


@pytest.mark.parametrize("value", [None, 42, ["https://ketenid.nl/201703/" + "a" * 128], {"id": "x"}])
def test_only_strings_can_be_eck_ids(value: object) -> None:
    with pytest.raises(InvalidEckId):
        EckId.parse(value)
