"""`edugate portal ...`: the school portal's local accounts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from gateway.config import ConfigError, load_config
from gateway.portal.accounts import AccountError, SchoolAccounts

_config = click.option(
    "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True,
    envvar="EDUGATE_CONFIG", help="The node's TOML configuration (its [portal] section says where accounts live).",
)


def _accounts(config_path: Path) -> SchoolAccounts:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    from datetime import timedelta

    section = config.portal
    return SchoolAccounts(
        section.accounts or config.node.state_dir / "portal-accounts.sqlite",
        max_failed=section.max_failed_logins,
        lockout=timedelta(minutes=section.lockout_minutes),
    )


def _password(password_file: Path | None) -> str:
    if password_file is not None:
        return password_file.read_text().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@click.group(name="portal")
def cli() -> None:
    """The school portal: accounts for school users."""


@cli.command("add-user")
@_config
@click.option("--school", required=True, help="The school's organisationMasterIdentifier, e.g. 104A158.")
@click.option("--email", required=True, help="The user's e-mail address (the login name).")
@click.option("--password-file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Read the password from this file instead of prompting.")
def add_user(config_path: Path, school: str, email: str, password_file: Path | None) -> None:
    """Create a local account that sees only SCHOOL's records."""
    try:
        account = asyncio.run(_accounts(config_path).add(school=school, email=email, password=_password(password_file)))
    except AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"account {account.email} created for school {account.school}")


@cli.command("set-password")
@_config
@click.option("--email", required=True)
@click.option("--password-file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def set_password(config_path: Path, email: str, password_file: Path | None) -> None:
    """Set a new password (also lifts a lockout)."""
    try:
        asyncio.run(_accounts(config_path).set_password(email, _password(password_file)))
    except AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"password of {email} changed")


@cli.command("unlock")
@_config
@click.option("--email", required=True)
def unlock(config_path: Path, email: str) -> None:
    """Lift a lockout after failed logins."""
    try:
        asyncio.run(_accounts(config_path).unlock(email))
    except AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{email} unlocked")


@cli.command("remove-user")
@_config
@click.option("--email", required=True)
def remove_user(config_path: Path, email: str) -> None:
    try:
        asyncio.run(_accounts(config_path).remove(email))
    except AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{email} removed")


@cli.command("list-users")
@_config
@click.option("--school", default=None)
def list_users(config_path: Path, school: str | None) -> None:
    for account in asyncio.run(_accounts(config_path).list(school)):
        locked = f"  locked until {account.locked_until.isoformat()}" if account.locked_until else ""
        click.echo(f"{account.school}\t{account.email}{locked}")
