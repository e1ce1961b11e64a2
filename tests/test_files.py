"""The files the tool creates: never through a link, with the umask's mode, never another input's,
nothing left behind by a finished run; and a journal that is not whole and ours is a message."""

from __future__ import annotations

import os
import random
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import MPIDS, SAMPLES, local, read_csv, run, state_counts, write_csv
from onboard.journal import Journal
from onboard.pipeline import Outcome

API = "http://api.example/energy-coordination/v1"


def _sheet(folder: Path, customer: str = "1", name: str = "in.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_csv(folder / name, [[customer, "home", "", MPIDS[0], "", "", "", ""]])


def _interrupted(capsys, monkeypatch, source: Path, out: Path, state: Path) -> None:
    """A run the API stops answering: its journal keeps an open run, to resume."""
    for name, value in {"ONBOARD_EMULATOR_FAIL_RATE": "1", "ONBOARD_RETRY_ATTEMPTS": "2",
                        "ONBOARD_RETRY_BASE": "0.01", "ONBOARD_RETRY_CAP": "0.02"}.items():
        monkeypatch.setenv(name, value)
    assert run(capsys, "run", source, "--out", out, *local(state))[0] == 1
    for name in ("ONBOARD_EMULATOR_FAIL_RATE", "ONBOARD_RETRY_ATTEMPTS", "ONBOARD_RETRY_BASE", "ONBOARD_RETRY_CAP"):
        monkeypatch.delenv(name)


# a journal that is not whole and ours


def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(6).randbytes(8192))


def _cut_in_half(path: Path) -> None:
    source = _sheet(path.parent.parent / "elsewhere")
    journal = Journal.open(path, source, API, {"users": 3000})
    journal.settled("user", [f"user-{n:05d}" for n in range(3000)], Outcome("created"))
    journal.release()
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) // 2])


def _another_programs_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (number INTEGER PRIMARY KEY, amount REAL)")
    db.execute("INSERT INTO invoices VALUES (1, 99.5)")
    db.commit()
    db.close()


def _another_versions_journal(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, input TEXT, state TEXT)")
    db.execute("CREATE TABLE entities (run INTEGER, kind TEXT, id TEXT, state TEXT)")
    db.execute("INSERT INTO runs VALUES (1, 'in.csv', 'open')")
    db.commit()
    db.close()


def _edited(sql: str) -> Callable[[Path], None]:
    """A whole journal (a finished run, then one interrupted with entities settled and sent) with
    `sql` run on it, as someone with the sqlite3 shell might."""
    def make(path: Path) -> None:
        source = _sheet(path.parent.parent / "elsewhere")
        for finished in (True, False):
            journal = Journal.open(path, source, API, {"users": 2, "locations": 2, "resources": 0})
            journal.settled("user", ["u1"], Outcome("created", warnings=("check the name",)))
            journal.sending("user", ["u2"])
            if finished:
                journal.finish()
            journal.release()
        db = sqlite3.connect(path)
        db.execute(sql)
        db.commit()
        db.close()
    return make


BROKEN = {"random bytes": _random_bytes, "cut in half": _cut_in_half, "another program's": _another_programs_database,
          "another version's": _another_versions_journal}
EDITED = {
    "a start that is a word": "UPDATE runs SET state = 'interrupted', finished = NULL, started = 'yesterday'",
    "a start that is not a time": "UPDATE runs SET started = 'yesterday' WHERE state = 'open'",
    "an end that is not a time": "UPDATE runs SET finished = 'today' WHERE state = 'closed'",
    "an end at infinity": "UPDATE runs SET finished = 9e999 WHERE state = 'closed'",
    "a state of its own": "UPDATE runs SET state = 'interrupted' WHERE state = 'closed'",
    "a plan that is not JSON": "UPDATE runs SET planned = '{not json' WHERE state = 'closed'",
    "a plan that is a list": "UPDATE runs SET planned = '[2, 2, 0]'",
    "a plan of words": "UPDATE runs SET planned = '{\"users\": \"two\"}' WHERE state = 'open'",
    "a plan as bytes": "UPDATE runs SET planned = x'7b7d' WHERE state = 'open'",
    "discovered as a word": "UPDATE runs SET discovered = 'yes'",
    "a pid that is a word": "UPDATE runs SET pid = 'me' WHERE state = 'open'",
    "an input as bytes": "UPDATE runs SET input = x'ff'",
    "no fingerprint": "UPDATE runs SET input_sha256 = ''",
    "an update that is a word": "UPDATE entities SET updated = 'soon' WHERE state = 'sent'",
    "warnings that are not JSON": "UPDATE entities SET warnings = 'oops' WHERE state = 'created'",
    "warnings that are numbers": "UPDATE entities SET warnings = '[1, 2]' WHERE state = 'created'",
    "an entity of a run that is a word": "UPDATE entities SET run = 'first'",
    "an id as bytes": "UPDATE entities SET id = x'00ff' WHERE state = 'sent'",
}
BROKEN |= {f"a journal with {name}": _edited(sql) for name, sql in EDITED.items()}


