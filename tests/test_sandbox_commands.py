"""The commands after a run (issue 11): `eligibility`, `move`, `cleanup`.

Through the real command line against `--env local` (the emulator in-process, its state in a file
the test reads with `Store`), and, where the requests themselves are the point, through the
commands' functions over `ContractChecked`, so every request and answer is checked against the
vendor's spec independently of the emulator.
"""

from __future__ import annotations

import json

import httpx
import pytest
from openpyxl import load_workbook

from helpers import (
    HEADERS,
    ContractChecked,
    Recording,
    local,
    location_of,
    meter_point_id,
    read_csv,
    read_xlsx,
    run,
    state_counts,
    write_csv,
)
from onboard import areas, followup, onboarding, settings
from onboard.cleanup import cleanup, decide
from onboard.eligibility import eligibility
from onboard.emulator import EmulatorSettings, Store, create_app
from onboard.emulator.store import Resource
from onboard.errors import UsageError
from onboard.move import move

M1, M2, M3 = meter_point_id(1), meter_point_id(2), meter_point_id(3)
NOT_GS1 = "707057500012345678"  # the guide's own example: fails the GS1 check, so the emulator says not eligible
NOT_GS1_2 = M3[:-1] + str((int(M3[-1]) + 1) % 10)
OSLO = (59.9139, 10.7522)
BERGEN = (60.3913, 5.3221)

SHEET = [
    ["1001", "home", "Residential", f"{M1};{NOT_GS1}", "", "", "HV-1", "HVAC"],   # 2: two ids, one eligible: mixed
    ["1001", "home", "Residential", f"{M1};{NOT_GS1}", "", "", "CH-1", "Charger"],  # 3: the same site
    ["1002", "cabin", "Residential", M2, *OSLO, "", ""],                          # 4: coordinates too
    ["1003", "flat", "", NOT_GS1_2, "", "", "", ""],                               # 5: not eligible
    ["1003", "", "", "", "", "", "EV-1", "Vehicle"],                               # 6: no site
    ["1004", "shed", "", "", *BERGEN, "", ""],                                     # 7: no meter point id
    ["1005", "x", "", "12345", "", "", "", ""],                                    # 8: invalid
]


@pytest.fixture
def state(tmp_path):
    return tmp_path / "emulator.sqlite"


@pytest.fixture
def sheet(tmp_path):
    return write_csv(tmp_path / "customers.csv", SHEET)


@pytest.fixture
def results(capsys, sheet, state):
    """The sheet run against the local emulator: its results file."""
    code, _, _ = run(capsys, "run", sheet, *local(state))
    assert code == 1  # the invalid row
    return sheet.with_name("customers.results.csv")


def by_row(path):
    rows = read_csv(path) if path.suffix == ".csv" else read_xlsx(path)
    return {int(float(r["row"])): r for r in rows} if "row" in rows[0] else {i + 2: r for i, r in enumerate(rows)}


def checked(state) -> tuple[Recording, ContractChecked]:
    spec = ContractChecked(httpx.ASGITransport(app=create_app(EmulatorSettings(state=state))))
    return Recording(spec), spec


# eligibility


def test_eligibility_says_per_row_and_asks_each_value_once(capsys, sheet, state, tmp_path):
    code, out, err = run(capsys, "eligibility", sheet, *local(state))
    assert code == 0, err
    rows = by_row(tmp_path / "customers.eligibility.csv")
    assert [rows[n]["eligible"] for n in range(2, 9)] == [
        "mixed", "mixed", "yes", "no", "", "no meter point id", "not asked: the row is invalid"]
    assert {rows[n]["user_eligible"] for n in range(2, 8)} == {"not registered"}  # nothing is registered yet
    assert rows[2]["customer_id"] == "1001" and list(rows[2])[:len(HEADERS)] == HEADERS
    summary = json.loads((tmp_path / "customers.eligibility.json").read_text())
    assert summary["requests"] == 4 + 2 * 4  # M1, NOT_GS1, M2, NOT_GS1_2 once each; 4 valid users, 2 questions each
    assert summary["counts"]["meter points"] == {"eligible": 2, "not eligible": 2}
    assert "  meter points:  2 eligible, 2 not eligible\n" in out


