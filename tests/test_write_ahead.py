"""The journal writes a round of single requests ahead in one commit: each request is still on disk
as `sent` before it leaves, but the requests that follow it need no commit of their own."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from helpers import HEADERS, journal_states, meter_point_id, write_csv
from onboard import api, records, settings
from onboard import plan as planning
from onboard import sheet as sheets
from onboard.emulator import EmulatorSettings, Store, create_app
from onboard.journal import Journal
from onboard.pipeline import BatchSize, Ledger, Outcome, Run


def _journal(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("customer_id\n1\n")
    path = tmp_path / "in.journal.sqlite"
    return path, Journal.open(path, source, "http://api", {"resources": 5})


def _commits(statements: list[str]) -> int:
    """Commits, in autocommit mode: a transaction, or a write outside one."""
    inside = False
    count = 0
    for statement in statements:
        word = statement.split()[0]
        if word == "BEGIN":
            inside = True
        elif word == "COMMIT":
            inside, count = False, count + 1
        elif word in ("INSERT", "UPDATE") and not inside:
            count += 1
    return count


def test_a_write_ahead_carries_the_next_requests_which_then_need_no_commit(tmp_path):
    path, journal = _journal(tmp_path)
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    ledger = Ledger(journal)
    try:
        ledger.sending("resource", ["r1"], ["r2", "r3"])
        assert journal_states(path) == {"r1": "sent", "r2": "sent", "r3": "sent"}  # one commit, before r1 leaves
        ledger.settle("resource", "r1", Outcome("created"))
        ledger.sending("resource", ["r2"], ["r3", "r4"])  # written already: nothing to commit
        ledger.settle("resource", "r2", Outcome("created"))
        ledger.sending("resource", ["r3"], ["r4", "r5"])
        assert _commits(statements) == 1
        # killed here, another process finds every one of them maybe sent, none lost
        assert journal_states(path) == {"r1": "sent", "r2": "sent", "r3": "sent"}
        ledger.settle("resource", "r3", Outcome("created"))
        ledger.sending("resource", ["r4"], ["r5"])  # not written ahead: its own commit, with the outcomes held
        assert _commits(statements) == 2
        assert journal_states(path) == {"r1": "created", "r2": "created", "r3": "created", "r4": "sent",
                                        "r5": "sent"}
    finally:
        journal._db.set_trace_callback(None)
        journal.release()


def test_an_entity_settled_before_its_request_left_gets_a_write_ahead_of_its_own(tmp_path):
    """Written ahead, then settled without being sent (its parent failed, say): its outcome replaces
    `sent` on disk, so were it sent after all, that request must write `sent` again before it leaves."""
    path, journal = _journal(tmp_path)
    ledger = Ledger(journal)
    try:
        ledger.sending("resource", ["r1"], ["r2"])
        ledger.settle_all("resource", ["r2"], Outcome("failed", "blocked: its site was refused", final=True))
        ledger.flush()
        assert journal_states(path)["r2"] == "failed"
        ledger.sending("resource", ["r2"])
        assert journal_states(path)["r2"] == "sent"
    finally:
        journal.release()


def test_what_was_written_ahead_of_a_killed_run_is_looked_up_by_the_next(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("customer_id\n1\n")
    path = tmp_path / "in.journal.sqlite"
    killed = subprocess.run([sys.executable, "-c", f"""
import os
from pathlib import Path
from onboard.journal import Journal
journal = Journal.open(Path({str(path)!r}), Path({str(source)!r}), "http://api", {{"resources": 3}})
journal.sending("resource", ["r1"], ["r2", "r3"])
os._exit(9)  # killed as r1 leaves: r2 and r3 never went
"""], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    resumed = Journal.open(path, source, "http://api", {"resources": 3})
    try:
        assert resumed.resumed
        assert resumed.uncertain() == {("resource", "r1"), ("resource", "r2"), ("resource", "r3")}
    finally:
        resumed.release()


class _Watching(httpx.AsyncBaseTransport):
    """The network, with an eye on the journal: each device's request is on disk as `sent` (read by
    another connection, as a resumed run would) at the moment it leaves."""

    def __init__(self, inner: httpx.AsyncBaseTransport, journal_path) -> None:
        self.inner = inner
        self.journal_path = journal_path
        self.unwritten: list[str] = []
        self.devices = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/resources"):
            self.devices += 1
            resource_id = json.loads(request.content)["resourceId"]
            if journal_states(self.journal_path).get(resource_id) != "sent":
                self.unwritten.append(resource_id)
        return await self.inner.handle_async_request(request)


@pytest.mark.anyio
async def test_a_run_commits_once_a_round_and_every_request_is_on_disk_before_it_leaves(tmp_path):
    devices = 40
    path = write_csv(tmp_path / "in.csv", [
        [f"c{n // 2}", "home", "", meter_point_id(n // 2), "", "", f"SN-{n}", "Charger"] for n in range(devices)
    ], HEADERS)
    plan = planning.build(records.check(sheets.read(path)))
    app = create_app(EmulatorSettings(seed=7, state=tmp_path / "e.sqlite"), Store())
    journal_path = tmp_path / "in.journal.sqlite"
    journal = Journal.open(journal_path, path, "emulator", {"users": 20, "locations": 20, "resources": devices})
    watching = _Watching(httpx.ASGITransport(app=app), journal_path)
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    try:
        ledger = Ledger(journal)
        async with api.connect(settings.target("local"), concurrency=4, transport=watching) as client:
            await client.sign_in()
            await Run(client, plan, ledger, BatchSize(100), concurrency=4, show_progress=False)()
    finally:
        journal._db.set_trace_callback(None)
        journal.release()
    assert watching.devices == devices
    assert watching.unwritten == []
    assert {ledger.get(*e).state for row in plan.rows for e in row.entities()} == {"created"}
    # a round is a request and the 4 that may follow it in flight: the 40 devices' write-aheads take 8
    # commits, where one per request took 40; besides, the batches' write-aheads and outcomes, and the end
    assert _commits(statements) <= 16, _commits(statements)  # 14 here; 46 with a commit per request