@pytest.mark.parametrize("make", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_or_foreign_journal_is_a_message_saying_what_to_do(capsys, tmp_path, make: Callable):
    source, out = _sheet(tmp_path), tmp_path / "out"
    out.mkdir()
    journal = out / "in.journal.sqlite"
    make(journal)
    before = journal.read_bytes()
    for command in (["status", "--out", out], ["status", source, "--out", out],
                    ["run", source, "--out", out, *local(tmp_path / "e.sqlite")]):
        code, _, err = run(capsys, *command)
        assert code == 2, (command, err)
        assert f"the journal {journal}" in err and "move it away" in err, (command, err)
    assert journal.read_bytes() == before  # not "repaired" into something else
    assert sorted(p.name for p in out.iterdir()) == ["in.journal.sqlite"]  # no lock, -wal or -shm left
    assert state_counts(tmp_path / "e.sqlite")["users"] == 0  # nothing was sent


def test_status_shows_the_good_journals_beside_a_broken_one(capsys, tmp_path):
    _random_bytes(tmp_path / "broken.journal.sqlite")
    assert run(capsys, "run", _sheet(tmp_path, name="good.csv"), *local(tmp_path / "e.sqlite"))[0] == 0
    code, out, err = run(capsys, "status")
    assert code == 2 and "broken.journal.sqlite" in err and "move it away" in err
    assert "good.csv -> " in out and "finished" in out


def test_an_empty_journal_file_is_a_new_journal(capsys, tmp_path):
    """What a run killed between creating its journal and writing its first line leaves."""
    source = _sheet(tmp_path)
    (tmp_path / "in.journal.sqlite").write_bytes(b"")
    code, out, _ = run(capsys, "status", source)
    assert code == 0 and "no run recorded yet" in out
    assert run(capsys, "run", source, *local(tmp_path / "e.sqlite"))[0] == 0
    code, out, _ = run(capsys, "status", source)
    assert code == 0 and "finished" in out


# the template


@pytest.mark.parametrize("name", ["sheet.xlsx", "sheet.csv"])
def test_template_does_not_overwrite_a_sheet_unless_forced(capsys, tmp_path, name):
    filled = tmp_path / name
    filled.write_bytes(b"a sheet someone filled in")
    code, _, err = run(capsys, "template", filled)
    assert code == 2 and "already exists" in err and "--force" in err
    assert filled.read_bytes() == b"a sheet someone filled in"
    assert run(capsys, "template", filled, "--force")[0] == 0
    assert filled.read_bytes() != b"a sheet someone filled in"


# links


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    return victim


@pytest.mark.parametrize("name", [".in.journal.sqlite.lock", "in.journal.sqlite", "in.journal.sqlite-wal",
                                  "in.journal.sqlite-shm", "in.results.csv", "in.errors.csv", "in.summary.json"])
@pytest.mark.parametrize("points_to", ["a file", "nothing"])
def test_a_link_where_a_run_writes_is_refused_before_anything_is_sent(capsys, tmp_path, name, points_to):
    source, out = _sheet(tmp_path), tmp_path / "out"
    out.mkdir()
    (tmp_path / "outside").mkdir()
    target = _victim(tmp_path) if points_to == "a file" else tmp_path / "outside" / "new"
    (out / name).symlink_to(target)
    code, _, err = run(capsys, "run", source, "--out", out, *local(tmp_path / "e.sqlite"))
    assert code == 2 and f"{out / name} is a symbolic link" in err
    assert (target.read_text() == "precious") if points_to == "a file" else not any((tmp_path / "outside").iterdir())
    assert not (tmp_path / "e.sqlite").exists() or state_counts(tmp_path / "e.sqlite")["users"] == 0


def test_status_does_not_read_through_a_link(capsys, tmp_path):
    source = _sheet(tmp_path)
    assert run(capsys, "run", source, "--out", tmp_path / "elsewhere", *local(tmp_path / "e.sqlite"))[0] == 0
    (tmp_path / "in.journal.sqlite").symlink_to(tmp_path / "elsewhere" / "in.journal.sqlite")
    code, out, err = run(capsys, "status", source)
    assert code == 2 and "is a symbolic link" in err and "finished" not in out


def test_the_emulator_state_and_the_template_are_not_written_through_a_link(capsys, tmp_path):
    victim = _victim(tmp_path)
    (tmp_path / "e.sqlite").symlink_to(victim)
    code, _, err = run(capsys, "run", _sheet(tmp_path), "--out", tmp_path / "out", *local(tmp_path / "e.sqlite"))
    assert code == 2 and "is a symbolic link" in err
    (tmp_path / "t.csv").symlink_to(victim)
    code, _, err = run(capsys, "template", tmp_path / "t.csv", "--force")
    assert code == 2 and "is a symbolic link" in err
    assert victim.read_text() == "precious"


def test_a_hard_link_to_another_file_is_not_taken_for_the_lock(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    os.link(_victim(tmp_path), out / ".in.journal.sqlite.lock")
    code, _, err = run(capsys, "run", _sheet(tmp_path), "--out", out, *local(tmp_path / "e.sqlite"))
    assert code == 2 and "not a plain file of its own" in err
    assert (tmp_path / "victim.txt").read_text() == "precious"


# modes


@pytest.fixture(params=[0o022, 0o002, 0o077], ids=oct)
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_file_gets_the_mode_the_umask_gives(capsys, tmp_path, umask):
    expected = 0o666 & ~umask
    source, out = _sheet(tmp_path), tmp_path / "out"
    assert run(capsys, "run", source, "--out", out, *local(tmp_path / "state" / "e.sqlite"))[0] == 0
    assert run(capsys, "template", tmp_path / "t.xlsx")[0] == 0
    made = [*out.iterdir(), tmp_path / "state" / "e.sqlite", tmp_path / "t.xlsx"]
    assert len(made) == 5  # a clean run writes no errors file
    journal = Journal.open(out / "again.journal.sqlite", source, API, {})
    journal.sending("user", ["u1"])
    try:
        made += [out / ".again.journal.sqlite.lock", out / "again.journal.sqlite-wal", out / "again.journal.sqlite-shm"]
        assert {p.name: oct(_mode(p)) for p in made} == {p.name: oct(expected) for p in made}
    finally:
        journal.release()


# inputs with the same name


def test_another_input_with_the_same_name_is_refused_naming_it(capsys, tmp_path, monkeypatch):
    first, second = _sheet(tmp_path / "a", "1", "customers.csv"), _sheet(tmp_path / "b", "2", "customers.csv")
    out, state = tmp_path / "out", tmp_path / "e.sqlite"
    _interrupted(capsys, monkeypatch, first, out, state)
    results = (out / "customers.results.csv").read_bytes()
    for command in (["run", *local(state)], ["validate"]):
        code, _, err = run(capsys, *command, second, "--out", out)
        assert code == 2 and str(first) in err and "--out" in err
    assert (out / "customers.results.csv").read_bytes() == results
    code, shown, _ = run(capsys, "status", second, "--out", out)
    assert code == 0 and f"a run of {first}, another input whose outputs have the same names" in shown
    code, _, err = run(capsys, "run", first, "--out", out, *local(state))  # the first input's run is still there
    assert code == 0 and "resuming" in err
    assert run(capsys, "run", second, "--out", tmp_path / "out-b", *local(state))[0] == 0


def test_the_same_file_fixed_and_run_again_is_not_another_input(capsys, tmp_path, monkeypatch):
    source, state = _sheet(tmp_path, "1", "customers.csv"), tmp_path / "e.sqlite"
    _interrupted(capsys, monkeypatch, source, tmp_path, state)
    _sheet(tmp_path, "1b", "customers.csv")
    monkeypatch.chdir(tmp_path / "..")  # and given by another path
    code, _, _ = run(capsys, "run", Path(tmp_path.name) / "customers.csv", *local(state))
    assert code == 0
    assert [r["status"] for r in read_csv(tmp_path / "customers.results.csv")] == ["created"]


# nothing left behind


def test_a_finished_run_leaves_only_its_journal_beside_the_outputs(capsys, tmp_path):
    out = tmp_path / "out"
    assert run(capsys, "run", SAMPLES / "customers.csv", "--out", out, *local(tmp_path / "e.sqlite"))[0] == 0
    assert run(capsys, "status", SAMPLES / "customers.csv", "--out", out)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["customers.journal.sqlite",
                                                     "customers.results.csv", "customers.summary.json"]


def test_status_reads_a_run_in_progress_from_another_process(tmp_path):
    source = _sheet(tmp_path)
    journal = Journal.open(tmp_path / "in.journal.sqlite", source, API, {"users": 2})
    try:
        journal.sending("user", ["u1", "u2"])
        journal.settled("user", ["u1"], Outcome("created"))
        journal.flush()  # one entity's outcome is held until the next write (tests/test_journal_writes.py)
        status = subprocess.run([sys.executable, "-m", "onboard", "status", str(source)], capture_output=True,
                                text=True, cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert f"running (pid {os.getpid()})" in status.stdout
        assert "1 of 2 settled (1 created); 1 sent, awaiting confirmation" in status.stdout
    finally:
        journal.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "in.journal.sqlite"]


def test_a_value_a_journal_cannot_use_is_named_and_nothing_is_sent(capsys, tmp_path):
    """A run the journal cannot read is never passed over: `run` refuses as `status` does, naming
    the value, even where the run is not the one it would resume."""
    source, out = _sheet(tmp_path), tmp_path / "out"
    out.mkdir()
    _edited("UPDATE entities SET updated = 'soon' WHERE state = 'sent'")(out / "in.journal.sqlite")
    for command in (["status", source, "--out", out], ["run", source, "--out", out, *local(tmp_path / "e.sqlite")]):
        code, shown, err = run(capsys, *command)
        assert code == 2 and "Traceback" not in err and "resuming" not in err
        assert "holds a value it cannot read (run 2, 'user' 'u2': updated is 'soon')" in err, err
    assert state_counts(tmp_path / "e.sqlite")["users"] == 0
