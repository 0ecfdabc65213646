"""`edugate log ...`: export a school's records with proofs, and verify such an export offline.

edugate log export --config node.toml --school 104A158 [--since 2026-01-01] [--until ...] [-o export.json]
edugate log verify export.json --public-key log-public.pem
edugate log public-key --config node.toml          # the PEM a school verifies with
edugate log checkpoint --config node.toml          # sign the current tree now
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from connectors.logstore import open_log, signing_key_path
from connectors.logstore.base import GroupCommitLog
from connectors.logstore.export import build_export, verify_export
from gateway.config import ConfigError, load_config
from trust.checkpoint import load_or_create_signing_key, load_public_key, public_key_pem

T = TypeVar("T")


def _open(config_path: Path) -> GroupCommitLog:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    return open_log(config.log, state_dir=config.node.state_dir, node_oin=config.node.oin, checkpoint_interval=None)


def _with_log(config_path: Path, work: Callable[[GroupCommitLog], Awaitable[T]]) -> T:
    async def run() -> T:
        log = _open(config_path)
        await log.start()
        try:
            return await work(log)
        finally:
            await log.close()

    return asyncio.run(run())


def _moment(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value and value.tzinfo is None else value


config_option = click.option(
    "--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)


@click.group(name="log")
def cli() -> None:
    """The node's tamper-evident exchange log."""


@cli.command()
@config_option
@click.option("--school", help="the school's organisationMasterIdentifier")
@click.option("--party", "party_oin", help="a participant's OIN: the exchanges it took part in")
@click.option("--since", type=click.DateTime(), help="from this time (UTC), inclusive")
@click.option("--until", type=click.DateTime(), help="up to this time (UTC), exclusive")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="file (default: stdout)")
def export(
    config_path: Path,
    school: str | None,
    party_oin: str | None,
    since: datetime | None,
    until: datetime | None,
    output: Path | None,
) -> None:
    """Records with inclusion proofs, checkpoints and consistency proofs, as one JSON file."""
    if not school and not party_oin:
        raise click.UsageError("give --school or --party: an export is always about one school or participant")

    async def work(log: GroupCommitLog) -> dict[str, Any]:
        return await build_export(log, school=school, party_oin=party_oin, since=_moment(since), until=_moment(until))

    document = _with_log(config_path, work)
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    if output:
        output.write_text(text)
        click.echo(f"{len(document['records'])} records, {len(document['checkpoints'])} checkpoints -> {output}")
    else:
        sys.stdout.write(text)


@cli.command()
@click.argument("export_file", metavar="EXPORT", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--public-key",
    "public_key_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="the node's log public key (PEM)",
)
def verify(export_file: Path, public_key_file: Path) -> None:
    """Check every record's leaf and inclusion, each checkpoint's signature and consistency. Exit 1 on any failure."""
    try:
        key = load_public_key(public_key_file.read_bytes())
    except ValueError as exc:
        raise click.ClickException(f"{public_key_file}: not a usable public key: {exc}") from exc
    try:
        document = json.loads(export_file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{export_file}: not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise click.ClickException(f"{export_file}: not an export (expected a JSON object)")
    problems = verify_export(document, key)
    if problems:
        for problem in problems:
            click.echo(f"FAIL {problem}", err=True)
        click.echo(f"{export_file}: {len(problems)} problem(s)", err=True)
        sys.exit(1)
    click.echo(
        f"OK {export_file}: {len(document.get('records', []))} records proven in the tree of the latest checkpoint, "
        f"{len(document.get('checkpoints', []))} checkpoints signed and consistent"
    )


@cli.command("public-key")
@config_option
def public_key(config_path: Path) -> None:
    """Print the log's public key (PEM): what a school verifies exports with."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    key = load_or_create_signing_key(signing_key_path(config.log, config.node.state_dir))
    sys.stdout.write(public_key_pem(key).decode())


@cli.command()
@config_option
def checkpoint(config_path: Path) -> None:
    """Sign the log's current tree now and print the checkpoint."""

    async def work(log: GroupCommitLog) -> str:
        signed = await log.checkpoint()
        return f"tree_size={signed.tree_size} root_hash={signed.root_hash.hex()}\n{signed.jws}"

    click.echo(_with_log(config_path, work))
