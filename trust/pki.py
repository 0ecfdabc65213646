"""A development PKI standing in for PKIoverheid: a local CA, participant certificates, server certificates.

Participant certificates look like PKIoverheid organisation certificates where it matters to the gateway:
the subject's `serialNumber` attribute holds the 20-digit OIN, the key usage is digitalSignature and the
extended key usage includes clientAuth. Every certificate also follows the CA/Browser-forum profile that
cryptography's X.509 verifier enforces (SAN on the leaf, AKI/SKI, critical basicConstraints on the CA), so
the gateway verifies these exactly as it would verify real ones.

Used by the demo and the tests. Certificates and keys are written under `var/pki` by default and never
committed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trust.certificates import thumbprint
from trust.oin import InvalidOin, parse_oin

# Certificate keys: what the X.509 verifier's web PKI profile accepts (no Ed25519 there).
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

KEY_TYPES = ("ec", "rsa")
_CLOCK_SKEW = timedelta(minutes=5)  # back-date not_before so a peer with a slow clock accepts a fresh cert


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key and the CA certificates that issued it (leaf excluded)."""

    certificate: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def thumbprint(self) -> str:
        """`x5t#S256` of the certificate, as registered and as bound into access tokens."""
        return thumbprint(self.der)

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def chain_pem(self) -> bytes:
        """The leaf followed by its issuing CA(s): what a TLS endpoint presents."""
        return self.cert_pem() + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write `<stem>.pem` (leaf + chain) and `<stem>.key` (mode 0600). Returns both paths."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_path = directory / f"{stem}.pem"
        key_path = directory / f"{stem}.key"
        cert_path.write_bytes(self.chain_pem())
        # Create the key file private from the start, so it is never readable by others, not even briefly.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT: tighten it before writing
        with os.fdopen(fd, "wb") as out:
            out.write(self.key_pem())
        return cert_path, key_path


def new_key(key_type: str = "ec") -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"key type must be one of {', '.join(KEY_TYPES)}, got {key_type!r}")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def create_ca(name: str, *, valid_days: int = 3650, not_before: datetime | None = None) -> Issued:
    """A self-signed root CA (EC P-256) named `name`."""
    key = new_key("ec")
    start = not_before if not_before is not None else _now() - _CLOCK_SKEW
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def _key_usage(*, digital_signature: bool, key_encipherment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def issue(
    ca: Issued,
    *,
    subject: x509.Name,
    sans: Sequence[x509.GeneralName],
    key_usage: x509.KeyUsage,
    extended_key_usage: Sequence[x509.ObjectIdentifier],
    key_type: str = "ec",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Issued:
    """An end-entity certificate signed by `ca`, with the extensions given. The building block for the others;
    tests use it directly to make certificates that break one rule at a time."""
    key = new_key(key_type)
    start = not_before if not_before is not None else _now() - _CLOCK_SKEW
    end = not_after if not_after is not None else start + timedelta(days=365)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.certificate.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if extended_key_usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_key_usage)), critical=False)
    certificate = builder.sign(ca.key, hashes.SHA256())
    return Issued(certificate, key, (ca.certificate, *ca.chain))


