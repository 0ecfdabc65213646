"""`edugate register ...`: every operation from the command line, on SQLite and PostgreSQL, and `serve`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner, Result
from register_fixtures import OIN_DASHBOARD, OIN_PUBLISHER
from test_register_source import wait_until

from connectors.register_source import RegisterSource
from tests.databases import postgres_database
from trust.pki import Issued, create_ca, issue_participant
from trust.register import RegisterHolder
from trust.register_service.cli import cli
from trust.snapshot import load_public_key

CLI = [sys.executable, "-c", "from trust.register_service.cli import cli; cli()"]


def run(db: str, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(cli, ["--db", db, "--actor", "alice", *args], input=input, env=env)
    return result


def ok(db: str, *args: str, **kwargs: object) -> str:
    result = run(db, *args, **kwargs)  # type: ignore[arg-type]
    assert result.exit_code == 0, f"{args}: {result.output}{result.exception!r}"
    return result.output


def operate_a_register(db: str, tmp_path: Path, pki: Issued) -> None:
    """Every operator operation, once."""
    cert = tmp_path / "noord.pem"
    cert.write_bytes(issue_participant(pki, oin=OIN_PUBLISHER, name="Uitgeverij Noord").cert_pem())
    new_cert = tmp_path / "noord-2026.pem"
    new_issued = issue_participant(pki, oin=OIN_PUBLISHER, name="Uitgeverij Noord")
    new_cert.write_bytes(new_issued.cert_pem())
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.cert_pem())
    jwks = tmp_path / "jwks.json"
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    jwks.write_text(json.dumps({"keys": [ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(),
                                                            as_dict=True)]}))

    ok(db, "participant", "add", OIN_PUBLISHER, "--name", "Uitgeverij Noord", "--kvk", "11111111", "--status",
       "intake")
    ok(db, "participant", "status", OIN_PUBLISHER, "active")
    ok(db, "participant", "add", OIN_DASHBOARD, "--name", "Dashboard Zuid", "--status", "active")
    ok(db, "participant", "update", OIN_DASHBOARD, "--contact", "privacy@zuid.example", "--api-endpoint",
       "https://zuid.example/v1")
    ok(db, "certificate", "add", OIN_PUBLISHER, str(cert))
    thumbprint = ok(db, "certificate", "list", OIN_PUBLISHER).split()[0]
    ok(db, "certificate", "rotate", "--", OIN_PUBLISHER, thumbprint, str(new_cert))  # one in 64 begins with '-'
    ok(db, "client", "add", OIN_PUBLISHER, "noord-lms", "--jwks", str(jwks))
    ok(db, "client", "rotate-keys", "noord-lms", "--jwks-uri", "https://noord.example/jwks")
    ok(db, "client", "add", OIN_DASHBOARD, "zuid-dashboard", "--jwks-uri", "https://zuid.example/jwks")
    ok(db, "client", "remove", "zuid-dashboard")
    ok(db, "keurmerk", "grant", OIN_PUBLISHER, "leermateriaalgebruik", "verzender", "--valid-until",
       "2030-01-01T00:00:00Z")
    ok(db, "keurmerk", "grant", OIN_PUBLISHER, "resultaten", "verzender")
    ok(db, "keurmerk", "suspend", OIN_PUBLISHER, "resultaten", "verzender", "--reason", "audit")
    ok(db, "keurmerk", "reinstate", OIN_PUBLISHER, "resultaten", "verzender")
    ok(db, "keurmerk", "revoke", OIN_PUBLISHER, "resultaten", "verzender", "--reason", "breach")
    ok(db, "keurmerk", "grant", OIN_DASHBOARD, "leermateriaalgebruik", "ontvanger")
    ok(db, "participant", "suspend", OIN_DASHBOARD, "--reason", "datalek")
    ok(db, "participant", "reactivate", OIN_DASHBOARD)
    ok(db, "participant", "withdraw", OIN_DASHBOARD, "--effective", "2030-06-01T00:00:00+02:00", "--reason",
       "stopt met de dienst")
    ok(db, "ca", "add", str(ca))
    ok(db, "catalogue-version", "2026.1")
    ok(db, "operator", "add", "bob", "--role", "admin", env={"EDUGATE_OPERATOR_PASSWORD": "a long enough secret"})


def round_trip(db: str, tmp_path: Path, pki: Issued) -> None:
    operate_a_register(db, tmp_path, pki)

    listing = ok(db, "participant", "list")
    assert f"{OIN_DASHBOARD}  active       Dashboard Zuid withdraws 2030-05-31T22:00:00+00:00" in listing
    assert "resultaten/verzender:revoked" in listing
    shown = json.loads(ok(db, "participant", "show", OIN_PUBLISHER))
    assert shown["clients"] == [{"client_id": "noord-lms", "jwks_uri": "https://noord.example/jwks"}]
    assert len(shown["certificates"]) == 1
    history = ok(db, "history", "--limit", "100")
    assert history.count(" alice ") >= 20
    assert "create operator  operator:bob" in history
    entries = [json.loads(line) for line in ok(db, "history", "--json", "--subject",
                                               f"participant:{OIN_DASHBOARD}").splitlines()]
    assert entries[0]["action"] == "schedule withdrawal"
    assert entries[0]["before"]["status"] == "active" and entries[0]["after"]["withdrawal_reason"]

    exported = tmp_path / "export.json"
    ok(db, "export", str(exported))
    copy = str(tmp_path / "copy.sqlite")
    imported = ok(copy, "import", str(exported))
    assert int(imported.split()[-1]) > json.loads(exported.read_text())["serial"]
    again = tmp_path / "again.json"
    ok(copy, "export", str(again))
    assert json.loads(again.read_text())["register"]["participants"] == \
        json.loads(exported.read_text())["register"]["participants"]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_every_operation_round_trips_through_export_and_import(
        backend: str, tmp_path: Path, pki: Issued) -> None:
    async with contextlib.AsyncExitStack() as stack:
        if backend == "postgresql":
            db = await stack.enter_async_context(postgres_database())
        else:
            db = str(tmp_path / "register.sqlite")
        await asyncio.to_thread(round_trip, db, tmp_path, pki)  # the CLI runs its own event loop


def test_a_refused_operation_exits_non_zero_and_says_why(tmp_path: Path) -> None:
    db = str(tmp_path / "register.sqlite")
    result = run(db, "participant", "suspend", OIN_PUBLISHER, "--reason", "x")
    assert result.exit_code == 1 and f"no participant with OIN {OIN_PUBLISHER}" in result.output
    result = run(db, "participant", "add", "12345", "--name", "Kort")
    assert result.exit_code == 1 and "exactly 20 digits" in result.output
    ok(db, "participant", "add", OIN_PUBLISHER, "--name", "Uitgeverij Noord")
    result = run(db, "participant", "withdraw", OIN_PUBLISHER, "--effective", "yesterday", "--reason", "x")
    assert result.exit_code == 2 and "not a date and time" in result.output


def test_a_thumbprint_that_begins_with_a_dash_is_an_argument_after_double_dash(tmp_path: Path) -> None:
    db = str(tmp_path / "register.sqlite")
    ok(db, "participant", "add", OIN_PUBLISHER, "--name", "Uitgeverij Noord")
    result = run(db, "certificate", "remove", "--", OIN_PUBLISHER, "-msUTAt9fcdqDDSPrm6MixsFDprzXA0w-L_UbMgxxxE")
    assert result.exit_code == 1
    assert f"participant {OIN_PUBLISHER} has no certificate -msUTAt9fcdqDDSPrm6MixsFDprzXA0w-L_UbMgxxxE" \
        in result.output
    assert "'--'" in run(db, "certificate", "remove", "--help").output


def test_serve_insists_on_https_except_on_loopback_with_an_explicit_flag(tmp_path: Path) -> None:
    db = str(tmp_path / "register.sqlite")
    result = run(db, "serve", "--operator-key", str(tmp_path / "k.pem"))
    assert result.exit_code == 2 and "--tls-cert" in result.output
    result = run(db, "serve", "--insecure-http", "--host", "192.0.2.10", "--operator-key", str(tmp_path / "k.pem"))
    assert result.exit_code == 2 and "loopback" in result.output


@pytest.mark.parametrize(("option", "value"), [("--send-timeout", "0"), ("--send-timeout", "-5"),
                                               ("--send-timeout", "soon"), ("--max-connections", "0"),
                                               ("--max-connections", "1.5")])
def test_serve_refuses_a_limit_that_is_not_a_positive_number_naming_the_option(tmp_path: Path, option: str,
                                                                               value: str) -> None:
    result = run(str(tmp_path / "register.sqlite"), "serve", "--insecure-http", option, value,
                 "--operator-key", str(tmp_path / "k.pem"))
    assert result.exit_code == 2 and f"'{option}'" in result.output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_change_made_with_the_cli_reaches_a_node_following_the_served_register(tmp_path: Path) -> None:
    """Two processes, as in production: `serve` over HTTPS, and an operator's CLI on the same database."""
    ca = create_ca("register service TLS CA")
    from trust.pki import issue_server

    cert, key = issue_server(ca, ("127.0.0.1",)).write(tmp_path, "tls")
    db, operator_key, port = str(tmp_path / "register.sqlite"), tmp_path / "operator.pem", _free_port()
    await asyncio.to_thread(ok, db, "participant", "add", OIN_PUBLISHER, "--name", "Uitgeverij Noord", "--status",
                            "active")
    pinned = load_public_key((await asyncio.to_thread(ok, db, "public-key", "--operator-key", str(operator_key)))
                             .encode())

    server = await asyncio.create_subprocess_exec(
        *CLI, "--db", db, "serve", "--port", str(port), "--operator-key", str(operator_key), "--tls-cert", str(cert),
        "--tls-key", str(key), "--heartbeat", "1", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    context = ssl.create_default_context(cadata=ca.cert_pem().decode())
    holder = RegisterHolder(max_staleness=30)
    source = RegisterSource(holder, source=f"https://127.0.0.1:{port}", operator_key=pinned, poll_interval=60,
                            ssl=context, max_backoff=0.2)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"https://127.0.0.1:{port}/health", ssl=context) as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        await source.start()
        await wait_until(lambda: source.state.feed_connected and holder.serial == 2)

        start = time.perf_counter()
        change = await asyncio.create_subprocess_exec(
            *CLI, "--db", db, "--actor", "alice", "participant", "suspend", OIN_PUBLISHER, "--reason", "breach",
            stdout=asyncio.subprocess.PIPE)
        output, _ = await change.communicate()
        assert output.decode().strip() == "register serial 3"
        after_cli = await wait_until(lambda: holder.serial == 3, within=2.0)
        print(f"\nCLI change reached the node {after_cli * 1000:.0f} ms after the CLI exited "
              f"({(time.perf_counter() - start):.2f} s including CLI start-up)")
    finally:
        await source.close()
        server.terminate()
        await server.wait()
