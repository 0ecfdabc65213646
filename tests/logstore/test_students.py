"""Keyed student hashes: per school, stable across restarts, the secret kept private on disk; indexed once per
exchange."""

from __future__ import annotations

import hashlib
import hmac
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.logstore.base import Row
from connectors.logstore.students import StudentHasher, StudentIndex, hmac_pads
from tests.logstore.samples import record

ECK = "https://ketenid.nl/201703/" + "0f" * 64


def test_the_hash_is_an_hmac_of_the_eck_id_under_the_schools_key() -> None:
    hasher = StudentHasher(b"s" * 32)
    expected = hmac.new(hasher.key_for("104A158"), ECK.encode(), hashlib.sha256).hexdigest()
    assert hasher.hash("104A158", ECK) == expected
    assert len(expected) == 64


def test_each_school_has_its_own_key_so_hashes_do_not_link_across_schools() -> None:
    hasher = StudentHasher(b"s" * 32)
    assert hasher.key_for("104A158") != hasher.key_for("20XY001")
    assert hasher.hash("104A158", ECK) != hasher.hash("20XY001", ECK)


def test_another_secret_gives_other_hashes() -> None:
    assert StudentHasher(b"s" * 32).hash("104A158", ECK) != StudentHasher(b"t" * 32).hash("104A158", ECK)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        StudentHasher(b"short")


def test_the_secret_is_created_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "student-hash.key"
    first = StudentHasher.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == 32
    again = StudentHasher.load_or_create(path)
    assert again.hash("104A158", ECK) == first.hash("104A158", ECK)


@given(
    secret=st.binary(min_size=32, max_size=200),
    school=st.text(max_size=20),
    eck_id=st.text(max_size=300),
)
def test_the_precomputed_hmac_gives_what_the_hmac_module_gives(secret: bytes, school: str, eck_id: str) -> None:
    hasher = StudentHasher(secret)
    expected = hmac.new(hasher.key_for(school), eck_id.encode(), hashlib.sha256).hexdigest()
    assert hasher.hash(school, eck_id) == expected
    assert hasher.hash(school, eck_id) == expected  # and again, from the kept pads


@given(key=st.binary(max_size=300), message=st.binary(max_size=300))
def test_hmac_pads_follow_rfc_2104_for_keys_of_any_length(key: bytes, message: bytes) -> None:
    inner, outer = (pad.copy() for pad in hmac_pads(key))
    inner.update(message)
    outer.update(inner.digest())
    assert outer.digest() == hmac.digest(key, message, "sha256")


def test_the_student_index_forgets_the_oldest_open_exchange_and_then_indexes_its_outcome_in_full() -> None:
    index = StudentIndex(limit=1)
    student = "d" * 64
    first = record(exchange_id="first", students=(student,))
    second = record(exchange_id="second", students=(student,))
    index.committed([Row(0, b"", b"", first, index.adds(first)), Row(1, b"", b"", second, index.adds(second))])
    assert index.adds(record(exchange_id="second", kind="outcome", students=(student,))) == ()
    assert index.adds(record(exchange_id="first", kind="outcome", students=(student,))) == (student,)


def test_the_student_index_names_a_student_once_per_record_and_remembers_no_denied_exchange() -> None:
    index = StudentIndex()
    student = "e" * 64
    denied = record(exchange_id="denied", decision="denied", students=(student, student))
    assert index.adds(denied) == (student,)
    index.committed([Row(0, b"", b"", denied, index.adds(denied))])
    assert index.adds(record(exchange_id="denied", kind="outcome", students=(student,))) == (student,)
