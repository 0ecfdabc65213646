"""The SQLite exchange log's writer: a small process of its own that owns the log's one writing connection.

Why a process and not a thread: the sqlite3 module gives up the interpreter lock around every SQLite call and
takes it back after, and a thread beside a busy event loop makes every such take (and every GIL release of the
loop: a syscall, a TLS read) a hand-over between the two, so SQLite's own work slowed the loop by far more than
its CPU (`docs/architecture.md`). In a process of its own it shares no lock with the loop. It also makes a stuck
commit abandonable for real: the node kills the writer, and SQLite rolls back what it had not committed.

The node (`SQLiteWriter`) and the process (`serve`) speak length-prefixed msgpack frames over the process's
stdin and stdout: a request `[operation, *arguments]`, an answer `[true, value]` or `[false, message]`. One
request at a time; the process reads the next only after answering. It exits when its stdin closes, so it never
outlives the node (killed or not), and runs in a session of its own, so a Ctrl-C meant for the node does not
stop it before the node has written what is queued.

    python connectors/logstore/sqlite_writer.py PATH LOCK_WAIT   (started by the node, as a script: see below)

One writer per log file: the process holds an exclusive lock on `PATH-writer.lock` while it lives. A second node
configured on the same file is refused at start instead of interleaving its own tree with the first's, and a
writer whose node died (it finishes the request it had read, then sees its stdin end) is out of the way before a
new one reads the tree's size.

A batch is answered once it is durable in the writer's journal (`PATH-pending`: the batch's request frame,
appended and fdatasync'd), and is written into the database right after the answer, while the node forwards.
SQLite's inserts are most of a batch's cost, and an exchange waits for two batches (its decision before
forwarding, its outcome before the answer's last byte), so this takes them off the exchange's path
(`docs/architecture.md`: measured). The database commits with synchronous=NORMAL, which keeps it consistent but
may lose its last commits to a power failure; the journal holds every batch since the last commit made with
synchronous=FULL (one each `CUT_BYTES` of journal, after which the journal is cut), and a new writer puts back
whatever the database lacks before it answers anything. The write lock is taken before the journal entry, so a
database another process holds still keeps a batch unanswered; a batch the database refuses after its answer
(a full disk, a damaged file) stops the writer, and every later batch is refused until a new writer has put it
in. Either way no answered batch is lost, and none is written twice.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sqlite3
import struct
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import msgspec

TREE_TABLE = """
CREATE TABLE IF NOT EXISTS tree (
    pos INTEGER NOT NULL,  -- tree_position(level, idx)
    level INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (pos, level)
) WITHOUT ROWID"""
SCHEMA = (
    TREE_TABLE
    + """;
