"""`edugate activation ...`: activations and school API keys, from the command line of a node's host.

Every command opens the store the node config names (and its Redis, so that running nodes drop their caches at
once). Examples:

    edugate activation key create -c node.toml --school 104A158 --label "application administrator"
    edugate activation grant -c node.toml --school 104A158 --counterparty 00000003123456780000 \\
        --service leermateriaalgebruik --purpose a --purpose d --agreement VO-2026-1 --agreement-from 2026-01-01
    edugate activation list -c node.toml --school 104A158
    edugate activation revoke -c node.toml --school 104A158 <id> --reason "contract ended"
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import redis.asyncio as redis_asyncio

from gateway.activation import ActivationError, ActivationStore, ProcessingAgreement, open_activations
from gateway.activation.api import status_document
from gateway.catalogue import load_catalogue
from gateway.config import ConfigError, NodeConfig, load_config

T = TypeVar("T")

config_option = click.option(
    "-c", "--config", "config_path", required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The node's configuration (TOML).",
)  # fmt: skip


def _run(config_path: Path, work: Callable[[ActivationStore, NodeConfig], Awaitable[T]]) -> T:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc

    async def main() -> T:
        redis = redis_asyncio.from_url(config.redis.url) if config.redis else None
        store = await open_activations(config, redis=redis)
        try:
            return await work(store, config)
        except ActivationError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            await store.close()
            if redis is not None:
                await redis.aclose()

    return asyncio.run(main())


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO date or RFC 3339 time", param_hint=name) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _echo(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, ensure_ascii=False))


@click.group()
def cli() -> None:
    """Activations (consent) per school and counterparty, and the schools' API keys."""


@cli.command()
@config_option
@click.option("--school", required=True, help="organisationMasterIdentifier (RIO), e.g. 104A158.")
@click.option("--counterparty", required=True, help="The OIN of the other participant.")
@click.option("--service", "data_service", required=True, help="The data service (catalogue name).")
@click.option(
    "--purpose", "purposes", multiple=True, help="Covenant art. 5.2 code; repeat. Default: all the service allows."
)
@click.option("--from", "valid_from", help="Start (ISO date/time, UTC if no offset). Default: now.")
@click.option("--until", "valid_until", help="End (ISO date/time). Default: open.")
@click.option("--agreement", help="Reference of the processing agreement (needed for class IV data).")
@click.option("--agreement-from", help="Start of the processing agreement.")
@click.option("--agreement-until", help="End of the processing agreement.")
def grant(
    config_path: Path,
    school: str,
    counterparty: str,
    data_service: str,
    purposes: tuple[str, ...],
    valid_from: str | None,
    valid_until: str | None,
    agreement: str | None,
    agreement_from: str | None,
    agreement_until: str | None,
) -> None:
    """Activate a data service between a school and a counterparty."""

    async def work(store: ActivationStore, config: NodeConfig) -> None:
        service = load_catalogue(config.catalogue).services.get(data_service)
        if service is None:
            raise click.ClickException(f"{data_service!r} is not a data service in {config.catalogue}")
        outside = sorted(set(purposes) - set(service.purposes))
        if outside:
            raise click.ClickException(f"purpose(s) {', '.join(outside)} are not allowed for {data_service!r}")
        if service.data_class == "IV" and agreement is None:
            click.echo(
                f"warning: {data_service!r} carries class IV data; without --agreement it stays refused", err=True
            )
        processing = None
        if agreement is not None:
            processing = ProcessingAgreement(
                reference=agreement,
                valid_from=_time(agreement_from, "--agreement-from") or datetime.now(UTC),
                valid_until=_time(agreement_until, "--agreement-until"),
            )
        created = await store.grant(
            school=school, data_service=data_service, counterparty=counterparty,
            purposes=purposes or service.purposes, valid_from=_time(valid_from, "--from"),
            valid_until=_time(valid_until, "--until"), processing_agreement=processing,
        )  # fmt: skip
        _echo(status_document(created, datetime.now(UTC)))

    _run(config_path, work)


