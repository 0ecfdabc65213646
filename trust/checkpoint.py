"""Signed checkpoints of an exchange log: (node, tree size, root hash, time), signed with the node's log key.

A checkpoint is a compact JWS (RFC 7515) with header `{"alg": "EdDSA"|"ES256", "typ": "edugate-checkpoint+jws",
"kid": <base64url SHA-256 of the public key's SubjectPublicKeyInfo DER>}` and a JSON payload
`{"node": <OIN>, "tree_size": <int>, "root_hash": <base64 of 32 bytes>, "timestamp": <RFC 3339 UTC>}`.
Verifiers pin the node's public key; nothing in the checkpoint chooses the key or the algorithm.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from trust.jwks import pinned_header, signing_algorithm
from trust.keys import key_id, load_or_create_key, public_pem

CHECKPOINT_TYP = "edugate-checkpoint+jws"

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class CheckpointRejected(ValueError):
    """A checkpoint not signed by the pinned key, or not a well-formed checkpoint."""


@dataclass(frozen=True)
class SignedCheckpoint:
    node: str
    tree_size: int
    root_hash: bytes
    timestamp: datetime
    jws: str  # the signed form; the fields above are what it says


def _utc_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def sign_checkpoint(
    key: PrivateKey, *, node: str, tree_size: int, root_hash: bytes, timestamp: datetime
) -> SignedCheckpoint:
    if len(root_hash) != 32 or tree_size < 0:
        raise ValueError("a checkpoint needs a 32-byte root hash and a tree size >= 0")
    moment = _utc_text(timestamp)
    payload = {
        "node": node,
        "tree_size": tree_size,
        "root_hash": base64.b64encode(root_hash).decode(),
        "timestamp": moment,
    }
    token = jwt.api_jws.encode(
        json.dumps(payload, sort_keys=True, separators=(",", ":")).encode(),
        key,
        algorithm=signing_algorithm(key),
        headers={"typ": CHECKPOINT_TYP, "kid": key_id(key)},
    )
    return SignedCheckpoint(node, tree_size, root_hash, datetime.fromisoformat(moment), token)


def verify_checkpoint(token: str, key: PublicKey) -> SignedCheckpoint:
    """Check the signature with the pinned key and return what the checkpoint says. Raises CheckpointRejected."""
    try:
        pinned_header(token, CHECKPOINT_TYP)
    except ValueError as exc:
        raise CheckpointRejected(str(exc)) from exc
    try:
        raw = jwt.api_jws.decode(token, key, algorithms=[signing_algorithm(key)])
    except jwt.PyJWTError as exc:
        raise CheckpointRejected(f"signature does not verify with the given public key: {exc}") from exc
    try:
        payload = json.loads(raw)
        root = base64.b64decode(payload["root_hash"], validate=True)
        size = payload["tree_size"]
        node = payload["node"]
        moment = datetime.fromisoformat(payload["timestamp"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointRejected(f"checkpoint payload invalid: {exc}") from exc
    if len(root) != 32 or not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(node, str):
        raise CheckpointRejected("checkpoint payload invalid: root_hash, tree_size or node malformed")
    if moment.tzinfo is None:
        raise CheckpointRejected("checkpoint payload invalid: timestamp without time zone")
    return SignedCheckpoint(node, size, root, moment, token)


def load_or_create_signing_key(path: Path) -> PrivateKey:
    """The log's signing key at `path` (PEM, Ed25519 or EC P-256), or a new Ed25519 key written there (0600)."""
    return load_or_create_key(path, create=ed25519.Ed25519PrivateKey.generate)


public_key_pem = public_pem  # what `edugate log verify --public-key` takes


def load_public_key(pem: bytes) -> PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise ValueError("the log public key must be an Ed25519 or EC P-256 public key")
    signing_algorithm(key)
    return key
