"""RFC 9162 Merkle trees: hashes, proof generation and proof verification.

SHA-256 throughout; a leaf hash is HASH(0x00 || entry), an interior node HASH(0x01 || left || right).
Verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency) step by step.

Proof generation works on *subtree hashes*: every proof element is the hash of a range of leaves
[start, end), and every such range splits into complete, aligned subtrees (2**level leaves starting at
index * 2**level). A store that keeps those subtree hashes answers a proof with O(log n) look-ups;
`proof_subtrees` names them so a store can fetch them in one query and pass them in as a `SubtreeHashes`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof that does not prove what it claims, or arguments no proof can satisfy."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1): RFC 9162's k."""
    return 1 << ((n - 1).bit_length() - 1)


# --- subtree arithmetic ------------------------------------------------------------------------------


Subtree = tuple[int, int]  # (level, index): leaves [index * 2**level, (index + 1) * 2**level)


def complete_subtrees(start: int, end: int) -> list[Subtree]:
    """The complete aligned subtrees that make up [start, end), left to right, largest first.

    Only ranges of Merkle form are accepted: `start` a multiple of the smallest power of two not below
    the range's size, as every range RFC 9162's MTH/PATH/SUBPROOF recursion produces is. For those,
    folding the subtree hashes right to left gives exactly MTH of the range.
    """
    if not 0 <= start < end:
        raise ValueError(f"empty or negative range [{start}, {end})")
    if start % (1 << (end - start - 1).bit_length()):
        raise ValueError(f"[{start}, {end}) is not a range of a Merkle tree")
    out: list[Subtree] = []
    while start < end:
        level = (end - start).bit_length() - 1  # the largest power of two that fits; aligned by the check above
        out.append((level, start >> level))
        start += 1 << level
    return out


def _fold(subtrees: Sequence[bytes]) -> bytes:
    """The hash of a range from its complete subtrees (largest first): right-to-left, as MTH nests them."""
    acc = subtrees[-1]
    for h in reversed(subtrees[:-1]):
        acc = node_hash(h, acc)
    return acc


@runtime_checkable
class SubtreeHashes(Protocol):
    def subtree(self, level: int, index: int) -> bytes:
        """The hash of the complete subtree of 2**level leaves starting at leaf index * 2**level."""


class LeafHashes:
    """SubtreeHashes over an in-memory list of leaf hashes (computes each subtree; for tests and small trees)."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self._leaves = leaves

    def subtree(self, level: int, index: int) -> bytes:
        start = index << level
        end = start + (1 << level)
        if end > len(self._leaves):
            raise ValueError(f"subtree ({level}, {index}) lies beyond {len(self._leaves)} leaves")
        return _mth(self._leaves, start, end)


class FetchedSubtrees:
    """SubtreeHashes from a mapping a store filled with exactly the subtrees a proof needs."""

    def __init__(self, hashes: Mapping[Subtree, bytes]) -> None:
        self._hashes = hashes

    def subtree(self, level: int, index: int) -> bytes:
        try:
            return self._hashes[(level, index)]
        except KeyError:
            raise ValueError(f"subtree ({level}, {index}) is missing from the store") from None


def _mth(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    n = end - start
    if n == 1:
        return leaves[start]
    k = _split(n)
    return node_hash(_mth(leaves, start, start + k), _mth(leaves, start + k, end))


def _source(leaves_or_store: Sequence[bytes] | SubtreeHashes) -> SubtreeHashes:
    if isinstance(leaves_or_store, SubtreeHashes):
        return leaves_or_store
    return LeafHashes(leaves_or_store)


def range_hash(source: Sequence[bytes] | SubtreeHashes, start: int, end: int) -> bytes:
    """MTH of leaves [start, end) from subtree hashes."""
    src = _source(source)
    return _fold([src.subtree(level, index) for level, index in complete_subtrees(start, end)])


def root_hash(leaves_or_store: Sequence[bytes] | SubtreeHashes, size: int | None = None) -> bytes:
    """MTH of the first `size` leaves (all of them for a list). Takes leaf *hashes*, not entries."""
    if size is None:
        if isinstance(leaves_or_store, SubtreeHashes):
            raise ValueError("a size is needed for a store")
        size = len(leaves_or_store)
    if size == 0:
        return EMPTY_ROOT
    return range_hash(leaves_or_store, 0, size)


# --- proof generation (RFC 9162 §2.1.3.1 PATH and §2.1.4.1 PROOF/SUBPROOF, on ranges) -----------------


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTH form the inclusion proof of leaf `index` in a tree of `size`, in order."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    out: list[tuple[int, int]] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m = start + k, m - k
    out.reverse()  # PATH lists the sibling of the leaf first
    return out


def consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTH form the consistency proof between tree sizes size1 <= size2, in order."""
    if not 0 <= size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == 0 or size1 == size2:
        return []
    out: list[tuple[int, int]] = []
    start, end, m, whole = 0, size2, size1, True
    while True:
        n = end - start
        if m == n:
            if not whole:
                out.append((start, end))
            break
        k = _split(n)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m, whole = start + k, m - k, False
    out.reverse()
    return out


