"""Configuration is validated on load, and every error names the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.samples.federation import Federation
from gateway.catalogue import CatalogueError, load_catalogue
from gateway.config import ConfigError, load_config

MINIMAL = """
[node]
name = "n"
oin = "00000003111111110000"
public_url = "https://127.0.0.1:8443"

[tls]
certificate = "server.pem"
key = "server.key"

[register]
source = "register.jws"
operator_key = "operator.pem"
"""


def write(tmp_path: Path, text: str, name: str = "node.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_minimal_config_loads_with_paths_relative_to_the_file(tmp_path: Path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.tls.certificate == tmp_path / "server.pem"
    assert config.registry.source == str(tmp_path / "register.jws")
    assert config.token.lifetime == 300 and config.registry.max_staleness == 300


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('oin = "00000003111111110000"', 'oin = "12345"'), "node.oin: an OIN is exactly 20 digits"),
        (
            ('public_url = "https://127.0.0.1:8443"', 'public_url = "http://x"'),
            "node.public_url: must be an https:// URL",
        ),
        (("[register]", "[register]\nmax_staleness = -1"), "register.max_staleness: Input should be greater than 0"),
        (("[tls]", "[tls]\ncolour = 'blue'"), "tls.colour: Extra inputs are not permitted"),
        (("[node]", "[token]\nlifetime = 3600\n[node]"), "token.lifetime: Input should be less than or equal to 300"),
        (("[node]", "[log]\nstore = 'postgresql'\n[node]"), "log: store = 'postgresql' needs a dsn"),
        (("[node]", "[upstreams]\nx = 'ftp://a'\n[node]"), "must be an http(s) URL"),
    ],
)
def test_a_bad_value_is_reported_with_file_key_and_problem(tmp_path: Path, change: tuple[str, str], expected: str):
    path = write(tmp_path, MINIMAL.replace(*change, 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and expected in message


def test_a_missing_section_is_named(tmp_path: Path):
    path = write(tmp_path, MINIMAL.split("[register]")[0])
    with pytest.raises(ConfigError, match=r"node.toml: register: Field required"):
        load_config(path)


def test_broken_toml_and_missing_files_are_reported_plainly(tmp_path: Path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[node\nname="))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_the_shipped_catalogue_is_valid_and_routes_are_versioned():
    catalogue = load_catalogue(Path(__file__).resolve().parents[2] / "config" / "catalogue.toml")
    assert {"leermateriaalgebruik", "resultaten", "gebruiksoverzicht"} <= set(catalogue.services)
    for service in catalogue.services.values():
        assert all(route.path.startswith("/v1/") for route in service.routes)


def test_a_catalogue_route_claimed_by_two_services_is_refused(tmp_path: Path):
    text = (Path(__file__).resolve().parents[2] / "config" / "catalogue.toml").read_text()
    text = text.replace(
        'routes = [{ method = "POST", path = "/v1/results" }]',
        'routes = [{ method = "PUT", path = "/v1/progress/{id}" }]',
    )
    with pytest.raises(CatalogueError, match=r"catalogue.toml: .*route PUT /v1/progress/\{id\} is in both"):
        load_catalogue(write(tmp_path, text, "catalogue.toml"))


def test_paths_inside_listed_sections_are_relative_to_the_file_too(tmp_path: Path):
    text = MINIMAL + """
[[portal.oidc]]
name = "school-idp"
issuer = "https://idp.example"
client_id = "portal"
client_secret_file = "secrets/idp"
school_claim = "org"
schools = ["104A158"]
"""
    config = load_config(write(tmp_path, text))
    assert config.portal.oidc[0].client_secret_file == tmp_path / "secrets" / "idp"


async def test_a_file_the_config_names_that_is_missing_stops_the_node_with_its_name(tmp_path: Path):
    from gateway.node import start_node

    config = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(ConfigError, match=r"operator\.pem: No such file"):
        await start_node(config)


async def test_a_broken_catalogue_stops_the_node_naming_the_catalogue_key_and_problem(tmp_path: Path):
    from gateway.node import start_node

    shipped = (Path(__file__).resolve().parents[2] / "config" / "catalogue.toml").read_text()
    write(tmp_path, shipped.replace('data_class = "IV"', 'data_class = "V"', 1), "catalogue.toml")
    config = load_config(write(tmp_path, 'catalogue = "catalogue.toml"\n' + MINIMAL))
    expected = r"catalogue\.toml: services\.leermateriaalgebruik\.data_class: Input should be"
    with pytest.raises(ConfigError, match=expected):
        await start_node(config)


def test_the_shipped_catalogue_is_the_default_wherever_the_config_lives(tmp_path: Path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.catalogue.is_file() and config.purposes.is_file()


async def test_a_second_node_on_a_log_file_another_node_writes_stops_with_the_log_named(
    federation: Federation, monkeypatch: pytest.MonkeyPatch
):
    from connectors.logstore import sqlite_writer
    from gateway.node import start_node

    monkeypatch.setattr(sqlite_writer, "LOCK_WAIT", 0.3)
    assert federation.node is not None
    with pytest.raises(ConfigError, match=r"log: the exchange log cannot be opened for writing: .*exchanges\.sqlite"):
        await start_node(federation.node.config)


@pytest.mark.parametrize("name", ["node.toml", "catalogue.toml", "purposes.toml"])
def test_a_file_that_is_not_utf_8_is_refused_with_its_name_and_line(tmp_path: Path, name: str):
    from gateway.catalogue import load_catalogue
    from gateway.purposes import PurposesError, load_purposes

    load = {"node.toml": load_config, "catalogue.toml": load_catalogue, "purposes.toml": load_purposes}[name]
    error = {"node.toml": ConfigError, "catalogue.toml": CatalogueError, "purposes.toml": PurposesError}[name]
    path = tmp_path / name
    path.write_bytes(b'# a comment\nname = "caf\xe9"\n')  # Latin-1, as an editor on another system may save it
    with pytest.raises(error, match=rf"{name}: line 2: not UTF-8 \(a TOML file is UTF-8\)"):
        load(path)


async def test_an_unusable_operator_key_stops_the_node_naming_the_key_and_file(tmp_path: Path):
    from gateway.node import start_node

    (tmp_path / "operator.pem").write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    config = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(ConfigError, match=r"\[register\] operator_key = .*operator\.pem: cannot be used: "):
        await start_node(config)


async def test_a_client_certificate_that_does_not_load_stops_the_node_at_start_not_at_its_first_use(tmp_path: Path):
    from gateway.node import start_node

    (tmp_path / "client.pem").write_bytes(b"garbage")
    (tmp_path / "client.key").write_bytes(b"garbage")
    pair = 'client_certificate = "client.pem"\nclient_key = "client.key"'
    text = MINIMAL.replace('key = "server.key"', f'key = "server.key"\n{pair}')
    config = load_config(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"\[tls\] client_certificate = .*client\.pem, client_key = .*client\.key: "):
        await start_node(config)


async def test_an_unusable_token_signing_key_stops_the_node_naming_the_key_and_file(tmp_path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from gateway.node import start_node

    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "operator.pem").write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "signing.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    config = load_config(write(tmp_path, MINIMAL + '\n[token]\nsigning_key = "signing.key"\n'))
    with pytest.raises(ConfigError, match=r"\[token\] signing_key = .*signing\.key: cannot be used: "):
        await start_node(config)
