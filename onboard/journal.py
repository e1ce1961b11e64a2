"""Remembering progress: a SQLite journal beside the outputs, so a run killed at any instant resumes.

Each run is keyed by the input file's content and the API's base URL, so a journal never applies
to another file or environment. While a run is open it holds what discovery found, which entities
were sent (written before the request leaves) and every settled outcome. A run that reaches its
end is closed: the next run of the same input is a new run.

A journal is only used when it is whole and this tool's, down to each value's type and shape;
anything else at its path (another program's database, another version's journal, a damaged file,
a value edited by hand) is refused with what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from onboard.errors import ConfigError, OnboardError
from onboard.files import connect_sqlite, open_own

if TYPE_CHECKING:  # `validate` fingerprints its input here without loading the HTTP client
    from onboard.pipeline import Outcome

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    input_sha256 TEXT NOT NULL,
    input TEXT NOT NULL,
    base_url TEXT NOT NULL,
    state TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    discovered INTEGER NOT NULL DEFAULT 0,
    planned TEXT NOT NULL,
    pid INTEGER
);
CREATE TABLE IF NOT EXISTS entities (
    run INTEGER NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    warnings TEXT NOT NULL DEFAULT '[]',
    updated REAL NOT NULL,
    PRIMARY KEY (run, kind, id)
) WITHOUT ROWID;
"""


def fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def journal_path(outputs_folder: Path, source: Path, command: str | None = None) -> Path:
    """`<stem>.journal.sqlite` for `run`; a command that follows a run keeps its own journal,
    `<stem>.<command>.journal.sqlite` (`cleanup`, `move`), so it never touches the run's."""
    return outputs_folder / f"{source.stem}{f'.{command}' if command else ''}.journal.sqlite"


def _unusable(path: Path, why: str) -> ConfigError:
    return ConfigError(f"the journal {path} {why}: move it away, and the next run starts afresh (what is "
                       "registered already is found and counted as `exists`)")


def _open(path: Path, read_only: bool) -> tuple[sqlite3.Connection, bool]:
    """Connect, and make sure the file is a whole journal of this tool's before anything relies on
    it; True with the connection when the file is new (empty)."""
    try:
        db = connect_sqlite(path, read_only=read_only, isolation_level=None, timeout=30)
    except OSError as exc:
        raise ConfigError(f"cannot {'read' if read_only else 'keep'} the journal {path}: {exc.strerror}") from None
    except sqlite3.Error as exc:
        raise _unusable(path, f"cannot be opened ({exc})") from None
    try:
        new = _recognise(db, path)
        if not read_only:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA wal_autocheckpoint = 0")  # `_Checkpoints` does it, off the event loop
            if new:
                db.executescript(_SCHEMA)
    except sqlite3.Error as exc:
        db.close()
        raise _unusable(path, f"cannot be read, it is not a SQLite file or it is damaged ({exc})") from None
    except BaseException:
        db.close()
        raise
    return db, new


def _recognise(db: sqlite3.Connection, path: Path) -> bool:
    """True for an empty file (a new journal), False for a journal; anything else is refused."""
    check = db.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        raise _unusable(path, f"is damaged ({check})")
    tables = _tables(db)
    if not tables:
        return True
    if tables == _journal_tables():
        _check_values(db, path)
        return False
    if tables.keys() & _journal_tables().keys():
        raise _unusable(path, "was written by another version of onboard")
    raise _unusable(path, f"is not an onboard journal (it is a database of tables {', '.join(sorted(tables))})")


def _a_plan(value: object) -> bool:
    return isinstance(value, dict) and all(type(n) is int and n >= 0 for n in value.values())


def _warnings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(w, str) for w in value)


_A_TIME = "typeof({0}) IN ('real', 'integer') AND {0} BETWEEN 0 AND 1e11"
"""Seconds since 1970, as time.time() gives them; within what time.localtime() can show."""

