"""Keys kept on disk (the node's token key, the log's checkpoint key, the operator's register key, and the raw
secrets of student hashes and pseudonyms): loaded if present, created with mode 0600 if not; for signing keys a
stable key id and the public PEM that others pin."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from trust.jwks import signing_algorithm

SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
VerifyingKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def new_p256() -> SigningKey:
    return ec.generate_private_key(ec.SECP256R1())


def load_or_create_file(path: Path, make: Callable[[], bytes]) -> bytes:
    """The bytes at `path`, or `make()` written there with mode 0600 and fsynced. Two processes starting at once end
    up with the same bytes: the file is created exclusively, and the loser reads the winner's."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    data = make()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    return data


def load_or_create_key(path: Path, *, create: Callable[[], SigningKey] = new_p256) -> SigningKey:
    """The key at `path`, or a new one from `create` written there (see `load_or_create_file`)."""

    def pem() -> bytes:
        return create().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    key = serialization.load_pem_private_key(load_or_create_file(path, pem), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"{path}: expected an EC P-256 or Ed25519 private key")
    try:
        signing_algorithm(key)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return key


def _public(key: SigningKey | VerifyingKey) -> VerifyingKey:
    return key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) else key


def key_id(key: SigningKey | VerifyingKey) -> str:
    """base64url SHA-256 of the public key's DER: stable across restarts, changes with the key."""
    der = _public(key).public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def public_pem(key: SigningKey | VerifyingKey) -> bytes:
    """The public key in PEM, as others pin it."""
    return _public(key).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
