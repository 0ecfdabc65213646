"""Activation (consent): which school allows which data service to which counterparty, for which purposes.

`open_activations` gives the node its store; `gateway.activation.api.add_consent_routes` serves the consent API;
`gateway.activation.cli` manages activations and school keys from the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.activation.backend import Backend, PostgresBackend, SqliteBackend
from gateway.activation.freshness import Freshness, NoCache, RedisFreshness, SqliteFreshness
from gateway.activation.model import Activation, ActivationStatus, ProcessingAgreement, decide
from gateway.activation.store import ActivationError, ActivationStore, InvalidActivation, NotFoundError, VersionRead

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.config import NodeConfig

__all__ = [
    "Activation", "ActivationError", "ActivationStatus", "ActivationStore", "InvalidActivation", "NotFoundError",
    "ProcessingAgreement", "VersionRead",
    "decide", "open_activations",
]  # fmt: skip


async def open_activations(config: NodeConfig, *, redis: Redis | None) -> ActivationStore:
    """The node's activation store, as its config says; with Redis, caches of every node sharing the prefix are
    dropped together on each change."""
    section = config.activation
    backend: Backend
    if section.store == "postgresql":
        assert section.dsn is not None
        backend = await PostgresBackend.open(section.dsn)
    else:
        backend = await SqliteBackend.open(section.path or config.node.state_dir / "activations.sqlite")
    freshness: Freshness
    if redis is not None:
        prefix = config.redis.prefix if config.redis else "edugate"
        freshness = RedisFreshness(redis, prefix)
    elif isinstance(backend, SqliteBackend):
        freshness = SqliteFreshness(backend)
    else:
        freshness = NoCache()
    return ActivationStore(backend, freshness)
