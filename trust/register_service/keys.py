"""The operator's signing key: an EC P-256 (default) or Ed25519 private key in a PEM file, created on first use,
and the public PEM that nodes pin (`[register] operator_key`). The mechanics are trust.keys'."""

from __future__ import annotations

from trust.keys import load_or_create_key as load_or_create
from trust.keys import public_pem

__all__ = ["load_or_create", "public_pem"]
