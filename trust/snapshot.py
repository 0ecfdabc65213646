"""Signed register snapshots: a JWS (compact) over the register document, signed by the operator.

Nodes pin the operator's public key; nothing in the snapshot chooses the key or the algorithm.
"""

from __future__ import annotations

import json
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pydantic import ValidationError

from trust.jwks import pinned_header, signing_algorithm
from trust.register import Register, RegisterDocument

SNAPSHOT_TYP = "eduv-register+jws"
ALGORITHMS = ("ES256", "EdDSA")

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class SnapshotRejected(ValueError):
    """The snapshot is not signed by the pinned operator key, or its content is not a valid register."""


def sign_snapshot(document: RegisterDocument | dict[str, Any], key: PrivateKey, kid: str = "operator") -> str:
    """Serialise and sign a register document. Validates it first so an operator cannot sign garbage."""
    if not isinstance(document, RegisterDocument):
        document = RegisterDocument.model_validate(document)
    payload = document.model_dump_json(exclude_none=True).encode()
    return jwt.api_jws.encode(payload, key, algorithm=signing_algorithm(key), headers={"typ": SNAPSHOT_TYP, "kid": kid})


def verify_snapshot(token: str | bytes, key: PublicKey) -> Register:
    """Verify a snapshot against the pinned operator key and build the register. Raises SnapshotRejected."""
    try:
        pinned_header(token, SNAPSHOT_TYP)
    except ValueError as exc:
        raise SnapshotRejected(str(exc)) from exc
    try:
        payload = jwt.api_jws.decode(token, key, algorithms=[signing_algorithm(key)])
    except jwt.PyJWTError as exc:
        raise SnapshotRejected(f"signature does not verify with the pinned operator key: {exc}") from exc
    try:
        document = RegisterDocument.model_validate(json.loads(payload))
    except (ValueError, ValidationError) as exc:
        raise SnapshotRejected(f"register document invalid: {exc}") from exc
    try:
        return Register(document)
    except ValueError as exc:  # e.g. a trusted CA that is not a certificate
        raise SnapshotRejected(f"register document invalid: {exc}") from exc


def load_public_key(pem: bytes) -> PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise ValueError("the operator key must be an EC P-256 or Ed25519 public key")
    signing_algorithm(key)
    return key


def load_private_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError("the operator key must be an EC P-256 or Ed25519 private key")
    signing_algorithm(key)
    return key
