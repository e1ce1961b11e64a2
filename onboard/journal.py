"""Remembering progress: a SQLite journal beside the outputs, so a run killed at any instant resumes.

Each run is keyed by the input file's content and the API's base URL, so a journal never applies
to another file or environment. While a run is open it holds what discovery found, which entities
were sent (written before the request leaves) and every settled outcome. A run that reaches its
end is closed: the next run of the same input is a new run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from onboard.errors import ConfigError
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


def journal_path(outputs_folder: Path, source: Path) -> Path:
    return outputs_folder / f"{source.stem}.journal.sqlite"


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.executescript(_SCHEMA)
    return db


class Journal:
    """One open run of one input against one API; the pipeline's `Ledger` writes through it."""

    def __init__(self, path: Path, db: sqlite3.Connection, lock, run: int, resumed: bool,
                 discovered: bool) -> None:
        self.path = path
        self._db = db
        self._lock = lock
        self.run = run
        self.resumed = resumed
        self.discovered = discovered

    @classmethod
    def open(cls, path: Path, source: Path, base_url: str, planned: dict[str, int]) -> Journal:
        """Resume the open run of this input and API, or start a new one. Only one process at a
        time works on a journal."""
        try:
            lock = open(_lock_path(path), "a+")  # noqa: SIM115 - held for the journal's life
        except OSError as exc:
            raise ConfigError(f"cannot keep the journal beside the outputs ({exc.strerror}): {path}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "another process"
            lock.close()
            raise ConfigError(f"another onboard run (pid {owner}) is working on {source.name} with journal "
                              f"{path}: wait for it, or stop it") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        try:
            db = _connect(path)
        except sqlite3.Error as exc:
            lock.close()
            raise ConfigError(f"the journal {path} cannot be used ({exc}): move it away to start afresh") from None
        sha = fingerprint(source)
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
            (sha, str(source), base_url, time.time(), json.dumps(planned), os.getpid()),
        )
        db.execute("COMMIT")
        return cls(path, db, lock, cursor.lastrowid, resumed=False, discovered=False)

    # what a resumed run starts from

    def outcomes(self) -> Iterator[tuple[str, str, Outcome]]:
        """Settled outcomes worth keeping: registered entities and refusals the API gave."""
        rows = self._db.execute("SELECT kind, id, state, reason, warnings FROM entities"
                                " WHERE run = ? AND state IN ('created', 'exists', 'failed')", (self.run,))
        for kind, entity_id, state, reason, warnings in rows:
            yield kind, entity_id, Outcome(state, reason, tuple(json.loads(warnings)))

    def uncertain(self) -> set[tuple[str, str]]:
        """Entities sent without an answer kept: the write may have happened."""
        rows = self._db.execute("SELECT kind, id FROM entities WHERE run = ? AND state = 'sent'", (self.run,))
        return set(rows)

    # written as the run goes (the Ledger's journal protocol)

    def sending(self, kind: str, ids: Sequence[str]) -> None:
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT INTO entities (run, kind, id, state, updated) VALUES (?, ?, ?, 'sent', ?)"
                " ON CONFLICT (run, kind, id) DO UPDATE SET state = 'sent', updated = excluded.updated",
                [(self.run, kind, entity_id, now) for entity_id in ids],
            )

    def settled(self, kind: str, ids: Sequence[str], outcome: Outcome) -> None:
        if outcome.state == "failed" and not outcome.final:
            return
        row = (outcome.state, outcome.reason, json.dumps(outcome.warnings), time.time())
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO entities (run, kind, id, state, reason, warnings, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(self.run, kind, entity_id, *row) for entity_id in ids],
            )

    def mark_discovered(self) -> None:
        with self._db:
            self._db.execute("UPDATE runs SET discovered = 1 WHERE id = ?", (self.run,))
        self.discovered = True

    def discard(self) -> None:
        """Forget a run that never got to send anything (its credentials were refused)."""
        if not self.resumed:
            with self._db:
                self._db.execute("DELETE FROM runs WHERE id = ?", (self.run,))

    def finish(self) -> None:
        """The run reached its end: close it, so the next run of this input starts anew."""
        with self._db:
            self._db.execute("UPDATE runs SET state = 'closed', finished = ? WHERE id = ?", (time.time(), self.run))
            self._db.execute("DELETE FROM entities WHERE run = ?", (self.run,))

    def release(self) -> None:
        self._db.close()
        self._lock.close()


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
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
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
    finally:
        db.close()


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _lock_owner(lock: Path) -> int | None:
    """The pid holding the journal's lock, or None when no run holds it."""
    if not lock.exists():
        return None
    with lock.open("r") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None
