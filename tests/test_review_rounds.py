"""A review of the journal's rounds (a device's write-ahead carries the devices that follow it):
what a run that stops, or whose write-ahead fails, leaves on disk as `sent` must be what it sent."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import httpx
import pytest

from helpers import HEADERS, journal_states, meter_point_id, write_csv
from onboard import onboarding, settings
from onboard.emulator import EmulatorSettings, create_app
from onboard.errors import ConfigError
from onboard.journal import Journal
from onboard.pipeline import Ledger, Outcome


def _device(request: httpx.Request) -> str | None:
    """The ID of the device a request registers, if it does."""
    if request.method == "POST" and request.url.path.endswith(("/resources", "/vehicles")):
        return json.loads(request.content)["resourceId"]
    return None


class _StoppedAfter(httpx.AsyncBaseTransport):
    """The network, stopping the run as Ctrl-C or SIGTERM does (its task cancelled) once `devices`
    device requests have left; it keeps the IDs of every device sent."""

    def __init__(self, inner: httpx.AsyncBaseTransport, devices: int) -> None:
        self.inner = inner
        self.devices = devices
        self.sent: set[str] = set()
        self.run: asyncio.Task | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if (device := _device(request)) is not None:
            self.sent.add(device)
            if len(self.sent) == self.devices and self.run is not None:
                self.run.cancel()
        return await self.inner.handle_async_request(request)


class _DownAfter(_StoppedAfter):
    """An API that stops answering (503 to everything) once `devices` devices have reached it."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if len(self.sent) < self.devices or "/connect/token" in request.url.path:
            return await super().handle_async_request(request)
        if (device := _device(request)) is not None:
            self.sent.add(device)
        return httpx.Response(503, json={"message": "down"})


