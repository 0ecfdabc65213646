"""Client certificates: who is calling, checked against the CAs the live register trusts.

The TLS layer only proves possession of the key; this module decides whether the certificate is one the
trust framework accepts (a trusted CA, in its validity window, for client authentication and signing) and
reads the caller's OIN from it. Chain building and the signature checks are cryptography's X.509 verifier;
the checks done here first exist only to give each refusal a precise reason.
"""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from trust.oin import InvalidOin, parse_oin
from trust.register import Register

_NAMES = {NameOID.SERIAL_NUMBER: "serialNumber"}  # RFC 4514 has no short name for it; spell it out


class CertificateRejected(ValueError):
    """The client certificate is not acceptable; the message says precisely why."""


@dataclass(frozen=True)
class PeerIdentity:
    """A verified client certificate, as the rest of the node sees it."""

    oin: str  # from the subject serialNumber attribute
    thumbprint: str  # x5t#S256: base64url (no padding) of SHA-256 over the DER
    subject: str  # RFC 4514
    not_before: datetime
    not_after: datetime


def thumbprint(der: bytes) -> str:
    """The RFC 8705 `x5t#S256` of a DER certificate: base64url, without padding, of its SHA-256."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def subject_of(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string(_NAMES)


def oin_of(certificate: x509.Certificate) -> str:
    """The OIN in the subject's serialNumber attribute (PKIoverheid puts it there). Raises CertificateRejected."""
    values = certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if not values:
        raise CertificateRejected(f"certificate subject {subject_of(certificate)!r} has no serialNumber (OIN)")
    if len(values) > 1:
        raise CertificateRejected("certificate subject has more than one serialNumber attribute")
    value = values[0].value
    try:
        return parse_oin(value if isinstance(value, str) else value.decode("ascii", "replace"))
    except InvalidOin as exc:
        raise CertificateRejected(f"certificate serialNumber is not an OIN: {exc}") from exc


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _check_window(not_before: datetime, not_after: datetime, now: datetime, what: str = "certificate") -> None:
    if now < not_before:
        raise CertificateRejected(f"{what} is not yet valid (valid from {not_before.isoformat()})")
    if now > not_after:
        raise CertificateRejected(f"{what} expired at {not_after.isoformat()}")


def _check_usage(certificate: x509.Certificate) -> None:
    try:
        key_usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateRejected("certificate has no key usage extension (digitalSignature required)") from None
    if not key_usage.digital_signature:
        raise CertificateRejected("certificate key usage does not include digitalSignature")
    if key_usage.key_cert_sign:
        raise CertificateRejected("certificate key usage includes keyCertSign: a CA certificate is no client")
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateRejected("certificate has no extended key usage extension (clientAuth required)") from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise CertificateRejected("certificate extended key usage does not include clientAuth")


@dataclass(frozen=True)
class _Verified:
    identity: PeerIdentity
    # The validity window of the whole chain: a cached result stops when the leaf or a CA expires.
    valid_from: datetime
    valid_until: datetime


class ClientCertificateVerifier:
    """Verifies client certificates against a register's trusted CAs, caching verified results.

    The cache is keyed by (SHA-256 of the DER, register serial): a new register (say, one that drops a CA)
    has a higher serial, so nothing verified under the old one is reused. The validity window is checked
    against `now` on every hit, so a certificate expires on time even while cached. Refusals are not
    cached: they are cheap to repeat and caching them would let a caller fill the cache.
    """

    def __init__(self, cache_size: int = 4096) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must not be negative")
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[bytes, int], _Verified] = OrderedDict()
        self._store: tuple[int, Store | None] | None = None  # (register serial, its trust store)

    def verify(self, der: bytes, register: Register, now: datetime) -> PeerIdentity:
        """Verify the leaf certificate `der` (DER) at `now`. Returns who it is; raises CertificateRejected."""
        now = _utc(now)
        key = (hashlib.sha256(der).digest(), register.serial)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            _check_window(cached.identity.not_before, cached.identity.not_after, now)
            _check_window(cached.valid_from, cached.valid_until, now, "the certificate's issuing CA")
            return cached.identity
        verified = self._verify(der, register, now)
        if self._cache_size:
            self._cache[key] = verified
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return verified.identity

    def _trust_store(self, register: Register) -> Store | None:
        if self._store is None or self._store[0] != register.serial:
            self._store = (register.serial, Store(list(register.trusted_cas)) if register.trusted_cas else None)
        return self._store[1]

    def _verify(self, der: bytes, register: Register, now: datetime) -> _Verified:
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise CertificateRejected(f"client certificate is not valid DER: {exc}") from exc
        not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        _check_window(not_before, not_after, now)
        issuers = [ca for ca in register.trusted_cas if ca.subject == certificate.issuer]
        if not issuers:
            raise CertificateRejected(
                f"certificate issuer {certificate.issuer.rfc4514_string()!r} is not a CA the register trusts"
            )
        current = [ca for ca in issuers if ca.not_valid_before_utc <= now <= ca.not_valid_after_utc]
        if not current:
            _check_window(issuers[0].not_valid_before_utc, issuers[0].not_valid_after_utc, now, "the issuing CA")
        _check_usage(certificate)
        oin = oin_of(certificate)
        store = self._trust_store(register)
        if store is None:  # unreachable while issuers is non-empty; kept so the store is never None below
            raise CertificateRejected("the register lists no trusted CAs")
        verifier = PolicyBuilder().store(store).time(now).build_client_verifier()
        try:
            verified = verifier.verify(certificate, [])
        except VerificationError as exc:
            raise CertificateRejected(f"certificate does not verify against the register's trusted CAs: {exc}") from exc
        valid_from = max(c.not_valid_before_utc for c in verified.chain)
        valid_until = min(c.not_valid_after_utc for c in verified.chain)
        identity = PeerIdentity(
            oin=oin,
            thumbprint=thumbprint(der),
            subject=subject_of(certificate),
            not_before=not_before,
            not_after=not_after,
        )
        return _Verified(identity, valid_from, valid_until)