_VALUES = {
    "runs": ("'run ' || id", {
        "input_sha256": "typeof(input_sha256) = 'text' AND length(input_sha256) = 64",
        "input": "typeof(input) = 'text' AND input != ''",
        "base_url": "typeof(base_url) = 'text'",
        "state": "typeof(state) = 'text' AND state IN ('open', 'closed', 'abandoned')",
        "started": _A_TIME.format("started"),
        "finished": f"finished IS NULL OR {_A_TIME.format('finished')}",
        "discovered": "typeof(discovered) = 'integer' AND discovered IN (0, 1)",
        "planned": "typeof(planned) = 'text'",
        "pid": "typeof(pid) IN ('integer', 'null')",
    }),
    "entities": ("'run ' || quote(run) || ', ' || quote(kind) || ' ' || quote(id)", {
        "run": "typeof(run) = 'integer'",
        "kind": "typeof(kind) = 'text'",
        "id": "typeof(id) = 'text'",
        "state": "typeof(state) = 'text'",
        "reason": "typeof(reason) = 'text'",
        "warnings": "typeof(warnings) = 'text'",
        "updated": _A_TIME.format("updated"),
    }),
}
"""What each column of a whole journal holds, as a rule that is true or false (never NULL). SQLite
keeps whatever a column is given (a time `'yesterday'`), so a journal edited by hand, or by another
program, is checked value by value."""

_JSON = {("runs", "planned"): _a_plan, ("entities", "warnings"): _warnings}
"""The columns holding JSON, and the shape of what they hold; checked in Python, once for each
different text (a million entities share a handful of warnings)."""


def _check_values(db: sqlite3.Connection, path: Path) -> None:
    """Every value of the journal has the type and shape this module writes, so no run and no
    `status` meets one it cannot use; the first value amiss is named."""
    for table, (key, columns) in _VALUES.items():
        whole = " AND ".join(f"({rule})" for rule in columns.values())
        bad = " ".join(f"WHEN NOT ({rule}) THEN '{column}'" for column, rule in columns.items())
        value = " ".join(f"WHEN '{column}' THEN quote({column})" for column in columns)
        found = db.execute(f"SELECT {key}, bad, substr(CASE bad {value} END, 1, 40) FROM (SELECT *, CASE {bad} END "
                           f"AS bad FROM {table} WHERE NOT ({whole}) LIMIT 1)").fetchone()
        if found:
            raise _unusable(path, f"holds a value it cannot read ({found[0]}: {found[1]} is {found[2]})")
    for (table, column), fits in _JSON.items():
        for (text,) in db.execute(f"SELECT DISTINCT {column} FROM {table}"):
            try:
                fit = fits(json.loads(text))
            except (ValueError, RecursionError):
                fit = False
            if not fit:
                where = db.execute(f"SELECT {_VALUES[table][0]}, substr(quote({column}), 1, 40) FROM {table} "
                                   f"WHERE {column} = ? LIMIT 1", (text,)).fetchone()
                raise _unusable(path, f"holds a value it cannot read ({where[0]}: {column} is {where[1]})")


def _tables(db: sqlite3.Connection) -> dict[str, tuple[str, ...]]:
    names = db.execute("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%'")
    return {name: tuple(column for (column,) in db.execute("SELECT name FROM pragma_table_info(?)", (name,)))
            for (name,) in names.fetchall()}


