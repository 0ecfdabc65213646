"""Node configuration: TOML, validated on load, with errors that name the file, the key and the problem."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trust.oin import parse_oin

# The catalogue and purposes that come with edugate (config/ in the source tree and the container image).
SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "config"


class ConfigError(ValueError):
    """A configuration file that cannot be used. The message names the file, the key and the problem."""


def read_toml(path: Path, error: type[ValueError]) -> dict[str, Any]:
    """A TOML file's top-level table, or `error` whose message names the file and the problem: unreadable, not
    UTF-8 (which TOML requires; the line of the first bad byte), or not TOML."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{path}: line {line}: not UTF-8 (a TOML file is UTF-8)") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from exc


def format_validation_error(path: Path, exc: Exception) -> str:
    if not isinstance(exc, ValidationError):
        return f"{path}: {exc}"
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {key}: {message}")
    return "\n".join(lines)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class NodeSection(_Section):
    name: str = Field(min_length=1)
    oin: str  # this node's own participant OIN
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(8443, ge=0, le=65535)
    public_url: str  # issuer of access tokens and audience of client assertions
    state_dir: Path = Path("var")

    _oin = field_validator("oin")(parse_oin)

    @field_validator("public_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL")
        return value.rstrip("/")


class TlsSection(_Section):
    certificate: Path  # the node's server certificate chain (PEM)
    key: Path
    client_certificate: Path | None = None  # for outbound calls and register pulls; defaults to the server's
    client_key: Path | None = None


class RegisterSection(_Section):
    source: str  # file path, or an https:// URL of the register service's snapshot
    operator_key: Path  # the pinned operator public key (PEM)
    max_staleness: float = Field(300.0, gt=0)
    poll_interval: float = Field(5.0, gt=0)
    feed: bool = True  # follow the register's change feed when the source is a URL
    ca_bundle: Path | None = None  # to verify the register service's TLS certificate


class TokenSection(_Section):
    signing_key: Path | None = None  # EC P-256 (ES256) or Ed25519 (EdDSA); generated in state_dir if absent
    lifetime: int = Field(300, gt=0, le=300)  # seconds; the Edu-V profile wants short-lived tokens
    assertion_max_lifetime: int = Field(300, gt=0, le=3600)
    leeway: int = Field(5, ge=0, le=60)


class LogSection(_Section):
    store: Literal["sqlite", "postgresql"] = "sqlite"
    path: Path | None = None  # SQLite file; defaults to <state_dir>/exchanges.sqlite
    dsn: str | None = None  # PostgreSQL
    signing_key: Path | None = None  # checkpoint key; generated in state_dir if absent
    retention_days: int | None = Field(None, gt=0)
    checkpoint_interval: float = Field(60.0, gt=0)
    student_key: Path | None = None  # the secret for keyed student hashes; generated if absent
    # Records one export (log API, portal) carries: it is built in memory, so a longer period is asked for in parts.
    max_export_records: int = Field(50_000, gt=0)

    @model_validator(mode="after")
    def _dsn_for_postgresql(self) -> LogSection:
        if self.store == "postgresql" and not self.dsn:
            raise ValueError("store = 'postgresql' needs a dsn")
        return self


class RedisSection(_Section):
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "edugate"
    # Live client-assertion jtis one client may hold in Redis at once (the in-process cache keeps a twentieth of
    # its 100,000): past it the client is refused until its assertions expire, and cannot fill Redis for the others.
    replay_per_client: int = Field(5_000, gt=0)


class LimitsSection(_Section):
    max_header_bytes: int = Field(8190, gt=0)
    max_body_bytes: int = Field(1 << 20, gt=0)
    upstream_timeout: float = Field(10.0, gt=0)
    # A request body that stops arriving for this long is refused (408): on the exchange port between two of its
    # packets, on the node's API in all. Without it one client could hold a connection and an exchange forever.
    body_timeout: float = Field(30.0, gt=0)
    # A client that takes nothing of an answer for this long loses the connection (the exchange port; nginx's
    # send_timeout): one that stopped reading would otherwise hold it, and the exchange writing to it, for ever.
    send_timeout: float = Field(60.0, gt=0)
    # Client connections open at once on the exchange port; one more is closed as it arrives, so that clients cannot
    # take the descriptors the node needs for its log, its upstreams and its register.
    max_connections: int = Field(1024, gt=0)
    upstream_connections: int = Field(100, gt=0)


class ActivationSection(_Section):
    """Where this node keeps activations (consent) and school credentials."""

    store: Literal["sqlite", "postgresql"] = "sqlite"
    path: Path | None = None  # SQLite file; defaults to <state_dir>/activations.sqlite
    dsn: str | None = None  # PostgreSQL

    @model_validator(mode="after")
    def _dsn_for_postgresql(self) -> ActivationSection:
        if self.store == "postgresql" and not self.dsn:
            raise ValueError("store = 'postgresql' needs a dsn")
        return self


