"""When the journal writes: an entity as `sent` before its request leaves, its outcome with the next
write (or when the journal is let go), as another process (`onboard status`, a resumed run) sees it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from onboard.journal import Journal
from onboard.pipeline import Ledger, Outcome


def _states(path: Path) -> dict[str, str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT id, state FROM entities"))
    finally:
        db.close()


def _journal(tmp_path: Path) -> tuple[Journal, Path]:
    source = tmp_path / "in.csv"
    source.write_text("customer_id\n1\n")
    path = tmp_path / "in.journal.sqlite"
    return Journal.open(path, source, "http://api", {"users": 2}), path


def test_a_send_is_written_before_it_leaves_and_outcomes_go_with_the_next_send(tmp_path):
    journal, path = _journal(tmp_path)
    ledger = Ledger(journal)
    try:
        ledger.sending("user", ["u1", "u2"])
        assert _states(path) == {"u1": "sent", "u2": "sent"}
        ledger.settle_all("user", ["u1", "u2"], Outcome("created"))
        assert _states(path) == {"u1": "sent", "u2": "sent"}  # held until the next write
        ledger.sending("location", ["l1"])
        assert _states(path) == {"u1": "created", "u2": "created", "l1": "sent"}
        ledger.settle("location", "l1", Outcome("created"))
    finally:
        journal.release()
    assert _states(path) == {"u1": "created", "u2": "created", "l1": "created"}


def test_outcomes_not_yet_written_are_read_back_by_the_run_that_holds_them(tmp_path):
    journal, path = _journal(tmp_path)
    try:
        journal.sending("user", ["u1", "u2"])
        journal.settled("user", ["u1"], Outcome("created"))
        assert journal.uncertain() == {("user", "u2")}
        assert [(kind, entity_id, o.state) for kind, entity_id, o in journal.outcomes()] == [("user", "u1", "created")]
    finally:
        journal.release()
