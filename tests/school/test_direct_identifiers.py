"""Direct identifiers that must not travel: BSN/PGN (eleven-test), e-mail addresses, name members."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.minimisation import DirectIdentifier, scan_identifiers
from trust.direct_identifiers import (
    contains_email,
    contains_pgn,
    identifier_in,
    is_bsn,
    is_name_key,
    is_onderwijsnummer,
    might_hold_identifier,
)
from trust.eckid import ECK_ID_PREFIX


def eleven_test_total(digits: str, last_weight: int) -> int:
    return sum(int(d) * w for d, w in zip(digits, [9, 8, 7, 6, 5, 4, 3, 2, last_weight], strict=True))


@pytest.mark.parametrize("bsn", ["111222333", "123456782", "999999990", "100000009"])
def test_numbers_that_pass_the_bsn_eleven_test_are_bsns(bsn: str) -> None:
    assert is_bsn(bsn)
    assert contains_pgn(f"student {bsn} did well")


@pytest.mark.parametrize("number", ["123456789", "111222334", "000000000", "12345678", "1234567820", "12345678a"])
def test_numbers_that_fail_the_eleven_test_or_are_not_nine_digits_are_not_bsns(number: str) -> None:
    assert not is_bsn(number)


def test_an_onderwijsnummer_starts_with_10_and_leaves_remainder_5() -> None:
    number = next(f"10{n:07d}" for n in range(10**7) if eleven_test_total(f"10{n:07d}", 1) % 11 == 5)
    assert is_onderwijsnummer(number)
    assert contains_pgn(number)
    assert not is_onderwijsnummer("20" + number[2:])


@given(st.integers(min_value=0, max_value=999_999_999))
def test_the_bsn_test_is_the_weighted_sum_divisible_by_eleven(n: int) -> None:
    digits = f"{n:09d}"
    assert is_bsn(digits) == (n != 0 and eleven_test_total(digits, -1) % 11 == 0)


@pytest.mark.parametrize("text", ["1234.56.782", "123 456 782", "BSN:123456782.", "(123456782)"])
def test_a_bsn_is_found_in_the_usual_groupings_and_punctuation(text: str) -> None:
    assert contains_pgn(text)


@pytest.mark.parametrize(
    "text",
    [
        "https://ketenid.nl/201703/" + "ab" * 10 + "123456782" + "cd" * 59 + "e",  # hex of an ECK iD
        "0b6f3a52-8f0e-4a4c-9d43-a123456782bc",  # inside a uuid
        "x123456782",
        "1234567821",  # ten digits
        "score 12345678",
    ],
)
def test_nine_digits_inside_longer_tokens_are_not_taken_for_a_bsn(text: str) -> None:
    assert not contains_pgn(text)


def test_an_integer_value_is_read_as_its_digits() -> None:
    assert identifier_in(123456782) == "pgn"
    assert identifier_in(123456789) is None
    assert identifier_in(True) is None


def test_e_mail_addresses_are_found_unless_the_field_may_hold_one() -> None:
    assert contains_email("mail j.jansen+test@school.example.nl please")
    assert identifier_in("j.jansen@school.nl") == "email"
    assert identifier_in("j.jansen@school.nl", email_allowed=True) is None
    assert not contains_email("see https://publisher.test/a@b")  # no domain with a top level


@pytest.mark.parametrize(
    "key",
    [
        "firstName",
        "last_name",
        "familyName",
        "givenName",
        "achternaam",
        "Voornaam",
        "name",
        "middleName",
        "tussenvoegsel",
    ],
)
def test_name_members_are_recognised_whatever_their_spelling(key: str) -> None:
    assert is_name_key(key)


@pytest.mark.parametrize("key", ["courseId", "nameSpace", "status", "schoolName2"])
def test_other_members_are_not_name_members(key: str) -> None:
    assert not is_name_key(key)


@given(
    text=st.text(max_size=30)
    | st.from_regex(r"[a-z @.]{0,5}\d{3}[ .]?\d{3}[ .]?\d{3}[a-z @.]{0,5}", fullmatch=True)
    | st.emails(),
    email_allowed=st.booleans(),
)
def test_the_walks_quick_pass_over_texts_finds_what_identifier_in_finds(text: str, email_allowed: bool) -> None:
    """The minimisation walk skips identifier_in for texts without nine digits and without an "@"."""
    expected = identifier_in(text, email_allowed=email_allowed)
    try:
        scan_identifiers({"value": text}, email_paths=("value",) if email_allowed else ())
    except DirectIdentifier as found:
        assert found.kind == expected
    else:
        assert expected is None


@given(st.text(alphabet="0123456789abcdefABCDEF", min_size=128, max_size=128))
def test_a_well_formed_eck_id_holds_no_identifier_which_the_full_scan_confirms(tail: str) -> None:
    """The quick pass lets an ECK iD through on its form; the scan it skips would have found nothing either, however
    many digits the hex has."""
    eck_id = ECK_ID_PREFIX + tail
    assert not might_hold_identifier(eck_id)
    assert not contains_pgn(eck_id) and not contains_email(eck_id)
    assert identifier_in(eck_id) is None


@pytest.mark.parametrize(
    "text",
    [
        ECK_ID_PREFIX + "123456782",  # the prefix, then a BSN instead of the hex
        ECK_ID_PREFIX + "ab" * 64 + " 123456782",  # a BSN after a well-formed one
        ECK_ID_PREFIX + "ab" * 63 + "a@b.nl",
    ],
)
def test_a_text_that_only_starts_like_an_eck_id_is_scanned_as_any_other(text: str) -> None:
    assert might_hold_identifier(text)
    assert identifier_in(text) is not None
