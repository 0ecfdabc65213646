"""A client certificate is accepted only if the live register's CAs vouch for it, now, for client use, with an OIN."""

from __future__ import annotations

import hashlib
import ssl
from base64 import urlsafe_b64encode
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from federation import OIN_PUBLISHER, make_register

from trust.certificates import CertificateRejected, ClientCertificateVerifier, oin_of, thumbprint
from trust.pki import Issued, create_ca, issue, issue_participant, issue_server


def _usage() -> x509.KeyUsage:
    return x509.KeyUsage(True, False, False, False, False, False, False, False, False)


def _without_oin(ca: Issued, serial_number: str | None) -> Issued:
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"), x509.NameAttribute(NameOID.COMMON_NAME, "Anon")]
    if serial_number is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    return issue(
        ca,
        subject=x509.Name(attributes),
        sans=[x509.DNSName("anon.participant.edugate.test")],
        key_usage=_usage(),
        extended_key_usage=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )


def test_a_participant_certificate_from_a_trusted_ca_yields_its_oin_and_thumbprint(
    ca: Issued, publisher_cert: Issued, now: datetime
) -> None:
    peer = ClientCertificateVerifier().verify(publisher_cert.der, make_register(cas=[ca]), now)
    assert peer.oin == OIN_PUBLISHER
    assert peer.thumbprint == urlsafe_b64encode(hashlib.sha256(publisher_cert.der).digest()).decode().rstrip("=")
    assert f"serialNumber={OIN_PUBLISHER}" in peer.subject
    assert peer.not_after == publisher_cert.certificate.not_valid_after_utc


def test_an_rsa_participant_certificate_is_accepted_too(ca: Issued, now: datetime) -> None:
    cert = issue_participant(ca, oin=OIN_PUBLISHER, name="RSA publisher", key_type="rsa")
    assert ClientCertificateVerifier().verify(cert.der, make_register(cas=[ca]), now).oin == OIN_PUBLISHER


def test_a_certificate_from_a_ca_the_register_does_not_list_is_refused(publisher_cert: Issued, now: datetime) -> None:
    other = create_ca("some other CA")
    with pytest.raises(CertificateRejected, match="is not a CA the register trusts"):
        ClientCertificateVerifier().verify(publisher_cert.der, make_register(cas=[other]), now)


def test_a_ca_impersonating_a_trusted_ca_by_name_is_refused(ca: Issued, now: datetime) -> None:
    impostor = create_ca("edugate test CA")  # same name as the trusted CA, different key
    forged = issue_participant(impostor, oin=OIN_PUBLISHER, name="Forged")
    with pytest.raises(CertificateRejected, match="does not verify against the register's trusted CAs"):
        ClientCertificateVerifier().verify(forged.der, make_register(cas=[ca]), now)


