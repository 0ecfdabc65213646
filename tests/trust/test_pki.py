"""The development PKI makes certificates shaped like PKIoverheid ones, and writes them safely."""

from __future__ import annotations

import hashlib
import ipaddress
import stat
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from federation import OIN_PUBLISHER

from trust.oin import InvalidOin
from trust.pki import Issued, cli, create_ca, issue_participant, issue_server, load_issued


def test_ca_is_a_self_signed_ca_that_may_sign_certificates(ca: Issued) -> None:
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert ca.certificate.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.certificate.issuer == ca.certificate.subject
    ca.certificate.verify_directly_issued_by(ca.certificate)


def test_participant_certificate_carries_the_oin_in_the_subject_serial_number(publisher_cert: Issued) -> None:
    subject = publisher_cert.certificate.subject
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == OIN_PUBLISHER
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Uitgeverij Noord"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Uitgeverij Noord"
    assert subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "NL"


def test_participant_certificate_is_for_signing_and_client_authentication(publisher_cert: Issued, ca: Issued) -> None:
    extensions = publisher_cert.certificate.extensions
    assert extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    usages = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usages
    sans = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["uitgeverij-noord.participant.edugate.test"]
    assert publisher_cert.chain == (ca.certificate,)
    publisher_cert.certificate.verify_directly_issued_by(ca.certificate)


def test_participant_keys_are_ec_p256_by_default_and_rsa_2048_on_request(ca: Issued) -> None:
    ec_cert = issue_participant(ca, oin=OIN_PUBLISHER, name="EC")
    rsa_cert = issue_participant(ca, oin=OIN_PUBLISHER, name="RSA", key_type="rsa")
    assert isinstance(ec_cert.key, ec.EllipticCurvePrivateKey) and ec_cert.key.curve.name == "secp256r1"
    assert isinstance(rsa_cert.key, rsa.RSAPrivateKey) and rsa_cert.key.key_size == 2048


def test_participant_certificates_can_be_made_to_break_the_usage_rules(ca: Issued) -> None:
    no_client = issue_participant(ca, oin=OIN_PUBLISHER, name="x", client_auth=False)
    no_signing = issue_participant(ca, oin=OIN_PUBLISHER, name="x", digital_signature=False)
    assert ExtendedKeyUsageOID.CLIENT_AUTH not in no_client.certificate.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage
    ).value
    assert not no_signing.certificate.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature


def test_a_participant_certificate_needs_a_well_formed_oin(ca: Issued) -> None:
    with pytest.raises(InvalidOin):
        issue_participant(ca, oin="12345", name="x")


def test_server_certificate_names_ip_addresses_as_ip_sans(ca: Issued) -> None:
    server = issue_server(ca, ["localhost", "127.0.0.1", "::1"])
    sans = server.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    usages = server.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_thumbprint_is_base64url_sha256_of_the_der(publisher_cert: Issued) -> None:
    der = publisher_cert.certificate.public_bytes(serialization.Encoding.DER)
    expected = urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    assert publisher_cert.thumbprint == expected


def test_written_files_hold_leaf_then_chain_and_a_private_key_only_the_owner_can_read(
    publisher_cert: Issued, tmp_path: Path
) -> None:
    cert_path, key_path = publisher_cert.write(tmp_path / "pki", "publisher")
    assert (cert_path.name, key_path.name) == ("publisher.pem", "publisher.key")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    loaded = load_issued(cert_path, key_path)
    assert loaded.certificate == publisher_cert.certificate
    assert loaded.chain == publisher_cert.chain
    assert loaded.key_pem() == publisher_cert.key_pem()


def test_loading_refuses_a_key_that_does_not_belong_to_the_certificate(ca: Issued, tmp_path: Path) -> None:
    one = issue_participant(ca, oin=OIN_PUBLISHER, name="one")
    other = issue_participant(ca, oin=OIN_PUBLISHER, name="other")
    cert_path, _ = one.write(tmp_path, "one")
    _, other_key = other.write(tmp_path, "other")
    with pytest.raises(ValueError, match="is not the key of the certificate"):
        load_issued(cert_path, other_key)


def test_cli_creates_a_ca_then_participant_and_server_certificates_it_signed(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "pki"
    result = runner.invoke(cli, ["init-ca", "--out", str(out), "--name", "Test PKIoverheid"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["issue-participant", "--out", str(out), "--oin", OIN_PUBLISHER, "--name", "Noord"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["issue-server", "--out", str(out), "--host", "localhost", "--host", "127.0.0.1"])
    assert result.exit_code == 0, result.output

    ca = load_issued(out / "ca.pem", out / "ca.key")
    publisher = load_issued(out / f"participant-{OIN_PUBLISHER}.pem", out / f"participant-{OIN_PUBLISHER}.key")
    server = load_issued(out / "server.pem", out / "server.key")
    for issued in (publisher, server):
        issued.certificate.verify_directly_issued_by(ca.certificate)
        assert issued.chain == (ca.certificate,)
    assert publisher.certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == OIN_PUBLISHER


def test_cli_prints_the_thumbprint_to_put_in_the_register(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["init-ca", "--out", str(tmp_path)]).exit_code == 0
    result = runner.invoke(cli, ["issue-participant", "--out", str(tmp_path), "--oin", OIN_PUBLISHER, "--name", "N"])
    issued = load_issued(tmp_path / f"participant-{OIN_PUBLISHER}.pem", tmp_path / f"participant-{OIN_PUBLISHER}.key")
    assert f"x5t#S256:    {issued.thumbprint}" in result.output


def test_cli_refuses_to_replace_an_existing_ca_without_force(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["init-ca", "--out", str(tmp_path)]).exit_code == 0
    first = (tmp_path / "ca.pem").read_bytes()
    result = runner.invoke(cli, ["init-ca", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--force" in result.output
    assert (tmp_path / "ca.pem").read_bytes() == first
    assert runner.invoke(cli, ["init-ca", "--out", str(tmp_path), "--force"]).exit_code == 0
    assert (tmp_path / "ca.pem").read_bytes() != first


def test_cli_explains_a_missing_ca_and_a_malformed_oin(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["issue-server", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "run `pki init-ca`" in result.output
    result = runner.invoke(cli, ["issue-participant", "--out", str(tmp_path), "--oin", "123", "--name", "N"])
    assert result.exit_code != 0 and "exactly 20 digits" in result.output


def test_ca_validity_can_be_set_for_expiry_tests() -> None:
    ca = create_ca("short", valid_days=2)
    lifetime = ca.certificate.not_valid_after_utc - ca.certificate.not_valid_before_utc
    assert lifetime.days == 2


def test_rewriting_a_key_file_makes_it_private_even_if_it_was_readable(publisher_cert: Issued, tmp_path: Path) -> None:
    key_path = tmp_path / "publisher.key"
    key_path.write_bytes(b"old")
    key_path.chmod(0o644)
    publisher_cert.write(tmp_path, "publisher")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
