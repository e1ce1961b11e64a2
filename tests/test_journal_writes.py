"""How the journal writes: a batch's entities in one transaction, as soon as they are sent and as
soon as they settle, so another process (`onboard status`, a resumed run) sees them at once; one
entity's outcome with the next request's write-ahead, in one commit."""

from __future__ import annotations

import time
from pathlib import Path

from helpers import journal_states
from onboard.journal import Journal
from onboard.pipeline import Ledger, Outcome


def test_a_batch_is_one_transaction_written_before_it_leaves_and_when_it_settles(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("customer_id\n1\n")
    path = tmp_path / "in.journal.sqlite"
    journal = Journal.open(path, source, "http://api", {"users": 100})
    ids = [f"u{n}" for n in range(100)]
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)  # the connection is in autocommit mode
    try:
        Ledger(journal).sending("user", ids)
        assert journal_states(path) == dict.fromkeys(ids, "sent")
        Ledger(journal).settle_all("user", ids, Outcome("created"))
        assert journal_states(path) == dict.fromkeys(ids, "created")
    finally:
        journal._db.set_trace_callback(None)
        journal.release()
    # without BEGIN, each of a batch's 100 rows would be a transaction (and a commit) of its own
    assert [s.split()[0] for s in statements if s.split()[0] in ("BEGIN", "COMMIT")] == ["BEGIN", "COMMIT"] * 2
    assert sum(s.startswith("INSERT") for s in statements) == 200


def test_one_entitys_outcome_goes_with_the_next_write_ahead_and_none_is_lost_at_the_end(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("customer_id\n1\n")
    path = tmp_path / "in.journal.sqlite"
    journal = Journal.open(path, source, "http://api", {"resources": 3})
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    ledger = Ledger(journal)
    try:
        ledger.sending("resource", ["r1"])
        assert journal_states(path) == {"r1": "sent"}  # before the request leaves
        ledger.settle("resource", "r1", Outcome("created"))
        assert journal_states(path) == {"r1": "sent"}  # a killed run looks r1 up: it is not lost
        ledger.sending("resource", ["r2"])
        assert journal_states(path) == {"r1": "created", "r2": "sent"}
        ledger.settle("resource", "r2", Outcome("failed", "400: refused", final=True))
        assert ledger.journal.uncertain() == set()  # what is read back includes what is held
        ledger.sending("resource", ["r3"])
        ledger.settle("resource", "r3", Outcome("created"))
    finally:
        journal._db.set_trace_callback(None)
        journal.release()
    assert journal_states(path) == {"r1": "created", "r2": "failed", "r3": "created"}
    commits = [s.split()[0] for s in statements if s.split()[0] in ("BEGIN", "COMMIT")]
    # r1's write-ahead alone (autocommit); r1's outcome with r2's write-ahead; r2's outcome written by
    # the read; r3's write-ahead alone; r3's outcome at release (not traced): one outcome, no commit of its own
    assert commits == ["BEGIN", "COMMIT"] * 2, statements


def test_the_wal_is_folded_in_by_the_journals_own_thread_not_within_a_commit(tmp_path):
    """SQLite's own checkpoint runs inside a commit, with the event loop waiting on its fsyncs; the
    journal turns it off and checkpoints on a thread, so the WAL still stays small."""
    source = tmp_path / "in.csv"
    source.write_text("customer_id\n1\n")
    path = tmp_path / "in.journal.sqlite"
    journal = Journal.open(path, source, "http://api", {"resources": 4000})
    wal = Path(f"{path}-wal")
    try:
        assert journal._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        sizes = []
        for n in range(4000):
            journal.sending("resource", [f"r{n}"])
            time.sleep(0)  # a run has requests between its commits
            if n % 500 == 499:
                sizes.append(wal.stat().st_size)
        page = journal._db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        journal.release()
    assert not wal.exists()
    assert sizes[-1] < 4000 * page / 2, sizes  # unfolded, each commit adds at least a page
