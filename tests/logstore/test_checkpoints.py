"""Signed checkpoints: they verify with the node's public key only, and say exactly what was signed."""

from __future__ import annotations

import base64
import stat
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from trust.checkpoint import (
    CheckpointRejected,
    load_or_create_signing_key,
    load_public_key,
    public_key_pem,
    sign_checkpoint,
    verify_checkpoint,
)

ROOT = bytes(range(32))
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("key", [ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())])
def test_a_checkpoint_verifies_with_the_signers_public_key(key: ed25519.Ed25519PrivateKey) -> None:
    signed = sign_checkpoint(key, node="00000003273100010000", tree_size=42, root_hash=ROOT, timestamp=NOW)
    checked = verify_checkpoint(signed.jws, load_public_key(public_key_pem(key)))
    assert (checked.node, checked.tree_size, checked.root_hash, checked.timestamp) == (
        "00000003273100010000",
        42,
        ROOT,
        NOW,
    )


def test_another_key_is_refused() -> None:
    signed = sign_checkpoint(ed25519.Ed25519PrivateKey.generate(), node="n", tree_size=1, root_hash=ROOT, timestamp=NOW)
    with pytest.raises(CheckpointRejected, match="signature"):
        verify_checkpoint(signed.jws, ed25519.Ed25519PrivateKey.generate().public_key())


def test_a_changed_payload_is_refused() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    header, payload, signature = sign_checkpoint(key, node="n", tree_size=1, root_hash=ROOT, timestamp=NOW).jws.split(
        "."
    )
    raw = base64.urlsafe_b64decode(payload + "==").replace(b'"tree_size":1', b'"tree_size":2')
    forged = ".".join([header, base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), signature])
    with pytest.raises(CheckpointRejected, match="signature"):
        verify_checkpoint(forged, key.public_key())


def test_a_jws_of_another_type_is_refused() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    other = jwt.api_jws.encode(b"{}", key, algorithm="EdDSA", headers={"typ": "eduv-register+jws"})
    with pytest.raises(CheckpointRejected, match="typ"):
        verify_checkpoint(other, key.public_key())


def test_the_signing_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "log-signing.key"
    key = load_or_create_signing_key(path)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_key_pem(load_or_create_signing_key(path)) == public_key_pem(key)