@cli.command(name="list")
@config_option
@click.option("--school", help="Only this school's activations.")
@click.option("--counterparty", help="Only those naming this OIN.")
@click.option("--service", "data_service", help="Only this data service.")
def list_(config_path: Path, school: str | None, counterparty: str | None, data_service: str | None) -> None:
    """Activations as JSON lines, oldest change first."""

    async def work(store: ActivationStore, config: NodeConfig) -> None:
        now = datetime.now(UTC)
        for activation in await store.find(school=school, counterparty=counterparty, data_service=data_service):
            _echo(status_document(activation, now))

    _run(config_path, work)


@cli.command()
@config_option
@click.option("--school", required=True, help="The school the activation belongs to.")
@click.argument("activation_id")
@click.option("--purpose", "purposes", multiple=True, help="Narrow the requested purposes to these.")
def confirm(config_path: Path, school: str, activation_id: str, purposes: tuple[str, ...]) -> None:
    """Confirm a requested activation on the school's behalf."""

    async def work(store: ActivationStore, config: NodeConfig) -> None:
        changed = await store.confirm(activation_id, school=school, purposes=purposes or None)
        _echo(status_document(changed, datetime.now(UTC)))

    _run(config_path, work)


@cli.command()
@config_option
@click.option("--school", required=True, help="The school the activation belongs to.")
@click.argument("activation_id")
@click.option("--until", "valid_until", required=True, help="The end (ISO date/time).")
def end(config_path: Path, school: str, activation_id: str, valid_until: str) -> None:
    """Set the end of an activation."""

    async def work(store: ActivationStore, config: NodeConfig) -> None:
        until = _time(valid_until, "--until")
        assert until is not None
        _echo(status_document(await store.end(activation_id, school=school, valid_until=until), datetime.now(UTC)))

    _run(config_path, work)


@cli.command()
@config_option
@click.option("--school", required=True, help="The school the activation belongs to.")
@click.argument("activation_id")
@click.option("--reason", help="Why (shown to the counterparty in its status).")
def revoke(config_path: Path, school: str, activation_id: str, reason: str | None) -> None:
    """Revoke an activation: the next exchange under it is refused on every node."""

    async def work(store: ActivationStore, config: NodeConfig) -> None:
        _echo(status_document(await store.revoke(activation_id, school=school, reason=reason), datetime.now(UTC)))

    _run(config_path, work)


@cli.group()
def key() -> None:
    """A school's API keys for the consent API."""


@key.command(name="create")
@config_option
@click.option("--school", required=True, help="organisationMasterIdentifier of the school.")
@click.option("--label", default="", help="Who or what holds the key.")
def key_create(config_path: Path, school: str, label: str) -> None:
    """Make a key; it is printed once and only its argon2 hash is kept."""

    async def work(store: ActivationStore, config: NodeConfig) -> str:
        return await store.create_school_key(school, label)

    click.echo(_run(config_path, work))


@key.command(name="list")
@config_option
@click.option("--school", required=True)
def key_list(config_path: Path, school: str) -> None:
    """The school's keys (ids and labels; secrets are never stored)."""

    async def work(store: ActivationStore, config: NodeConfig) -> None:
        for entry in await store.school_keys(school):
            state = f"revoked {entry.revoked_at.isoformat()}" if entry.revoked_at else "active"
            click.echo(f"{entry.key_id}\t{entry.created_at.isoformat()}\t{state}\t{entry.label}")

    _run(config_path, work)


@key.command(name="revoke")
@config_option
@click.argument("key_id")
def key_revoke(config_path: Path, key_id: str) -> None:
    """Revoke a key: it stops working at once."""

    async def work(store: ActivationStore, config: NodeConfig) -> bool:
        return await store.revoke_school_key(key_id)

    if not _run(config_path, work):
        raise click.ClickException(f"no active key {key_id!r}")
    click.echo(f"revoked {key_id}")
