"""Signing keys kept on disk: loaded if present, created (0600) if not, with a stable key id."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def load_or_create_key(path: Path) -> SigningKey:
    """An EC P-256 key at `path`, created with mode 0600 if the file does not exist."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise ValueError(f"{path}: expected an EC P-256 or Ed25519 private key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    new = ec.generate_private_key(ec.SECP256R1())
    pem = new.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return new


def key_id(key: SigningKey) -> str:
    """base64url SHA-256 of the public key's DER: stable across restarts, changes with the key."""
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
