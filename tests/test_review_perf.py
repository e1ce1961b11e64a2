"""A review of the journal's held outcomes and its checkpoint thread: what must be on disk before a
request leaves, or once the work has ended, is; a journal whose checkpoints cannot run says nothing."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from helpers import HEADERS, journal_states, meter_point_id, write_csv
from onboard import api, records, settings
from onboard import plan as planning
from onboard import sheet as sheets
from onboard.emulator import EmulatorSettings, Store, create_app
from onboard.journal import Journal
from onboard.pipeline import BatchSize, Ledger, Outcome, Run


def test_a_moves_write_ahead_is_on_disk_before_the_move_leaves(tmp_path):
    """`onboard move` keeps where a site was as an outcome `sent`, before it moves it: a process
    killed right after the PATCH left must find it on resume, or the site's old place is lost."""
    source = tmp_path / "in.csv"
    source.write_text("customer_id\n1\n")
    path = tmp_path / "in.move.journal.sqlite"
    killed = subprocess.run([sys.executable, "-c", f"""
import os
import signal
from pathlib import Path
from onboard.journal import Journal
from onboard.pipeline import Outcome
journal = Journal.open(Path({str(path)!r}), Path({str(source)!r}), "http://api to 3", {{"locations": 2}})
journal.settled("location", ["l1"], Outcome("sent", "[59.9, 10.7]"))
os._exit(9)  # killed as the PATCH leaves: no release
"""], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    assert journal_states(path) == {"l1": "sent"}
    resumed = Journal.open(path, source, "http://api to 3", {"locations": 2})
    try:
        assert resumed.resumed
        assert [(i, o.state, o.reason) for _, i, o in resumed.outcomes(("sent",))] == [("l1", "sent", "[59.9, 10.7]")]
    finally:
        resumed.release()


@pytest.mark.anyio
async def test_every_outcome_is_on_disk_once_the_run_has_sent_its_last_request(tmp_path):
    """The last devices' outcomes have no next write-ahead to ride with; once the work ends they are
    written, so a run killed while it writes its outputs (seconds, for a big sheet) has nothing `sent`
    to look up again."""
    path = write_csv(tmp_path / "in.csv", [
        ["c1", "home", "", meter_point_id(1), "", "", "SN-1", "Charger"],
        ["c1", "home", "", meter_point_id(1), "", "", "SN-2", "HVAC"],
        ["c2", "home", "", meter_point_id(2), "", "", "SN-3", "Charger"],
    ], HEADERS)
    plan = planning.build(records.check(sheets.read(path)))
    app = create_app(EmulatorSettings(seed=7, state=tmp_path / "e.sqlite"), Store())
    journal_path = tmp_path / "in.journal.sqlite"
    journal = Journal.open(journal_path, path, "emulator", {"users": 2, "locations": 2, "resources": 3})
    try:
        ledger = Ledger(journal)
        async with api.connect(settings.target("local"), concurrency=4, transport=httpx.ASGITransport(app=app)
                               ) as client:
            await client.sign_in()
            await Run(client, plan, ledger, BatchSize(100), concurrency=4, show_progress=False)()
        on_disk = journal_states(journal_path)
    finally:
        journal.release()
    assert {ledger.get(*e).state for row in plan.rows for e in row.entities()} == {"created"}
    assert "sent" not in on_disk.values(), on_disk
    assert len(on_disk) == 2 + 2 + 3


def test_a_checkpoint_that_cannot_start_prints_no_traceback(tmp_path, monkeypatch):
    """The checkpoint thread's connection can fail (the journal's folder was moved away, or the file
    replaced, while the run went on): the end folds the WAL in, so it is no crash of a thread with a
    traceback on the user's terminal."""
    source = tmp_path / "in.csv"
    source.write_text("customer_id\n1\n")
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "in.journal.sqlite"
    crashes: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", crashes.append)
    journal = Journal.open(path, source, "http://api", {"resources": 600})
    try:
        os.unlink(path)
        os.symlink(tmp_path / "elsewhere.sqlite", path)  # a link: refused, as any other place of the journal's
        for n in range(600):
            journal.sending("resource", [f"r{n}"])
        time.sleep(0.2)
    finally:
        journal.release()
    assert [f"{c.exc_type.__name__}: {c.exc_value}" for c in crashes] == []


def test_a_reader_holding_the_journal_does_not_hold_the_run_up(tmp_path):
    """A checkpoint that restarts the WAL waits for readers, and keeps writers out while it waits:
    with `onboard status` (or any SQLite browser) holding a read open, the run's commits, on the
    event loop, must not wait the checkpoint's whole busy timeout."""
    source = tmp_path / "in.csv"
    source.write_text("customer_id\n1\n")
    path = tmp_path / "in.journal.sqlite"
    journal = Journal.open(path, source, "http://api", {"resources": 1500})
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    slowest = 0.0
    try:
        journal.sending("resource", ["r"])
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM entities").fetchone()  # a snapshot held open
        for n in range(1500):
            began = time.monotonic()
            journal.sending("resource", [f"r{n}"])
            slowest = max(slowest, time.monotonic() - began)
            time.sleep(0)
    finally:
        reader.close()
        journal.release()
    assert slowest < 2, f"a commit waited {slowest:.1f} s"


def _journalled(journal: Path, kind: str) -> int:
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT count(*) FROM entities WHERE kind = ?", (kind,)).fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sigterm_with_the_checkpoint_thread_running_leaves_one_file_and_resumes(tmp_path):
    """Past 500 commits the journal checkpoints on its own thread: a run stopped then still ends
    with its outputs, exit 130, the thread gone and no -wal, -shm or lock left; the next run ends it."""
    from helpers import local, summary_of

    rows = [[f"c{c}", "home", "", meter_point_id(c), "", "", f"SN-{c}-{d}", "Charger"]
            for c in range(1, 21) for d in range(60)]
    source = write_csv(tmp_path / "many.csv", rows, HEADERS)
    out, state = tmp_path / "out", tmp_path / "e.sqlite"

    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "onboard", "run", str(source), "--out", str(out),
                                 "--concurrency", "8", *local(state)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "ONBOARD_EMULATOR_LATENCY_MS": "5"})

    proc = start()
    deadline = time.monotonic() + 120
    while _journalled(out / "many.journal.sqlite", "resource") < 700:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert not [p.name for p in out.iterdir() if p.name.endswith(("-wal", "-shm", ".lock"))]
    resumed = start()
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and "Traceback" not in err, err
    summary = summary_of(out, "many")
    assert "400" not in summary["statuses"] and "409" not in summary["statuses"]


