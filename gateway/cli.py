"""The `edugate` command: run a node, the demo federation, and the tools of each part (pki, register, log, ...)."""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import signal
import ssl
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
import structlog

T = TypeVar("T")

# Sub-command groups live beside the code they operate; they are imported only when used.
_GROUPS = {
    "pki": ("trust.pki", "cli", "Development PKI: a local CA and participant/server certificates."),
    "register": ("trust.register_service.cli", "cli", "The register service and its operator tooling."),
    "log": ("connectors.logstore.cli", "cli", "The exchange log: export and offline verification."),
    "activation": ("gateway.activation.cli", "cli", "Activations (consent) per school and counterparty."),
    "portal": ("gateway.portal.cli", "cli", "The school portal: accounts and serving."),
}


class _Lazy(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_GROUPS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in _GROUPS:
            module, attribute, _ = _GROUPS[name]
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, name)


def configure_logging(level: str = "info", json: bool = True) -> None:
    """Structured logs: one JSON object a line, with the exchange id where there is one."""
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


@click.group(cls=_Lazy)
def main() -> None:
    """edugate: a federated data-exchange gateway for Dutch education (Edu-V)."""


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The node's TOML configuration.",
)
@click.option("--ops-port", type=int, default=None, help="Plain-HTTP loopback port for /metrics, /healthz, /readyz.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def serve(config_path: Path, ops_port: int | None, log_level: str) -> None:
    """Run a gateway node until SIGTERM/SIGINT, then finish in-flight exchanges and stop."""
    from gateway.app import serve as serve_node
    from gateway.config import ConfigError, load_config
    from gateway.node import start_node

    configure_logging(log_level)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc

    async def run() -> None:
        try:
            node = await start_node(config)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        try:
            served = await serve_node(node, ops_port=ops_port)
        except (OSError, ssl.SSLError) as exc:  # the TLS files, or the port
            await node.close()
            raise click.ClickException(
                f"{config_path}: cannot listen with [tls] certificate={config.tls.certificate} key={config.tls.key} "
                f"on {config.node.listen_host}:{config.node.listen_port}: {exc}"
            ) from exc
        sender = None
        if config.outbound is not None:  # this participant's applications send through the node too
            from gateway.outbound import serve_outbound

            sender = await serve_outbound(node)
            click.echo(f"sender side for applications on http://{config.outbound.listen_host}:{sender.port}", err=True)
        settle_heap()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        click.echo(
            f"edugate node {config.node.name} listening on https://{config.node.listen_host}:{served.port}", err=True
        )
        await stop.wait()
        if sender is not None:
            await sender.close()
        await served.close()

    run_loop(run())


def settle_heap() -> None:
    """Once the node serves: what start-up built (modules, register, catalogue, keys) lives as long as the process,
    so it is frozen out of the cyclic collector's scans; and the youngest generation is collected after 50,000
    allocations rather than 700, since each exchange makes a few thousand short-lived objects that reference
    counting frees anyway."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """uvloop where it is installed: the same asyncio, with a faster event loop and TLS transport."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


@main.command()
@click.option(
    "--directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("var/demo"),
    help="Where the demo federation keeps its PKI, register and log.",
)
@click.option("--port", type=int, default=8443, help="The gateway node's port on 127.0.0.1.")
@click.option("--once", is_flag=True, help="Run the scenario, print the table, and stop.")
def demo(directory: Path, port: int, once: bool) -> None:
    """Run the demo federation on loopback: allowed exchanges and the denials a gateway must make."""
    from gateway.demo import run_demo

    configure_logging("warning", json=False)
    run_loop(run_demo(directory, port=port, keep_serving=not once))
