"""Exports checked offline: a sound export verifies; every kind of tampering is named precisely."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ed25519

from connectors.logstore import open_log
from connectors.logstore.base import GroupCommitLog
from connectors.logstore.cli import cli
from connectors.logstore.export import build_export, verify_export
from gateway.config import LogSection
from tests.logstore.samples import NODE, OTHER_SCHOOL, SCHOOL, record
from trust.checkpoint import public_key_pem


async def filled(log: GroupCommitLog) -> dict[str, Any]:
    """A log with three checkpoints along the way and records of two schools; the export of SCHOOL."""
    for i in range(5):
        await log.append(record(records=i))
        await log.append(record(school=OTHER_SCHOOL))
    await log.checkpoint()
    for _ in range(7):
        await log.append(record(decision="denied"))
    await log.checkpoint()
    await log.append(record())
    return await build_export(log, school=SCHOOL)


async def test_a_sound_export_verifies(log: GroupCommitLog) -> None:
    export = await filled(log)
    assert [r["record"]["school"] for r in export["records"]] == [SCHOOL] * 13
    assert len(export["checkpoints"]) == 3
    assert [(c["size1"], c["size2"]) for c in export["consistency"]] == [(10, 17), (17, 18)]
    assert verify_export(json.loads(json.dumps(export)), log.signing_key.public_key()) == []


async def test_an_altered_record_is_named(log: GroupCommitLog) -> None:
    export = await filled(log)
    export["records"][5]["record"]["decision"] = "allowed"
    problems = verify_export(export, log.signing_key.public_key())
    exchange = export["records"][5]["record"]["exchange_id"]
    assert len(problems) == 2
    assert problems[0] == (
        f"record 5 (leaf {export['records'][5]['index']}, exchange {exchange}): content does not match its leaf hash"
        " (altered record or leaf hash)"
    )
    assert "not proven in the tree of the latest checkpoint" in problems[1]


async def test_a_record_forged_together_with_its_leaf_hash_fails_inclusion(log: GroupCommitLog) -> None:
    from connectors.logstore.leaf import record_leaf_hash

    export = await filled(log)
    entry = export["records"][0]
    entry["record"]["reason"] = "nothing to see"
    entry["leaf_hash"] = record_leaf_hash(entry["record"]).hex()
    (problem,) = verify_export(export, log.signing_key.public_key())
    assert problem.startswith("record 0 ") and "not proven" in problem


@pytest.mark.parametrize("element", [0, -1])
async def test_a_changed_inclusion_proof_is_named(log: GroupCommitLog, element: int) -> None:
    export = await filled(log)
    proof = export["records"][3]["inclusion_proof"]
    proof[element] = ("00" if proof[element][:2] != "00" else "11") + proof[element][2:]
    (problem,) = verify_export(export, log.signing_key.public_key())
    assert problem.startswith("record 3 ") and "inclusion proof does not lead to the root hash" in problem


async def test_a_moved_record_is_named(log: GroupCommitLog) -> None:
    export = await filled(log)
    export["records"][2]["index"] += 1
    (problem,) = verify_export(export, log.signing_key.public_key())
    assert problem.startswith("record 2 ")


async def test_another_key_fails_every_checkpoint(log: GroupCommitLog) -> None:
    export = await filled(log)
    problems = verify_export(export, ed25519.Ed25519PrivateKey.generate().public_key())
    assert problems[:3] == [
        f"checkpoint {n}: signature does not verify with the given public key: Signature verification failed"
        for n in range(3)
    ]
    assert problems[-1] == "records: the latest checkpoint does not verify, so no record can be checked"


async def test_a_missing_or_broken_consistency_proof_is_named(log: GroupCommitLog) -> None:
    export = await filled(log)
    broken = copy.deepcopy(export)
    broken["consistency"][0]["proof"][0] = "ff" * 32
    assert verify_export(broken, log.signing_key.public_key())[0].startswith(
        "checkpoints 0 -> 1 (tree sizes 10 -> 17): consistency proof fails"
    )
    del export["consistency"][1]
    assert verify_export(export, log.signing_key.public_key()) == [
        "checkpoints 1 -> 2 (tree sizes 17 -> 18): no consistency proof in the export"
    ]


async def test_a_checkpoint_of_a_rewritten_history_is_inconsistent(open_test_log: Any, tmp_path: Path) -> None:
    """A node that rewrites its log and signs the new tree cannot prove it extends what it signed before."""
    log = open_test_log()
    await log.start()
    export = await filled(log)
    await log.close()
    # the same node key (state_dir/log-signing.key), a different history
    forked_section = LogSection(store="sqlite", path=tmp_path / "forked.sqlite")
    fork = open_log(forked_section, state_dir=tmp_path, node_oin=NODE, checkpoint_interval=None)
    await fork.start()
    for _ in range(18):
        await fork.append(record())
    rewritten = await fork.checkpoint()
    await fork.close()
    export["checkpoints"][-1] = rewritten.jws
    problems = verify_export(export, log.signing_key.public_key())
    assert any(p.startswith("checkpoints 1 -> 2 (tree sizes 17 -> 18): consistency proof fails") for p in problems)
    assert all("not proven" in p for p in problems if p.startswith("record"))


async def test_records_of_another_school_in_a_school_export_are_named(log: GroupCommitLog) -> None:
    export = await filled(log)
    other = await build_export(log, school=OTHER_SCHOOL)
    export["records"].append(other["records"][0])
    export["checkpoints"], export["consistency"] = other["checkpoints"], other["consistency"]
    problems = verify_export(export, log.signing_key.public_key())
    assert problems == [
        f"record 13 (leaf 1, exchange {other['records'][0]['record']['exchange_id']}): belongs to "
        f"school {OTHER_SCHOOL!r}, not {SCHOOL!r}"
    ]


# --- the command line -------------------------------------------------------------------------------


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "node.toml"
    config.write_text(
        f"""
