"""`edugate activation`: grant, list, revoke and school keys against the store the node config names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.activation.cli import cli
from tests.school.conftest import PUBLISHER, ROOT, SCHOOL


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(
        f"""
catalogue = "{ROOT / "config" / "catalogue.toml"}"
purposes = "{ROOT / "config" / "purposes.toml"}"
[node]
name = "dashboard"
oin = "00000003876543210000"
public_url = "https://dashboard.test"
state_dir = "state"
[tls]
certificate = "cert.pem"
key = "key.pem"
[register]
source = "register.json"
operator_key = "operator.pem"
"""
    )
    return path


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_grant_list_and_revoke_from_the_command_line(config: Path) -> None:
    granted = json.loads(
        run("grant", "-c", str(config), "--school", SCHOOL, "--counterparty", PUBLISHER, "--service",
            "leermateriaalgebruik", "--purpose", "a", "--agreement", "VO-7", "--agreement-from", "2026-01-01")
    )  # fmt: skip
    assert (granted["status"], granted["purposes"], granted["processingAgreement"]["reference"]) == (
        "active",
        ["a"],
        "VO-7",
    )
    assert (config.parent / "state" / "activations.sqlite").exists()
    listed = [json.loads(line) for line in run("list", "-c", str(config), "--school", SCHOOL).splitlines()]
    assert [entry["id"] for entry in listed] == [granted["id"]]
    revoked = json.loads(run("revoke", "-c", str(config), "--school", SCHOOL, granted["id"], "--reason", "ended"))
    assert revoked["status"] == "revoked"


def test_a_purpose_the_service_does_not_allow_is_refused_by_the_cli(config: Path) -> None:
    result = CliRunner().invoke(
        cli, ["grant", "-c", str(config), "--school", SCHOOL, "--counterparty", PUBLISHER, "--service",
              "leermateriaalgebruik", "--purpose", "t"],
    )  # fmt: skip
    assert result.exit_code != 0 and "not allowed" in result.output


def test_revoking_another_schools_activation_fails(config: Path) -> None:
    granted = json.loads(
        run("grant", "-c", str(config), "--school", SCHOOL, "--counterparty", PUBLISHER, "--service", "resultaten")
    )
    result = CliRunner().invoke(cli, ["revoke", "-c", str(config), "--school", "22XY001", granted["id"]])
    assert result.exit_code != 0 and "no activation" in result.output


def test_a_school_key_is_printed_once_listed_by_id_and_revocable(config: Path) -> None:
    key = run("key", "create", "-c", str(config), "--school", SCHOOL, "--label", "admin").strip()
    key_id, _, secret = key.partition(".")
    assert key_id and len(secret) >= 40
    listed = run("key", "list", "-c", str(config), "--school", SCHOOL)
    assert key_id in listed and "active" in listed and secret not in listed
    assert f"revoked {key_id}" in run("key", "revoke", "-c", str(config), key_id)
    assert "revoked" in run("key", "list", "-c", str(config), "--school", SCHOOL)
