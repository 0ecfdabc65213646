"""A complete federation on loopback: a development PKI, an operator-signed register, a dashboard that offers
the Progress API behind a gateway node, and participants to call it. Used by `edugate demo`, the tests and
the benchmark, so all three exercise the same real components (TLS, tokens, register, durable log).
"""

from __future__ import annotations

import ssl
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.samples.dashboard import RECEIVED, Received, create_dashboard
from connectors.samples.publisher import ParticipantClient
from gateway.activation import ProcessingAgreement
from gateway.app import Served, serve
from gateway.config import load_config
from gateway.node import Node, start_node
from gateway.outbound import OutboundServed, serve_outbound
from gateway.tls import client_context
from trust.oin import oin_for_kvk
from trust.pki import Issued, create_ca, issue_participant, issue_server
from trust.register import Client, Endpoints, Keurmerk, Participant, ParticipantStatus, RegisterDocument, Role
from trust.snapshot import sign_snapshot
from trust.tokens import public_jwk

_ROOT = Path(__file__).resolve().parents[2]  # the checkout: config/ lives there
SCHOOL = "104A158"  # a RIO OnderwijsaanbiederId
OTHER_SCHOOL = "30XY123"
SINCE = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Party:
    key: str
    name: str
    oin: str
    identity: Issued
    keurmerken: list[tuple[str, Role]]
    status: ParticipantStatus = ParticipantStatus.ACTIVE
    status_reason: str | None = None

    @property
    def client_id(self) -> str:
        return f"{self.key}-app"

    def participant(self) -> Participant:
        return Participant(
            oin=self.oin,
            name=self.name,
            kvk=self.oin[8:16],
            status=self.status,
            status_reason=self.status_reason,
            certificates=(self.identity.thumbprint,),
            clients=(Client(client_id=self.client_id, jwks={"keys": [public_jwk(self.identity.key, "cert")]}),),
            keurmerken=tuple(Keurmerk(data_service=s, role=r, valid_from=SINCE) for s, r in self.keurmerken),
        )


def _parties(ca: Issued) -> dict[str, Party]:
    def party(key: str, name: str, kvk: str, keurmerken: list[tuple[str, Role]], **kw: Any) -> Party:
        oin = oin_for_kvk(kvk)
        return Party(key, name, oin, issue_participant(ca, oin=oin, name=name), keurmerken, **kw)

    return {
        p.key: p
        for p in [
            party(
                "dashboard",
                "Leermiddelendashboard BV",
                "11111111",
                [
                    ("leermateriaalgebruik", Role.ONTVANGER),
                    ("resultaten", Role.ONTVANGER),
                    ("gebruiksoverzicht", Role.BRON),
                ],
            ),
            party(
                "publisher",
                "Uitgeverij De Polder",
                "22222222",
                [
                    ("leermateriaalgebruik", Role.VERZENDER),
                    ("resultaten", Role.VERZENDER),
                ],
            ),
            party("uncertified", "Uitgeverij Zonder Keurmerk", "33333333", [("resultaten", Role.VERZENDER)]),
            party(
                "suspended",
                "Uitgeverij Geschorst",
                "44444444",
                [("leermateriaalgebruik", Role.VERZENDER)],
                status=ParticipantStatus.SUSPENDED,
                status_reason="audit finding under review",
            ),
            party("reader", "Schooladministratie BV", "55555555", [("gebruiksoverzicht", Role.AFNEMER)]),
        ]
    }