@pytest.mark.anyio
async def test_eligibility_of_a_results_file_follows_the_test_area_and_enrollment(capsys, results, state, tmp_path):
    target = settings.target("local")
    await move(onboarding.read(results), target, area=1, state=state, transport=checked(state)[0])
    record, spec = checked(state)
    from onboard import api

    async with api.connect(target, transport=record) as client:
        await client.sign_in()
        assert (await client.enroll("4a7ea9c5-0000-0000-0000-000000000000")).status == 404
        user_1002 = by_row(results)[4]["user_id"]
        assert (await client.enroll(user_1002)).ok
        assert (await client.enroll(user_1002)).status == 400  # already enrolled
    found = await eligibility(onboarding.read(results), target, out=tmp_path / "out", state=state, transport=record)
    assert spec.problems == [] and found.ok
    rows = {n: line for n, line in zip(range(2, 9), found.rows, strict=True)}
    assert rows[4] == {"eligible": "yes", "user_eligible": "yes", "enrolled": "yes"}
    assert rows[2]["user_eligible"] == "yes" and rows[2]["enrolled"] == "no"
    assert (tmp_path / "out" / "customers.results.eligibility.csv").is_file()
    asked = [(method, path.rsplit("/", 1)[-1]) for method, path, _ in record.sent[-12:]]
    assert sorted(set(asked)) == [("GET", "eligibility"), ("GET", "eligible"), ("GET", "enrollment")]


def test_eligibility_writes_a_workbook_for_a_workbook(capsys, state, tmp_path):
    from openpyxl import Workbook

    book = Workbook()
    book.active.append(HEADERS)
    book.active.append(SHEET[2])
    book.save(tmp_path / "one.xlsx")
    code, _, err = run(capsys, "eligibility", tmp_path / "one.xlsx", *local(state))
    assert code == 0, err
    assert read_xlsx(tmp_path / "one.eligibility.xlsx")[0]["eligible"] == "yes"
    summary = load_workbook(tmp_path / "one.eligibility.xlsx")["Summary"]
    assert {line[0] for line in summary.iter_rows(values_only=True)} >= {"base_url", "rows", "meter points eligible"}


def test_eligibility_keeps_a_csv_as_it_came_and_replaces_its_own_columns(capsys, state, tmp_path):
    nordic = write_csv(tmp_path / "kunder.csv", SHEET[2:4], delimiter=";", encoding="cp1252")
    assert run(capsys, "eligibility", nordic, *local(state))[0] == 0
    first = tmp_path / "kunder.eligibility.csv"
    assert first.read_bytes().startswith(b"customer_id;location_ref;")
    assert [r["eligible"] for r in read_csv(first, delimiter=";", encoding="cp1252")] == ["yes", "no"]
    assert run(capsys, "eligibility", first, *local(state))[0] == 0
    again = read_csv(tmp_path / "kunder.eligibility.eligibility.csv", delimiter=";", encoding="cp1252")
    header = first.with_name("kunder.eligibility.eligibility.csv").read_text("cp1252").splitlines()[0]
    assert header.count("eligible") == 2 and header.endswith("eligible;user_eligible;enrolled")  # not repeated
    assert [r["eligible"] for r in again] == ["yes", "no"]


# move