@functools.cache
def _journal_tables() -> dict[str, tuple[str, ...]]:
    """The tables and columns `_SCHEMA` makes, read back from SQLite rather than written twice."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(_SCHEMA)
        return _tables(db)
    finally:
        db.close()


_SENDING = ("INSERT INTO entities (run, kind, id, state, updated) VALUES (?, ?, ?, 'sent', ?)"
            " ON CONFLICT (run, kind, id) DO UPDATE SET state = 'sent', updated = excluded.updated")
_SETTLED = ("INSERT OR REPLACE INTO entities (run, kind, id, state, reason, warnings, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)")
_UNSENT = "DELETE FROM entities WHERE run = ? AND kind = ? AND id = ? AND state = 'sent'"
_STOPPING_WAIT_MS = 1000
"""How long a write waits for the file once one was refused (the run is stopping)."""
_SETTLED_HELD = 1000
"""Outcomes kept in memory at most before they are written anyway (a discovery settles many with
nothing sent)."""


class Journal:
    """One open run of one input against one API; the pipeline's `Ledger` writes through it."""

    def __init__(self, path: Path, db: sqlite3.Connection, lock: _Lock, run: int, resumed: bool,
                 discovered: bool) -> None:
        self.path = path
        self._db = db
        self._lock = lock
        self.run = run
        self.resumed = resumed
        self.discovered = discovered
        self._settled: list[tuple] = []
        """Outcomes not yet written: they go with the next write before a request (`sending`)."""
        self._announced: set[tuple[str, str]] = set()
        """Entities written as sent ahead of their request (`sending`'s `ahead`), not yet sent."""
        self._checkpoints = _Checkpoints(path)

    @classmethod
    def open(cls, path: Path, source: Path, base_url: str, planned: dict[str, int],
             sha256: str | None = None) -> Journal:
        """Resume the open run of this input and API, or start a new one. Only one process at a
        time works on a journal. `sha256` is the input's content when it is no file (a DataFrame)."""
        lock = _Lock.take(path, source)
        try:
            db, _ = _open(path, read_only=False)
            try:
                return cls._begin(path, db, lock, source, base_url, planned, sha256 or fingerprint(source))
            except sqlite3.Error as exc:
                db.close()
                raise _unusable(path, f"cannot be used ({exc})") from None
            except BaseException:
                db.close()
                raise
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _begin(cls, path: Path, db: sqlite3.Connection, lock: _Lock, source: Path, base_url: str,
               planned: dict[str, int], sha: str) -> Journal:
        row = db.execute("SELECT id, discovered FROM runs WHERE input_sha256 = ? AND base_url = ? AND state = 'open'",
                         (sha, base_url)).fetchone()
        if row:
            db.execute("UPDATE runs SET pid = ? WHERE id = ?", (os.getpid(), row[0]))
            return cls(path, db, lock, row[0], resumed=True, discovered=bool(row[1]))
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE runs SET state = 'abandoned' WHERE state = 'open' AND base_url = ?", (base_url,))
        cursor = db.execute(
            "INSERT INTO runs (input_sha256, input, base_url, state, started, planned, pid)"
            " VALUES (?, ?, ?, 'open', ?, ?, ?)",
            (sha, str(source.resolve()), base_url, time.time(), json.dumps(planned), os.getpid()),
        )
        db.execute("COMMIT")
        return cls(path, db, lock, cursor.lastrowid, resumed=False, discovered=False)

    # what a resumed run starts from

    def outcomes(self, states: Sequence[str] = ("created", "exists", "failed", "differs", "updated")
                 ) -> Iterator[tuple[str, str, Outcome]]:
        """Settled outcomes worth keeping: by default (a `run`'s) registered entities and refusals the
        API gave; a command's own journal names its own (`deleted`, `gone`, `moved`, ...)."""
        from onboard.pipeline import Outcome

        self.flush()
        marks = ", ".join("?" * len(states))
        rows = self._db.execute("SELECT kind, id, state, reason, warnings FROM entities"
                                f" WHERE run = ? AND state IN ({marks})", (self.run, *states)).fetchall()
        for kind, entity_id, state, reason, warnings in rows:
            yield kind, entity_id, Outcome(state, reason, tuple(json.loads(warnings)))

    def uncertain(self) -> set[tuple[str, str]]:
        """Entities sent without an answer kept: the write may have happened."""
        self.flush()
        return set(self._db.execute("SELECT kind, id FROM entities WHERE run = ? AND state = 'sent'", (self.run,)))

    # written as the run goes (the Ledger's journal protocol)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write SQLite refuses (the disk full, another program holding the file past the 30 s
        wait) stops the run with what to do, not a traceback; nothing that was to be written is
        taken for written. The writes of the stop that follows wait a second at most, not 30 s
        each: the outputs, not the journal, then say what was done."""
        try:
            yield
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute(f"PRAGMA busy_timeout = {_STOPPING_WAIT_MS}")
            raise ConfigError(f"the journal {self.path} could not be written ({exc}): make room on its disk, or "
                              "close the program holding it open, then run the same command again to resume") from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One commit for a batch's rows: the connection is in autocommit mode, where each row of an
        `executemany` would otherwise be a transaction (and a commit) of its own."""
        self._db.execute("BEGIN")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # a refused COMMIT leaves it open, unless SQLite rolled it back itself
                self._db.execute("ROLLBACK")
            raise

    def _commit(self, settled: list[tuple], sent: list[tuple]) -> None:
        """One commit of outcomes and write-aheads."""
        with self._writing():
            if not settled and len(sent) == 1:
                self._db.execute(_SENDING, sent[0])  # autocommit: a transaction of its own
            else:
                with self._transaction():
                    if settled:
                        self._db.executemany(_SETTLED, settled)
                    if sent:
                        self._db.executemany(_SENDING, sent)
        self._checkpoints.written()

    def sending(self, kind: str, ids: Sequence[str], ahead: Iterable[str] = ()) -> None:
        """Written before the request leaves, so an answer lost with the process is known as maybe
        sent; the outcomes settled since the last write go in the same commit. `ahead` are the
        entities likely to go next, written as sent in that commit too: their own requests then
        need no commit, so one commit serves a round of requests instead of each. A killed run
        leaves them `sent`, and the next run looks them up (a GET each) before sending them; a run
        that stops takes back those it never sent (`release`)."""
        announced = self._announced
        going = {(kind, entity_id) for entity_id in ids}
        written = bool(announced) and going <= announced
        announced -= going
        if written:
            return
        now = time.time()
        sent = [(self.run, kind, entity_id, now) for entity_id in ids]
        early: list[str] = []
        if ahead:
            early = [e for e in ahead if (kind, e) not in going and (kind, e) not in announced]
            sent.extend((self.run, kind, entity_id, now) for entity_id in early)
        self._commit(self._settled, sent)
        self._settled = []  # only once on disk: a refused commit keeps them, and writes none ahead
        announced.update((kind, entity_id) for entity_id in early)

    def settled(self, kind: str, ids: Sequence[str], outcome: Outcome) -> None:
        """A batch's outcome is written at once; one entity's goes with the next write-ahead, since
        a commit per answer would cost more than the request. An outcome lost with a killed process
        leaves its entity `sent`, which the next run looks up before anything else: at most the
        single requests of a round (in flight, or written ahead) are asked again. An outcome `sent` is a command's own
        write-ahead (`move` keeps where a site was in it), so it is written before its request leaves."""
        if self._announced:  # settled before its request left: a later send writes its own write-ahead
            self._announced.difference_update((kind, entity_id) for entity_id in ids)
        if outcome.state == "failed" and not outcome.final:
            return
        row = (outcome.state, outcome.reason, json.dumps(outcome.warnings), time.time())
        self._settled.extend((self.run, kind, entity_id, *row) for entity_id in ids)
        if len(ids) > 1 or outcome.state == "sent" or len(self._settled) >= _SETTLED_HELD:
            self.flush()

    def flush(self) -> None:
        """Write the outcomes held: before a read, and once the work has ended (nothing more to send),
        so that a run killed while it writes its outputs has nothing to look up again."""
        if self._settled:
            self._commit(self._settled, [])
            self._settled = []

    def mark_discovered(self) -> None:
        self.flush()
        with self._writing(), self._db:
            self._db.execute("UPDATE runs SET discovered = 1 WHERE id = ?", (self.run,))
        self.discovered = True

    def discard(self) -> None:
        """Forget a run that never got to send anything (its credentials were refused)."""
        if not self.resumed:
            with self._writing(), self._db:
                self._db.execute("DELETE FROM runs WHERE id = ?", (self.run,))

    def finish(self) -> None:
        """The run reached its end: close it, so the next run of this input starts anew."""
        self._settled = []
        with self._writing(), self._db:
            self._db.execute("UPDATE runs SET state = 'closed', finished = ? WHERE id = ?", (time.time(), self.run))
            self._db.execute("DELETE FROM entities WHERE run = ?", (self.run,))

    def _forget_unsent(self) -> None:
        """The run stopped (Ctrl-C, the API gone) with devices written ahead whose requests never left:
        this process knows they were not sent, so they are not left `sent`, which `onboard status` would
        count as awaiting confirmation and the next run would look up."""
        if self._announced:
            unsent, self._announced = self._announced, set()
            with self._writing(), self._transaction():
                self._db.executemany(_UNSENT, ((self.run, kind, entity_id) for kind, entity_id in unsent))

    def release(self) -> None:
        """Let go of the journal. Its WAL is folded back in and switched off, so a run that ended or
        stopped leaves one self-contained file beside the outputs, no -wal, -shm or lock; only a run
        killed outright keeps them, for the next run to pick up."""
        try:
            self._checkpoints.stop()
            with contextlib.suppress(ConfigError):  # not written: the next run looks those up
                self.flush()
                self._forget_unsent()
            with contextlib.suppress(sqlite3.Error):  # a reader has it open: the next run folds the WAL in
                self._db.execute("PRAGMA busy_timeout = 2000")
                self._db.execute("PRAGMA journal_mode = DELETE")
        finally:
            self._db.close()
            self._lock.release()