@pytest.mark.anyio
@pytest.mark.parametrize(("concurrency", "stop_at"), [(1, 11), (2, 7), (4, 9)])
async def test_a_stopped_run_leaves_sent_only_the_devices_it_sent(tmp_path, concurrency, stop_at):
    """Stopped cleanly, the run knows which devices it wrote ahead without sending them: left `sent`,
    `onboard status` would count them `sent, awaiting confirmation` while the results say `not sent`,
    and the next run would look each one up."""
    rows = [[f"c{n // 2}", "home", "", meter_point_id(n // 2), "", "", f"SN-{n}", "Charger"] for n in range(40)]
    rows += [[f"c{n}", "", "", "", "", "", f"VIN-{n}", "car"] for n in range(0, 20, 2)]
    sheet = write_csv(tmp_path / "in.csv", rows, HEADERS)
    state = tmp_path / "e.sqlite"
    emulator = create_app(EmulatorSettings(seed=3, state=state, latency_ms=2))  # requests wait: the stop comes between
    network = _StoppedAfter(httpx.ASGITransport(app=emulator), stop_at)
    network.run = asyncio.ensure_future(onboarding.send(
        onboarding.read(sheet), settings.target("local"), out=tmp_path, state=state, progress=False,
        concurrency=concurrency, transport=network))
    result = await network.run
    assert result.stopped is not None
    journal = tmp_path / "in.journal.sqlite"
    devices = set(result.intake.plan.resources)
    maybe_sent = {entity_id for entity_id, state in journal_states(journal).items()
                  if state == "sent" and entity_id in devices}
    assert maybe_sent <= network.sent, f"{len(maybe_sent - network.sent)} never sent, left `sent`"
    assert {r.status for r in result.rows} == {"created", "not sent"}


@pytest.mark.anyio
async def test_a_run_stopped_by_a_dead_api_leaves_sent_only_the_devices_it_sent(tmp_path, monkeypatch):
    for name, value in {"BASE": "0.01", "CAP": "0.02", "ATTEMPTS": "3"}.items():
        monkeypatch.setenv(f"ONBOARD_RETRY_{name}", value)
    rows = [[f"c{n // 2}", "home", "", meter_point_id(n // 2), "", "", f"SN-{n}", "Charger"] for n in range(40)]
    sheet = write_csv(tmp_path / "in.csv", rows, HEADERS)
    state = tmp_path / "e.sqlite"
    network = _DownAfter(httpx.ASGITransport(app=create_app(EmulatorSettings(seed=3, state=state))), 9)
    result = await onboarding.send(onboarding.read(sheet), settings.target("local"), out=tmp_path, state=state,
                                   progress=False, concurrency=4, transport=network)
    assert result.stopped is not None and "did not answer" in str(result.stopped)
    devices = set(result.intake.plan.resources)
    maybe_sent = {entity_id for entity_id, state in journal_states(tmp_path / "in.journal.sqlite").items()
                  if state == "sent" and entity_id in devices}
    assert maybe_sent, "the devices the dead API did not answer are maybe sent"
    assert maybe_sent <= network.sent, f"{len(maybe_sent - network.sent)} never sent, left `sent`"


@pytest.fixture
def refusing(tmp_path):
    """A journal whose writes SQLite refuses while another program holds the file (`hold`), as a full
    disk would: no wait, so the refusal comes at once."""
    source = tmp_path / "in.csv"
    source.write_text("customer_id\n1\n")
    path = tmp_path / "in.journal.sqlite"
    journal = Journal.open(path, source, "http://api", {"resources": 3})
    journal._db.execute("PRAGMA busy_timeout = 0")
    other = sqlite3.connect(path, isolation_level=None)
    try:
        yield path, Ledger(journal), other
    finally:
        other.close()
        journal.release()


def test_a_write_ahead_that_did_not_commit_is_not_taken_for_written(refusing):
    """A commit refused (the journal locked by another program past the wait, a full disk): the
    devices it would have written ahead are not on disk, so their own requests must write them."""
    path, ledger, other = refusing
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(ConfigError):
        ledger.sending("resource", ["r1"], ["r2", "r3"])
    other.execute("ROLLBACK")
    assert journal_states(path) == {}
    ledger.sending("resource", ["r2"])
    assert journal_states(path).get("r2") == "sent"


def test_a_journal_that_cannot_be_written_says_what_to_do_and_keeps_what_it_held(refusing):
    """A write SQLite refuses stops the run with a message (no traceback reaches the user), and the
    outcomes the journal held for that commit are still written by the next one that succeeds."""
    path, ledger, other = refusing
    ledger.sending("resource", ["r1"])
    ledger.settle("resource", "r1", Outcome("created"))  # held for the next write-ahead
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(ConfigError) as refused:
        ledger.sending("resource", ["r2"])
    assert f"the journal {path} could not be written (database is locked)" in str(refused.value)
    assert "run the same command again to resume" in str(refused.value)
    other.execute("ROLLBACK")
    ledger.flush()
    assert journal_states(path) == {"r1": "created"}


class _LockedAfter(_StoppedAfter):
    """Another program (a SQLite browser) takes the journal's write lock once `devices` devices have
    left, and keeps it."""

    def __init__(self, inner: httpx.AsyncBaseTransport, devices: int, journal) -> None:
        super().__init__(inner, devices)
        self.journal = journal
        self.holder: sqlite3.Connection | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if (device := _device(request)) is not None:
            self.sent.add(device)
            if len(self.sent) == self.devices:
                self.holder = sqlite3.connect(self.journal, isolation_level=None)
                self.holder.execute("BEGIN IMMEDIATE")
        return await self.inner.handle_async_request(request)


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_journal_locked_mid_run_stops_it_with_a_message_and_its_outputs(tmp_path):
    """The run waits 30 s for the other program, then stops: its outputs say what was done, and the
    stop does not wait another 30 s for each write it still tries."""
    rows = [[f"c{n // 2}", "home", "", meter_point_id(n // 2), "", "", f"SN-{n}", "Charger"] for n in range(60)]
    sheet = write_csv(tmp_path / "in.csv", rows, HEADERS)
    state = tmp_path / "e.sqlite"
    network = _LockedAfter(httpx.ASGITransport(app=create_app(EmulatorSettings(seed=3, state=state))), 9,
                           tmp_path / "in.journal.sqlite")
    started = time.monotonic()
    try:
        result = await onboarding.send(onboarding.read(sheet), settings.target("local"), out=tmp_path, state=state,
                                       progress=False, concurrency=4, transport=network)
    finally:
        if network.holder is not None:
            network.holder.close()
    assert time.monotonic() - started < 40
    assert isinstance(result.stopped, ConfigError)
    assert "could not be written (database is locked)" in str(result.stopped)
    assert (tmp_path / "in.results.csv").exists()
    statuses = {r.status for r in result.rows}
    assert "created" in statuses and "not sent" in statuses