@pytest.mark.anyio
async def test_move_into_an_area_and_back_sends_only_coordinates(capsys, results, state, tmp_path):
    target = settings.target("local")
    record, spec = checked(state)
    moved = await move(onboarding.read(results), target, area=2, out=tmp_path, state=state, transport=record)
    assert spec.problems == [] and moved.ok
    patches = [body for method, _, body in record.sent if method == "PATCH"]
    assert len(patches) == 4 and all(set(body) == {"coordinates"} for body in patches)
    rows = by_row(tmp_path / "customers.results.move.csv")
    places = {}
    for n in (2, 3, 4, 5, 7):
        row = rows[n]
        assert row["move"] == "moved" and row["now_in_test_area"] == "2"
        now = (float(row["now_latitude"]), float(row["now_longitude"]))
        assert areas.which_area(*now) == 2 and location_of(state, row["location_id"]).latitude == now[0]
        places[row["location_id"]] = now
    assert len(set(places.values())) == 4  # one point per location, shared by its rows
    assert rows[4]["was_latitude"] == str(OSLO[0]) and rows[2]["was_latitude"] == ""
    assert rows[6]["move"] == "no site" and rows[8]["move"] == "not moved: the row's status is invalid"
    again = await move(onboarding.read(results), target, area=2, state=state, transport=record)
    assert {line["move"] for line in again.rows} >= {"already there"}
    assert sum(1 for method, _, _ in record.sent if method == "PATCH") == 4  # nothing sent twice

    back = await move(onboarding.read(results), target, restore=True, out=tmp_path, state=state, transport=record)
    assert spec.problems == [] and back.ok
    rows = by_row(tmp_path / "customers.results.move.csv")
    assert rows[4]["move"] == "moved" and (float(rows[4]["now_latitude"]), float(rows[4]["now_longitude"])) == OSLO
    assert rows[4]["now_in_test_area"] == "no"
    assert rows[2]["move"] == "coordinates removed" and rows[2]["now_latitude"] == rows[2]["now_in_test_area"] == ""
    assert location_of(state, rows[2]["location_id"]).latitude is None
    assert location_of(state, rows[2]["location_id"]).meter_point_ids == [M1, NOT_GS1]  # kept by the PUT
    put = [body for method, _, body in record.sent if method == "PUT"]
    assert rows[5]["move"] == "coordinates removed"
    assert sorted(put, key=str) == sorted(
        [{"locationId": rows[2]["location_id"], "locationType": "Residential", "meterPointIds": [M1, NOT_GS1]},
         {"locationId": rows[5]["location_id"], "locationType": "Unknown", "meterPointIds": [NOT_GS1_2]}], key=str)

def test_move_on_the_command_line(capsys, results, state, tmp_path):
    code, out, err = run(capsys, "move", results, "--test-area", "1", *local(state))
    assert code == 0, err
    assert "7 rows (test area 1)\n  locations:     4 moved, 0 already there\n  now:           4 in test area 1\n" in out
    assert f"  move:    {tmp_path / 'customers.results.move.csv'}\n  summary: {tmp_path}" in out
    code, out, _ = run(capsys, "eligibility", results, *local(state))
    assert by_row(tmp_path / "customers.results.eligibility.csv")[7]["user_eligible"] == "yes"


def test_move_after_run_test_area_finds_them_there_and_restores_the_sheet(capsys, sheet, state, tmp_path):
    assert run(capsys, "run", sheet, "--test-area", "2", *local(state))[0] == 1  # the invalid row
    results = tmp_path / "customers.results.csv"
    code, out, _ = run(capsys, "move", results, "--test-area", "2", *local(state))
    assert code == 0 and "locations:     0 moved, 4 already there" in out
    code, out, _ = run(capsys, "move", results, "--restore", *local(state))
    assert code == 0 and "locations:     2 moved, 0 already there, 2 coordinates removed" in out
    rows = by_row(tmp_path / "customers.results.move.csv")
    assert (float(rows[4]["now_latitude"]), float(rows[4]["now_longitude"])) == OSLO
    assert areas.which_area(float(rows[4]["was_latitude"]), float(rows[4]["was_longitude"])) == 2


@pytest.mark.parametrize("flags", [["--env", "production"],
                                   ["--base-url", settings.PRODUCTION_URL, "--token-url", "https://x/connect/token"]])
