"""The operator's register store, on SQLite and on PostgreSQL: serials, history, and what it refuses."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from register_fixtures import OIN_DASHBOARD, OIN_PUBLISHER, Clock, seed

from trust.pki import Issued, create_ca, issue_participant
from trust.register import KeurmerkStatus, ParticipantStatus, Role
from trust.register_service.store import RegisterChangeRefused, RegisterStore


async def test_every_change_bumps_the_serial_and_records_who_what_before_and_after(store: RegisterStore) -> None:
    start = await store.serial()
    await store.add_participant(OIN_PUBLISHER, "Uitgeverij Noord", status=ParticipantStatus.ACTIVE, actor="alice")
    serial = await store.set_participant_status(OIN_PUBLISHER, ParticipantStatus.SUSPENDED, reason="audit overdue",
                                                actor="bob")

    assert serial == start + 2 == await store.serial()
    latest = (await store.history(limit=1))[0]
    assert (latest.serial, latest.actor, latest.action, latest.subject) == (
        serial, "bob", "set status suspended", f"participant:{OIN_PUBLISHER}")
    assert latest.before["status"] == "active"
    assert latest.after["status"] == "suspended"
    assert latest.after["status_reason"] == "audit overdue"
    document = await store.register()
    assert document.serial == serial
    assert document.participants[0].status is ParticipantStatus.SUSPENDED


async def test_a_refused_change_leaves_serial_register_and_history_untouched(
        store: RegisterStore, pki: Issued) -> None:
    await seed(store)
    serial, history = await store.serial(), await store.history()
    other = issue_participant(pki, oin=OIN_DASHBOARD, name="Dashboard Zuid").cert_pem().decode()

    with pytest.raises(RegisterChangeRefused, match="does not carry the participant's OIN"):
        await store.add_certificate(OIN_PUBLISHER, other, actor="alice")
    with pytest.raises(RegisterChangeRefused, match="no participant"):
        await store.set_participant_status("00000003999999990000", ParticipantStatus.ACTIVE, actor="alice")
    with pytest.raises(RegisterChangeRefused, match="already registered"):
        await store.add_participant(OIN_PUBLISHER, "Twice", actor="alice")

    assert await store.serial() == serial
    assert await store.history() == history


async def test_certificates_are_registered_as_pem_and_published_as_thumbprints(
        store: RegisterStore, pki: Issued) -> None:
    await seed(store)
    first = issue_participant(pki, oin=OIN_PUBLISHER, name="Uitgeverij Noord")
    second = issue_participant(pki, oin=OIN_PUBLISHER, name="Uitgeverij Noord")
    await store.add_certificate(OIN_PUBLISHER, first.cert_pem().decode(), actor="alice")
    serial = await store.rotate_certificate(OIN_PUBLISHER, first.thumbprint, second.cert_pem().decode(),
                                            actor="alice")

    participant = await store.participant(OIN_PUBLISHER)
    assert participant is not None
    assert participant.certificates == (second.thumbprint,)
    records = await store.certificates(OIN_PUBLISHER)
    assert [r.thumbprint for r in records] == [second.thumbprint]
    assert "Uitgeverij Noord" in records[0].subject
    entry = (await store.history(limit=1))[0]
    assert entry.serial == serial
    assert entry.before["certificates"] == [first.thumbprint]
    assert entry.after["certificates"] == [second.thumbprint]

    await store.remove_certificate(OIN_PUBLISHER, second.thumbprint, actor="alice")
    assert (await store.participant(OIN_PUBLISHER)).certificates == ()  # type: ignore[union-attr]


async def test_client_keys_must_be_public_and_a_jwks_uri_https(store: RegisterStore) -> None:
    await seed(store)
    key = ec.generate_private_key(ec.SECP256R1())
    import jwt

    private_jwk = jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True)
    public_jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)

    with pytest.raises(RegisterChangeRefused, match="private key material"):
        await store.add_client(OIN_PUBLISHER, "noord-lms", jwks={"keys": [private_jwk]}, actor="alice")
    with pytest.raises(RegisterChangeRefused, match="https"):
        await store.add_client(OIN_PUBLISHER, "noord-lms", jwks_uri="http://keys.example/jwks", actor="alice")

    await store.add_client(OIN_PUBLISHER, "noord-lms", jwks={"keys": [public_jwk]}, actor="alice")
    await store.rotate_client_keys("noord-lms", jwks_uri="https://keys.noord.example/jwks", actor="alice")
    participant = await store.participant(OIN_PUBLISHER)
    assert participant is not None
    assert [(c.client_id, c.jwks, c.jwks_uri) for c in participant.clients] == [
        ("noord-lms", None, "https://keys.noord.example/jwks")]
    await store.remove_client("noord-lms", actor="alice")
    assert (await store.participant(OIN_PUBLISHER)).clients == ()  # type: ignore[union-attr]


async def test_keurmerken_are_granted_suspended_revoked_and_reinstated_per_service_and_role(
        store: RegisterStore, clock: Clock) -> None:
    await seed(store)
    now = clock()
    participant = await store.participant(OIN_PUBLISHER)
    assert participant is not None and participant.holds("leermateriaalgebruik", Role.VERZENDER, now)

    await store.set_keurmerk_status(OIN_PUBLISHER, "leermateriaalgebruik", Role.VERZENDER, KeurmerkStatus.SUSPENDED,
                                    reason="complaint under review", actor="alice")
    assert not (await store.participant(OIN_PUBLISHER)).holds(  # type: ignore[union-attr]
        "leermateriaalgebruik", Role.VERZENDER, now)
    await store.set_keurmerk_status(OIN_PUBLISHER, "leermateriaalgebruik", Role.VERZENDER, KeurmerkStatus.ACTIVE,
                                    actor="alice")
    assert (await store.participant(OIN_PUBLISHER)).holds(  # type: ignore[union-attr]
        "leermateriaalgebruik", Role.VERZENDER, now)
    await store.set_keurmerk_status(OIN_PUBLISHER, "leermateriaalgebruik", Role.VERZENDER, KeurmerkStatus.REVOKED,
                                    reason="breach of covenant", actor="alice")
    assert (await store.participant(OIN_PUBLISHER)).data_services(Role.VERZENDER, now) == set()  # type: ignore[union-attr]
    assert await store.keurmerk_reasons(OIN_PUBLISHER) == {
        ("leermateriaalgebruik", "verzender"): "breach of covenant"}

    with pytest.raises(RegisterChangeRefused, match="reason"):
        await store.set_keurmerk_status(OIN_PUBLISHER, "leermateriaalgebruik", Role.VERZENDER,
                                        KeurmerkStatus.SUSPENDED, actor="alice")
    with pytest.raises(RegisterChangeRefused, match="holds no keurmerk"):
        await store.set_keurmerk_status(OIN_PUBLISHER, "resultaten", Role.VERZENDER, KeurmerkStatus.REVOKED,
                                        reason="x", actor="alice")


async def test_a_scheduled_withdrawal_needs_a_future_date_and_bites_at_that_moment_by_itself(
        store: RegisterStore, clock: Clock) -> None:
    await seed(store)
    clock.freeze()
    effective = clock() + timedelta(days=30)

    with pytest.raises(RegisterChangeRefused, match="future"):
        await store.schedule_withdrawal(OIN_PUBLISHER, clock() - timedelta(seconds=1), "too late", actor="alice")
    await store.schedule_withdrawal(OIN_PUBLISHER, effective, "faillissement", actor="alice")

    participant = await store.participant(OIN_PUBLISHER)
    assert participant is not None
    assert participant.refusal(effective - timedelta(seconds=1)) is None
    assert "withdrew" in (participant.refusal(effective) or "")

    await store.cancel_withdrawal(OIN_PUBLISHER, actor="alice")
    assert (await store.participant(OIN_PUBLISHER)).refusal(effective) is None  # type: ignore[union-attr]


async def test_trusted_cas_must_be_ca_certificates(store: RegisterStore, pki: Issued, publisher_pem: str) -> None:
    root = create_ca("PKIoverheid stand-in root")
    with pytest.raises(RegisterChangeRefused, match="not a CA"):
        await store.add_trusted_ca(publisher_pem, actor="alice")
    await store.add_trusted_ca(pki.cert_pem().decode(), actor="alice")
    await store.add_trusted_ca(root.cert_pem().decode(), actor="alice")
    assert len((await store.register()).trusted_cas) == 2

    await store.remove_trusted_ca(root.thumbprint, actor="alice")
    document = await store.register()
    assert document.trusted_cas == (pki.cert_pem().decode(),)
    entry = (await store.history(limit=1))[0]
    assert entry.subject == f"ca:{root.thumbprint}" and entry.after is None
    assert "PKIoverheid stand-in root" in entry.before["subject"]


async def test_export_and_import_rebuild_the_register_with_a_serial_that_only_moves_forward(
        store: RegisterStore, tmp_path: pytest.TempPathFactory, publisher_pem: str, pki: Issued) -> None:
    await seed(store, publisher_pem)
    await store.add_trusted_ca(pki.cert_pem().decode(), actor="alice")
    await store.set_keurmerk_status(OIN_DASHBOARD, "leermateriaalgebruik", Role.ONTVANGER, KeurmerkStatus.SUSPENDED,
                                    reason="pending audit", actor="alice")
    exported = await store.export()

    fresh = await RegisterStore.open(tmp_path / "fresh.sqlite")  # type: ignore[operator]
    try:
        serial = await fresh.import_register(exported, actor="migration")
        assert serial > exported["serial"]  # nodes that followed the old register accept the new one
        original, copy = await store.register(), await fresh.register()
        assert copy.participants == original.participants
        assert copy.trusted_cas == original.trusted_cas
        assert await fresh.keurmerk_reasons(OIN_DASHBOARD) == await store.keurmerk_reasons(OIN_DASHBOARD)
        with pytest.raises(RegisterChangeRefused, match="export"):
            await fresh.import_register({"participants": []}, actor="migration")
    finally:
        await fresh.close()


async def test_concurrent_changes_get_distinct_consecutive_serials(store: RegisterStore) -> None:
    start = await store.serial()
    oins = [f"0000000312345{i:03d}0000" for i in range(12)]
    serials = await asyncio.gather(*(store.add_participant(oin, f"Leverancier {i}", actor="alice")
                                     for i, oin in enumerate(oins)))
    assert sorted(serials) == list(range(start + 1, start + 13))
    assert len((await store.register()).participants) == 12
    assert await store.serials_after(start) == list(range(start + 1, start + 13))