@pytest.mark.anyio
async def test_an_updates_outcome_is_on_disk_as_it_settles(tmp_path):
    """`run --update` writes no write-ahead (a PATCH is sent again on resume): an outcome held for
    the next one would be lost with a killed run while the requests after it went on."""
    from onboard import update

    path = write_csv(tmp_path / "in.csv", [
        ["c1", "home", "", meter_point_id(1), "", "", "SN-1", "Charger"],
        ["c2", "home", "", meter_point_id(2), "", "", "SN-2", "Charger"],
    ], HEADERS)
    plan = planning.build(records.check(sheets.read(path)))
    app = create_app(EmulatorSettings(seed=7, state=tmp_path / "e.sqlite"), Store())
    journal_path = tmp_path / "in.journal.sqlite"
    seen: list[dict[str, str]] = []
    async with api.connect(settings.target("local"), concurrency=1, transport=httpx.ASGITransport(app=app)
                           ) as client:
        await client.sign_in()
        await Run(client, plan, Ledger(), BatchSize(100), concurrency=1, show_progress=False)()
        journal = Journal.open(journal_path, path, "emulator", {"locations": 2})
        try:
            ledger = Ledger(journal, [("location", i, Outcome("differs")) for i in plan.locations])
            await update.update(client, update.pending(plan, ledger), ledger, 1,
                                tick=lambda: seen.append(journal_states(journal_path)))
        finally:
            journal.release()
    assert [sorted(s.values()) for s in seen] == [["updated"], ["updated", "updated"]]


@pytest.mark.anyio
async def test_a_request_waiting_for_the_throttle_goes_before_a_freed_slots_next_one():
    """A slot that frees takes its next job itself; a request already waiting for the throttle (a
    retry after a 429) must not be overtaken by it, or under a throttling API it loses every turn
    and runs out of attempts (`test_chaos_on_a_larger_sheet` failed one run in three)."""
    import asyncio

    from onboard.api import Throttle
    from onboard.pipeline import Dispatcher

    throttle = Throttle(2)
    entered: list[str] = []

    async def request(name: str, seconds: float = 0.0, refused: bool = False) -> None:
        async with throttle as started:
            entered.append(name)
            await asyncio.sleep(seconds)
        if refused:
            throttle.throttled(started)  # a 429: one request in flight at a time from now on

    async def long() -> None:
        await request("long", 0.05)

    async def retried() -> None:
        await request("attempt 1", refused=True)
        await request("attempt 2")  # waits for the throttle while `long` is in flight

    async def following() -> None:
        await request("next")

    jobs = [long, retried, following]
    await Dispatcher(throttle, width=2).run(lambda: jobs.pop(0) if jobs else None)
    assert entered == ["long", "attempt 1", "attempt 2", "next"]