def test_move_is_refused_for_production(capsys, results, state, flags, monkeypatch):
    monkeypatch.setenv("SPARK_CLIENT_ID", "id")
    monkeypatch.setenv("SPARK_CLIENT_SECRET", "secret")
    code, _, err = run(capsys, "move", results, "--test-area", "2", *flags)
    assert code == 2
    assert "move is for the sandbox (the guide's test areas): refused for production (https://api.voluespark" in err
    assert not results.with_name("customers.results.move.csv").exists()


def test_move_refuses_a_results_file_of_another_api(capsys, results, state, monkeypatch):
    monkeypatch.setenv("SPARK_CLIENT_ID", "id")
    monkeypatch.setenv("SPARK_CLIENT_SECRET", "secret")
    elsewhere = "http://127.0.0.1:9/energy-coordination/v1"  # nothing listens there: a request would fail otherwise
    code, _, err = run(capsys, "move", results, "--test-area", "2", "--base-url", elsewhere,
                       "--token-url", "http://127.0.0.1:9/connect/token")
    assert code == 2
    assert ("holds the results of a run against http://emulator.local/energy-coordination/v1 (local, says "
            "customers.summary.json), but this command would send to http://127.0.0.1:9/energy-coordination/v1") in err


def test_move_refuses_a_results_file_it_cannot_place(capsys, results, sheet, state):
    results.with_name("customers.summary.json").unlink()
    code, _, err = run(capsys, "move", results, "--test-area", "2", *local(state))
    assert code == 2 and "cannot tell which API customers.results.csv was written against" in err
    code, _, err = run(capsys, "move", sheet, "--test-area", "2", *local(state))
    assert code == 2 and "customers.csv is not a results file of `onboard run`" in err