class OutboundSection(_Section):
    """The sender side: this participant's applications call the node over plain HTTP on loopback (or an internal
    network listed in `allowed_networks`), and the node calls receivers with its client certificate."""

    listen_host: str = "127.0.0.1"
    listen_port: int = Field(8080, ge=0, le=65535)
    client_id: str = Field(min_length=1)  # this participant's client (in the register) for token requests
    kid: str | None = None  # the key id in the client's registered JWKS, if it names one
    allowed_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    token_margin: float = Field(30.0, ge=0)  # renew a cached token this many seconds before it expires

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for network in value:
            ipaddress.ip_network(network)  # ValueError names the bad one
        return value


class PseudonymSection(_Section):
    # The node's secret for per-recipient pseudonyms (32+ random bytes); generated in state_dir if absent.
    key: Path | None = None


class OidcProviderSection(_Section):
    """A school's own OpenID Connect identity provider for the portal."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")  # in the callback path: /portal/oidc/<name>/callback
    title: str = ""  # on the login button; defaults to the name
    issuer: str
    metadata_url: str | None = None  # defaults to <issuer>/.well-known/openid-configuration
    client_id: str = Field(min_length=1)
    client_secret: str | None = None
    client_secret_file: Path | None = None
    scopes: str = "openid email profile"
    # The claim that names the school. Its value is the school's organisationMasterIdentifier, or a key of
    # `school_map` when that is given (claim value -> organisationMasterIdentifier).
    school_claim: str = "organisationMasterIdentifier"
    school_map: dict[str, str] = Field(default_factory=dict)
    # The schools this provider may speak for: a login for any other school is refused (fails closed).
    schools: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_secret(self) -> OidcProviderSection:
        if (self.client_secret is None) == (self.client_secret_file is None):
            raise ValueError("give exactly one of client_secret and client_secret_file")
        return self


class PortalSection(_Section):
    """The school portal: local accounts, OpenID Connect providers, sessions."""

    enabled: bool = True
    accounts: Path | None = None  # SQLite file of local accounts; defaults to <state_dir>/portal-accounts.sqlite
    session_lifetime: int = Field(8 * 3600, gt=0)  # seconds
    max_failed_logins: int = Field(5, gt=0)  # consecutive failures before an account is locked
    lockout_minutes: float = Field(15.0, gt=0)
    oidc: tuple[OidcProviderSection, ...] = ()


class NodeConfig(_Section):
    node: NodeSection
    tls: TlsSection
    registry: RegisterSection = Field(alias="register")  # `register` would shadow a BaseModel attribute
    token: TokenSection = TokenSection()
    log: LogSection = LogSection()
    redis: RedisSection | None = None  # absent: in-process replay cache, fan-out and invalidation
    limits: LimitsSection = LimitsSection()
    activation: ActivationSection = ActivationSection()
    pseudonyms: PseudonymSection = PseudonymSection()
    outbound: OutboundSection | None = None  # absent: this node only receives
    portal: PortalSection = PortalSection()
    catalogue: Path = SHIPPED_CONFIG / "catalogue.toml"  # a relative path set in the file is taken from its folder
    purposes: Path = SHIPPED_CONFIG / "purposes.toml"
    # data service name -> base URL of the API this node offers for it
    upstreams: dict[str, str] = Field(default_factory=dict)

    @field_validator("upstreams")
    @classmethod
    def _upstream_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"upstream for {name!r} must be an http(s) URL, got {url!r}")
        return value


def load_config(path: Path) -> NodeConfig:
    """Load and validate a node configuration. Relative paths are taken from the file's own folder."""
    raw = read_toml(path, ConfigError)
    try:
        config = NodeConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from exc
    return resolve_paths(config, path.parent)


def resolve_paths(config: NodeConfig, base: Path) -> NodeConfig:
    """Make every relative path in the config relative to `base` (the config file's folder)."""

    def fix(model: BaseModel) -> BaseModel:
        updates: dict[str, object] = {}
        for name, value in model:
            if isinstance(value, Path) and not value.is_absolute():
                updates[name] = (base / value).resolve()
            elif isinstance(value, BaseModel):
                updates[name] = fix(value)
            elif isinstance(value, tuple) and any(isinstance(item, BaseModel) for item in value):
                updates[name] = tuple(fix(item) if isinstance(item, BaseModel) else item for item in value)
        return model.model_copy(update=updates)

    fixed = fix(config)
    assert isinstance(fixed, NodeConfig)
    source = fixed.registry.source
    if not source.startswith(("https://", "http://")) and not Path(source).is_absolute():
        fixed = fixed.model_copy(
            update={"registry": fixed.registry.model_copy(update={"source": str((base / source).resolve())})}
        )
    return fixed
