"""The attribute allowlist: whatever the JSON, nothing outside the allowed paths survives, removed members are
counted, and direct identifiers are refused."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.minimisation import (
    Allowlist,
    DirectIdentifier,
    FieldNotAllowed,
    PathError,
    parse_path,
    replace_at,
    scan_identifiers,
    value_paths,
    values_at,
)

PROGRESS_PATHS = (
    "id", "student.id", "school.organisationMasterIdentifier", "school.organisationIds[].organisationIdType",
    "school.organisationIds[].organisationId", "assignableUnitId", "courseId", "status", "pleaseFollowUp",
    "additionalInfo", "detailUrl",
)  # fmt: skip


def test_members_outside_the_allowlist_are_removed_and_counted_nested_and_in_arrays() -> None:
    allowlist = Allowlist(["id", "student.id", "records[].courseId", "records[].score.value"])
    payload = {
        "id": "x",
        "student": {"id": "s", "birthDate": "2014-01-01"},
        "records": [{"courseId": "c", "score": {"value": 7, "scale": "1-10"}, "teacher": "t"}, {"courseId": "d"}],
        "secret": {"deep": [1, 2, 3]},
    }
    result = allowlist.minimise(payload, refuse_extra=False)
    assert result.payload == {
        "id": "x",
        "student": {"id": "s"},
        "records": [{"courseId": "c", "score": {"value": 7}}, {"courseId": "d"}],
    }
    assert result.removed == 4  # birthDate, score.scale, teacher, secret (its contents are not counted apart)
    assert set(result.removed_paths) == {"student.birthDate", "records[].score.scale", "records[].teacher", "secret"}


def test_refuse_mode_names_the_first_member_outside_the_allowlist() -> None:
    with pytest.raises(FieldNotAllowed) as refused:
        Allowlist(PROGRESS_PATHS).minimise({"id": "x", "student": {"id": "s", "grade": 6}}, refuse_extra=True)
    assert refused.value.path == "student.grade"
    assert "student.grade" in str(refused.value)


def test_a_scalar_where_the_allowlist_expects_an_object_or_array_is_removed() -> None:
    allowlist = Allowlist(["school.organisationMasterIdentifier", "items[].id"])
    result = allowlist.minimise({"school": "104A158 Jan Jansen", "items": {"id": 1}}, refuse_extra=False)
    assert result.payload == {}
    assert result.removed == 2


def test_null_in_place_of_an_object_carries_nothing_and_stays() -> None:
    result = Allowlist(["school.organisationMasterIdentifier"]).minimise({"school": None}, refuse_extra=True)
    assert result.payload == {"school": None}
    assert result.removed == 0


def test_a_root_array_is_filtered_item_by_item() -> None:
    result = Allowlist(["[].id"]).minimise([{"id": 1, "x": 2}, "loose", {"id": 3}], refuse_extra=False)
    assert result.payload == [{"id": 1}, {"id": 3}]
    assert result.removed == 2


def test_a_listed_parent_allows_everything_under_it() -> None:
    allowlist = Allowlist(["additionalInfo"])
    payload = {"additionalInfo": {"note": "fine", "tags": ["a", "b"]}}
    assert allowlist.minimise(payload, refuse_extra=True).payload == payload
    assert allowlist.allows("additionalInfo.tags[]")


@pytest.mark.parametrize(
    ("payload", "path", "kind"),
    [
        ({"additionalInfo": "BSN 123456782, call back"}, "additionalInfo", "pgn"),
        ({"additionalInfo": {"contact": "ouder@example.nl"}}, "additionalInfo.contact", "email"),
        ({"additionalInfo": {"firstName": "Jan"}}, "additionalInfo.firstName", "name"),
        ({"student": {"id": "s", "lastName": "Jansen"}}, "student.lastName", "name"),
        ({"additionalInfo": {"123456782": "x"}}, "additionalInfo", "pgn"),
        ({"courseId": 123456782}, "courseId", "pgn"),
    ],
)
def test_direct_identifiers_are_refused_even_in_allowed_free_text_and_even_when_extras_are_removed(
    payload: dict[str, Any], path: str, kind: str
) -> None:
    allowlist = Allowlist([*PROGRESS_PATHS])
    with pytest.raises(DirectIdentifier) as refused:
        allowlist.minimise(payload, refuse_extra=False)
    assert refused.value.kind == kind
    assert refused.value.path.startswith(path)
    for value in ("123456782", "ouder@example.nl", "Jan", "Jansen"):
        assert value not in str(refused.value)


def test_an_e_mail_address_may_travel_in_a_field_allowed_to_hold_one() -> None:
    allowlist = Allowlist(["contact.email", "note"])
    payload = {"contact": {"email": "mentor@school.nl"}, "note": "ok"}
    assert allowlist.minimise(payload, refuse_extra=True, email_paths=["contact.email"]).payload == payload
    with pytest.raises(DirectIdentifier):
        allowlist.minimise({"note": "mentor@school.nl"}, refuse_extra=True, email_paths=["contact.email"])


def test_a_name_member_may_travel_only_where_its_own_path_is_listed() -> None:
    allowlist = Allowlist(["teacher.name"])
    assert allowlist.minimise({"teacher": {"name": "Mevr. de Vries"}}, refuse_extra=True).payload
    with pytest.raises(DirectIdentifier):
        Allowlist(["teacher"]).minimise({"teacher": {"name": "Mevr. de Vries"}}, refuse_extra=True)


def test_scanning_without_an_allowlist_still_refuses_direct_identifiers() -> None:
    scan_identifiers({"anything": ["goes", {"deep": 1}]})
    with pytest.raises(DirectIdentifier):
        scan_identifiers({"anything": ["goes", {"deep": "1234.56.782"}]})


@pytest.mark.parametrize("path", ["", "a..b", "a.[]", "a[", "a.b c", " a", "a[].[]"])
def test_malformed_paths_are_refused(path: str) -> None:
    with pytest.raises(PathError):
        parse_path(path)


def test_paths_that_disagree_about_a_members_shape_are_refused() -> None:
    with pytest.raises(PathError):
        Allowlist(["items[].id", "items.count"])


def test_values_at_and_replace_at_follow_arrays() -> None:
    payload = {"records": [{"student": {"id": "a"}}, {"student": {"id": "b"}}, {"other": 1}]}
    assert values_at(payload, "records[].student.id") == ["a", "b"]
    changed = replace_at(payload, "records[].student.id", str.upper)
    assert values_at(changed, "records[].student.id") == ["A", "B"]
    assert values_at(payload, "records[].student.id") == ["a", "b"]  # the original is untouched


# -- property: whatever the JSON shape, nothing outside the allowlist survives --------------------------------------

KEYS = st.sampled_from(["id", "student", "school", "records", "items", "score", "value", "x", "courseId", "status"])
SAFE_TEXT = st.text(alphabet="abcdefgh -_", max_size=8)  # no digits or @: identifiers are tested above
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-1000, max_value=1000) | SAFE_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=25,
)
PATHS = st.lists(
    st.lists(st.tuples(KEYS, st.integers(min_value=0, max_value=1)), min_size=1, max_size=3).map(
        lambda steps: ".".join(name + "[]" * arrays for name, arrays in steps)
    ),
    min_size=1,
    max_size=5,
)


def consistent(paths: list[str]) -> Allowlist | None:
    try:
        return Allowlist(paths)
    except PathError:
        return None


@settings(max_examples=400)
@given(JSON, PATHS)
def test_no_member_outside_the_allowlist_ever_survives(payload: Any, paths: list[str]) -> None:
    allowlist = consistent(paths)
    if allowlist is None:
        return
    result = allowlist.minimise(payload, refuse_extra=False)
    containers, scalars = value_paths(result.payload)
    for path in scalars:
        assert path != "(root)" and allowlist.allows(path), path
    for path in containers:
        assert allowlist.allows(path) or allowlist.on_the_way(path), path


@settings(max_examples=300)
@given(JSON, PATHS)
def test_refuse_mode_passes_exactly_the_payloads_that_remove_mode_leaves_unchanged(
    payload: Any, paths: list[str]
) -> None:
    allowlist = consistent(paths)
    if allowlist is None:
        return
    removed = allowlist.minimise(payload, refuse_extra=False)
    try:
        kept = allowlist.minimise(payload, refuse_extra=True)
    except FieldNotAllowed:
        assert removed.removed > 0
    else:
        assert removed.removed == 0
        assert kept.payload == payload == removed.payload


@settings(max_examples=200)
@given(JSON, PATHS)
def test_filtering_twice_removes_nothing_more(payload: Any, paths: list[str]) -> None:
    allowlist = consistent(paths)
    if allowlist is None:
        return
    once = allowlist.minimise(payload, refuse_extra=False)
    twice = allowlist.minimise(once.payload, refuse_extra=False)
    assert twice.payload == once.payload
    assert twice.removed == 0