CREATE TABLE IF NOT EXISTS records (
    idx INTEGER PRIMARY KEY,
    leaf_hash BLOB NOT NULL,
    exchange_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    school TEXT,
    caller_oin TEXT,
    counterparty_oin TEXT,
    peer_oin TEXT,
    data_service TEXT,
    purpose TEXT,
    decision TEXT NOT NULL,
    records INTEGER,
    bytes_out INTEGER,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_school_at ON records (school, at);
CREATE INDEX IF NOT EXISTS records_caller_at ON records (caller_oin, at);
CREATE INDEX IF NOT EXISTS records_counterparty_at ON records (counterparty_oin, at);
CREATE INDEX IF NOT EXISTS records_at ON records (at);
CREATE INDEX IF NOT EXISTS records_exchange ON records (exchange_id);
CREATE TABLE IF NOT EXISTS record_students (
    student_hash TEXT NOT NULL,
    idx INTEGER NOT NULL,
    PRIMARY KEY (student_hash, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tree_size INTEGER NOT NULL,
    made_at TEXT NOT NULL,
    jws TEXT NOT NULL
);
"""
)

_LENGTH = struct.Struct(">I")
_ENTRY = struct.Struct(">II")  # a journal entry's head: the frame's length and its CRC-32

JOURNAL_SUFFIX = "-pending"  # not "-journal": that is SQLite's own rollback journal, which it would read as one
CUT_BYTES = 1 << 20  # journal bytes after which the next batch commits with synchronous=FULL and the journal is cut

# How long a new writer waits for an earlier one of the same file to end: a writer whose node died finishes the
# request it had read first (a commit: milliseconds, or a busy timeout of 5 s at worst). Read at each start.
LOCK_WAIT = 10.0


class WriterFailed(Exception):
    """The writer refused or lost a request: nothing of it is committed (or, if the writer died after its
    commit, the log's tree is re-read from the file before the next batch)."""


# --- the process ---------------------------------------------------------------------------------------------


def tree_position(level: int, idx: int) -> int:
    """Where the tree table keeps subtree (level, idx): under the last leaf it covers. The nodes a batch completes
    then all sit at the batch's own leaves, one insertion point in the table, where a (level, idx) key had one per
    level and every commit wrote a page for each."""
    return ((idx + 1) << level) - 1


def connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: BEGIN and COMMIT are ours, so a batch is exactly one transaction.
    db = sqlite3.connect(path, isolation_level=None)
    # Pages of 2 KiB for a new file (an existing one keeps its own): a commit writes every page it touched whole,
    # mostly the last page of each index, so smaller pages halve the bytes a batch writes to the WAL.
    db.execute("PRAGMA page_size=2048")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit
    db.execute("PRAGMA busy_timeout=5000")
    db.executescript(SCHEMA)
    _key_tree_by_position(db)
    return db


def _key_tree_by_position(db: sqlite3.Connection) -> None:
    """A log made before the tree was keyed by position has a `tree (level, idx, hash)` table: rebuild it once."""
    if "idx" not in {row[1] for row in db.execute("PRAGMA table_info(tree)")}:
        return

    db.create_function("tree_position", 2, tree_position, deterministic=True)

    def work() -> None:
        db.execute("ALTER TABLE tree RENAME TO tree_by_level")
        db.execute(TREE_TABLE)
        db.execute("INSERT INTO tree SELECT tree_position(level, idx), level, hash FROM tree_by_level")
        db.execute("DROP TABLE tree_by_level")

    _transaction(db, work)


def _insert(db: sqlite3.Connection, table: str, rows: Sequence[Sequence[Any]]) -> None:
    """All `rows` in one INSERT statement per 500 rows (within SQLite's bound-parameter limit): one statement
    per table instead of a step per row. Rows give every column of the table in SCHEMA's order (for `records`:
    `connectors.logstore.base.RECORD_COLUMNS`, which a test holds equal)."""
    for start in range(0, len(rows), 500):
        part = rows[start : start + 500]
        values = ", ".join(["(" + ", ".join("?" * len(part[0])) + ")"] * len(part))
        db.execute(f"INSERT INTO {table} VALUES {values}", [v for row in part for v in row])


def _transaction(db: sqlite3.Connection, work: Callable[[], Any]) -> Any:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


def _batch_rows(
    db: sqlite3.Connection, records: list[list[Any]], students: list[list[Any]], nodes: list[list[Any]]
) -> None:
    """A batch's inserts, inside the caller's transaction. `nodes` as the log gives them, (level, idx, hash):
    stored under their position."""
    _insert(db, "records", records)
    _insert(db, "record_students", students)
    _insert(db, "tree", [(tree_position(level, idx), level, digest) for level, idx, digest in nodes])


def _batch(db: sqlite3.Connection, records: list[list[Any]], students: list[list[Any]], nodes: list[list[Any]]) -> None:
    """A batch in a transaction of its own."""
    _transaction(db, lambda: _batch_rows(db, records, students, nodes))


def _size(db: sqlite3.Connection) -> int:
    # The last leaf has the largest position of all: a subtree's position is a leaf it covers.
    return int(db.execute("SELECT COALESCE(MAX(pos) + 1, 0) FROM tree").fetchone()[0])


def _checkpoint(db: sqlite3.Connection, tree_size: int, made_at: str, jws: str) -> None:
    values = (tree_size, made_at, jws)
    _transaction(db, lambda: db.execute("INSERT INTO checkpoints (tree_size, made_at, jws) VALUES (?, ?, ?)", values))


def _prune(db: sqlite3.Connection, cutoff: str) -> int:
    def work() -> int:
        db.execute("DELETE FROM record_students WHERE idx IN (SELECT idx FROM records WHERE at < ?)", (cutoff,))
        return int(db.execute("DELETE FROM records WHERE at < ?", (cutoff,)).rowcount)

    return int(_transaction(db, work))


class Journal:
    """The batches answered since the database's last durable commit: each batch's request frame, as it came."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self._fd).st_size

    def frames(self) -> Iterator[bytes]:
        """The frames of the whole entries, oldest first. A torn last entry (a writer that died within its
        append, before the answer) ends them, and is cut off, so that entries after it can be read."""
        with open(self.path, "rb") as stream:
            data = stream.read()
        end = 0
        while end + _ENTRY.size <= len(data):
            length, crc = _ENTRY.unpack_from(data, end)
            frame = data[end + _ENTRY.size : end + _ENTRY.size + length]
            if len(frame) < length or zlib.crc32(frame) != crc:
                break
            yield frame
            end += _ENTRY.size + length
        if end < self.size:
            os.ftruncate(self._fd, end)
            self.size = end

    def append(self, frame: bytes) -> None:
        """Durable on return. A write that fails (a full disk) leaves the journal as it was and raises; a failed
        fdatasync, or a failed write that cannot be undone, ends the process: after an fsync error the kernel
        may have dropped the pages it could not write, so no later answer could be trusted (PostgreSQL's rule)."""
        entry = _ENTRY.pack(len(frame), zlib.crc32(frame)) + frame
        rest = memoryview(entry)
        try:
            while rest:
                rest = rest[os.write(self._fd, rest) :]
        except OSError:
            try:
                os.ftruncate(self._fd, self.size)  # no torn entry before later ones
            except OSError as exc:
                _give_up(f"a failed write to {self.path} could not be undone: {exc}")
            raise
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            _give_up(f"fdatasync of {self.path} failed: {exc}")
        self.size += len(entry)

    def cut(self) -> None:
        """After a commit with synchronous=FULL: the database holds every entry durably."""
        os.ftruncate(self._fd, 0)
        self.size = 0

    def close(self) -> None:
        os.close(self._fd)


def _give_up(reason: str) -> NoReturn:
    """End the writer at once, answering nothing more: the node refuses what follows until a new writer opens."""
    print(f"the exchange log's writer stops: {reason}", file=sys.stderr, flush=True)
    os._exit(1)


class BatchRefused(Exception):
    """A batch that does not continue the log where the writer has it (the node's view of the tree is stale)."""


def replay(db: sqlite3.Connection, journal: Journal, decode: Callable[[bytes], Any]) -> int:
    """Put into the database every journalled batch it lacks (in order, each in a transaction of its own);
    return the log's size. An entry that would leave a gap means the two do not belong together: refused."""
    size = _size(db)
    for frame in journal.frames():
        _, records, students, nodes = decode(frame)
        first = int(records[0][0])
        if first + len(records) <= size:
            continue  # in the database already
        if first != size:
            raise RuntimeError(
                f"{journal.path} holds a batch from leaf {first}, but the log ends at leaf {size}: "
                "this journal does not belong to this log file"
            )
        _batch(db, records, students, nodes)
        size += len(records)
    return size


class Batches:
    """The batches of one writer: the database, the journal, and the log's size (where the next batch starts)."""

    def __init__(self, db: sqlite3.Connection, journal: Journal, size: int) -> None:
        self.db = db
        self.journal = journal
        self.size = size

    def take(self, frame: bytes, records: list[list[Any]], students: list[list[Any]], nodes: list[list[Any]],
             answer: Callable[[bool, Any], None]) -> None:
        """Journal the batch, answer, then write it into the database. Raises BatchRefused or the error of the
        journal (answered by the caller: nothing of the batch is kept); exits the process when the database
        refuses a batch already answered (the journal keeps it for the next writer)."""
        db = self.db
        first = int(records[0][0])
        if first != self.size:
            raise BatchRefused(f"the batch starts at leaf {first}, but the log ends at leaf {self.size}")
        durable = self.journal.size >= CUT_BYTES
        if durable:
            db.execute("PRAGMA synchronous=FULL")
        try:
            db.execute("BEGIN IMMEDIATE")  # the write lock first: a database another process holds delays the answer
            self.journal.append(frame)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if durable:
                db.execute("PRAGMA synchronous=NORMAL")
            raise
        answer(True, None)
        try:
            _batch_rows(db, records, students, nodes)
            db.execute("COMMIT")
        except Exception as exc:  # no rollback and no further answers: a new writer puts the batch in, or cannot open
            _give_up(f"the database refused an answered batch, which {self.journal.path} keeps: {exc}")
        self.size += len(records)
        if durable:
            db.execute("PRAGMA synchronous=NORMAL")
            self.journal.cut()

    def durably(self, operation: Callable[..., Any], *arguments: Any) -> Any:
        """Another operation (a checkpoint, pruning), committed with synchronous=FULL like before the journal:
        which also makes every batch before it durable, so the journal is cut after it."""
        self.db.execute("PRAGMA synchronous=FULL")
        try:
            value = operation(self.db, *arguments)
        finally:
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.journal.cut()
        return value


OPERATIONS: dict[str, Callable[..., Any]] = {"checkpoint": _checkpoint, "prune": _prune}  # besides batch, size, settle


def _read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None  # the node closed the pipe (or died): a half-sent request is never carried out
    (length,) = _LENGTH.unpack(head)
    body = stream.read(length)
    return body if len(body) == length else None


def serve(path: str, requests: BinaryIO, answers: BinaryIO, lock_wait: float) -> None:
    """Answer requests from `requests` on `answers` until `requests` ends. The first answer says the store is
    open (or why it is not); opening waits up to `lock_wait` seconds for another writer of the file to end."""
    encode, decode = msgspec.msgpack.Encoder().encode, msgspec.msgpack.Decoder().decode

    def answer(ok: bool, value: Any) -> None:
        frame = encode([ok, value])
        answers.write(_LENGTH.pack(len(frame)) + frame)
        answers.flush()

    try:
        lock = _hold_writer_lock(path, lock_wait)
        db = connect(path)
        journal = Journal(path + JOURNAL_SUFFIX)
        batches = Batches(db, journal, replay(db, journal, decode))
        db.execute("PRAGMA synchronous=NORMAL")  # the journal makes answered batches durable (module doc)
    except Exception as exc:
        answer(False, f"{type(exc).__name__}: {exc}")
        return
    answer(True, None)
    while (frame := _read_frame(requests)) is not None:
        try:
            operation, *arguments = decode(frame)
            if operation == "batch":
                records, students, nodes = arguments
                batches.take(frame, records, students, nodes, answer)  # answers by itself once journalled
                continue
            if operation in ("settle", "size"):  # settle: the batches answered before are in the database now
                value: Any = batches.size
            else:
                value = batches.durably(OPERATIONS[operation], *arguments)
        except Exception as exc:  # the transaction is rolled back; the node fails the request's waiters
            answer(False, str(exc) or type(exc).__name__)
        else:
            answer(True, value)
    db.close()
    # The last connection's close checkpoints the database (synced) and removes its WAL: the journal is spent.
    if not os.path.exists(path + "-wal"):
        journal.cut()
    journal.close()
    lock.close()


class WriterLockHeld(Exception):
    """Another writer process holds the log file's writer lock."""


def _hold_writer_lock(path: str, wait: float) -> BinaryIO:
    lock = open(path + "-writer.lock", "ab")  # noqa: SIM115 - held open (locked) for the process's life
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if time.monotonic() >= deadline:
                lock.close()
                raise WriterLockHeld(
                    f"another process writes to this log (a second node on the same file?): {path}-writer.lock"
                    f" stayed locked for {wait:g} s"
                ) from None
            time.sleep(0.05)


def main() -> None:
    # The answers get a descriptor of their own and stdout becomes stderr, so a stray print cannot corrupt them.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # A file-size limit (RLIMIT_FSIZE) reached makes a write fail with EFBIG, answered like a full disk, instead
    # of killing the process with SIGXFSZ.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    serve(sys.argv[1], sys.stdin.buffer, answers, float(sys.argv[2]))


# --- the node's side -----------------------------------------------------------------------------------------


class SQLiteWriter:
    """The node's handle on its writer process: `request` sends one operation and waits for its answer.

    Any failure to get an answer (the writer died, a garbled frame, or the caller gave up: a commit timeout)
    kills the process, so an abandoned transaction can never commit later; the next request starts a new one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder().decode

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        async with self._lock:
            await self._ensure_started()

    async def request(self, operation: str, *arguments: Any) -> Any:
        async with self._lock:
            process = await self._ensure_started()
            assert process.stdin is not None
            frame = self._encode([operation, *arguments])
            try:
                process.stdin.write(_LENGTH.pack(len(frame)) + frame)
                ok, value = await self._answer(process)
            except BaseException:
                await self._kill()
                raise
            if not ok:
                raise WriterFailed(value)
            return value

    async def close(self) -> None:
        """Let the writer finish what it is doing and exit (its stdin closes); kill it if it does not."""
        async with self._lock:
            process, self._process = self._process, None
            if process is None or process.returncode is not None:
                return
            assert process.stdin is not None
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), timeout=30)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def _ensure_started(self) -> asyncio.subprocess.Process:
        process = self._process
        if process is not None and process.returncode is None:
            return process
        self._process = None
        # Run as a script, not as a module of its package: the package's imports would cost the process
        # 0.7 s and 45 MB more at every start. It needs only the standard library and msgspec.
        self._process = process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            str(self.path),
            str(LOCK_WAIT),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            ok, value = await self._answer(process)
        except BaseException:
            await self._kill()
            raise
        if not ok:
            self._process = None
            await process.wait()
            raise WriterFailed(f"the exchange log's writer cannot open {self.path}: {value}")
        return process

    async def _answer(self, process: asyncio.subprocess.Process) -> tuple[bool, Any]:
        assert process.stdout is not None
        try:
            head = await process.stdout.readexactly(_LENGTH.size)
            (length,) = _LENGTH.unpack(head)
            ok, value = self._decode(await process.stdout.readexactly(length))
        except asyncio.IncompleteReadError as exc:
            raise WriterFailed(f"the exchange log's writer process ended (exit status {process.returncode})") from exc
        except (msgspec.DecodeError, ValueError) as exc:
            raise WriterFailed(f"the exchange log's writer gave a garbled answer: {exc}") from exc
        return bool(ok), value

    async def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()


if __name__ == "__main__":
    main()
