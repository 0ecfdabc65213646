"""RFC 9162 Merkle proofs: generated proofs equal a naive reading of the RFC, verify, and fail when touched.

The reference functions below (`mth`, `path`, `proof`) transcribe RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1
literally, over the data entries, with no sharing of code with `trust.transparency`.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trust import transparency as t
from trust.transparency import ProofError, verify_consistency, verify_inclusion


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(entries: list[bytes]) -> bytes:
    n = len(entries)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return sha256(b"\x00" + entries[0])
    k = largest_power_of_two_below(n)
    return sha256(b"\x01" + mth(entries[:k]) + mth(entries[k:]))


def path(m: int, entries: list[bytes]) -> list[bytes]:
    n = len(entries)
    if n == 1:
        return []
    k = largest_power_of_two_below(n)
    if m < k:
        return [*path(m, entries[:k]), mth(entries[k:])]
    return [*path(m - k, entries[k:]), mth(entries[:k])]


def subproof(m: int, entries: list[bytes], whole: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if whole else [mth(entries)]
    k = largest_power_of_two_below(n)
    if m <= k:
        return [*subproof(m, entries[:k], whole), mth(entries[k:])]
    return [*subproof(m - k, entries[k:], False), mth(entries[:k])]


def proof(m: int, entries: list[bytes]) -> list[bytes]:
    return subproof(m, entries, True)


ENTRIES = [f"entry {i}".encode() for i in range(64)]
LEAVES = [sha256(b"\x00" + e) for e in ENTRIES]

# The eight entries of the certificate-transparency reference tests and their published roots.
CT_ENTRIES = [
    bytes.fromhex(h)
    for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_hashes_use_the_rfc_domain_separation_prefixes() -> None:
    assert t.leaf_hash(b"x") == sha256(b"\x00x")
    assert t.node_hash(b"a" * 32, b"b" * 32) == sha256(b"\x01" + b"a" * 32 + b"b" * 32)
    assert t.root_hash([]) == sha256(b"")


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_the_certificate_transparency_reference_vectors(size: int) -> None:
    leaves = [t.leaf_hash(e) for e in CT_ENTRIES[:size]]
    assert t.root_hash(leaves).hex() == CT_ROOTS[size - 1]
    assert mth(CT_ENTRIES[:size]).hex() == CT_ROOTS[size - 1]


@pytest.mark.parametrize("size", range(1, 65))
def test_root_and_every_inclusion_proof_equal_the_rfc_definition(size: int) -> None:
    entries = ENTRIES[:size]
    root = mth(entries)
    assert t.root_hash(LEAVES[:size]) == root
    for index in range(size):
        generated = t.inclusion_proof(LEAVES, index, size)
        assert generated == path(index, entries)
        verify_inclusion(LEAVES[index], index, size, generated, root)


@pytest.mark.parametrize("size2", range(1, 65))
def test_every_consistency_proof_equals_the_rfc_definition(size2: int) -> None:
    root2 = mth(ENTRIES[:size2])
    for size1 in range(1, size2 + 1):
        generated = t.consistency_proof(LEAVES, size1, size2)
        assert generated == proof(size1, ENTRIES[:size2])
        verify_consistency(size1, size2, generated, mth(ENTRIES[:size1]), root2)


def test_subtree_sources_give_the_same_proofs_as_leaf_lists() -> None:
    needed = t.proof_subtrees(t.inclusion_ranges(37, 61)) | t.proof_subtrees(t.consistency_ranges(13, 61))
    fetched = t.FetchedSubtrees({s: t.LeafHashes(LEAVES).subtree(*s) for s in needed})
    assert t.inclusion_proof(fetched, 37, 61) == t.inclusion_proof(LEAVES, 37, 61)
    assert t.consistency_proof(fetched, 13, 61) == t.consistency_proof(LEAVES, 13, 61)


def test_a_store_missing_a_subtree_cannot_produce_a_proof() -> None:
    with pytest.raises(ValueError, match="missing"):
        t.inclusion_proof(t.FetchedSubtrees({}), 3, 10)


# --- edge cases of verification ---------------------------------------------------------------------


ROOT8 = mth(ENTRIES[:8])


def test_inclusion_fails_for_an_index_at_or_beyond_the_tree_size() -> None:
    good = t.inclusion_proof(LEAVES, 7, 8)
    with pytest.raises(ProofError, match="not below tree size"):
        verify_inclusion(LEAVES[7], 8, 8, good, ROOT8)
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[0], 0, 0, [], t.root_hash([]))


def test_inclusion_in_a_single_leaf_tree_needs_an_empty_proof() -> None:
    verify_inclusion(LEAVES[0], 0, 1, [], LEAVES[0])
    with pytest.raises(ProofError, match="too long"):
        verify_inclusion(LEAVES[0], 0, 1, [LEAVES[1]], LEAVES[0])


def test_inclusion_fails_when_the_proof_is_too_short_or_too_long() -> None:
    good = t.inclusion_proof(LEAVES, 5, 8)
    with pytest.raises(ProofError, match="too short"):
        verify_inclusion(LEAVES[5], 5, 8, good[:-1], ROOT8)
    with pytest.raises(ProofError, match="too long"):
        verify_inclusion(LEAVES[5], 5, 8, [*good, LEAVES[0]], ROOT8)


def test_inclusion_fails_for_the_wrong_leaf_index_or_root() -> None:
    good = t.inclusion_proof(LEAVES, 5, 8)
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[5], 4, 8, good, ROOT8)
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[4], 5, 8, good, ROOT8)
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[5], 5, 8, good, mth(ENTRIES[:9]))


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_hashes_that_are_not_32_bytes_are_refused(bad: bytes) -> None:
    good = t.inclusion_proof(LEAVES, 5, 8)
    with pytest.raises(ProofError, match="32 bytes"):
        verify_inclusion(bad, 5, 8, good, ROOT8)
    with pytest.raises(ProofError, match="32 bytes"):
        verify_inclusion(LEAVES[5], 5, 8, good, bad)
    with pytest.raises(ProofError, match="32 bytes"):
        verify_inclusion(LEAVES[5], 5, 8, [*good[:-1], bad], ROOT8)
    cons = t.consistency_proof(LEAVES, 3, 8)
    with pytest.raises(ProofError, match="32 bytes"):
        verify_consistency(3, 8, [bad, *cons[1:]], mth(ENTRIES[:3]), ROOT8)
    with pytest.raises(ProofError, match="32 bytes"):
        verify_consistency(3, 8, cons, bad, ROOT8)


def test_consistency_between_equal_sizes_needs_an_empty_proof_and_equal_roots() -> None:
    verify_consistency(8, 8, [], ROOT8, ROOT8)
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(8, 8, [ROOT8], ROOT8, ROOT8)
    with pytest.raises(ProofError, match="different root"):
        verify_consistency(8, 8, [], ROOT8, mth(ENTRIES[:7]))


def test_the_empty_tree_is_consistent_with_any_tree_only_with_an_empty_proof() -> None:
    verify_consistency(0, 8, [], t.root_hash([]), ROOT8)
    with pytest.raises(ProofError, match="empty tree must be empty"):
        verify_consistency(0, 8, [ROOT8], t.root_hash([]), ROOT8)


def test_consistency_fails_for_shrinking_or_negative_sizes_and_an_empty_proof() -> None:
    with pytest.raises(ProofError, match="larger"):
        verify_consistency(8, 7, [], ROOT8, mth(ENTRIES[:7]))
    with pytest.raises(ProofError, match="negative"):
        verify_consistency(-1, 7, [], ROOT8, mth(ENTRIES[:7]))
    with pytest.raises(ProofError, match="empty"):
        verify_consistency(3, 8, [], mth(ENTRIES[:3]), ROOT8)


def test_consistency_fails_when_the_proof_is_too_short_or_too_long() -> None:
    good = t.consistency_proof(LEAVES, 3, 8)
    root3 = mth(ENTRIES[:3])
    with pytest.raises(ProofError):
        verify_consistency(3, 8, good[:-1], root3, ROOT8)
    with pytest.raises(ProofError, match="too long"):
        verify_consistency(3, 8, [*good, LEAVES[0]], root3, ROOT8)


def test_consistency_fails_when_either_root_is_wrong() -> None:
    good = t.consistency_proof(LEAVES, 3, 8)
    with pytest.raises(ProofError, match="first root"):
        verify_consistency(3, 8, good, mth(ENTRIES[:5]), ROOT8)
    with pytest.raises(ProofError, match="second root"):
        verify_consistency(3, 8, good, mth(ENTRIES[:3]), mth(ENTRIES[:9]))
    # a power-of-two first size takes its root as the proof's first element: a wrong one breaks the second
    power = t.consistency_proof(LEAVES, 4, 8)
    with pytest.raises(ProofError, match="second root"):
        verify_consistency(4, 8, power, mth(ENTRIES[:5]), ROOT8)


# --- tampering: every flipped bit of a proof breaks it -----------------------------------------------


def flipped(proof_: list[bytes], element: int, bit: int) -> list[bytes]:
    out = list(proof_)
    b = bytearray(out[element])
    b[bit // 8] ^= 1 << (bit % 8)
    out[element] = bytes(b)
    return out


@pytest.mark.parametrize(("index", "size"), [(0, 2), (5, 8), (12, 13), (33, 64), (0, 21)])
def test_each_flipped_bit_in_an_inclusion_proof_fails(index: int, size: int) -> None:
    good = t.inclusion_proof(LEAVES, index, size)
    root = mth(ENTRIES[:size])
    for element in range(len(good)):
        for bit in range(256):
            with pytest.raises(ProofError):
                verify_inclusion(LEAVES[index], index, size, flipped(good, element, bit), root)


@pytest.mark.parametrize(("size1", "size2"), [(1, 2), (3, 8), (4, 8), (6, 13), (32, 63)])
def test_each_flipped_bit_in_a_consistency_proof_fails(size1: int, size2: int) -> None:
    good = t.consistency_proof(LEAVES, size1, size2)
    root1, root2 = mth(ENTRIES[:size1]), mth(ENTRIES[:size2])
    for element in range(len(good)):
        for bit in range(256):
            with pytest.raises(ProofError):
                verify_consistency(size1, size2, flipped(good, element, bit), root1, root2)


# --- properties --------------------------------------------------------------------------------------

# Distinct entries: with repeated entries a symmetric tree really does contain a leaf at two positions.
entry_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=200, unique=True)


@settings(max_examples=200, deadline=None)
@given(entries=entry_lists, data=st.data())
def test_any_generated_inclusion_proof_verifies_and_proves_only_its_own_leaf(
    entries: list[bytes], data: st.DataObject
) -> None:
    leaves = [t.leaf_hash(e) for e in entries]
    size = data.draw(st.integers(1, len(leaves)))
    index = data.draw(st.integers(0, size - 1))
    root = t.root_hash(leaves[:size])
    p = t.inclusion_proof(leaves, index, size)
    verify_inclusion(leaves[index], index, size, p, root)
    other = data.draw(st.integers(0, size - 1))
    if other != index:
        with pytest.raises(ProofError):
            verify_inclusion(leaves[other], index, size, p, root)
    if other != index:
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], other, size, p, root)


@settings(max_examples=200, deadline=None)
@given(entries=entry_lists, data=st.data())
def test_any_generated_consistency_proof_verifies_and_fails_for_other_sizes(
    entries: list[bytes], data: st.DataObject
) -> None:
    leaves = [t.leaf_hash(e) for e in entries]
    size2 = data.draw(st.integers(1, len(leaves)))
    size1 = data.draw(st.integers(1, size2))
    p = t.consistency_proof(leaves, size1, size2)
    root1, root2 = t.root_hash(leaves[:size1]), t.root_hash(leaves[:size2])
    verify_consistency(size1, size2, p, root1, root2)
    wrong = data.draw(st.integers(1, size2))
    if wrong != size1 and t.root_hash(leaves[:wrong]) != root1:
        with pytest.raises(ProofError):
            verify_consistency(wrong, size2, p, root1, root2)


@settings(max_examples=100, deadline=None)
@given(entries=entry_lists, data=st.data())
def test_a_changed_entry_changes_the_root_and_breaks_consistency(entries: list[bytes], data: st.DataObject) -> None:
    leaves = [t.leaf_hash(e) for e in entries]
    size2 = len(leaves)
    size1 = data.draw(st.integers(1, size2))
    target = data.draw(st.integers(0, size1 - 1))
    forged = list(leaves)
    forged[target] = t.leaf_hash(entries[target] + b"!")
    p = t.consistency_proof(forged, size1, size2)
    if size1 == size2:
        assert t.root_hash(forged) != t.root_hash(leaves)
        return
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, p, t.root_hash(leaves[:size1]), t.root_hash(forged))


def test_only_ranges_of_merkle_form_split_into_subtrees() -> None:
    assert t.complete_subtrees(0, 7) == [(2, 0), (1, 2), (0, 6)]
    assert t.complete_subtrees(8, 11) == [(1, 4), (0, 10)]
    for start, end in [(1, 3), (2, 5), (4, 9), (3, 3)]:
        with pytest.raises(ValueError):
            t.complete_subtrees(start, end)
