"""TLS for the node's listener: client certificates requested, checked coarsely here and fully in the pipeline.

The handshake accepts only certificates chaining to a CA the register has listed since the node started, and
skips the validity-time check so that an expired certificate reaches the pipeline and gets a clear Edu-V
answer instead of a bare TLS alert. The pipeline's certificate check (cryptography's verifier against the
register as it is now) is authoritative: a CA removed from the register is refused there.
A handshake that fails anyway (unknown CA, garbage) is reported to `on_failure`, so it is logged too.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME: Python exposes verify_flags as a plain int, not this flag by name.
_NO_CHECK_TIME = 0x200000

HandshakeFailure = Callable[[ssl.SSLError], None]


def _audited(on_failure: HandshakeFailure) -> type[ssl.SSLObject]:
    """An SSLObject class that reports a refused handshake before re-raising it."""

    class AuditedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as exc:
                on_failure(exc)
                raise

    return AuditedSSLObject


def server_context(certificate: Path, key: Path, *, on_failure: HandshakeFailure | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, key)
    context.verify_mode = ssl.CERT_OPTIONAL  # no certificate: a clear 401 from the pipeline, not a TLS alert
    context.verify_flags |= _NO_CHECK_TIME
    context.set_alpn_protocols(["http/1.1"])
    if on_failure is not None:
        context.sslobject_class = _audited(on_failure)
    return context


def trust_cas(context: ssl.SSLContext, pems: str) -> None:
    """Add the register's CAs to the handshake's trust store (OpenSSL can add, not remove: see module doc)."""
    if pems.strip():
        context.load_verify_locations(cadata=pems)


def client_context(
    *, ca_pems: str | None = None, cafile: Path | None = None, certificate: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client context that verifies the server and presents our certificate when we have one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cafile is not None:
        context.load_verify_locations(cafile=cafile)
    if ca_pems:
        context.load_verify_locations(cadata=ca_pems)
    if cafile is None and not ca_pems:
        context.load_default_certs()
    if certificate is not None:
        context.load_cert_chain(certificate, key)
    return context