def proof_subtrees(ranges: Iterable[tuple[int, int]]) -> set[Subtree]:
    """Every complete subtree a store must supply to hash these ranges."""
    return {subtree for start, end in ranges for subtree in complete_subtrees(start, end)}


def inclusion_proof(leaves_or_store: Sequence[bytes] | SubtreeHashes, index: int, size: int) -> list[bytes]:
    return [range_hash(leaves_or_store, s, e) for s, e in inclusion_ranges(index, size)]


def consistency_proof(leaves_or_store: Sequence[bytes] | SubtreeHashes, size1: int, size2: int) -> list[bytes]:
    return [range_hash(leaves_or_store, s, e) for s, e in consistency_ranges(size1, size2)]


# --- verification ------------------------------------------------------------------------------------


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise ProofError(f"{name} must be {HASH_SIZE} bytes")


def _check_proof(proof: list[bytes]) -> None:
    for i, p in enumerate(proof):
        _check_hash(f"proof element {i}", p)


def verify_inclusion(leaf_hash: bytes, index: int, tree_size: int, proof: list[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2. Raises ProofError unless `proof` shows leaf `index` of a `tree_size` tree is `leaf_hash`."""
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root hash", root)
    _check_proof(proof)
    if index < 0 or tree_size < 0:
        raise ProofError("index and tree size must not be negative")
    if index >= tree_size:  # step 1
        raise ProofError(f"leaf index {index} is not below tree size {tree_size}")
    fn, sn = index, tree_size - 1  # step 2
    r = bytes(leaf_hash)  # step 3
    for p in proof:  # step 4
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # step 5
        raise ProofError("inclusion proof is too short")
    if r != root:
        raise ProofError("inclusion proof does not lead to the root hash")


def verify_consistency(size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes) -> None:
    """RFC 9162 §2.1.4.2. Raises ProofError unless the `size1` tree (`root1`) is a prefix of the `size2` tree.

    The RFC's algorithm covers 0 < size1 < size2. The edge cases follow from §2.1.4.1: equal sizes need an
    empty proof and equal roots; the empty tree (size1 == 0) is a prefix of every tree, with an empty proof.
    """
    _check_hash("first root hash", root1)
    _check_hash("second root hash", root2)
    _check_proof(proof)
    if size1 < 0 or size2 < 0:
        raise ProofError("tree sizes must not be negative")
    if size1 > size2:
        raise ProofError(f"first tree size {size1} is larger than second tree size {size2}")
    if size1 == size2:
        if proof:
            raise ProofError("consistency proof between equal tree sizes must be empty")
        if root1 != root2:
            raise ProofError("equal tree sizes with different root hashes")
        return
    if size1 == 0:
        if proof:
            raise ProofError("consistency proof from the empty tree must be empty")
        return
    if not proof:  # step 1
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # step 2: first is an exact power of 2
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1  # step 3
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # step 7
        raise ProofError("consistency proof is too short")
    if fr != root1:
        raise ProofError("consistency proof does not lead to the first root hash")
    if sr != root2:
        raise ProofError("consistency proof does not lead to the second root hash")