@dataclass
class Federation:
    """Everything on disk under `directory`; `start()` runs the dashboard and its gateway node."""

    directory: Path
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    redis_url: str | None = None
    log_dsn: str | None = None
    max_staleness: float = 300.0
    body_timeout: float | None = None  # the node's [limits] body_timeout, where a test wants a short one
    send_timeout: float | None = None  # and its send_timeout
    max_connections: int | None = None  # and its max_connections
    replay_per_client: int | None = None  # the node's [redis] replay_per_client (with redis_url)
    max_export_records: int | None = None  # the node's [log] max_export_records
    ca: Issued = field(init=False)
    rogue_ca: Issued = field(init=False)
    parties: dict[str, Party] = field(init=False)
    operator_key: ec.EllipticCurvePrivateKey = field(init=False)
    register_path: Path = field(init=False)
    server_identity: Issued = field(init=False)
    serial: int = 0
    node: Node | None = None
    served: Served | None = None
    dashboard: web.AppRunner | None = None
    dashboard_port: int = 0
    clients: list[ParticipantClient] = field(default_factory=list)
    publisher_node: Node | None = None
    outbound: OutboundServed | None = None

    origin: Federation | None = None  # set for a sibling node of the same deployment
    redis_prefix: str = ""

    def __post_init__(self) -> None:
        self.directory = self.directory.resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.origin is not None:  # one deployment: same PKI, participants, operator, register file
            o = self.origin
            self.ca, self.rogue_ca, self.parties, self.operator_key = o.ca, o.rogue_ca, o.parties, o.operator_key
            self.redis_url, self.redis_prefix, self.log_dsn = o.redis_url, o.redis_prefix, o.log_dsn
            self.replay_per_client = o.replay_per_client
            self.register_path = o.register_path
        else:
            self.ca = create_ca("Edugate Development Root CA (stands in for PKIoverheid)")
            self.rogue_ca = create_ca("Unknown CA")
            self.parties = _parties(self.ca)
            self.operator_key = ec.generate_private_key(ec.SECP256R1())
            self.redis_prefix = self.redis_prefix or f"edugate-{uuid.uuid4().hex[:12]}"
            self.register_path = self.directory / "register.jws"
        (self.directory / "operator.pub.pem").write_bytes(
            self.operator_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self.server_identity = issue_server(self.ca, ("localhost", "127.0.0.1"))
        self.server_identity.write(self.directory, "node-server")
        self.parties["dashboard"].identity.write(self.directory, "node-client")
        if self.origin is None:
            self.publish()

    def sibling(self, directory: Path) -> Federation:
        """A second gateway node of the same deployment (same register, Redis and participants)."""
        return Federation(directory, clock=self.clock, max_staleness=self.max_staleness, origin=self)

    # --- the register --------------------------------------------------------------------------------------
    def document(self, participants: Iterable[Participant] | None = None) -> RegisterDocument:
        return RegisterDocument(
            serial=self.serial,
            issued_at=datetime.now(UTC),
            trusted_cas=(self.ca.cert_pem().decode(),),
            participants=tuple(
                participants if participants is not None else (p.participant() for p in self.parties.values())
            ),
        )

    def publish(self, participants: Iterable[Participant] | None = None) -> int:
        """Sign a new snapshot with the next serial and put it where the nodes read it."""
        if self.origin is not None:
            return self.origin.publish(participants)
        self.serial += 1
        self.register_path.write_text(sign_snapshot(self.document(participants), self.operator_key))
        return self.serial

    def participants_with(self, key: str, **changes: Any) -> list[Participant]:
        return [
            Participant.model_validate({**p.participant().model_dump(), **changes}) if p.key == key else p.participant()
            for p in self.parties.values()
        ]

    async def apply(self, participants: Iterable[Participant] | None = None) -> None:
        """Publish and make the node take it now (the file source also notices by itself on its next poll)."""
        self.publish(participants)
        assert self.node is not None
        await self.node.register_source.refresh()

    # --- the node --------------------------------------------------------------------------------------------
    def _limits(self) -> str:
        limits = {"body_timeout": self.body_timeout, "send_timeout": self.send_timeout,
                  "max_connections": self.max_connections}
        lines = [f"{key} = {value}" for key, value in limits.items() if value is not None]
        return "\n[limits]\n" + "\n".join(lines) + "\n" if lines else ""

    def write_config(self, upstream: str) -> Path:
        redis = f'\n[redis]\nurl = "{self.redis_url}"\nprefix = "{self.redis_prefix}"\n' if self.redis_url else ""
        if redis and self.replay_per_client is not None:
            redis += f"replay_per_client = {self.replay_per_client}\n"
        store = f'store = "postgresql"\ndsn = "{self.log_dsn}"' if self.log_dsn else 'store = "sqlite"'
        if self.max_export_records is not None:
            store += f"\nmax_export_records = {self.max_export_records}"
        root = Path(__file__).resolve().parents[2]
        config = (
            textwrap.dedent(f"""\
            catalogue = "{root / "config" / "catalogue.toml"}"
            purposes = "{root / "config" / "purposes.toml"}"

            [node]
            name = "dashboard-node"
            oin = "{self.parties["dashboard"].oin}"
            listen_host = "127.0.0.1"
            listen_port = 0
            public_url = "https://127.0.0.1:{{port}}"
            state_dir = "state"

            [tls]
            certificate = "node-server.pem"
            key = "node-server.key"
            client_certificate = "node-client.pem"
            client_key = "node-client.key"

            [register]
            source = "{self.register_path}"
            operator_key = "operator.pub.pem"
            max_staleness = {self.max_staleness}
            poll_interval = 1.0

            [log]
            {store}

            [upstreams]
            leermateriaalgebruik = "{upstream}"
            resultaten = "{upstream}"
            gebruiksoverzicht = "{upstream}"
            """)
            + redis
            + self._limits()
        )
        path = self.directory / "node.toml"
        path.write_text(config)
        return path

    async def start(self, *, port: int = 0, upstream: str | None = None) -> None:
        """Start the dashboard (unless `upstream` names one running elsewhere) and the gateway node."""
        if upstream is None:
            self.dashboard = web.AppRunner(create_dashboard(), access_log=None)
            await self.dashboard.setup()
            await web.TCPSite(self.dashboard, "127.0.0.1", 0).start()
            self.dashboard_port = int(self.dashboard.addresses[0][1])
            upstream = f"http://127.0.0.1:{self.dashboard_port}"
        path = self.write_config(upstream)
        if port == 0:
            port = _free_port()
        path.write_text(path.read_text().replace("{port}", str(port)))
        config = load_config(path)
        self.node = await start_node(config, clock=self.clock)
        self.served = await serve(self.node, port=port, ops_port=0, shutdown_timeout=5.0)

    @property
    def base_url(self) -> str:
        assert self.served is not None
        return f"https://127.0.0.1:{self.served.port}"

    @property
    def received(self) -> Received:
        assert self.dashboard is not None
        return self.dashboard.app[RECEIVED]

    def trust(self, identity: Issued | None) -> ssl.SSLContext:
        context = client_context(ca_pems=self.ca.cert_pem().decode())
        if identity is not None:
            context.load_cert_chain(*self._files(identity))
        return context

    def _files(self, identity: Issued) -> tuple[Path, Path]:
        stem = f"client-{identity.thumbprint[:16]}"
        cert, key = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        if not cert.exists():
            identity.write(self.directory, stem)
        return cert, key

    def client(self, key: str, *, identity: Issued | None = None, client_id: str | None = None) -> ParticipantClient:
        party = self.parties[key]
        client = ParticipantClient(
            base_url=self.base_url,
            client_id=client_id or party.client_id,
            identity=identity or party.identity,
            trust=self.trust(identity or party.identity),
            kid="cert",
        )
        self.clients.append(client)
        return client

    async def activate_demo_schools(self) -> None:
        """The schools' decisions: school 104A158 activates progress and results from the publisher and usage
        reports for the administration supplier; the other school only the latter."""
        assert self.node is not None
        agreement = ProcessingAgreement(reference="VWO-2026-0042", valid_from=SINCE)
        publisher, reader = self.parties["publisher"].oin, self.parties["reader"].oin
        for school, service, counterparty, purposes in [
            (SCHOOL, "leermateriaalgebruik", publisher, ("a", "b", "d", "j")),
            (SCHOOL, "resultaten", publisher, ("a", "b")),
            (SCHOOL, "gebruiksoverzicht", reader, ("d", "j")),
            (OTHER_SCHOOL, "gebruiksoverzicht", reader, ("j",)),
        ]:
            await self.node.activations.grant(
                school=school,
                data_service=service,
                counterparty=counterparty,
                purposes=purposes,
                valid_from=SINCE,
                processing_agreement=agreement,
            )

    def write_publisher_config(
        self, directory: Path, *, catalogue: Path | None = None, outbound: dict[str, str] | None = None
    ) -> Path:
        """The publisher node's config: its certificate, this federation's register, an [outbound] section
        (`outbound` adds or overrides its keys, as TOML values)."""
        publisher = self.parties["publisher"]
        cert, key = publisher.identity.write(directory, "publisher")
        settings = {"listen_port": "0", "client_id": f'"{publisher.client_id}"', "kid": '"cert"', **(outbound or {})}
        path = directory / "node.toml"
        path.write_text(
            textwrap.dedent(f"""\
            catalogue = "{catalogue or _ROOT / "config" / "catalogue.toml"}"
            purposes = "{_ROOT / "config" / "purposes.toml"}"

            [node]
            name = "publisher-node"
            oin = "{publisher.oin}"
            public_url = "https://127.0.0.1:1"
            state_dir = "state"

            [tls]
            certificate = "{cert}"
            key = "{key}"

            [register]
            source = "{self.register_path}"
            operator_key = "{self.directory / "operator.pub.pem"}"
            poll_interval = 1.0

            [outbound]
            """)
            + "".join(f"{name} = {value}\n" for name, value in settings.items())
        )
        return path

    async def start_publisher_node(self) -> str:
        """The publisher's own gateway node, on the sender side: the publisher's application pushes to it over
        loopback HTTP and it checks the school's activation (recorded here, at the source) before anything
        leaves, then calls the dashboard's node with its certificate and a token. Returns the URL for the app."""
        assert self.node is not None
        endpoints = Endpoints(token=f"{self.base_url}/oauth2/token", api=self.base_url)
        await self.apply(self.participants_with("dashboard", endpoints=endpoints))
        path = self.write_publisher_config(self.directory / "publisher-node")
        self.publisher_node = await start_node(load_config(path), clock=self.clock)
        self.outbound = await serve_outbound(self.publisher_node, port=0)
        agreement = ProcessingAgreement(reference="VWO-2026-0042", valid_from=SINCE)
        dashboard = self.parties["dashboard"].oin
        # School 1 activated progress to the dashboard; school 2 only results, so progress about it never leaves.
        for school, service in [(SCHOOL, "leermateriaalgebruik"), (OTHER_SCHOOL, "resultaten")]:
            await self.publisher_node.activations.grant(
                school=school,
                data_service=service,
                counterparty=dashboard,
                purposes=("a", "b", "d", "j"),
                valid_from=SINCE,
                processing_agreement=agreement,
            )
        return f"http://127.0.0.1:{self.outbound.port}"

    @asynccontextmanager
    async def running(self, *, upstream: str | None = None) -> AsyncIterator[Federation]:
        """Started (see `start`) with the demo schools' activations, and closed on leaving."""
        try:
            await self.start(upstream=upstream)
            await self.activate_demo_schools()
            yield self
        finally:
            await self.close()

    async def close(self) -> None:
        if self.outbound is not None:
            await self.outbound.close()
        if self.publisher_node is not None:
            await self.publisher_node.close()
        for client in self.clients:
            await client.close()
        if self.served is not None:
            await self.served.close()
        if self.dashboard is not None:
            await self.dashboard.cleanup()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assertion_from_files(key_path: str, client_id: str, audience: str) -> str:
    """A client assertion signed with the key in `key_path` (for trying the demo by hand with curl)."""
    from trust.tokens import make_client_assertion

    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return make_client_assertion(client_id=client_id, audience=audience, key=key, kid="cert")


def expired_identity(ca: Issued, party: Party) -> Issued:
    now = datetime.now(UTC)
    return issue_participant(
        ca, oin=party.oin, name=party.name, not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
