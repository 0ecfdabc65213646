"""A gateway node: everything one node needs to decide, log and forward, built from its configuration."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio as redis_asyncio
import structlog

from connectors.logstore import LogOpenFailed, open_log
from connectors.logstore.base import ExchangeLog
from connectors.logstore.students import StudentHasher
from connectors.register_source import RegisterSource
from connectors.replay import InProcessReplayCache, RedisReplayCache, ReplayCache
from gateway.activation import ActivationStore, open_activations
from gateway.catalogue import Catalogue, CatalogueError, Direction, load_catalogue
from gateway.checks.attributes import filter_response
from gateway.checks.route import Routes
from gateway.config import ConfigError, NodeConfig
from gateway.metrics import Metrics
from gateway.pseudonyms import Pseudonyms, load_pseudonyms
from gateway.purposes import Purposes, PurposesError, load_purposes
from gateway.tls import client_context
from gateway.token_endpoint import TOKEN_PATH
from gateway.upstream import UpstreamPool
from trust.certificates import ClientCertificateVerifier
from trust.jwks import JwksFetcher
from trust.keys import key_id, load_or_create_key
from trust.register import RegisterHolder
from trust.snapshot import load_public_key
from trust.tokens import AccessTokenIssuer, ClientAssertionVerifier

if TYPE_CHECKING:
    from gateway.exchange import Exchange

T = TypeVar("T")
log = structlog.get_logger("edugate.node")

ResponseFilter = Callable[["Node", "Exchange", bytes], Awaitable[bytes]]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Node:
    config: NodeConfig
    catalogue: Catalogue
    routes: Routes
    registers: RegisterHolder
    register_source: RegisterSource
    certificates: ClientCertificateVerifier
    tokens: AccessTokenIssuer
    assertions: ClientAssertionVerifier
    replay: ReplayCache
    log: ExchangeLog
    students: StudentHasher
    activations: ActivationStore
    purposes: Purposes
    pseudonyms: Pseudonyms | None
    upstream: UpstreamPool
    metrics: Metrics
    redis: redis_asyncio.Redis | None = None
    clock: Callable[[], datetime] = _utcnow
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def oin(self) -> str:
        return self.config.node.oin

    @property
    def token_endpoint(self) -> str:
        return self.config.node.public_url + TOKEN_PATH

    def ready(self) -> tuple[bool, list[str]]:
        problems = []
        if self.registers.register is None:
            problems.append("no verified register")
        elif not self.registers.fresh():
            problems.append(f"register is {self.registers.age():.0f} s old (max {self.registers.max_staleness:.0f} s)")
        if not self.log.writable():
            problems.append("exchange log not writable")
        return not problems, problems

    def response_filter(self, x: Exchange) -> ResponseFilter | None:
        """Pull services with an attribute allowlist have their answers cut before they reach the caller."""
        if x.service is not None and x.service.direction is Direction.PULL and x.service.attributes:
            return filter_response
        return None

    async def close(self) -> None:
        await self.register_source.close()
        await self.assertions.close()
        await self.upstream.close()
        await self.activations.close()
        await self.log.close()
        if self.redis is not None:
            await self.redis.aclose()


async def start_node(config: NodeConfig, *, clock: Callable[[], datetime] = _utcnow) -> Node:
    """Build and start a node: load the catalogue, the first register, the log; nothing listens yet.
    A file the configuration names that is missing or unusable raises ConfigError naming it."""
    try:
        return await _start_node(config, clock)
    except (CatalogueError, PurposesError) as exc:
        raise ConfigError(str(exc)) from exc
    except OSError as exc:
        raise ConfigError(f"{exc.filename or 'a file named in the configuration'}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"a key or certificate named in the configuration is unusable: {exc}") from exc


def _usable(key: str, path: Path, load: Callable[[Path], T]) -> T:
    """`load(path)`, or ConfigError naming the configuration `key`, the file and the problem."""
    try:
        return load(path)
    except OSError as exc:  # ssl.SSLError too
        raise ConfigError(f"{key} = {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{key} = {path}: cannot be used: {exc}") from exc


def _check_client_pair(certificate: Path, key: Path) -> None:
    """The client certificate and key load and belong together (checked at start, not at the first call)."""
    try:
        ssl.create_default_context().load_cert_chain(certificate, key)
    except OSError as exc:  # ssl.SSLError too
        problem = exc.strerror or exc
        raise ConfigError(f"[tls] client_certificate = {certificate}, client_key = {key}: {problem}") from exc


async def _start_node(config: NodeConfig, clock: Callable[[], datetime]) -> Node:
    catalogue = load_catalogue(config.catalogue)
    unknown = sorted(set(config.upstreams) - set(catalogue.services))
    if unknown:
        raise ConfigError(
            f"upstreams: data service(s) {', '.join(unknown)} are not in the catalogue {config.catalogue}"
        )
    state = config.node.state_dir
    state.mkdir(parents=True, exist_ok=True)

    redis = redis_asyncio.from_url(config.redis.url) if config.redis else None
    prefix = config.redis.prefix if config.redis else "edugate"
    replay: ReplayCache = (
        RedisReplayCache(redis, prefix=prefix, max_per_owner=config.redis.replay_per_client)
        if redis is not None and config.redis is not None
        else InProcessReplayCache()
    )

    registers = RegisterHolder(max_staleness=config.registry.max_staleness)
    tls = config.tls
    if tls.client_certificate is not None or tls.client_key is not None:
        _check_client_pair(tls.client_certificate or tls.certificate, tls.client_key or tls.key)
    register_ssl = (
        client_context(
            cafile=config.registry.ca_bundle,
            certificate=tls.client_certificate or tls.certificate,
            key=tls.client_key or tls.key,
        )
        if config.registry.source.startswith("https://")
        else None
    )
    source = RegisterSource(
        registers,
        source=config.registry.source,
        operator_key=_usable(
            "[register] operator_key", config.registry.operator_key, lambda path: load_public_key(path.read_bytes())
        ),
        poll_interval=config.registry.poll_interval,
        feed=config.registry.feed,
        ssl=register_ssl,
        redis=redis,
        redis_prefix=prefix,
    )

    signing_key = _usable("[token] signing_key", config.token.signing_key or state / "token-signing.key",
                          load_or_create_key)
    tokens = AccessTokenIssuer(
        issuer=config.node.public_url,
        audience=config.node.public_url,
        key=signing_key,
        kid=key_id(signing_key),
        lifetime=config.token.lifetime,
        leeway=config.token.leeway,
    )
    assertions = ClientAssertionVerifier(
        audience=config.node.public_url + TOKEN_PATH,
        replay=replay,
        max_lifetime=config.token.assertion_max_lifetime,
        leeway=config.token.leeway,
        jwks=JwksFetcher(),
    )
    exchange_log = open_log(config.log, state_dir=state, node_oin=config.node.oin)
    try:
        await exchange_log.start()
    except LogOpenFailed as exc:
        raise ConfigError(f"log: the exchange log cannot be opened for writing: {exc}") from exc
    upstream = UpstreamPool(
        limit=config.limits.upstream_connections, timeout=config.limits.upstream_timeout, keepalive=30.0
    )
    node = Node(
        config=config,
        catalogue=catalogue,
        routes=Routes(catalogue, config.upstreams),
        registers=registers,
        register_source=source,
        certificates=ClientCertificateVerifier(),
        tokens=tokens,
        assertions=assertions,
        replay=replay,
        log=exchange_log,
        students=StudentHasher.load_or_create(config.log.student_key or state / "student-hash.key"),
        activations=await open_activations(config, redis=redis),
        purposes=load_purposes(config.purposes),
        pseudonyms=load_pseudonyms(config),
        upstream=upstream,
        metrics=Metrics(),
        redis=redis,
        clock=clock,
    )
    node.metrics.bind(
        register_age=lambda: min(registers.age(), 1e9),
        register_serial=lambda: float(registers.serial),
        log_writable=lambda: 1.0 if exchange_log.writable() else 0.0,
    )
    await source.start()
    log.info("node started", node=config.node.name, oin=config.node.oin, register_serial=registers.serial)
    return node
