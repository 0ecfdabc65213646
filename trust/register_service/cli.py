"""`edugate register ...`: every operator operation on the register, on a SQLite file or a PostgreSQL DSN.

Each change is recorded in the register's history under `--actor` (default: the login name) and becomes the
next serial, which running register services publish at once.
"""

from __future__ import annotations

import asyncio
import getpass
import ipaddress
import json
import os
import ssl
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from trust.register import KeurmerkStatus, ParticipantStatus, Role
from trust.register_service.accounts import OperatorAccounts, OperatorRole
from trust.register_service.console import utc_time
from trust.register_service.keys import load_or_create, public_pem
from trust.register_service.server import MAX_CONNECTIONS, SEND_TIMEOUT
from trust.register_service.store import RegisterChangeRefused, RegisterStore

T = TypeVar("T")


class Target:
    def __init__(self, db: str, actor: str) -> None:
        self.db = db
        self.actor = actor

    def run(self, operation: Callable[[RegisterStore], Awaitable[T]]) -> T:
        async def main() -> T:
            store = await RegisterStore.open(self.db)
            try:
                return await operation(store)
            finally:
                await store.close()

        try:
            return asyncio.run(main())
        except RegisterChangeRefused as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            raise click.ClickException(f"{self.db}: {exc}") from exc


pass_target = click.make_pass_decorator(Target)


def _saved(serial: int) -> None:
    click.echo(f"register serial {serial}")


class _UtcTime(click.ParamType):
    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            result = utc_time(str(value))
        except RegisterChangeRefused as exc:
            self.fail(str(exc), param, ctx)
        assert result is not None
        return result


UTC_TIME = _UtcTime()
ROLE = click.Choice([r.value for r in Role])


@click.group(name="register")
@click.option("--db", envvar="EDUGATE_REGISTER_DB", default="var/register.sqlite", show_default=True,
              help="SQLite file or postgresql:// DSN of the register.")
@click.option("--actor", envvar="EDUGATE_OPERATOR", default=None,
              help="Who makes the change, for the history (default: your login name).")
@click.pass_context
def cli(ctx: click.Context, db: str, actor: str | None) -> None:
    """Manage the keurmerk register (participants, certificates, keurmerken, trusted CAs) and serve it."""
    ctx.obj = Target(db, actor or getpass.getuser())


@cli.command()
@pass_target
def init(target: Target) -> None:
    """Create the register's tables (done by every command; this one only reports the serial)."""
    _saved(target.run(lambda store: store.serial()))


# ---- participants --------------------------------------------------------------------------------------

@cli.group()
def participant() -> None:
    """Participants: join, update, suspend, reactivate, withdraw."""


@participant.command("add")
@click.argument("oin")
@click.option("--name", required=True)
@click.option("--kvk")
@click.option("--contact")
@click.option("--status", type=click.Choice([s.value for s in ParticipantStatus]), default="applied",
              show_default=True)
@pass_target
def participant_add(target: Target, oin: str, name: str, kvk: str | None, contact: str | None, status: str) -> None:
    _saved(target.run(lambda s: s.add_participant(oin, name, kvk=kvk, contact=contact,
                                                  status=ParticipantStatus(status), actor=target.actor)))


@participant.command("update")
@click.argument("oin")
@click.option("--name")
@click.option("--kvk")
@click.option("--contact")
@click.option("--token-endpoint")
@click.option("--api-endpoint")
@pass_target
def participant_update(target: Target, oin: str, name: str | None, kvk: str | None, contact: str | None,
                       token_endpoint: str | None, api_endpoint: str | None) -> None:
    _saved(target.run(lambda s: s.update_participant(oin, name=name, kvk=kvk, contact=contact,
                                                     token_endpoint=token_endpoint, api_endpoint=api_endpoint,
                                                     actor=target.actor)))


@participant.command("status")
@click.argument("oin")
@click.argument("status", type=click.Choice([s.value for s in ParticipantStatus]))
@click.option("--reason")
@pass_target
def participant_status(target: Target, oin: str, status: str, reason: str | None) -> None:
    """Set a joining stage, or active / suspended / withdrawn (the last two need --reason)."""
    _saved(target.run(lambda s: s.set_participant_status(oin, ParticipantStatus(status), reason=reason,
                                                         actor=target.actor)))


@participant.command("suspend")
@click.argument("oin")
@click.option("--reason", required=True)
@pass_target
def participant_suspend(target: Target, oin: str, reason: str) -> None:
    _saved(target.run(lambda s: s.set_participant_status(oin, ParticipantStatus.SUSPENDED, reason=reason,
                                                         actor=target.actor)))