[node]
name = "test node"
oin = "{NODE}"
public_url = "https://127.0.0.1:8443"
state_dir = "state"

[tls]
certificate = "server.pem"
key = "server.key"

[register]
source = "register.jws"
operator_key = "operator.pem"

[log]
store = "sqlite"
"""
    )
    return config


def test_export_then_verify_on_the_command_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    async def fill() -> None:
        log = open_log(LogSection(), state_dir=tmp_path / "state", node_oin=NODE, checkpoint_interval=None)
        await log.start()
        await filled(log)
        await log.close()

    asyncio.run(fill())
    runner = CliRunner()
    key = runner.invoke(cli, ["public-key", "--config", str(config)])
    assert key.exit_code == 0, key.output
    (tmp_path / "log.pem").write_text(key.output)

    exported = runner.invoke(
        cli, ["export", "--config", str(config), "--school", SCHOOL, "-o", str(tmp_path / "x.json")]
    )
    assert exported.exit_code == 0, exported.output
    verified = runner.invoke(cli, ["verify", str(tmp_path / "x.json"), "--public-key", str(tmp_path / "log.pem")])
    assert verified.exit_code == 0, verified.output
    assert verified.output.startswith("OK ")
    assert "13 records proven" in verified.output

    document = json.loads((tmp_path / "x.json").read_text())
    document["records"][0]["record"]["data_service"] = "iets anders"
    (tmp_path / "x.json").write_text(json.dumps(document))
    failed = runner.invoke(cli, ["verify", str(tmp_path / "x.json"), "--public-key", str(tmp_path / "log.pem")])
    assert failed.exit_code == 1
    assert "FAIL record 0 (leaf 0," in failed.output
    assert "content does not match its leaf hash" in failed.output


def test_an_export_needs_a_school_or_a_participant(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["export", "--config", str(write_config(tmp_path))])
    assert result.exit_code == 2
    assert "--school or --party" in result.output


def test_verify_refuses_a_file_that_is_not_json(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{not json")
    (tmp_path / "k.pem").write_bytes(public_key_pem(ed25519.Ed25519PrivateKey.generate()))
    result = CliRunner().invoke(cli, ["verify", str(tmp_path / "x.json"), "--public-key", str(tmp_path / "k.pem")])
    assert result.exit_code == 1
    assert "not valid JSON" in result.output