def participant_dns_name(name: str) -> str:
    """A DNS name for a participant's certificate SAN, derived from its name (the verifier wants a SAN)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:50].strip("-") or "participant"
    return f"{slug}.participant.edugate.test"


def issue_participant(
    ca: Issued,
    *,
    oin: str,
    name: str,
    key_type: str = "ec",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    client_auth: bool = True,
    digital_signature: bool = True,
) -> Issued:
    """A participant (organisation) certificate: CN=O=`name`, serialNumber=`oin`, C=NL.

    `client_auth=False` leaves clientAuth out of the EKU and `digital_signature=False` gives a key usage of
    keyEncipherment only: both make certificates the gateway must refuse.
    """
    parse_oin(oin)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, oin),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    # serverAuth too, so a participant's node can present the same certificate.
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else []
    usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    return issue(
        ca,
        subject=subject,
        sans=[x509.DNSName(participant_dns_name(name))],
        key_usage=_key_usage(digital_signature=digital_signature, key_encipherment=not digital_signature),
        extended_key_usage=usages,
        key_type=key_type,
        not_before=not_before,
        not_after=not_after,
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_server(ca: Issued, hostnames: Sequence[str] = ("localhost", "127.0.0.1")) -> Issued:
    """A TLS server certificate for `hostnames` (IP addresses become IP SANs)."""
    if not hostnames:
        raise ValueError("a server certificate needs at least one hostname")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
            x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0]),
        ]
    )
    return issue(
        ca,
        subject=subject,
        sans=[_general_name(h) for h in hostnames],
        key_usage=_key_usage(digital_signature=True, key_encipherment=False),
        extended_key_usage=[ExtendedKeyUsageOID.SERVER_AUTH],
    )


def load_issued(cert_path: Path, key_path: Path) -> Issued:
    """Read what `Issued.write` wrote: the first certificate is the leaf, the rest its chain."""
    certificates = x509.load_pem_x509_certificates(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{key_path}: the key must be an EC or RSA private key")
    leaf = certificates[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, public
    ):
        raise ValueError(f"{key_path} is not the key of the certificate in {cert_path}")
    return Issued(leaf, key, tuple(certificates[1:]))


# --- CLI: `edugate pki ...` ---------------------------------------------------------------------------------

_OUT = click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/pki"),
    show_default=True,
    help="Directory for the PEM files.",
)
_CA_STEM = "ca"


def _load_ca(out: Path) -> Issued:
    cert_path, key_path = out / f"{_CA_STEM}.pem", out / f"{_CA_STEM}.key"
    if not cert_path.exists() or not key_path.exists():
        raise click.ClickException(f"no CA in {out} (expected {cert_path.name} and {key_path.name}); run `pki init-ca`")
    try:
        return load_issued(cert_path, key_path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def _refuse_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise click.ClickException(f"{path} exists; pass --force to replace it")


@click.group(name="pki")
def cli() -> None:
    """Development PKI (stands in for PKIoverheid): a CA, participant and server certificates."""


@cli.command("init-ca")
@_OUT
@click.option("--name", default="edugate development CA", show_default=True, help="The CA's subject name.")
@click.option("--valid-days", default=3650, show_default=True, type=click.IntRange(min=1))
@click.option("--force", is_flag=True, help="Replace an existing CA (certificates it issued stop verifying).")
def init_ca_command(out: Path, name: str, valid_days: int, force: bool) -> None:
    """Create the CA: OUT/ca.pem and OUT/ca.key."""
    _refuse_overwrite(out / f"{_CA_STEM}.pem", force)
    cert_path, key_path = create_ca(name, valid_days=valid_days).write(out, _CA_STEM)
    click.echo(f"CA certificate: {cert_path}\nCA key:         {key_path}")


@cli.command("issue-participant")
@_OUT
@click.option("--oin", required=True, help="The participant's 20-digit OIN (subject serialNumber).")
@click.option("--name", required=True, help="The participant's organisation name.")
@click.option("--key-type", type=click.Choice(KEY_TYPES), default="ec", show_default=True)
@click.option("--stem", default=None, help="File name stem [default: participant-<OIN>].")
@click.option("--valid-days", default=365, show_default=True, type=click.IntRange(min=1))
def issue_participant_command(out: Path, oin: str, name: str, key_type: str, stem: str | None, valid_days: int) -> None:
    """Issue a participant certificate signed by the CA in OUT."""
    try:
        parse_oin(oin)
    except InvalidOin as exc:
        raise click.BadParameter(str(exc), param_hint="--oin") from exc
    ca = _load_ca(out)
    start = _now() - _CLOCK_SKEW
    issued = issue_participant(
        ca, oin=oin, name=name, key_type=key_type, not_before=start, not_after=start + timedelta(days=valid_days)
    )
    cert_path, key_path = issued.write(out, stem or f"participant-{oin}")
    click.echo(f"certificate: {cert_path}\nkey:         {key_path}\nx5t#S256:    {issued.thumbprint}")


@cli.command("issue-server")
@_OUT
@click.option("--host", "hosts", multiple=True, default=("localhost", "127.0.0.1"), show_default=True)
@click.option("--stem", default="server", show_default=True, help="File name stem.")
def issue_server_command(out: Path, hosts: tuple[str, ...], stem: str) -> None:
    """Issue a TLS server certificate for the given host names and IP addresses."""
    issued = issue_server(_load_ca(out), hosts)
    cert_path, key_path = issued.write(out, stem)
    click.echo(f"certificate: {cert_path}\nkey:         {key_path}")