@participant.command("reactivate")
@click.argument("oin")
@click.option("--reason")
@pass_target
def participant_reactivate(target: Target, oin: str, reason: str | None) -> None:
    _saved(target.run(lambda s: s.set_participant_status(oin, ParticipantStatus.ACTIVE, reason=reason,
                                                         actor=target.actor)))


@participant.command("withdraw")
@click.argument("oin")
@click.option("--effective", type=UTC_TIME, required=True, help="RFC 3339; a plain date-time is taken as UTC.")
@click.option("--reason", required=True)
@pass_target
def participant_withdraw(target: Target, oin: str, effective: datetime, reason: str) -> None:
    """Schedule a withdrawal (uittreding): from --effective on, every node refuses the participant."""
    _saved(target.run(lambda s: s.schedule_withdrawal(oin, effective, reason, actor=target.actor)))


@participant.command("cancel-withdrawal")
@click.argument("oin")
@pass_target
def participant_cancel_withdrawal(target: Target, oin: str) -> None:
    _saved(target.run(lambda s: s.cancel_withdrawal(oin, actor=target.actor)))


@participant.command("list")
@pass_target
def participant_list(target: Target) -> None:
    document = target.run(lambda s: s.register())
    for p in sorted(document.participants, key=lambda p: p.oin):
        marks = ", ".join(f"{k.data_service}/{k.role.value}:{k.status.value}" for k in p.keurmerken)
        withdrawal = f" withdraws {p.withdrawal_effective.isoformat()}" if p.withdrawal_effective else ""
        click.echo(f"{p.oin}  {p.status.value:<12} {p.name}{withdrawal}  [{marks}]")


@participant.command("show")
@click.argument("oin")
@pass_target
def participant_show(target: Target, oin: str) -> None:
    found = target.run(lambda s: s.participant(oin))
    if found is None:
        raise click.ClickException(f"no participant with OIN {oin}")
    click.echo(found.model_dump_json(indent=2, exclude_none=True))


# ---- certificates and keys -----------------------------------------------------------------------------

@cli.group()
def certificate() -> None:
    """A participant's certificates (PEM in, thumbprint x5t#S256 in the register).

    A thumbprint is base64url and one in 64 begins with '-': put '--' before the arguments
    (`certificate remove -- OIN -Xy...`) so that it is not read as an option.
    """


