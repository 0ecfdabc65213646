"""What an operator registers for a participant: certificates, trusted CAs and client keys, checked on entry.

Nothing reaches the register that a node could not use: a certificate must parse and carry the participant's
OIN, a CA must be a CA, a JWKS must hold public keys only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from trust.certificates import thumbprint as der_thumbprint


class CredentialRefused(ValueError):
    """A certificate, CA or key set that cannot go into the register; the message says why."""


@dataclass(frozen=True)
class CertificateFacts:
    thumbprint: str  # base64url SHA-256 of the DER, as `cnf.x5t#S256` carries it
    subject: str
    not_after: datetime
    pem: str


def thumbprint(certificate: x509.Certificate) -> str:
    return der_thumbprint(certificate.public_bytes(serialization.Encoding.DER))


def _load(pem: str | bytes) -> x509.Certificate:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CredentialRefused(f"not a PEM certificate: {exc}") from exc
    if len(certs) != 1:
        raise CredentialRefused(f"expected exactly one certificate, got {len(certs)}")
    return certs[0]


def _facts(certificate: x509.Certificate) -> CertificateFacts:
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    return CertificateFacts(thumbprint(certificate), certificate.subject.rfc4514_string(),
                            certificate.not_valid_after_utc, pem)


def participant_certificate(pem: str | bytes, oin: str) -> CertificateFacts:
    """A participant's (PKIoverheid) certificate; its subject serialNumber must be the participant's OIN."""
    certificate = _load(pem)
    serials = certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    found = [str(attribute.value) for attribute in serials]
    if oin not in found:
        raise CredentialRefused(
            f"certificate subject serialNumber {found or 'missing'} does not carry the participant's OIN {oin}"
        )
    return _facts(certificate)


def ca_certificate(pem: str | bytes) -> CertificateFacts:
    certificate = _load(pem)
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CredentialRefused(f"{certificate.subject.rfc4514_string()} is not a CA certificate (basicConstraints)")
    return _facts(certificate)


_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")


def public_jwks(jwks: Any) -> dict[str, Any]:
    """A JWKS with at least one usable public key and no private key material."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise CredentialRefused('a JWKS is an object with a non-empty "keys" list')
    for index, key in enumerate(jwks["keys"]):
        if not isinstance(key, dict):
            raise CredentialRefused(f"keys[{index}] is not an object")
        leaked = [member for member in _PRIVATE_MEMBERS if member in key]
        if leaked:
            raise CredentialRefused(
                f"keys[{index}] holds private key material ({', '.join(leaked)}); register public keys only"
            )
        try:
            jwt.PyJWK.from_dict(key)
        except jwt.PyJWTError as exc:
            raise CredentialRefused(f"keys[{index}] is not a usable key: {exc}") from exc
    return jwks


def https_uri(uri: str) -> str:
    if not uri.startswith("https://") or len(uri) < 12:
        raise CredentialRefused(f"a jwks_uri must be an https:// URL, got {uri!r}")
    return uri
