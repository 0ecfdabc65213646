"""The exchange log's contract, and the group-commit writer both stores share.

Durability: `append` resolves only after the record's transaction has committed (SQLite WAL with
synchronous=FULL: fsynced; PostgreSQL: committed with synchronous_commit=on). Appends queue; one writer
task takes everything queued, writes it in one transaction, then resolves every waiter (group commit).
A failed batch fails all its waiters with `LogWriteFailed`; the writer reloads the tree from the store
and carries on with later batches.

Tree: the store keeps the hash of every complete, aligned subtree (level 0: the leaves) in a `tree`
table, written in the same transaction as the records. An append computes only the O(log n) new
interior nodes from the in-memory right edge of the tree; a root or a proof needs O(log n) look-ups.
Pruning deletes record bodies and never touches the `tree` table, so proofs survive retention.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import structlog

from connectors.logstore.leaf import encode_record
from connectors.logstore.record import ExchangeRecord
from connectors.logstore.students import StudentIndex
from trust import transparency
from trust.checkpoint import PrivateKey, SignedCheckpoint, sign_checkpoint, verify_checkpoint
from trust.transparency import EMPTY_ROOT, Subtree, leaf_hash

logger = structlog.get_logger("edugate.log")

Bucket = Literal["day", "hour"]


class LogWriteFailed(Exception):
    """The record is NOT durable. The node must refuse the exchange (500) and forward nothing."""


class LogOpenFailed(Exception):
    """`start` could not open the store for writing (a file that cannot be opened, one another node writes to)."""


@dataclass(frozen=True)
class StoredRecord:
    index: int  # the record's leaf index in the node's Merkle tree
    leaf_hash: bytes
    record: ExchangeRecord


class ExchangeLog(Protocol):
    """What the node, the log API and the school portal use. `GroupCommitLog` implements it on both stores."""

    async def start(self) -> None:
        """Open the store, create the schema, load the tree, start the group-commit writer (and housekeeping)."""

    async def close(self) -> None:
        """Write what is queued, sign a last checkpoint if periodic checkpoints are on, stop."""

    async def append(self, record: ExchangeRecord) -> int:
        """The record's leaf index, once the record is durable. Raises LogWriteFailed on any store failure."""

    def writable(self) -> bool:
        """For /readyz: False after a failed commit until a later one succeeds (and when not started)."""

    async def checkpoint(self) -> SignedCheckpoint:
        """Sign (tree size, root hash, time, node OIN) of the committed tree now, and store it."""

    async def latest_checkpoint(self) -> SignedCheckpoint | None: ...

    async def checkpoints(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[SignedCheckpoint]:
        """Stored checkpoints made in [since, until], oldest first."""

    async def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        """RFC 9162 inclusion proof of leaf `index` in the tree of `tree_size` leaves (<= size())."""

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """RFC 9162 consistency proof between tree sizes size1 <= size2 (<= size())."""

    async def root_hash(self, tree_size: int) -> bytes:
        """The root hash of the tree of the first `tree_size` leaves."""

    def size(self) -> int:
        """The committed tree size (number of leaves)."""

    async def leaf_hashes(self, start: int = 0, end: int | None = None) -> list[bytes]:
        """Stored leaf hashes [start, end), pruned records included."""

    async def records(
        self,
        *,
        school: str | None = None,
        party_oin: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        counterparty: str | None = None,
        data_service: str | None = None,
        purpose: str | None = None,
        decision: str | None = None,
        student_hash: str | None = None,
        exchange_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        oldest_first: bool = False,
    ) -> list[StoredRecord]:
        """Records scoped by school and/or party_oin (required), filtered; see GroupCommitLog.records."""

    async def totals(
        self, *, school: str, since: datetime | None = None, until: datetime | None = None, bucket: Bucket = "day"
    ) -> list[dict[str, Any]]:
        """Counts per counterparty, data service and UTC day/hour for one school; see GroupCommitLog.totals."""

    async def prune(self, older_than: datetime) -> int:
        """Retention: drop record bodies older than the cut-off, keep their leaves; the number dropped."""


# --- rows and the tree's right edge ------------------------------------------------------------------


def utc(moment: datetime) -> datetime:
    """Times without a zone are taken as UTC (the node logs in UTC)."""
    if moment.tzinfo is UTC:  # every record's time on the way in: astimezone would copy it
        return moment
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


RECORD_COLUMNS = (
    "idx", "leaf_hash", "exchange_id", "kind", "at", "school", "caller_oin", "counterparty_oin", "peer_oin",
    "data_service", "purpose", "decision", "records", "bytes_out", "body",
)  # fmt: skip


@dataclass(slots=True)  # made for every record on the event loop: slots, and not frozen (whose __init__ is slower)
class Row:
    """A record as the stores write it: canonical body, leaf hash, and the columns queries filter on."""

    index: int
    leaf_hash: bytes
    body: bytes
    record: ExchangeRecord
    # The student hashes indexed for this record: those its exchange's earlier records did not index already.
    students: tuple[str, ...]

    @property
    def at(self) -> datetime:
        return utc(self.record.at)

    @property
    def peer_oin(self) -> str | None:
        """The other party, seen from this node: the caller of an inbound exchange, the receiver of an outbound."""
        return self.record.caller_oin if self.record.direction == "inbound" else self.record.counterparty_oin

    def columns(self, at: Any) -> tuple[Any, ...]:
        """The values of RECORD_COLUMNS for this row (`at` in the store's own form)."""
        r = self.record
        return (
            self.index, self.leaf_hash, r.exchange_id, r.kind, at, r.school, r.caller_oin, r.counterparty_oin,
            self.peer_oin, r.data_service, r.purpose, r.decision, r.records, r.bytes_out, self.body,
        )  # fmt: skip


def student_rows(rows: Sequence[Row]) -> list[tuple[str, int]]:
    """(student hash, record index) pairs of the student index."""
    return [(h, r.index) for r in rows for h in r.students]


@dataclass(frozen=True)
class TreeEdge:
    """A tree's size and the hashes of the complete subtrees along its right edge (level -> hash)."""

    size: int = 0
    frontier: dict[int, bytes] = field(default_factory=dict)

    @staticmethod
    def subtrees_for(size: int) -> list[Subtree]:
        return transparency.complete_subtrees(0, size) if size else []

    @classmethod
    def from_subtrees(cls, size: int, hashes: dict[Subtree, bytes]) -> TreeEdge:
        return cls(size, {level: hashes[(level, index)] for level, index in cls.subtrees_for(size)})

    def root(self) -> bytes:
        if not self.size:
            return EMPTY_ROOT
        levels = sorted(self.frontier)
        acc = self.frontier[levels[0]]
        for level in levels[1:]:
            acc = transparency.node_hash(self.frontier[level], acc)
        return acc

    def extended(self, leaves: Sequence[bytes]) -> tuple[TreeEdge, list[tuple[int, int, bytes]]]:
        """The edge after appending `leaves`, and every new (level, index, hash) node to store."""
        frontier = dict(self.frontier)
        size = self.size
        nodes: list[tuple[int, int, bytes]] = []
        for leaf in leaves:
            nodes.append((0, size, leaf))
            carry, level, n = leaf, 0, size
            while n & 1:  # each trailing 1 bit of the old size is a left sibling this leaf completes
                carry = transparency.node_hash(frontier.pop(level), carry)
                level += 1
                n >>= 1
                nodes.append((level, size >> level, carry))
            frontier[level] = carry
            size += 1
        return TreeEdge(size, frontier), nodes


@dataclass(slots=True)
class _Pending:
    row_body: bytes
    leaf_hash: bytes
    record: ExchangeRecord
    done: asyncio.Future[int]


# --- the shared log ----------------------------------------------------------------------------------


class GroupCommitLog(ABC):
    """An ExchangeLog over a store that implements the `_store_*` primitives below."""

    def __init__(
        self,
        *,
        node_oin: str,
        signing_key: PrivateKey,
        group_commit: bool = True,
        max_batch: int = 2000,
        commit_timeout: float | None = 30.0,
        checkpoint_interval: float | None = None,
        retention: timedelta | None = None,
    ) -> None:
        self.node_oin = node_oin
        self.signing_key = signing_key
        self.group_commit = group_commit  # False: one transaction per record (the benchmark's baseline)
        self.max_batch = max_batch
        self.commit_timeout = commit_timeout  # a store that hangs fails the batch instead of holding exchanges
        self.checkpoint_interval = checkpoint_interval
        self.retention = retention
        self._edge = TreeEdge()
        self._edge_stale = False
        self._writable = False
        self._closing = False
        # Appended records wait in a plain list the writer takes whole: cheaper per record than an asyncio.Queue.
        self._pending: list[_Pending] = []
        self._wakeup: asyncio.Future[None] | None = None  # set while the writer waits for records
        self._writer: asyncio.Task[None] | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        self._store_lock = asyncio.Lock()  # one writing transaction at a time (batches, checkpoints, pruning)
        self._students = StudentIndex()

    # store primitives --------------------------------------------------------------------------------

    @abstractmethod
    async def _store_open(self) -> None: ...

    @abstractmethod
    async def _store_close(self) -> None: ...

    @abstractmethod
    async def _store_size(self) -> int: ...

    @abstractmethod
    async def _store_recover(self) -> None:
        """After a failed batch: let whatever the store still runs of it finish, and end any open transaction."""

    @abstractmethod
    async def _store_write(self, rows: list[Row], nodes: list[tuple[int, int, bytes]]) -> None:
        """Write rows and tree nodes in ONE transaction, committed durably before returning."""

    @abstractmethod
    async def _store_subtrees(self, wanted: set[Subtree]) -> dict[Subtree, bytes]: ...

    @abstractmethod
    async def _store_leaves(self, start: int, end: int) -> list[bytes]: ...

    @abstractmethod
    async def _store_add_checkpoint(self, checkpoint: SignedCheckpoint) -> None: ...

    @abstractmethod
    async def _store_checkpoints(
        self, since: datetime | None, until: datetime | None, latest_only: bool
    ) -> list[str]: ...

    @abstractmethod
    async def _store_records(
        self, filters: RecordFilter, limit: int, offset: int, oldest_first: bool
    ) -> list[tuple[int, bytes, bytes]]: ...

    @abstractmethod
    async def _store_totals(
        self, school: str, since: datetime | None, until: datetime | None, bucket: Bucket
    ) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def _store_prune(self, older_than: datetime) -> int: ...

    # lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._store_open()
        self._edge = await self._load_edge()
        self._writable = True
        self._closing = False
        self._writer = asyncio.create_task(self._write_loop(), name="exchange-log-writer")
        if self.checkpoint_interval or self.retention:
            self._housekeeper = asyncio.create_task(self._housekeeping(), name="exchange-log-housekeeping")
        logger.info("exchange log open", store=type(self).__name__, tree_size=self._edge.size)

    async def close(self) -> None:
        """Write everything already queued, then stop."""
        if self._writer is None:
            return
        self._closing = True
        if self._housekeeper:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper
        self._wake_writer()
        await self._writer
        if self.checkpoint_interval:  # sign the tree as it is at shutdown, so no tail is left unsigned
            try:
                latest = await self.latest_checkpoint()
                if self._edge.size and (latest is None or latest.tree_size < self._edge.size):
                    await self.checkpoint()
            except Exception as exc:
                logger.error("exchange log checkpoint at close failed", error=repr(exc))
        self._writer = self._housekeeper = None
        self._writable = False
        await self._store_close()

    def writable(self) -> bool:
        return self._writable and not self._closing and self._writer is not None and not self._writer.done()

    def size(self) -> int:
        """The committed tree size."""
        return self._edge.size

    # appending ---------------------------------------------------------------------------------------

    async def append(self, record: ExchangeRecord) -> int:
        if self._writer is None or self._closing or self._writer.done():
            raise LogWriteFailed("the exchange log is not open")
        body = encode_record(record)
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(body, leaf_hash(body), record, done))
        self._wake_writer()
        # A caller that gives up (cancelled) cancels only its wait: the record is still written with its batch.
        return await done

    def _wake_writer(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _write_loop(self) -> None:
        """Commit what is pending, a batch at a time, until closed with nothing left to write."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup = loop.create_future()
                await self._wakeup
                continue
            take = self.max_batch if self.group_commit else 1
            batch = self._pending[:take]
            del self._pending[:take]
            await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            async with self._store_lock:
                if self._edge_stale:
                    await self._store_recover()
                    self._edge = await self._load_edge()
                    self._edge_stale = False
                base = self._edge.size
                edge, nodes = self._edge.extended([p.leaf_hash for p in batch])
                adds = self._students.adds
                rows = [Row(base + i, p.leaf_hash, p.row_body, p.record, adds(p.record)) for i, p in enumerate(batch)]
                async with asyncio.timeout(self.commit_timeout):
                    await self._store_write(rows, nodes)
                self._edge = edge
                self._students.committed(rows)
        except Exception as exc:  # any store failure: nothing in this batch is durable
            self._writable = False
            self._edge_stale = True  # the store may have moved (or not): re-read it before the next batch
            logger.error("exchange log write failed", error=repr(exc), batch=len(batch))
            failure = LogWriteFailed(f"exchange log write failed: {str(exc) or type(exc).__name__}")
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(failure)
            return
        if not self._writable:
            logger.info("exchange log writable again", tree_size=edge.size)
        self._writable = True
        for row, p in zip(rows, batch, strict=True):
            if not p.done.done():
                p.done.set_result(row.index)

    async def _load_edge(self) -> TreeEdge:
        size = await self._store_size()
        wanted = set(TreeEdge.subtrees_for(size))
        hashes = await self._store_subtrees(wanted)
        missing = wanted - hashes.keys()
        if missing:
            raise RuntimeError(f"exchange log tree is damaged: subtrees {sorted(missing)} missing at size {size}")
        return TreeEdge.from_subtrees(size, hashes)

    # tree and checkpoints ----------------------------------------------------------------------------

    async def checkpoint(self) -> SignedCheckpoint:
        """Sign the committed tree as it is now, store the checkpoint and return it."""
        async with self._store_lock:
            edge = self._edge
            signed = sign_checkpoint(
                self.signing_key,
                node=self.node_oin,
                tree_size=edge.size,
                root_hash=edge.root(),
                timestamp=datetime.now(UTC),
            )
            await self._store_add_checkpoint(signed)
        return signed

    async def latest_checkpoint(self) -> SignedCheckpoint | None:
        found = await self._store_checkpoints(None, None, latest_only=True)
        return self._parse_checkpoint(found[0]) if found else None

    async def checkpoints(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[SignedCheckpoint]:
        """Stored checkpoints made in [since, until], oldest first."""
        found = await self._store_checkpoints(since and utc(since), until and utc(until), latest_only=False)
        return [self._parse_checkpoint(token) for token in found]

    def _parse_checkpoint(self, token: str) -> SignedCheckpoint:
        return verify_checkpoint(token, self.signing_key.public_key())

    def _check_size(self, tree_size: int) -> None:
        if not 0 <= tree_size <= self._edge.size:
            raise ValueError(f"tree size {tree_size} is not between 0 and the log's size {self._edge.size}")

    async def _hash_ranges(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        wanted = transparency.proof_subtrees(ranges)
        source = transparency.FetchedSubtrees(await self._store_subtrees(wanted))
        return [transparency.range_hash(source, start, end) for start, end in ranges]

    async def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        self._check_size(tree_size)
        return await self._hash_ranges(transparency.inclusion_ranges(index, tree_size))

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        self._check_size(size2)
        return await self._hash_ranges(transparency.consistency_ranges(size1, size2))

    async def root_hash(self, tree_size: int) -> bytes:
        self._check_size(tree_size)
        if tree_size == 0:
            return EMPTY_ROOT
        (root,) = await self._hash_ranges([(0, tree_size)])
        return root

    async def leaf_hashes(self, start: int = 0, end: int | None = None) -> list[bytes]:
        """Stored leaf hashes [start, end) in order (records pruned or not)."""
        return await self._store_leaves(start, self._edge.size if end is None else end)

    # queries -----------------------------------------------------------------------------------------

    async def records(
        self,
        *,
        school: str | None = None,
        party_oin: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        counterparty: str | None = None,
        data_service: str | None = None,
        purpose: str | None = None,
        decision: str | None = None,
        student_hash: str | None = None,
        exchange_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        oldest_first: bool = False,
    ) -> list[StoredRecord]:
        """Records (not yet pruned) matching every filter given, newest first unless `oldest_first`.

        Every query is scoped: `school` (the school's organisationMasterIdentifier) and/or `party_oin`
        (records the participant took part in: as caller or as counterparty). With neither, nothing is
        read: a ValueError, never every school's records. `since` is inclusive, `until` exclusive.
        `counterparty` is the other party seen from this node (the caller of an inbound exchange, the
        receiver of an outbound one). `student_hash` gives every record of the exchanges that concerned the
        student: a pull's decision with the outcome whose answer named the student.
        """
        if not school and not party_oin:
            raise ValueError("a log query must be scoped by school or party_oin")
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must not be negative")
        filters = RecordFilter(
            school=school,
            party_oin=party_oin,
            since=since and utc(since),
            until=until and utc(until),
            counterparty=counterparty,
            data_service=data_service,
            purpose=purpose,
            decision=decision,
            student_hash=student_hash,
            exchange_id=exchange_id,
        )
        found = await self._store_records(filters, limit, offset, oldest_first)
        return [
            StoredRecord(index, bytes(leaf), ExchangeRecord.parse_json(body)) for index, leaf, body in found
        ]

    async def totals(
        self, *, school: str, since: datetime | None = None, until: datetime | None = None, bucket: Bucket = "day"
    ) -> list[dict[str, Any]]:
        """Per counterparty, data service and time bucket (UTC day or hour) for one school, oldest first.

        Each row: `bucket` (datetime, UTC start), `counterparty`, `data_service`, `exchanges` (decision
        records), `allowed`, `denied`, `records` (data records carried, summed over outcome records),
        `bytes_out` (summed over outcome records).
        """
        if not school:
            raise ValueError("totals must be scoped by school")
        if bucket not in ("day", "hour"):
            raise ValueError("bucket must be 'day' or 'hour'")
        return await self._store_totals(school, since and utc(since), until and utc(until), bucket)

    async def prune(self, older_than: datetime) -> int:
        """Retention: delete record bodies (and their student hashes) older than the cut-off; leaves stay."""
        async with self._store_lock:
            removed = await self._store_prune(utc(older_than))
        logger.info("exchange log pruned", older_than=utc(older_than).isoformat(), records=removed)
        return removed

    async def _housekeeping(self) -> None:
        """Periodic checkpoints (when the tree grew) and retention pruning."""
        interval = self.checkpoint_interval or 3600.0
        while True:
            try:
                latest = await self.latest_checkpoint()
                if self._edge.size and (latest is None or latest.tree_size < self._edge.size):
                    await self.checkpoint()
                if self.retention:
                    await self.prune(datetime.now(UTC) - self.retention)
            except Exception as exc:  # housekeeping must not stop the log; the next round retries
                logger.error("exchange log housekeeping failed", error=repr(exc))
            await asyncio.sleep(interval)


@dataclass(frozen=True)
class RecordFilter:
    school: str | None = None
    party_oin: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    counterparty: str | None = None
    data_service: str | None = None
    purpose: str | None = None
    decision: str | None = None
    student_hash: str | None = None
    exchange_id: str | None = None

    def where(self, placeholder: Any, *, at: Any = None) -> tuple[str, list[Any]]:
        """SQL conditions joined by AND, with `placeholder(n)` giving the n-th (1-based) parameter marker.

        `at` converts a datetime to the store's column type.
        """
        conditions: list[str] = []
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return str(placeholder(len(params)))

        for column in ("school", "data_service", "purpose", "decision", "exchange_id"):
            value = getattr(self, column)
            if value is not None and not (column == "school" and self.student_hash is not None):
                conditions.append(f"r.{column} = {param(value)}")
        if self.counterparty is not None:
            conditions.append(f"r.peer_oin = {param(self.counterparty)}")
        if self.party_oin is not None:
            p = param(self.party_oin)
            conditions.append(f"(r.caller_oin = {p} OR r.counterparty_oin = {p})")
        convert = at or (lambda moment: moment)
        if self.since is not None:
            conditions.append(f"r.at >= {param(convert(self.since))}")
        if self.until is not None:
            conditions.append(f"r.at < {param(convert(self.until))}")
        if self.student_hash is not None:
            # Every record of the exchanges the index names for the student, looked up from the index. The school
            # is asked inside: beside it, a planner may read the school's whole index instead (SQLite does).
            student = param(self.student_hash)  # markers in the order they stand in the text
            school = f" AND o.school = {param(self.school)}" if self.school is not None else ""
            conditions.append(
                "r.idx IN (SELECT o.idx FROM record_students s JOIN records d ON d.idx = s.idx"
                f" JOIN records o ON o.exchange_id = d.exchange_id WHERE s.student_hash = {student}{school})"
            )
        return (" AND ".join(conditions) or "TRUE"), params