@certificate.command("add")
@click.argument("oin")
@click.argument("pem_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_target
def certificate_add(target: Target, oin: str, pem_file: Path) -> None:
    _saved(target.run(lambda s: s.add_certificate(oin, pem_file.read_text(), actor=target.actor)))


@certificate.command("remove")
@click.argument("oin")
@click.argument("thumbprint")
@pass_target
def certificate_remove(target: Target, oin: str, thumbprint: str) -> None:
    """Take a certificate out of the register (a THUMBPRINT that begins with '-' goes after '--')."""
    _saved(target.run(lambda s: s.remove_certificate(oin, thumbprint, actor=target.actor)))


@certificate.command("rotate")
@click.argument("oin")
@click.argument("old_thumbprint")
@click.argument("new_pem_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_target
def certificate_rotate(target: Target, oin: str, old_thumbprint: str, new_pem_file: Path) -> None:
    """Replace a certificate by a new one in one serial (an OLD_THUMBPRINT that begins with '-' goes after '--')."""
    _saved(target.run(lambda s: s.rotate_certificate(oin, old_thumbprint, new_pem_file.read_text(),
                                                     actor=target.actor)))


@certificate.command("list")
@click.argument("oin")
@pass_target
def certificate_list(target: Target, oin: str) -> None:
    for record in target.run(lambda s: s.certificates(oin)):
        click.echo(f"{record.thumbprint}  not after {record.not_after.isoformat()}  {record.subject}")


def _key_source(jwks_file: Path | None, jwks_uri: str | None) -> dict[str, Any]:
    if jwks_file is not None:
        try:
            return {"jwks": json.loads(jwks_file.read_text())}
        except ValueError as exc:
            raise click.ClickException(f"{jwks_file}: not JSON: {exc}") from exc
    return {"jwks_uri": jwks_uri}


@cli.group()
def client() -> None:
    """A participant's clients (client_id) and their signing keys (inline JWKS or jwks_uri)."""


@client.command("add")
@click.argument("oin")
@click.argument("client_id")
@click.option("--jwks", "jwks_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--jwks-uri")
@pass_target
def client_add(target: Target, oin: str, client_id: str, jwks_file: Path | None, jwks_uri: str | None) -> None:
    keys = _key_source(jwks_file, jwks_uri)
    _saved(target.run(lambda s: s.add_client(oin, client_id, **keys, actor=target.actor)))


@client.command("rotate-keys")
@click.argument("client_id")
@click.option("--jwks", "jwks_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--jwks-uri")
@pass_target
def client_rotate_keys(target: Target, client_id: str, jwks_file: Path | None, jwks_uri: str | None) -> None:
    keys = _key_source(jwks_file, jwks_uri)
    _saved(target.run(lambda s: s.rotate_client_keys(client_id, **keys, actor=target.actor)))


@client.command("remove")
@click.argument("client_id")
@pass_target
def client_remove(target: Target, client_id: str) -> None:
    _saved(target.run(lambda s: s.remove_client(client_id, actor=target.actor)))


# ---- keurmerken ----------------------------------------------------------------------------------------

@cli.group()
def keurmerk() -> None:
    """Keurmerken per data service and role: grant, suspend, revoke, reinstate."""


@keurmerk.command("grant")
@click.argument("oin")
@click.argument("data_service")
@click.argument("role", type=ROLE)
@click.option("--valid-from", type=UTC_TIME)
@click.option("--valid-until", type=UTC_TIME)
@pass_target
def keurmerk_grant(target: Target, oin: str, data_service: str, role: str, valid_from: datetime | None,
                   valid_until: datetime | None) -> None:
    _saved(target.run(lambda s: s.grant_keurmerk(oin, data_service, Role(role), valid_from=valid_from,
                                                 valid_until=valid_until, actor=target.actor)))


def _keurmerk_status(status: KeurmerkStatus, reason_required: bool) -> Callable[..., None]:
    @click.argument("oin")
    @click.argument("data_service")
    @click.argument("role", type=ROLE)
    @click.option("--reason", required=reason_required)
    @pass_target
    def command(target: Target, oin: str, data_service: str, role: str, reason: str | None) -> None:
        _saved(target.run(lambda s: s.set_keurmerk_status(oin, data_service, Role(role), status, reason=reason,
                                                          actor=target.actor)))

    return command


keurmerk.command("suspend")(_keurmerk_status(KeurmerkStatus.SUSPENDED, True))
keurmerk.command("revoke")(_keurmerk_status(KeurmerkStatus.REVOKED, True))
keurmerk.command("reinstate")(_keurmerk_status(KeurmerkStatus.ACTIVE, False))


# ---- trusted CAs, catalogue, export/import, history ----------------------------------------------------

@cli.group()
def ca() -> None:
    """The trusted CA certificates (the PKIoverheid roots and intermediates nodes accept)."""


@ca.command("add")
@click.argument("pem_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_target
def ca_add(target: Target, pem_file: Path) -> None:
    _saved(target.run(lambda s: s.add_trusted_ca(pem_file.read_text(), actor=target.actor)))


@ca.command("remove")
@click.argument("fingerprint")
@pass_target
def ca_remove(target: Target, fingerprint: str) -> None:
    _saved(target.run(lambda s: s.remove_trusted_ca(fingerprint, actor=target.actor)))


@ca.command("list")
@pass_target
def ca_list(target: Target) -> None:
    for record in target.run(lambda s: s.trusted_cas()):
        click.echo(f"{record.fingerprint}  not after {record.not_after.isoformat()}  {record.subject}")


@cli.command("catalogue-version")
@click.argument("version")
@pass_target
def catalogue_version(target: Target, version: str) -> None:
    """Set the data-service catalogue version the register refers to."""
    _saved(target.run(lambda s: s.set_catalogue_version(version, actor=target.actor)))


@cli.command("export")
@click.argument("output", type=click.File("w"), default="-")
@pass_target
def export(target: Target, output: Any) -> None:
    """Write the whole register (with certificate PEMs) as JSON."""
    json.dump(target.run(lambda s: s.export()), output, indent=1)
    output.write("\n")


@cli.command("import")
@click.argument("source", type=click.File("r"))
@pass_target
def import_(target: Target, source: Any) -> None:
    """Replace the register's content with an export; the serial moves forward, so nodes accept it."""
    try:
        data = json.load(source)
    except ValueError as exc:
        raise click.ClickException(f"not JSON: {exc}") from exc
    _saved(target.run(lambda s: s.import_register(data, actor=target.actor)))


@cli.command("history")
@click.option("--limit", default=50, show_default=True)
@click.option("--subject", help="e.g. participant:<OIN>, ca:<fingerprint>, operator:<name>")
@click.option("--json", "as_json", is_flag=True)
@pass_target
def history(target: Target, limit: int, subject: str | None, as_json: bool) -> None:
    """Who changed what, when, with the state before and after (newest first)."""
    entries = target.run(lambda s: s.history(limit=limit, subject=subject))
    for e in entries:
        if as_json:
            click.echo(json.dumps({"id": e.id, "serial": e.serial, "at": e.changed_at.isoformat(), "actor": e.actor,
                                   "action": e.action, "subject": e.subject, "before": e.before, "after": e.after}))
        else:
            click.echo(f"{e.changed_at.isoformat()}  serial {e.serial if e.serial is not None else '-':>5}  "
                       f"{e.actor:<12} {e.action}  {e.subject}")


# ---- operators and keys --------------------------------------------------------------------------------

@cli.group()
def operator() -> None:
    """Operator accounts for the web console."""


@operator.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice([r.value for r in OperatorRole]), default="read-only", show_default=True)
@click.option("--password", envvar="EDUGATE_OPERATOR_PASSWORD", prompt=True, hide_input=True,
              confirmation_prompt=True, help="Prompted for if not given (or EDUGATE_OPERATOR_PASSWORD).")
@pass_target
def operator_add(target: Target, username: str, role: str, password: str) -> None:
    target.run(lambda s: OperatorAccounts(s).create(username, password, OperatorRole(role), actor=target.actor))
    click.echo(f"operator {username} ({role}) created")


@operator.command("list")
@pass_target
def operator_list(target: Target) -> None:
    for account in target.run(lambda s: OperatorAccounts(s).list()):
        click.echo(f"{account.username}  {account.role.value}")


@cli.command("public-key")
@click.option("--operator-key", type=click.Path(path_type=Path), default="var/operator-key.pem", show_default=True)
def public_key(operator_key: Path) -> None:
    """Print the operator's public key (PEM) for nodes to pin; creates the key pair if it does not exist."""
    click.echo(public_pem(load_or_create(operator_key)).decode(), nl=False)


# ---- serve ---------------------------------------------------------------------------------------------

def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _data_services(catalogue: Path | None) -> tuple[str, ...]:
    if catalogue is None or not catalogue.exists():
        return ()
    from gateway.catalogue import CatalogueError, load_catalogue

    try:
        return tuple(load_catalogue(catalogue).services)
    except CatalogueError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8600, show_default=True)
@click.option("--operator-key", type=click.Path(path_type=Path), default="var/operator-key.pem", show_default=True,
              help="EC P-256 or Ed25519 private key (PEM); created if missing.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--insecure-http", is_flag=True,
              help="Serve plain HTTP (tests and demo only; refused unless --host is a loopback address).")
@click.option("--heartbeat", default=15.0, show_default=True, help="Feed heartbeat interval, seconds.")
@click.option("--catalogue", type=click.Path(path_type=Path), default="config/catalogue.toml", show_default=True)
@click.option("--send-timeout", type=click.FloatRange(min=0, min_open=True), default=SEND_TIMEOUT, show_default=True,
              help="Seconds a client may take nothing of its answer (a feed reader that stopped reading) before "
                   "its connection is dropped.")
@click.option("--max-connections", type=click.IntRange(min=1), default=MAX_CONNECTIONS, show_default=True,
              help="Client connections open at once; one more is closed as it arrives.")
@pass_target
def serve(target: Target, host: str, port: int, operator_key: Path, tls_cert: Path | None, tls_key: Path | None,
          insecure_http: bool, heartbeat: float, catalogue: Path, send_timeout: float, max_connections: int) -> None:
    """Run the register service: snapshot, change feed, public register page and operator console."""
    from aiohttp import web

    from trust.register_service.app import create_app
    from trust.register_service.server import serve as serve_app

    context: ssl.SSLContext | None = None
    if insecure_http:
        if not _loopback(host):
            raise click.UsageError("--insecure-http is only allowed on a loopback address")
    else:
        if tls_cert is None or tls_key is None:
            raise click.UsageError("serve over HTTPS needs --tls-cert and --tls-key (or --insecure-http on loopback)")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(tls_cert, tls_key)
    key = load_or_create(operator_key)
    services = _data_services(catalogue)

    async def application() -> web.Application:
        store = await RegisterStore.open(target.db)
        app = create_app(store, key, secure_cookies=not insecure_http, heartbeat=heartbeat, data_services=services)

        async def close_store(_: web.Application) -> None:
            await store.close()

        app.on_cleanup.append(close_store)
        return app

    scheme = "http" if insecure_http else "https"
    click.echo(f"register service on {scheme}://{host}:{port}/ (register: {target.db}, pid {os.getpid()})")
    async def main() -> None:
        await serve_app(await application(), host, port, send_timeout=send_timeout, max_connections=max_connections,
                        ssl_context=context)

    asyncio.run(main())