def test_a_stopped_move_resumes_and_still_says_where_each_location_was(capsys, results, state, monkeypatch, tmp_path):
    for name, value in {"ONBOARD_EMULATOR_LOST_RATE": "0.5", "ONBOARD_EMULATOR_SEED": "3",
                        "ONBOARD_RETRY_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(name, value)
    code, _, err = run(capsys, "move", results, "--test-area", "2", "--concurrency", "1", *local(state))
    assert code == 1 and "run the same command again to resume" in err
    assert (tmp_path / "customers.results.move.journal.sqlite").is_file()
    first = by_row(tmp_path / "customers.results.move.csv")
    assert {first[n]["move"] for n in (2, 4, 5, 7)} >= {"not reached"}
    code, out, _ = run(capsys, "status")
    assert "run the same `onboard move customers.results.csv ...` command again to resume" in out
    monkeypatch.delenv("ONBOARD_EMULATOR_LOST_RATE")
    code, _, err = run(capsys, "move", results, "--test-area", "2", *local(state))
    assert code == 0 and "resuming the unfinished move" in err
    rows = by_row(tmp_path / "customers.results.move.csv")
    assert {rows[n]["move"] for n in (2, 3, 4, 5, 7)} == {"moved"}  # not "already there": this command moved them
    assert rows[4]["was_latitude"] == str(OSLO[0])  # where it was before the first, stopped run


# cleanup


def test_cleanup_deletes_what_the_run_created_and_is_idempotent(capsys, results, state, tmp_path):
    before = state_counts(state)
    code, out, err = run(capsys, "cleanup", results, "--dry-run", *local(state))
    assert code == 0, err
    assert state_counts(state) == before == {"users": 4, "locations": 4, "resources": 3}
    assert "dry run: nothing deleted\n  resources:     3 would delete, 0 gone, 0 kept\n  locations:     4 would" in out
    assert {r["user_cleanup"] for r in read_csv(tmp_path / "customers.results.cleanup-dry-run.csv")} == {
        "would delete", ""}
    code, out, err = run(capsys, "cleanup", results, *local(state))
    assert code == 0, err
    assert state_counts(state) == {"users": 0, "locations": 0, "resources": 0}
    rows = by_row(tmp_path / "customers.results.cleanup.csv")
    assert (rows[2]["resource_cleanup"], rows[2]["location_cleanup"], rows[2]["user_cleanup"]) == ("deleted",) * 3
    assert rows[6]["location_cleanup"] == "" and rows[8]["user_cleanup"] == ""
    code, out, _ = run(capsys, "cleanup", results, *local(state))
    assert code == 0 and "  resources:     0 deleted, 3 gone, 0 kept\n  locations:     0 deleted, 4 gone" in out


@pytest.mark.anyio
async def test_cleanup_requests_keep_the_contract(capsys, results, state, tmp_path):
    record, spec = checked(state)
    done = await cleanup(results, settings.target("local"), keep_users=True, state=state, transport=record)
    assert spec.problems == [] and done.ok
    assert state_counts(state) == {"users": 4, "locations": 0, "resources": 0}
    deletes = [path.split("/")[3] for method, path, _ in record.sent if method == "DELETE"]
    assert deletes == ["resources"] * 3 + ["users"] * 4  # resources first; a location's path starts with its user
    assert {line["user_cleanup"] for line in done.rows} == {"kept: --keep-users", ""}


def test_cleanup_leaves_alone_what_existed_before(capsys, state, tmp_path):
    earlier = write_csv(tmp_path / "earlier.csv", [["2001", "home", "", M1, "", "", "HV-1", "HVAC"],
                                                    ["2002", "home", "", M2, "", "", "", ""]])
    assert run(capsys, "run", earlier, *local(state))[0] == 0
    later = write_csv(tmp_path / "later.csv", [
        ["2001", "home", "", M1, "", "", "HV-1", "HVAC"],   # exists
        ["2001", "home", "", M1, "", "", "CH-1", "Charger"],  # created: a new device at a site that existed
        ["2002", "home", "", M2, "", "", "EV-1", "Vehicle"],  # created: a new device of a user that existed
        ["2003", "home", "", M3, "", "", "", ""],             # created
    ])
    assert run(capsys, "run", later, *local(state))[0] == 0
    code, out, err = run(capsys, "cleanup", tmp_path / "later.results.csv", *local(state))
    assert code == 0, err
    rows = by_row(tmp_path / "later.results.cleanup.csv")
    assert rows[2]["resource_cleanup"].startswith("kept: a row says it existed before this tool's run")
    assert rows[3]["resource_cleanup"] == "deleted" and rows[3]["location_cleanup"].startswith("kept: a row says")
    assert rows[4]["resource_cleanup"] == "deleted"
    assert rows[4]["user_cleanup"].startswith("kept: it may have existed before the run: the run found 2 users")
    assert rows[4]["location_cleanup"].startswith("kept: it may have existed")
    assert (rows[5]["location_cleanup"], rows[5]["user_cleanup"]) == (
        "deleted", "kept: it may have existed before the run: the run found 2 users registered already and the "
        "file's exists rows name 1; its rows name it only as the parent of what they created")
    assert state_counts(state) == {"users": 3, "locations": 2, "resources": 1}
    assert "resource " in out and "kept: a row says it existed before this tool's run" in out


def test_what_a_row_says_decides_what_goes():
    rows = [followup.Recorded(2, "exists", "u1", "l1", "r1"), followup.Recorded(3, "created", "u1", "l1", "r2"),
            followup.Recorded(4, "created", "u2", "l2", "r3"), followup.Recorded(5, "created", "u2", "l3"),
            followup.Recorded(6, "failed", "u3", "l4", "r4"), followup.Recorded(7, "created", "u4")]
    going = {key for key, entity in decide(rows, {"user": 1, "location": 1, "resource": 1}).items() if entity.goes}
    assert going == {("resource", "r2"), ("resource", "r3"), ("location", "l2"), ("location", "l3"), ("user", "u2"),
                     ("user", "u4")}
    unsure = decide(rows, {"user": 2, "location": 1, "resource": 1})
    assert not unsure["user", "u2"].goes and unsure["location", "l2"].goes and unsure["user", "u4"].goes
    assert not decide(rows, {}, keep_users=True)["user", "u4"].goes


def test_cleanup_keeps_a_location_that_holds_what_it_did_not_create(capsys, results, state, tmp_path):
    site = by_row(results)[4]
    store = Store(state)
    store.add_resource(Resource("someone-elses-device", site["user_id"], "HVAC", site["location_id"]))
    store.close()
    code, out, err = run(capsys, "cleanup", results, "--dry-run", *local(state))
    assert code == 0, err
    dry = by_row(tmp_path / "customers.results.cleanup-dry-run.csv")[4]
    assert dry["location_cleanup"] == ("kept: it still holds what this command did not delete: "
                                       "resource someone-elses-device")
    assert dry["user_cleanup"].startswith("kept: it still holds what this command did not delete: location ")
    code, out, err = run(capsys, "cleanup", results, *local(state))
    assert code == 0, err
    assert state_counts(state) == {"users": 1, "locations": 1, "resources": 1}


@pytest.mark.parametrize(("flags", "said"), [
    (["--env", "production"], "cleanup deletes in production only with --env production --yes"),
    (["--base-url", settings.PRODUCTION_URL], "is the production API: cleanup deletes there only with --env"),
    (["--env", "production", "--yes"], "holds the results of a run against http://emulator.local/"),
    ([], "but this command would send to https://api.sandbox.voluespark.com/energy-coordination/v1 (sandbox)"),
])
def test_cleanup_refusals(capsys, results, state, flags, said, monkeypatch):
    monkeypatch.setenv("SPARK_CLIENT_ID", "id")
    monkeypatch.setenv("SPARK_CLIENT_SECRET", "secret")
    code, _, err = run(capsys, "cleanup", results, *flags)
    assert code == 2 and said in err and "nothing was sent" in err
    assert state_counts(state) == {"users": 4, "locations": 4, "resources": 3}


def test_a_stopped_cleanup_resumes(capsys, results, state, monkeypatch, tmp_path):
    for name, value in {"ONBOARD_EMULATOR_LOST_RATE": "0.3", "ONBOARD_EMULATOR_SEED": "1",
                        "ONBOARD_RETRY_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(name, value)
    code, _, err = run(capsys, "cleanup", results, "--concurrency", "1", *local(state))
    assert code == 1 and "run the same command again to resume" in err
    stopped = by_row(tmp_path / "customers.results.cleanup.csv")
    assert {stopped[n]["user_cleanup"] for n in (2, 3, 4, 5, 7)} == {"not reached"}
    assert state_counts(state) != {"users": 0, "locations": 0, "resources": 0}
    monkeypatch.delenv("ONBOARD_EMULATOR_LOST_RATE")
    code, out, err = run(capsys, "cleanup", results, *local(state))
    assert code == 0 and "resuming the unfinished cleanup" in err
    assert state_counts(state) == {"users": 0, "locations": 0, "resources": 0}
    assert "  resources:     3 deleted, 0 gone, 0 kept\n  locations:     4 deleted, 0 gone, 0 kept\n" in out
    assert not (tmp_path / ".customers.results.cleanup.journal.sqlite.lock").exists()


@pytest.mark.anyio
async def test_the_functions_refuse_production_before_sending(results, state):
    """The Python functions refuse as the command line does (which checks before reading anything)."""
    production = settings.target("production", client_id="id", client_secret="secret")
    with pytest.raises(UsageError, match="refused for production"):
        await move(onboarding.read(results), production, area=2)
    with pytest.raises(UsageError, match="only with --env production --yes"):
        await cleanup(results, production)
    assert state_counts(state) == {"users": 4, "locations": 4, "resources": 3}
