"""A bad day: retries, throttling, lost answers, expiring and revoked tokens, a dead API, and
runs that are interrupted and resume. The end state must be exact: every entity once, none
missing, every status true."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import HEADERS, MPIDS, SAMPLES, local, read_csv, run, summary_of, write_csv
from onboard import plan as planning
from onboard import records
from onboard import sheet as sheets
from onboard.api import Throttle, retry_after
from onboard.emulator.store import Store

FAST_RETRIES = {"ONBOARD_RETRY_BASE": "0.01", "ONBOARD_RETRY_CAP": "0.05", "ONBOARD_RETRY_ATTEMPTS": "12"}


@pytest.fixture
def fast_retries(monkeypatch):
    for name, value in FAST_RETRIES.items():
        monkeypatch.setenv(name, value)


def knobs(monkeypatch, **values):
    for name, value in values.items():
        monkeypatch.setenv(f"ONBOARD_EMULATOR_{name.upper()}", str(value))


def assert_registered_exactly(state: Path, source: Path) -> None:
    """The emulator holds exactly the planned entities, each with its owner, site and type."""
    plan = planning.build(records.check(sheets.read(source)))
    store = Store(state)
    try:
        assert store.counts() == {"users": len(plan.users), "locations": len(plan.locations),
                                  "resources": len(plan.resources)}
        for location in plan.locations.values():
            held = store.location(location.id)
            assert held.user_id == location.user_id and tuple(held.meter_point_ids) == location.meter_point_ids
        for resource in plan.resources.values():
            held = store.resource(resource.id)
            assert (held.user_id, held.location_id, held.resource_type) == \
                (resource.user_id, resource.location_id, resource.resource_type)
    finally:
        store.close()


def assert_all_created(summary: dict) -> None:
    """Every entity counted as created by this run: none as exists, none failed."""
    for kind, counts in summary["entities"].items():
        assert counts["exists"] == 0 and counts["failed"] == 0, (kind, counts)


# the pieces


def test_throttle_halves_once_per_round_and_grows_back_slowly():
    now = [0.0]
    throttle = Throttle(16, clock=lambda: now[0])
    started = now[0]
    now[0] = 1.0
    for _ in range(10):  # a round of 429s for requests that all started before the cut
        throttle.throttled(started)
    assert throttle.limit == 8
    throttle.throttled(now[0])
    assert throttle.limit == 4
    for _ in range(4):
        throttle.succeeded()
    assert 4.9 < throttle.limit < 5.1
    for _ in range(1000):
        throttle.succeeded()
    assert throttle.limit == 16
    for _ in range(10):
        now[0] += 1
        throttle.throttled(now[0])
    assert throttle.limit == 1


def test_retry_after_in_seconds_or_as_an_http_date():
    import email.utils

    import httpx

    assert retry_after(httpx.Response(429, headers={"retry-after": "3"})) == 3
    future = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert 3 <= retry_after(httpx.Response(429, headers={"retry-after": future})) <= 5
    assert retry_after(httpx.Response(429, headers={"retry-after": "soon"})) is None
    assert retry_after(httpx.Response(429)) is None


# one fault at a time


def test_503s_are_retried_until_everything_lands(capsys, tmp_path, monkeypatch, fast_retries):
    knobs(monkeypatch, fail_rate=0.3, seed=1)
    state = tmp_path / "e.sqlite"
    code, _, err = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, *local(state))
    assert code == 0, err
    assert summary_of(tmp_path, "customers")["retries"] > 10
    assert_registered_exactly(state, SAMPLES / "customers.csv")


def test_lost_answers_are_confirmed_and_count_as_created(capsys, tmp_path, monkeypatch, fast_retries):
    knobs(monkeypatch, lost_rate=0.3, seed=2)
    state = tmp_path / "e.sqlite"
    code, _, err = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, *local(state))
    assert code == 0, err
    assert {r["status"] for r in read_csv(tmp_path / "customers.results.csv")} == {"created"}
    summary = summary_of(tmp_path, "customers")
    assert summary["statuses"].get("400", 0) > 0  # lost writes were answered "exists" when sent again
    assert all(counts["exists"] == 0 and counts["failed"] == 0 for counts in summary["entities"].values())
    assert_registered_exactly(state, SAMPLES / "customers.csv")
    monkeypatch.delenv("ONBOARD_EMULATOR_LOST_RATE")
    assert run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, *local(state))[0] == 0
    assert {r["status"] for r in read_csv(tmp_path / "customers.results.csv")} == {"exists"}


def test_429s_lower_the_requests_in_flight(capsys, tmp_path, monkeypatch, fast_retries):
    knobs(monkeypatch, max_inflight=3, latency_ms=5)
    rows = [["c1", "home", "", MPIDS[0], "", "", f"SN{i}", "Charger"] for i in range(150)]
    path = write_csv(tmp_path / "in.csv", rows, HEADERS)
    code, _, err = run(capsys, "run", path, "--concurrency", "16", *local(tmp_path / "e.sqlite"))
    assert code == 0, err
    summary = summary_of(tmp_path, "in")
    assert summary["lowest_concurrency"] <= 4
    assert 0 < summary["throttled"] < 0.3 * summary["requests"]


def test_rate_limit_with_retry_after(capsys, tmp_path, monkeypatch, fast_retries):
    knobs(monkeypatch, rate=25)  # a burst of 25, then 25 a second: a loaded machine still goes faster
    monkeypatch.setenv("ONBOARD_RETRY_CAP", "1")  # Retry-After (1 s) is honoured, as with the default cap
    rows = [["c1", "home", "", MPIDS[0], "", "", f"SN{i}", "Charger"] for i in range(100)]
    path = write_csv(tmp_path / "in.csv", rows, HEADERS)
    code, _, err = run(capsys, "run", path, *local(tmp_path / "e.sqlite"))
    assert code == 0, err
    assert summary_of(tmp_path, "in")["throttled"] > 0
    assert Store(tmp_path / "e.sqlite").counts()["resources"] == 100


def test_tokens_are_renewed_before_they_expire(capsys, tmp_path, monkeypatch, fast_retries):
    knobs(monkeypatch, token_ttl=1, latency_ms=30)
    code, _, err = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, "--concurrency", "2",
                       *local(tmp_path / "e.sqlite"))
    assert code == 0, err
    summary = summary_of(tmp_path, "customers")
    assert summary["token_refreshes"] >= 1 and "401" not in summary["statuses"]


def test_a_revoked_token_is_renewed_once_and_the_request_repeated(capsys, tmp_path, monkeypatch, fast_retries):
    knobs(monkeypatch, revoke_rate=0.05, seed=3)
    state = tmp_path / "e.sqlite"
    code, _, err = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, *local(state))
    assert code == 0, err
    summary = summary_of(tmp_path, "customers")
    assert summary["token_refreshes"] >= 1 and summary["statuses"].get("401", 0) >= 1
    assert_registered_exactly(state, SAMPLES / "customers.csv")


def test_a_dead_api_fails_in_bounded_time_and_the_next_run_resumes(capsys, tmp_path, monkeypatch, fast_retries):
    monkeypatch.setenv("ONBOARD_RETRY_ATTEMPTS", "3")
    knobs(monkeypatch, fail_rate=1)
    state = tmp_path / "e.sqlite"
    started = time.monotonic()
    code, out, err = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, *local(state))
    assert code == 1 and time.monotonic() - started < 10
    assert "the API did not answer GET /users after 3 attempts (503 Service Unavailable)" in err
    assert "run the same command again to resume" in err and "Traceback" not in err
    rows = read_csv(tmp_path / "customers.results.csv")
    assert len(rows) == 125 and {r["status"] for r in rows} == {"not sent"} and rows[0]["error"].startswith("not sent:")
    assert not (tmp_path / "customers.errors.csv").exists(), "rows not sent are not rows to fix"
    assert "125 rows not sent: run the same command again to resume" in out
    monkeypatch.delenv("ONBOARD_EMULATOR_FAIL_RATE")
    code, _, err = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, *local(state))
    assert code == 0 and "resuming the unfinished run" in err
    assert {r["status"] for r in read_csv(tmp_path / "customers.results.csv")} == {"created"}


def test_an_api_that_dies_midway_keeps_what_landed(capsys, tmp_path, monkeypatch, fast_retries):
    monkeypatch.setenv("ONBOARD_RETRY_ATTEMPTS", "2")
    knobs(monkeypatch, max_batch=10)  # a single location batch of 69 needs 413s first; then users land
    state = tmp_path / "e.sqlite"
    assert run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, *local(state))[0] == 0
    knobs(monkeypatch, fail_rate=1)
    other = write_csv(tmp_path / "more.csv", [[f"n{i}", "home", "", MPIDS[i], "", "", "", ""] for i in range(3)])
    code, _, err = run(capsys, "run", other, *local(state))
    assert code == 1 and read_csv(tmp_path / "more.results.csv")[0]["status"] == "not sent"


# all of it at once


@pytest.mark.parametrize("seed", [11, 12])
def test_chaos_leaves_an_exact_end_state(capsys, tmp_path, monkeypatch, fast_retries, seed):
    knobs(monkeypatch, fail_rate=0.1, lost_rate=0.1, revoke_rate=0.02, max_inflight=6, rate=400, max_batch=7,
          token_ttl=1, latency_ms=3, seed=seed)
    state = tmp_path / "e.sqlite"
    code, _, err = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, *local(state))
    assert code == 0, err
    results = read_csv(tmp_path / "customers.results.csv")
    assert {r["status"] for r in results} == {"created"}
    assert_registered_exactly(state, SAMPLES / "customers.csv")
    summary = summary_of(tmp_path, "customers")
    assert_all_created(summary)
    assert summary["retries"] > 0 and summary["throttled"] > 0 and summary["token_refreshes"] > 0
    assert summary["batch_size"] <= 7
    code, _, _ = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, *local(state))
    assert code == 0 and {r["status"] for r in read_csv(tmp_path / "customers.results.csv")} == {"exists"}
    assert_registered_exactly(state, SAMPLES / "customers.csv")


# interrupted runs


def _start(source: Path, out: Path, state: Path, latency_ms: int = 80) -> subprocess.Popen:
    """A run slow enough (about 5 s) that a test can stop it part-way, even on a loaded machine."""
    return subprocess.Popen(
        [sys.executable, "-m", "onboard", "run", str(source), "--out", str(out), "--concurrency", "2",
         *local(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "ONBOARD_EMULATOR_LATENCY_MS": str(latency_ms)},
        # as at a terminal, even when the tests run where SIGINT is ignored (a background job)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _settled(journal: Path, kind: str) -> int:
    if not journal.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT count(*) FROM entities WHERE kind = ? AND state = 'created'",
                              (kind,)).fetchone()[0]
        finally:
            db.close()
    except sqlite3.OperationalError:
        return 0


def _wait_for(journal: Path, kind: str, count: int, proc: subprocess.Popen, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while _settled(journal, kind) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_run_killed_part_way_resumes_to_the_same_results(capsys, tmp_path):
    source = SAMPLES / "customers.csv"
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = _start(source, whole, whole / "e.sqlite", latency_ms=0)
    assert reference.wait(timeout=120) == 0
    proc = _start(source, killed, killed / "e.sqlite")
    journal = killed / "customers.journal.sqlite"
    _wait_for(journal, "resource", 25, proc)
    status = subprocess.run([sys.executable, "-m", "onboard", "status", str(source), "--out", str(killed)],
                            capture_output=True, text=True)
    assert f"running (pid {proc.pid})" in status.stdout
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = subprocess.run([sys.executable, "-m", "onboard", "status", str(source), "--out", str(killed)],
                            capture_output=True, text=True)
    assert "interrupted" in status.stdout and "resources" in status.stdout
    assert "command again to resume" in status.stdout
    resumed = _start(source, killed, killed / "e.sqlite")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert "resuming the unfinished run" in err
    summary = summary_of(killed, "customers")
    assert_all_created(summary)
    assert "400" not in summary["statuses"] and "409" not in summary["statuses"]  # nothing settled sent again
    assert read_csv(killed / "customers.results.csv") == read_csv(whole / "customers.results.csv")
    assert_registered_exactly(killed / "e.sqlite", source)
    status = subprocess.run([sys.executable, "-m", "onboard", "status", str(source), "--out", str(killed)],
                            capture_output=True, text=True)
    assert "finished" in status.stdout


@pytest.mark.slow
def test_ctrl_c_writes_outputs_exits_130_and_the_next_run_resumes(tmp_path):
    source = SAMPLES / "customers.csv"
    proc = _start(source, tmp_path, tmp_path / "e.sqlite")
    _wait_for(tmp_path / "customers.journal.sqlite", "resource", 10, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: what is done is kept" in err and "Traceback" not in err
    results = read_csv(tmp_path / "customers.results.csv")
    assert {r["status"] for r in results} == {"created", "not sent"}
    resumed = _start(source, tmp_path, tmp_path / "e.sqlite")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert {r["status"] for r in read_csv(tmp_path / "customers.results.csv")} == {"created"}
    assert_all_created(summary_of(tmp_path, "customers"))
    assert_registered_exactly(tmp_path / "e.sqlite", source)


def test_sigterm_stops_like_ctrl_c(tmp_path):
    proc = _start(SAMPLES / "customers.csv", tmp_path, tmp_path / "e.sqlite")
    _wait_for(tmp_path / "customers.journal.sqlite", "resource", 5, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err


# the journal's key


def test_a_changed_input_or_another_api_is_a_new_run(capsys, tmp_path, monkeypatch, fast_retries):
    monkeypatch.setenv("ONBOARD_RETRY_ATTEMPTS", "2")
    knobs(monkeypatch, fail_rate=1)
    source = write_csv(tmp_path / "in.csv", [["1", "home", "", MPIDS[0], "", "", "", ""]])
    state = tmp_path / "e.sqlite"
    assert run(capsys, "run", source, *local(state))[0] == 1
    monkeypatch.delenv("ONBOARD_EMULATOR_FAIL_RATE")
    write_csv(source, [["1", "home", "", MPIDS[1], "", "", "", ""]])
    code, _, err = run(capsys, "run", source, *local(state))
    assert code == 0 and "resuming" not in err
    knobs(monkeypatch, fail_rate=1)
    assert run(capsys, "run", source, *local(tmp_path / "other.sqlite"), "--base-url",
               "http://emulator.local/energy-coordination/v1/")[0] == 1
    monkeypatch.delenv("ONBOARD_EMULATOR_FAIL_RATE")
    code, _, err = run(capsys, "run", source, *local(state))
    assert code == 0 and "resuming" not in err


def test_a_local_run_against_another_state_file_is_a_new_run(capsys, tmp_path):
    source = SAMPLES / "customers.csv"
    proc = _start(source, tmp_path, tmp_path / "a.sqlite")
    _wait_for(tmp_path / "customers.journal.sqlite", "resource", 5, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    code, _, err = run(capsys, "run", source, "--out", tmp_path, *local(tmp_path / "b.sqlite"))
    assert code == 0 and "resuming" not in err
    assert_registered_exactly(tmp_path / "b.sqlite", source)


def test_one_run_at_a_time_per_journal(capsys, tmp_path):
    proc = _start(SAMPLES / "customers.csv", tmp_path, tmp_path / "e.sqlite")
    _wait_for(tmp_path / "customers.journal.sqlite", "user", 1, proc)
    code, _, err = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, *local(tmp_path / "e.sqlite"))
    proc.kill()
    proc.wait()
    assert code == 2 and f"another onboard run (pid {proc.pid})" in err


def test_status_without_journals_says_so(capsys, tmp_path):
    code, out, _ = run(capsys, "status")
    assert code == 0 and "no onboard run found here" in out


def _big_sheet(folder: Path, customers: int) -> Path:
    rows = []
    for n in range(customers):
        body = "70705750" + f"{n:09d}"
        total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
        mpid = body + str((10 - total % 10) % 10)
        rows.append([f"k{n}", "home", "", mpid, "", "", f"WH-{n}", "HotWaterTank"])
        rows.append([f"k{n}", "home", "", mpid, "", "", f"CH-{n}", "EV charger"])
        if n % 3 == 0:
            rows.append([f"k{n}", "", "", "", "", "", f"VIN-{n}", "car"])
    return write_csv(folder / "big.csv", rows, HEADERS)


@pytest.mark.slow
def test_chaos_on_a_larger_sheet(capsys, tmp_path, monkeypatch, fast_retries):
    source = _big_sheet(tmp_path, 600)
    knobs(monkeypatch, fail_rate=0.15, lost_rate=0.15, revoke_rate=0.02, max_inflight=5, rate=500,
          max_batch=40, token_ttl=2, latency_ms=2, seed=99)
    state = tmp_path / "e.sqlite"
    code, _, err = run(capsys, "run", source, "--out", tmp_path, *local(state))
    assert code == 0, err
    assert {r["status"] for r in read_csv(tmp_path / "big.results.csv")} == {"created"}
    assert_registered_exactly(state, source)
    summary = summary_of(tmp_path, "big")
    assert_all_created(summary)
    assert summary["batch_size"] <= 40 and summary["retries"] > 50 and summary["token_refreshes"] > 0


@pytest.mark.slow
def test_killed_twice_at_different_stages_resumes(tmp_path):
    source = _big_sheet(tmp_path, 150)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert _start(source, whole, whole / "e.sqlite", latency_ms=0).wait(timeout=300) == 0
    journal = killed / "big.journal.sqlite"
    proc = _start(source, killed, killed / "e.sqlite", latency_ms=40)
    _wait_for(journal, "location", 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc = _start(source, killed, killed / "e.sqlite", latency_ms=40)
    _wait_for(journal, "resource", 60, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = _start(source, killed, killed / "e.sqlite", latency_ms=0)
    _, err = last.communicate(timeout=300)
    assert last.returncode == 0, err
    assert read_csv(killed / "big.results.csv") == read_csv(whole / "big.results.csv")
    assert_all_created(summary_of(killed, "big"))
    assert_registered_exactly(killed / "e.sqlite", source)


@pytest.mark.anyio
async def test_concurrent_requests_share_one_token_fetch():
    import httpx

    from onboard import api, settings
    from onboard.emulator import EmulatorSettings, create_app

    app = create_app(EmulatorSettings(latency_ms=5), Store())
    transport = httpx.ASGITransport(app=app)
    async with api.connect(settings.target("local"), concurrency=30, transport=transport) as client:
        answers = await asyncio.gather(*(client.users_page(1, 10) for _ in range(30)))
        assert all(a.ok for a in answers) and client.stats.token_fetches == 1
        app.tokens.issued.clear()  # the server forgets every token at once (a restart)
        answers = await asyncio.gather(*(client.users_page(1, 10) for _ in range(30)))
        assert all(a.ok for a in answers) and client.stats.token_fetches == 2