def test_an_expired_certificate_is_refused(ca: Issued, now: datetime) -> None:
    cert = issue_participant(
        ca, oin=OIN_PUBLISHER, name="x", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
    with pytest.raises(CertificateRejected, match="expired at"):
        ClientCertificateVerifier().verify(cert.der, make_register(cas=[ca]), now)


def test_a_certificate_that_is_not_yet_valid_is_refused(ca: Issued, now: datetime) -> None:
    cert = issue_participant(ca, oin=OIN_PUBLISHER, name="x", not_before=now + timedelta(days=1))
    with pytest.raises(CertificateRejected, match="not yet valid"):
        ClientCertificateVerifier().verify(cert.der, make_register(cas=[ca]), now)


def test_a_certificate_without_digital_signature_key_usage_is_refused(ca: Issued, now: datetime) -> None:
    cert = issue_participant(ca, oin=OIN_PUBLISHER, name="x", digital_signature=False)
    with pytest.raises(CertificateRejected, match="key usage does not include digitalSignature"):
        ClientCertificateVerifier().verify(cert.der, make_register(cas=[ca]), now)


def test_a_certificate_without_the_client_auth_extended_key_usage_is_refused(ca: Issued, now: datetime) -> None:
    cert = issue_participant(ca, oin=OIN_PUBLISHER, name="x", client_auth=False)
    with pytest.raises(CertificateRejected, match="does not include clientAuth"):
        ClientCertificateVerifier().verify(cert.der, make_register(cas=[ca]), now)


def test_a_ca_certificate_is_no_client_certificate(ca: Issued, now: datetime) -> None:
    with pytest.raises(CertificateRejected):
        ClientCertificateVerifier().verify(ca.der, make_register(cas=[ca]), now)


def test_a_certificate_without_a_serial_number_attribute_is_refused(ca: Issued, now: datetime) -> None:
    cert = _without_oin(ca, None)
    with pytest.raises(CertificateRejected, match=r"has no serialNumber \(OIN\)"):
        ClientCertificateVerifier().verify(cert.der, make_register(cas=[ca]), now)


def test_a_serial_number_that_is_not_an_oin_is_refused(ca: Issued, now: datetime) -> None:
    cert = _without_oin(ca, "KVK-12345678")
    with pytest.raises(CertificateRejected, match="serialNumber is not an OIN"):
        ClientCertificateVerifier().verify(cert.der, make_register(cas=[ca]), now)


@pytest.mark.parametrize("garbage", [b"", b"not a certificate", b"\x30\x82\x01\x00\x30"])
def test_malformed_der_is_refused(ca: Issued, now: datetime, garbage: bytes) -> None:
    with pytest.raises(CertificateRejected, match="not valid DER"):
        ClientCertificateVerifier().verify(garbage, make_register(cas=[ca]), now)


def test_a_truncated_certificate_is_refused(ca: Issued, publisher_cert: Issued, now: datetime) -> None:
    with pytest.raises(CertificateRejected, match="not valid DER"):
        ClientCertificateVerifier().verify(publisher_cert.der[:-10], make_register(cas=[ca]), now)


def test_a_register_that_drops_the_ca_refuses_a_certificate_accepted_before(
    ca: Issued, publisher_cert: Issued, now: datetime
) -> None:
    verifier = ClientCertificateVerifier()
    verifier.verify(publisher_cert.der, make_register(cas=[ca], serial=1), now)  # now cached under serial 1
    without_ca = make_register(cas=[create_ca("the only CA left")], serial=2)
    with pytest.raises(CertificateRejected, match="is not a CA the register trusts"):
        verifier.verify(publisher_cert.der, without_ca, now)


def test_a_register_without_trusted_cas_refuses_every_certificate(publisher_cert: Issued, now: datetime) -> None:
    with pytest.raises(CertificateRejected, match="is not a CA the register trusts"):
        ClientCertificateVerifier().verify(publisher_cert.der, make_register(cas=[]), now)


def test_a_cached_certificate_still_expires_on_time(ca: Issued, now: datetime) -> None:
    not_after = now + timedelta(minutes=10)
    cert = issue_participant(ca, oin=OIN_PUBLISHER, name="x", not_before=now - timedelta(days=1), not_after=not_after)
    verifier, register = ClientCertificateVerifier(), make_register(cas=[ca])
    assert verifier.verify(cert.der, register, now).oin == OIN_PUBLISHER
    assert verifier.verify(cert.der, register, not_after - timedelta(seconds=1)).oin == OIN_PUBLISHER
    with pytest.raises(CertificateRejected, match="expired at"):
        verifier.verify(cert.der, register, not_after + timedelta(seconds=1))


def test_a_cached_certificate_stops_when_its_ca_expires(now: datetime) -> None:
    short_ca = create_ca("short-lived CA", valid_days=2, not_before=now - timedelta(days=1))
    cert = issue_participant(short_ca, oin=OIN_PUBLISHER, name="x")  # valid for a year, longer than its CA
    verifier, register = ClientCertificateVerifier(), make_register(cas=[short_ca])
    verifier.verify(cert.der, register, now)
    with pytest.raises(CertificateRejected, match="issuing CA expired"):
        verifier.verify(cert.der, register, now + timedelta(days=2))
    with pytest.raises(CertificateRejected, match="issuing CA expired"):
        ClientCertificateVerifier().verify(cert.der, register, now + timedelta(days=2))


def test_without_a_cache_every_verification_is_done_in_full(ca: Issued, publisher_cert: Issued, now: datetime) -> None:
    verifier = ClientCertificateVerifier(cache_size=0)
    register = make_register(cas=[ca])
    assert verifier.verify(publisher_cert.der, register, now) == verifier.verify(publisher_cert.der, register, now)


def test_oin_of_and_thumbprint_work_on_a_certificate_alone(publisher_cert: Issued) -> None:
    assert oin_of(publisher_cert.certificate) == OIN_PUBLISHER
    assert thumbprint(publisher_cert.der) == publisher_cert.thumbprint


async def test_a_peer_certificate_from_a_real_mutual_tls_handshake_verifies(
    ca: Issued, publisher_cert: Issued, tmp_path: Path
) -> None:
    # What the node does: Python's ssl checks the handshake, then hands over only the leaf DER.
    server_cert, server_key = issue_server(ca, ["127.0.0.1"]).write(tmp_path, "server")
    client_cert, client_key = publisher_cert.write(tmp_path, "publisher")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=ca.cert_pem().decode())
    server_context.load_cert_chain(server_cert, server_key)
    server_context.verify_mode = ssl.CERT_REQUIRED
    register, verifier = make_register(cas=[ca]), ClientCertificateVerifier()

    async def whoami(request: web.Request) -> web.Response:
        der = request.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        peer = verifier.verify(der, register, datetime.now(UTC))
        return web.json_response({"oin": peer.oin, "thumbprint": peer.thumbprint})

    app = web.Application()
    app.router.add_get("/whoami", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context).start()
    try:
        client_context = ssl.create_default_context(cadata=ca.cert_pem().decode())
        client_context.load_cert_chain(client_cert, client_key)
        async with aiohttp.ClientSession() as session:
            url = f"https://127.0.0.1:{runner.addresses[0][1]}/whoami"
            async with session.get(url, ssl=client_context) as response:
                answer = await response.json()
    finally:
        await runner.cleanup()
    assert answer == {"oin": OIN_PUBLISHER, "thumbprint": publisher_cert.thumbprint}
