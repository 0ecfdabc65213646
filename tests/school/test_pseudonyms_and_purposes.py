"""Per-recipient pseudonyms (keyed, reversible at the source) and purposes bound at the token request."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.catalogue import Catalogue, CatalogueError, load_catalogue
from gateway.pseudonyms import Pseudonyms, load_pseudonyms
from gateway.purposes import PurposeRefused, Purposes, PurposesError, allowed_purposes, load_purposes
from tests.school.conftest import DASHBOARD, PUBLISHER, ROOT, node_config
from trust.eckid import EckId

KEYS = Pseudonyms(b"k" * 32)


@given(st.binary(min_size=64, max_size=64))
def test_a_pseudonym_is_a_well_formed_eck_id_that_the_source_turns_back(digest: bytes) -> None:
    eck_id = EckId.from_digest(digest)
    pseudonym = KEYS.pseudonymise(eck_id, DASHBOARD)
    assert EckId.parse(pseudonym.value) == pseudonym
    assert KEYS.reveal(pseudonym, DASHBOARD) == eck_id


@given(st.binary(min_size=64, max_size=64))
def test_two_recipients_get_different_pseudonyms_of_one_student(digest: bytes) -> None:
    eck_id = EckId.from_digest(digest)
    assert KEYS.pseudonymise(eck_id, DASHBOARD) != KEYS.pseudonymise(eck_id, PUBLISHER)
    assert KEYS.pseudonymise(eck_id, DASHBOARD) != eck_id


def test_a_pseudonym_depends_on_the_node_secret() -> None:
    eck_id = EckId.from_digest(bytes(64))
    assert Pseudonyms(b"a" * 32).pseudonymise(eck_id, DASHBOARD) != Pseudonyms(b"b" * 32).pseudonymise(
        eck_id, DASHBOARD
    )


def test_the_same_eck_id_in_upper_or_lower_case_gets_one_pseudonym() -> None:
    tail = secrets.token_hex(64)
    upper = EckId.parse("https://ketenid.nl/201703/" + tail.upper())
    lower = EckId.parse("https://ketenid.nl/201703/" + tail)
    assert KEYS.pseudonymise(upper, DASHBOARD) == KEYS.pseudonymise(lower, DASHBOARD)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Pseudonyms(b"short")


def test_the_node_secret_is_created_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "pseudonym.key"
    first = Pseudonyms.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = Pseudonyms.load_or_create(path)
    eck_id = EckId.from_digest(bytes(range(64)))
    assert first.pseudonymise(eck_id, DASHBOARD) == again.pseudonymise(eck_id, DASHBOARD)


def test_no_secret_is_made_when_no_service_asks_for_pseudonyms(tmp_path: Path) -> None:
    assert load_pseudonyms(node_config(tmp_path)) is None
    assert not (tmp_path / "pseudonym.key").exists()


def test_a_catalogue_service_with_pseudonyms_makes_the_node_load_its_secret(tmp_path: Path) -> None:
    text = (ROOT / "config" / "catalogue.toml").read_text()
    flagged = text.replace('extra_fields = "remove"\n', 'extra_fields = "remove"\npseudonymise = true\n', 1)
    (tmp_path / "catalogue.toml").write_text(flagged)
    assert load_pseudonyms(node_config(tmp_path, catalogue=str(tmp_path / "catalogue.toml"))) is not None
    assert (tmp_path / "pseudonym.key").exists()


# -- purposes --------------------------------------------------------------------------------------------------------


def test_the_purposes_are_the_covenant_codes_a_to_u_in_dutch_and_english(purposes: Purposes) -> None:
    assert sorted(purposes.codes) == [chr(c) for c in range(ord("a"), ord("u") + 1)]
    assert purposes.get("a") is not None and "toetsresultaten" in purposes.get("a").nl  # type: ignore[union-attr]
    assert purposes.describe("j").startswith("'j' (monitoring and accountability")


def test_a_token_request_without_purposes_binds_every_purpose_the_services_allow(
    catalogue: Catalogue, purposes: Purposes
) -> None:
    assert allowed_purposes(catalogue, purposes, ["leermateriaalgebruik"], []) == {"a", "b", "d", "j"}
    assert allowed_purposes(catalogue, purposes, ["leermateriaalgebruik", "resultaten"], []) == {
        "a",
        "b",
        "d",
        "e",
        "j",
    }


def test_a_token_request_binds_exactly_the_purposes_asked_for(catalogue: Catalogue, purposes: Purposes) -> None:
    assert allowed_purposes(catalogue, purposes, ["leermateriaalgebruik"], ["d"]) == {"d"}


@pytest.mark.parametrize(("requested", "named"), [(["t"], "'t' (financial management)"), (["zz"], "'zz'")])
def test_a_token_request_for_a_purpose_the_services_do_not_allow_fails_naming_it(
    catalogue: Catalogue, purposes: Purposes, requested: list[str], named: str
) -> None:
    with pytest.raises(PurposeRefused, match=named.replace("(", r"\(").replace(")", r"\)")):
        allowed_purposes(catalogue, purposes, ["leermateriaalgebruik"], ["a", *requested])


def test_a_purposes_file_with_a_bad_code_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "purposes.toml"
    path.write_text('[purposes.ab]\nnl = "x"\nen = "y"\n')
    with pytest.raises(PurposesError, match=r"purposes\.toml"):
        load_purposes(path)
    path.write_text('[purposes.a]\nnl = "x"\n')
    with pytest.raises(PurposesError, match=r"purposes\.a\.en"):
        load_purposes(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('purposes = ["a", "b", "d", "j"]', 'purposes = ["a", "zz"]'), "art. 5.2"),
        (('"id", "student.id",', '"id", "student..id",'), "student..id"),
        (('"id", "student.id",', '"id", "student.id", "student[].x",'), "student"),
    ],
)
def test_the_catalogue_refuses_bad_purposes_and_paths_on_load(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = (ROOT / "config" / "catalogue.toml").read_text()
    assert change[0] in text
    (tmp_path / "catalogue.toml").write_text(text.replace(*change, 1))
    with pytest.raises(CatalogueError, match=message.replace(".", r"\.").replace("[", r"\[")):
        load_catalogue(tmp_path / "catalogue.toml")
