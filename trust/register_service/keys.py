"""The operator's signing key: an EC P-256 or Ed25519 private key in a PEM file, created on first use."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from trust.snapshot import PrivateKey, PublicKey, load_private_key


def load_or_create(path: Path) -> PrivateKey:
    """Load the operator key from `path`, or create an EC P-256 key there (mode 0600) if there is none."""
    if path.exists():
        return load_private_key(path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


def public_pem(key: PrivateKey | PublicKey) -> bytes:
    """The public key nodes pin (`[register] operator_key`)."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
