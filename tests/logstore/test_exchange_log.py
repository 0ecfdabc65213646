"""The exchange log on both stores: durable appends, group commit, proofs, checkpoints, queries, retention."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from connectors.logstore.base import GroupCommitLog, LogWriteFailed, Row
from connectors.logstore.leaf import encode_record, record_leaf_hash
from tests.logstore.samples import NODE, OTHER_PUBLISHER, OTHER_SCHOOL, PUBLISHER, SCHOOL, record
from trust import transparency
from trust.checkpoint import verify_checkpoint
from trust.transparency import ProofError, verify_consistency, verify_inclusion


async def test_appends_get_consecutive_leaf_indices_and_keep_the_record_exactly(log: GroupCommitLog) -> None:
    written = [record(records=i) for i in range(5)]
    indices = [await log.append(r) for r in written]
    assert indices == [0, 1, 2, 3, 4]
    stored = await log.records(school=SCHOOL, oldest_first=True)
    assert [s.record for s in stored] == written
    assert [s.leaf_hash for s in stored] == [record_leaf_hash(encode_record(r)) for r in written]
    assert await log.leaf_hashes() == [s.leaf_hash for s in stored]


async def test_concurrent_appends_share_commits(open_test_log: Callable[..., GroupCommitLog]) -> None:
    commits: list[int] = []

    log = open_test_log()
    write = log._store_write

    async def counting_write(rows: list[Row], nodes: list[tuple[int, int, bytes]]) -> None:
        await write(rows, nodes)
        commits.append(len(rows))

    log._store_write = counting_write  # type: ignore[method-assign]
    await log.start()
    try:
        indices = await asyncio.gather(*(log.append(record()) for _ in range(300)))
    finally:
        await log.close()
    assert sorted(indices) == list(range(300))
    assert sum(commits) == 300
    assert len(commits) < 30, f"300 concurrent appends took {len(commits)} commits"


async def test_without_group_commit_every_record_is_its_own_commit(
    open_test_log: Callable[..., GroupCommitLog],
) -> None:
    log = open_test_log(group_commit=False)
    commits: list[int] = []
    write = log._store_write

    async def counting_write(rows: list[Row], nodes: list[tuple[int, int, bytes]]) -> None:
        await write(rows, nodes)
        commits.append(len(rows))

    log._store_write = counting_write  # type: ignore[method-assign]
    await log.start()
    try:
        await asyncio.gather(*(log.append(record()) for _ in range(20)))
    finally:
        await log.close()
    assert commits == [1] * 20


async def test_every_inclusion_and_consistency_proof_verifies_against_the_stored_tree(log: GroupCommitLog) -> None:
    for _ in range(37):
        await log.append(record())
    leaves = await log.leaf_hashes()
    assert len(leaves) == 37 == log.size()
    for size in range(1, 38):
        root = await log.root_hash(size)
        assert root == transparency.root_hash(leaves[:size])
        for index in range(size):
            proof = await log.inclusion_proof(index, size)
            verify_inclusion(leaves[index], index, size, proof, root)
    for size1 in range(0, 38):
        for size2 in (size1, 37, min(37, size1 + 3)):
            proof = await log.consistency_proof(size1, size2)
            verify_consistency(size1, size2, proof, await log.root_hash(size1), await log.root_hash(size2))


async def test_proofs_for_trees_larger_than_the_log_are_refused(log: GroupCommitLog) -> None:
    await log.append(record())
    with pytest.raises(ValueError):
        await log.inclusion_proof(0, 2)
    with pytest.raises(ValueError):
        await log.consistency_proof(1, 2)


async def test_a_checkpoint_signs_the_committed_tree_with_the_node_identity(log: GroupCommitLog) -> None:
    assert await log.latest_checkpoint() is None
    empty = await log.checkpoint()
    assert (empty.tree_size, empty.root_hash) == (0, transparency.EMPTY_ROOT)
    for _ in range(10):
        await log.append(record())
    signed = await log.checkpoint()
    checked = verify_checkpoint(signed.jws, log.signing_key.public_key())
    assert checked == signed
    assert (checked.node, checked.tree_size) == (NODE, 10)
    assert checked.root_hash == transparency.root_hash(await log.leaf_hashes())
    assert await log.latest_checkpoint() == signed
    assert [c.tree_size for c in await log.checkpoints()] == [0, 10]


async def test_the_tree_survives_a_restart_and_keeps_growing(open_test_log: Callable[..., GroupCommitLog]) -> None:
    first = open_test_log()
    await first.start()
    for _ in range(11):
        await first.append(record())
    before = await first.checkpoint()
    await first.close()

    second = open_test_log()
    await second.start()
    try:
        assert second.size() == 11
        assert await second.root_hash(11) == before.root_hash
        assert await second.append(record()) == 11
        after = await second.checkpoint()
        proof = await second.consistency_proof(11, 12)
        verify_consistency(11, 12, proof, before.root_hash, after.root_hash)
        assert await second.latest_checkpoint() == after
    finally:
        await second.close()


async def test_append_after_close_is_refused(open_test_log: Callable[..., GroupCommitLog]) -> None:
    log = open_test_log()
    await log.start()
    await log.close()
    with pytest.raises(LogWriteFailed):
        await log.append(record())
    assert not log.writable()


async def test_close_writes_everything_already_queued(open_test_log: Callable[..., GroupCommitLog]) -> None:
    log = open_test_log()
    await log.start()
    pending = [asyncio.ensure_future(log.append(record())) for _ in range(50)]
    await asyncio.sleep(0)
    await log.close()
    assert sorted(await asyncio.gather(*pending)) == list(range(50))


# --- queries ------------------------------------------------------------------------------------------


async def test_queries_must_be_scoped_by_school_or_party(log: GroupCommitLog) -> None:
    await log.append(record())
    with pytest.raises(ValueError, match="scoped"):
        await log.records()
    with pytest.raises(ValueError, match="scoped"):
        await log.totals(school="")


async def test_a_school_sees_only_its_own_records(log: GroupCommitLog) -> None:
    mine = await log.append(record(school=SCHOOL))
    await log.append(record(school=OTHER_SCHOOL))
    await log.append(record(school=None))
    assert [s.index for s in await log.records(school=SCHOOL)] == [mine]
    for other in (OTHER_SCHOOL.lower(), f"{SCHOOL} ", "%", "*", f"{SCHOOL}' OR '1'='1"):
        assert all(s.record.school == other for s in await log.records(school=other))
        assert not any(s.record.school == SCHOOL for s in await log.records(school=other))


async def test_a_participant_sees_the_exchanges_it_took_part_in(log: GroupCommitLog) -> None:
    as_caller = await log.append(record(caller=PUBLISHER))
    await log.append(record(caller=OTHER_PUBLISHER))
    assert [s.index for s in await log.records(party_oin=PUBLISHER)] == [as_caller]
    assert len(await log.records(party_oin=NODE)) == 2  # the node is the counterparty of both


async def test_filters_narrow_the_records(log: GroupCommitLog) -> None:
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    a = await log.append(record(at=t0, service="leermateriaalgebruik", purpose="b", decision="allowed"))
    b = await log.append(record(at=t0 + timedelta(hours=1), service="resultaten", purpose="a", decision="denied"))
    c = await log.append(record(at=t0 + timedelta(days=1), caller=OTHER_PUBLISHER, purpose="b"))

    async def found(**filters: object) -> list[int]:
        return sorted(s.index for s in await log.records(school=SCHOOL, **filters))  # type: ignore[arg-type]

    assert await found() == [a, b, c]
    assert await found(data_service="resultaten") == [b]
    assert await found(purpose="b") == [a, c]
    assert await found(decision="denied") == [b]
    assert await found(counterparty=OTHER_PUBLISHER) == [c]
    assert await found(since=t0 + timedelta(minutes=30)) == [b, c]
    assert await found(until=t0 + timedelta(hours=1)) == [a]
    assert await found(since=t0.replace(tzinfo=None), until=t0 + timedelta(days=2)) == [a, b, c]
    newest_first = [s.index for s in await log.records(school=SCHOOL, limit=2)]
    assert newest_first == [c, b]
    assert [s.index for s in await log.records(school=SCHOOL, limit=2, offset=2)] == [a]


async def test_a_school_finds_the_exchanges_about_one_student_by_keyed_hash(log: GroupCommitLog) -> None:
    from connectors.logstore.students import StudentHasher

    hasher = StudentHasher(b"k" * 32)
    eck = "https://ketenid.nl/201703/" + "ab" * 64
    mine = hasher.hash(SCHOOL, eck)
    about = await log.append(record(students=(mine, hasher.hash(SCHOOL, "other"))))
    await log.append(record(students=(hasher.hash(SCHOOL, "other"),)))
    elsewhere = await log.append(record(school=OTHER_SCHOOL, students=(hasher.hash(OTHER_SCHOOL, eck),)))
    assert [s.index for s in await log.records(school=SCHOOL, student_hash=mine)] == [about]
    # the same student at another school has another hash, and the school scope still applies
    assert await log.records(school=OTHER_SCHOOL, student_hash=mine) == []
    assert [s.index for s in await log.records(school=OTHER_SCHOOL, student_hash=hasher.hash(OTHER_SCHOOL, eck))] == [
        elsewhere
    ]


def _counting_rows(log: GroupCommitLog) -> list[Row]:
    """Every row the log hands its store from now on (with the students it indexes)."""
    written: list[Row] = []
    write = log._store_write

    async def keeping(rows: list[Row], nodes: list[tuple[int, int, bytes]]) -> None:
        await write(rows, nodes)
        written.extend(rows)

    log._store_write = keeping  # type: ignore[method-assign]
    return written


async def test_an_outcome_indexes_only_the_students_its_decision_did_not(log: GroupCommitLog) -> None:
    written = _counting_rows(log)
    pushed, answered = "a" * 64, "b" * 64
    decision = await log.append(record(exchange_id="x-1", students=(pushed,)))
    outcome = await log.append(record(exchange_id="x-1", kind="outcome", students=(pushed, answered)))
    assert [row.students for row in written] == [(pushed,), (answered,)]
    # the look-up answers with whole exchanges: a pull's decision is found by a student only its answer named
    for student in (pushed, answered):
        assert sorted(s.index for s in await log.records(school=SCHOOL, student_hash=student)) == [decision, outcome]


async def test_an_outcome_whose_decision_was_not_committed_indexes_all_its_students(log: GroupCommitLog) -> None:
    student = "c" * 64
    write = log._store_write
    failing = True

    async def failing_once(rows: list[Row], nodes: list[tuple[int, int, bytes]]) -> None:
        if failing:
            raise OSError("disk full")
        await write(rows, nodes)

    log._store_write = failing_once  # type: ignore[method-assign]
    with pytest.raises(LogWriteFailed):
        await log.append(record(exchange_id="x-2", students=(student,)))
    failing = False
    outcome = await log.append(record(exchange_id="x-2", kind="outcome", students=(student,)))
    assert [s.index for s in await log.records(school=SCHOOL, student_hash=student)] == [outcome]


async def test_totals_count_exchanges_per_counterparty_data_service_and_bucket(log: GroupCommitLog) -> None:
    day = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
    await log.append(record(at=day))
    await log.append(record(at=day, kind="outcome", records=7))
    await log.append(record(at=day + timedelta(hours=2), decision="denied"))
    await log.append(record(at=day + timedelta(days=1), caller=OTHER_PUBLISHER))
    await log.append(record(at=day, school=OTHER_SCHOOL))

    per_day = await log.totals(school=SCHOOL)
    assert per_day == [
        {
            "bucket": datetime(2026, 3, 2, tzinfo=UTC),
            "counterparty": PUBLISHER,
            "data_service": "leermateriaalgebruik",
            "exchanges": 2,
            "allowed": 1,
            "denied": 1,
            "records": 7,
            "bytes_out": 0,
        },
        {
            "bucket": datetime(2026, 3, 3, tzinfo=UTC),
            "counterparty": OTHER_PUBLISHER,
            "data_service": "leermateriaalgebruik",
            "exchanges": 1,
            "allowed": 1,
            "denied": 0,
            "records": 0,
            "bytes_out": 0,
        },
    ]
    per_hour = await log.totals(school=SCHOOL, until=day + timedelta(days=1), bucket="hour")
    assert [(row["bucket"].hour, row["exchanges"]) for row in per_hour] == [(9, 1), (11, 1)]


# --- retention ----------------------------------------------------------------------------------------


async def test_pruning_drops_old_bodies_but_proofs_still_verify(log: GroupCommitLog) -> None:
    old = datetime.now(UTC) - timedelta(days=400)
    hasher_hash = "f" * 64
    for i in range(6):
        await log.append(record(at=old + timedelta(minutes=i), students=(hasher_hash,)))
    recent = [await log.append(record()) for _ in range(3)]
    before = await log.checkpoint()
    leaves = await log.leaf_hashes()

    assert await log.prune(datetime.now(UTC) - timedelta(days=365)) == 6

    assert [s.index for s in await log.records(school=SCHOOL, oldest_first=True)] == recent
    assert await log.records(school=SCHOOL, student_hash=hasher_hash) == []
    assert await log.leaf_hashes() == leaves
    after = await log.checkpoint()
    assert after.root_hash == before.root_hash
    for index in range(9):  # pruned records' leaves are still provably in the tree
        verify_inclusion(leaves[index], index, 9, await log.inclusion_proof(index, 9), after.root_hash)
    await log.append(record())
    grown = await log.checkpoint()
    verify_consistency(9, 10, await log.consistency_proof(9, 10), before.root_hash, grown.root_hash)


async def test_a_forged_record_does_not_verify_against_the_stored_leaf(log: GroupCommitLog) -> None:
    index = await log.append(record(decision="denied"))
    checkpoint = await log.checkpoint()
    (stored,) = await log.records(school=SCHOOL)
    forged = stored.record.replace(decision="allowed")
    proof = await log.inclusion_proof(index, checkpoint.tree_size)
    verify_inclusion(stored.leaf_hash, index, checkpoint.tree_size, proof, checkpoint.root_hash)
    with pytest.raises(ProofError):
        verify_inclusion(record_leaf_hash(encode_record(forged)), index, 1, proof, checkpoint.root_hash)


async def test_the_log_checkpoints_periodically_and_prunes_past_retention_by_itself(
    open_test_log: Callable[..., GroupCommitLog],
) -> None:
    log = open_test_log(checkpoint_interval=0.05, retention=timedelta(days=30))
    await log.start()
    try:
        await log.append(record(at=datetime.now(UTC) - timedelta(days=31)))
        kept = await log.append(record())
        for _ in range(200):
            latest = await log.latest_checkpoint()
            if latest and latest.tree_size == 2 and len(await log.records(school=SCHOOL)) == 1:
                break
            await asyncio.sleep(0.05)
        assert latest is not None and latest.tree_size == 2
        assert [s.index for s in await log.records(school=SCHOOL)] == [kept]
        sizes = [c.tree_size for c in await log.checkpoints()]
        assert sizes == sorted(set(sizes)), "a checkpoint is made only when the tree grew"
    finally:
        await log.close()


async def test_closing_signs_the_tree_once_more_when_periodic_checkpoints_are_on(
    open_test_log: Callable[..., GroupCommitLog],
) -> None:
    log = open_test_log(checkpoint_interval=3600)
    await log.start()
    for _ in range(3):
        await log.append(record())
    await log.close()
    reopened = open_test_log()
    await reopened.start()
    try:
        latest = await reopened.latest_checkpoint()
        assert latest is not None and latest.tree_size == 3
    finally:
        await reopened.close()