class _Checkpoints:
    """The WAL folded into the journal by a thread of its own, with its own connection. SQLite
    would do it within a commit every thousand pages, with the event loop waiting on its fsyncs
    (tens of milliseconds, every few hundred requests). Here a passive checkpoint folds in the bulk
    while commits go on (SQLite lets go of the GIL while it writes), then a restarting one folds in
    what came meanwhile, holding a commit up for a millisecond at most, so the WAL starts over."""

    EVERY = 500
    """Commits between two checkpoints."""

    WAIT = 0.02
    """Seconds a restarting checkpoint waits for a reader (`onboard status`, a SQLite browser) to let
    go, keeping the run's commits out meanwhile; past that, the next one, or the end, folds it in."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._commits = 0
        self._due = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def written(self) -> None:
        self._commits += 1
        if self._commits % self.EVERY == 0:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="onboard-journal-checkpoints", daemon=True)
                self._thread.start()
            self._due.set()

    def _work(self) -> None:
        try:
            db = connect_sqlite(self.path, isolation_level=None, timeout=self.WAIT, check_same_thread=False)
        except (OSError, sqlite3.Error, OnboardError):  # the journal's path changed: the end folds the WAL in
            return
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if self._stopping:
                    return
                with contextlib.suppress(sqlite3.Error):  # the next one, or the end, folds it in
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # the bulk, with writers going on
                    db.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()  # the last few: the WAL starts over
        finally:
            db.close()

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping = True
            self._due.set()
            self._thread.join()
            self._thread = None


class _Lock:
    """One process at a time per journal: a file beside it, held (flock) for the run's life, with
    the pid inside for `onboard status` and for the message another run gets."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def take(cls, journal: Path, source: Path) -> _Lock:
        path = _lock_path(journal)
        while True:
            try:
                fd = open_own(path, os.O_RDWR | os.O_CREAT)
            except OSError as exc:
                raise ConfigError(f"cannot keep the journal beside the outputs ({exc.strerror}): {journal}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                if isinstance(exc, BlockingIOError):
                    raise ConfigError(f"another onboard run (pid {owner}) is working on {source.name} with journal "
                                      f"{journal}: wait for it, or stop it") from None
                raise ConfigError(f"cannot lock the journal {journal}: {exc.strerror}") from None
            if _still_at(fd, path):
                break
            os.close(fd)  # the run before removed this lock file as it let go: take the one there now
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Remove the file while still holding it, so no other run takes a lock on a removed file."""
        try:
            if _still_at(self._fd, self.path):
                self.path.unlink()
        finally:
            os.close(self._fd)


def _still_at(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.lstat(path))
    except FileNotFoundError:
        return False


# onboard status


@dataclass(frozen=True)
class Progress:
    input: str
    base_url: str
    state: str
    running_pid: int | None
    started: float
    finished: float | None
    updated: float | None
    planned: dict[str, int]
    done: dict[str, dict[str, int]]


def progress(path: Path) -> list[Progress]:
    """Every run a journal knows, newest first, read without disturbing a run in progress."""
    lock_owner = _lock_owner(_lock_path(path))
    db, new = _open(path, read_only=True)
    try:
        if new:
            return []
        runs = db.execute("SELECT id, input, base_url, state, started, finished, planned, pid FROM runs"
                          " ORDER BY id DESC").fetchall()
        found = []
        for run, source, base_url, state, started, finished, planned, pid in runs:
            done: dict[str, dict[str, int]] = {}
            for kind, entity_state, count in db.execute(
                    "SELECT kind, state, count(*) FROM entities WHERE run = ? GROUP BY kind, state", (run,)):
                done.setdefault(kind, {})[entity_state] = count
            updated = db.execute("SELECT max(updated) FROM entities WHERE run = ?", (run,)).fetchone()[0]
            running = pid if state == "open" and lock_owner == pid else None
            found.append(Progress(source, base_url, state, running, started, finished, updated,
                                  json.loads(planned), done))
        return found
    except sqlite3.Error as exc:
        raise _unusable(path, f"cannot be read ({exc})") from None
    finally:
        db.close()


def recorded_input(path: Path) -> Path | None:
    """The input of the newest run a journal records: None when there is none, or when the journal
    cannot be read (a run that needs it says why)."""
    if not os.path.lexists(path):
        return None
    try:
        db, new = _open(path, read_only=True)
    except OnboardError:
        return None
    try:
        row = None if new else db.execute("SELECT input FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        row = None
    finally:
        db.close()
    return Path(row[0]) if row else None


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _lock_owner(lock: Path) -> int | None:
    """The pid holding the journal's lock, or None when no run holds it."""
    try:
        fd = open_own(lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the journal's lock {lock}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)
    return None
