"""`onboard run` end to end against the emulator: what lands, what is refused, what a re-run does."""

from __future__ import annotations

import shutil

import httpx
import pytest
from openpyxl import load_workbook

from helpers import (
    HEADERS,
    MPIDS,
    SAMPLES,
    ContractChecked,
    local,
    meter_point_id,
    read_csv,
    read_xlsx,
    run,
    state_counts,
    summary_of,
    write_csv,
)
from onboard import api, records, settings
from onboard import plan as planning
from onboard import sheet as sheets
from onboard.emulator import EmulatorSettings, Store, create_app
from onboard.emulator.store import Location, Resource
from onboard.pipeline import BatchSize, Ledger, Run

pytestmark = pytest.mark.anyio


def plan_of(path):
    return planning.build(records.check(sheets.read(path)))


async def onboard(plan, app, batch_size=100, discover=True, answers=True):
    """Run the pipeline in-process over a spec-checking transport; the ledger, stats and checker."""
    checked = ContractChecked(httpx.ASGITransport(app=app), answers=answers)
    ledger = Ledger()
    async with api.connect(settings.target("local"), concurrency=4, transport=checked) as client:
        await client.sign_in()
        work = Run(client, plan, ledger, BatchSize(batch_size), concurrency=4, show_progress=False)
        if discover:
            await work()
        else:
            for stage in work.stages():
                await work.create(stage, {"user": plan.users, "location": plan.locations,
                                          "resource": plan.resources}[stage.kind])
    return ledger, client.stats, checked


def states(ledger, kind):
    return {k[1]: v.state for k, v in ledger.outcomes.items() if k[0] == kind}


# the happy path, and the contract


async def test_sample_sheet_lands_and_every_request_keeps_the_contract():
    app = create_app(EmulatorSettings(), Store())
    plan = plan_of(SAMPLES / "customers.xlsx")
    ledger, stats, checked = await onboard(plan, app)
    assert checked.requests > 100 and checked.problems == []
    assert app.store.counts() == {"users": len(plan.users), "locations": len(plan.locations),
                                  "resources": len(plan.resources)}
    assert {o.state for o in ledger.outcomes.values()} == {"created"}
    vehicles = [r for r in plan.resources.values() if r.is_vehicle]
    assert vehicles and all(app.store.resource(v.id).location_id is None for v in vehicles)
    assert stats.by_status[201] == 1 + 1 + len(plan.resources)  # one user batch, one location batch


async def test_second_run_creates_nothing_and_every_request_keeps_the_contract():
    app = create_app(EmulatorSettings(), Store())
    plan = plan_of(SAMPLES / "customers.xlsx")
    await onboard(plan, app)
    ledger, stats, checked = await onboard(plan, app)
    assert {o.state for o in ledger.outcomes.values()} == {"exists"}
    assert stats.by_status[201] == 0 and checked.problems == []


def test_run_twice_second_marks_every_row_exists(capsys, tmp_path):
    state = tmp_path / "emulator.sqlite"
    code, out, _ = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, *local(state))
    assert code == 0
    first = read_csv(tmp_path / "customers.results.csv")
    assert {r["status"] for r in first} == {"created"}
    counts = state_counts(state)
    code, out, _ = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, *local(state))
    assert code == 0
    second = read_csv(tmp_path / "customers.results.csv")
    assert {r["status"] for r in second} == {"exists"}
    assert [(r["user_id"], r["location_id"], r["resource_id"]) for r in second] == \
        [(r["user_id"], r["location_id"], r["resource_id"]) for r in first]
    assert state_counts(state) == counts
    summary = summary_of(tmp_path, "customers")
    assert all(c["created"] == 0 for c in summary["entities"].values())
    assert "201" not in summary["statuses"]


# bad rows, the errors file, and the re-run


def test_bad_rows_do_not_stop_good_rows_and_exit_1(capsys, tmp_path):
    state = tmp_path / "emulator.sqlite"
    code, out, err = run(capsys, "run", SAMPLES / "customers-with-errors.xlsx", "--out", tmp_path, *local(state))
    assert code == 1
    results = read_xlsx(tmp_path / "customers-with-errors.results.xlsx")
    errors = read_xlsx(tmp_path / "customers-with-errors.errors.xlsx")
    assert {r["status"] for r in results} == {"created", "invalid"}
    assert [r["row"] for r in errors] == [r["row"] for r in results if r["status"] == "invalid"]
    assert all(r["error"] for r in errors)
    assert state_counts(state)["users"] == len({r["user_id"] for r in results if r["status"] == "created"})
    assert "row 3 (invalid): meter_point_ids: meter point id 70705750001234 has 14 digits" in err
    assert "Traceback" not in err


def test_fixed_errors_file_reruns_to_completion(capsys, tmp_path):
    state = tmp_path / "emulator.sqlite"
    source = shutil.copy(SAMPLES / "customers-with-errors.xlsx", tmp_path / "customers.xlsx")
    assert run(capsys, "run", source, *local(state))[0] == 1
    errors_path = tmp_path / "customers.errors.xlsx"
    workbook = load_workbook(errors_path)
    sheet = workbook.worksheets[0]
    header = [c.value for c in sheet[1]]
    column = {name: header.index(name) + 1 for name in header}
    for line in range(2, sheet.max_row + 1):
        cells = {name: sheet.cell(line, column[name]) for name in column}
        error = cells["error"].value
        if "has a different meter_point_ids" in error:
            cells["meter_point_ids"].value = MPIDS[0]
        elif "meter point id" in error:
            cells["meter_point_ids"].value = MPIDS[1 + line % (len(MPIDS) - 1)]  # MPIDS[0] is 100001's
        if "longitude" in error:
            cells["longitude"].value = "10.75"
        if "resource_type" in error:
            cells["resource_type"].value = "HVAC"
        if "customer_id is empty" in error:
            cells["customer_id"].value = "999999"
    workbook.save(errors_path)
    code, out, err = run(capsys, "run", errors_path, *local(state))
    assert code == 1 and "(differs): meter_point_ids: the API holds (none), the sheet says" in err, \
        "a fixed row giving a registered site a meter point id changes that site: only with --update"
    code, out, err = run(capsys, "run", errors_path, *local(state), "--update")
    assert code == 0, err
    rerun = read_xlsx(tmp_path / "customers.errors.results.xlsx")
    assert {r["status"] for r in rerun} == {"exists", "updated"}  # the rest landed in the run before
    assert not (tmp_path / "customers.errors.errors.xlsx").exists() and "errors:  none" in out
    fixed_rows = [r["row"] for r in read_xlsx(errors_path)]
    assert [r["row"] for r in rerun] == fixed_rows, "the original row numbers go through the loop"
    final = read_xlsx(tmp_path / "customers.results.xlsx")
    assert [r["row"] for r in final] == list(range(2, len(final) + 2))
    assert {r["status"] for r in final} == {"created", "exists", "updated"} and all(r["user_id"] for r in final)
    assert f"{len(fixed_rows)} rows brought up to date in" in out


# batches, existing IDs, blocked rows


async def test_a_refused_batch_is_split_until_the_bad_item_is_isolated(tmp_path):
    app = create_app(EmulatorSettings(), Store())
    app.store.add_users(["someone-else"])
    app.store.add_locations([Location("taken", "someone-else", "Unknown", [MPIDS[0]])])
    rows = [[f"c{i}", "home", "", meter_point_id(i), f"SN{i}", "Charger"] for i in range(16)]
    rows[11][2] = "taken"  # an explicit location ID another user holds
    plan = plan_of(write_csv(tmp_path / "in.csv", rows, ["customer_id", "location_ref", "location_id",
                                                          "meter_point_ids", "resource_ref", "resource_type"]))
    ledger, stats, checked = await onboard(plan, app)
    locations = states(ledger, "location")
    assert locations.pop("taken") == "failed" and set(locations.values()) == {"created"}
    assert "exists, but not for this user" in ledger.get("location", "taken").reason
    blocked = ledger.get("resource", plan.rows[11].resource_id)
    assert blocked.state == "failed" and blocked.reason.startswith("blocked: location taken was not registered")
    assert stats.by_status[400] <= 2 * 4 + 1  # bisection: about two refusals per halving of 16
    assert checked.problems == []


async def test_an_already_exists_answer_is_confirmed_with_a_get(tmp_path):
    path = write_csv(tmp_path / "in.csv", [
        ["c1", "home", "", MPIDS[0], "", "", "SN1", "Charger"],
        ["c1", "home", "", MPIDS[0], "", "", "SN2", "HVAC"],
        ["c1", "", "", "", "", "", "VIN", "Vehicle"],
    ], HEADERS)
    plan = plan_of(path)
    app = create_app(EmulatorSettings(), Store())
    user = next(iter(plan.users))
    location = next(iter(plan.locations.values()))
    same, different, vehicle = plan.resources.values()
    app.store.add_users([user])
    app.store.add_locations([Location(location.id, user, "Unknown", [MPIDS[1]])])
    app.store.add_resource(Resource(same.id, user, "Charger", location.id))
    app.store.add_resource(Resource(different.id, user, "Generic", location.id))
    app.store.add_resource(Resource(vehicle.id, user, "Vehicle"))
    ledger, stats, checked = await onboard(plan, app, discover=False)
    assert ledger.get("user", user).state == "exists"
    assert ledger.get("location", location.id).state == "differs"
    assert ledger.get("location", location.id).reason.startswith(
        f"meter_point_ids: the API holds {MPIDS[1]}, the sheet says {MPIDS[0]}")
    assert ledger.get("resource", same.id).state == "exists"
    assert ledger.get("resource", vehicle.id).state == "exists"
    assert ledger.get("resource", different.id).state == "failed"
    assert ledger.get("resource", different.id).reason == (
        f"resource_type: the API holds this device (resource {different.id}) as a Generic, the sheet says HVAC: a "
        "device keeps its type and site under its resource_ref, so give a new device a resource_ref of its own")
    assert checked.problems == []


async def test_a_resource_id_held_by_another_user_fails_saying_so(tmp_path):
    path = write_csv(tmp_path / "in.csv", [["c1", "home", "", MPIDS[0], "", "", "SN1", "Charger"]], HEADERS)
    plan = plan_of(path)
    app = create_app(EmulatorSettings(), Store())
    app.store.add_users(["other"])
    app.store.add_resource(Resource(next(iter(plan.resources)), "other", "Vehicle"))
    ledger, _, _ = await onboard(plan, app)
    outcome = ledger.get("resource", next(iter(plan.resources)))
    assert outcome.state == "failed" and "is registered to another user" in outcome.reason


def test_413_halves_the_batch_for_the_rest_of_the_run(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ONBOARD_EMULATOR_MAX_BATCH", "3")
    rows = [[f"c{i}", "home", "", meter_point_id(i), "", "", "", ""] for i in range(10)]
    path = write_csv(tmp_path / "in.csv", rows, HEADERS)
    code, _, err = run(capsys, "run", path, "--batch-size", "10", *local(tmp_path / "e.sqlite"))
    assert code == 0, err
    summary = summary_of(tmp_path, "in")
    assert summary["batch_size"] == 2 and summary["statuses"]["413"] == 2
    assert state_counts(tmp_path / "e.sqlite") == {"users": 10, "locations": 10, "resources": 0}


def test_ids_with_slashes_spaces_and_unicode_are_one_path_segment(capsys, tmp_path):
    path = write_csv(tmp_path / "in.csv", [["c1", "a/b c", "site/1?x", MPIDS[0], "dev#1 æøå", "Charger"]],
                     ["customer_id", "user_id", "location_id", "meter_point_ids", "resource_id", "resource_type"])
    state = tmp_path / "e.sqlite"
    assert run(capsys, "run", path, *local(state))[0] == 0
    store = Store(state)
    assert store.has_user("a/b c") and store.location("site/1?x").user_id == "a/b c"
    assert store.resource("dev#1 æøå").location_id == "site/1?x"


# credentials, environments, dry runs


def test_missing_credentials_exit_2_before_anything_is_sent(capsys, tmp_path):
    code, out, err = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path)
    assert code == 2
    assert "SPARK_CLIENT_ID and SPARK_CLIENT_SECRET are not set" in err and "Traceback" not in err
    assert not (tmp_path / "customers.results.csv").exists()


def test_refused_credentials_exit_2_before_anything_is_sent(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ONBOARD_EMULATOR_CLIENT_ID", "partner")
    monkeypatch.setenv("ONBOARD_EMULATOR_CLIENT_SECRET", "the-right-one")
    monkeypatch.setenv("SPARK_CLIENT_ID", "partner")
    monkeypatch.setenv("SPARK_CLIENT_SECRET", "a-wrong-secret-1234")
    state = tmp_path / "e.sqlite"
    code, out, err = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, *local(state))
    assert code == 2
    assert "refused the client credentials (invalid_client)" in err
    assert "a-wrong-secret-1234" not in out + err
    assert state_counts(state) == {"users": 0, "locations": 0, "resources": 0}


def test_credentials_from_a_dotenv_file(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ONBOARD_EMULATOR_CLIENT_ID", "partner")
    monkeypatch.setenv("ONBOARD_EMULATOR_CLIENT_SECRET", "from-dotenv-5678")
    (tmp_path / ".env").write_text("SPARK_CLIENT_ID=partner\nSPARK_CLIENT_SECRET=from-dotenv-5678\n")
    code, out, err = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path,
                         *local(tmp_path / "e.sqlite"))
    assert code == 0, err
    everything = out + err + "".join(p.read_text(errors="replace") for p in tmp_path.glob("customers.*"))
    assert "from-dotenv-5678" not in everything


def test_production_asks_before_sending(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_CLIENT_ID", "x")
    monkeypatch.setenv("SPARK_CLIENT_SECRET", "y")
    code, _, err = run(capsys, "run", SAMPLES / "customers.csv", "--env", "production", "--out", tmp_path)
    assert code == 2 and "--yes" in err


def test_dry_run_prints_the_plan_and_sends_nothing(capsys, tmp_path):
    state = tmp_path / "e.sqlite"
    code, out, _ = run(capsys, "run", SAMPLES / "customers.xlsx", "--dry-run", "--out", tmp_path, *local(state))
    assert code == 0
    assert "plan: 60 users, 69 locations, 109 resources (12 vehicles) from 125 rows (0 invalid)" in out
    assert "1 user batches + 1 location batches" in out
    assert not state.exists()
    assert {r["status"] for r in read_xlsx(tmp_path / "customers.validation.xlsx")} == {"valid"}


def test_never_more_requests_in_flight_than_concurrency(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ONBOARD_EMULATOR_MAX_INFLIGHT", "3")
    monkeypatch.setenv("ONBOARD_EMULATOR_LATENCY_MS", "10")
    rows = [["c1", "home", "", MPIDS[0], "", "", f"SN{i}", "Charger"] for i in range(40)]
    path = write_csv(tmp_path / "in.csv", rows, HEADERS)
    code, _, err = run(capsys, "run", path, "--concurrency", "3", *local(tmp_path / "e.sqlite"))
    assert code == 0, err
    assert summary_of(tmp_path, "in")["throttled"] == 0
    monkeypatch.setenv("ONBOARD_EMULATOR_MAX_INFLIGHT", "2")
    monkeypatch.setenv("ONBOARD_RETRY_BASE", "0.01")
    rows = [["c2", "home", "", MPIDS[0], "", "", f"SN{i}", "Charger"] for i in range(40)]
    path = write_csv(tmp_path / "more.csv", rows, HEADERS)
    assert run(capsys, "run", path, "--concurrency", "3", *local(tmp_path / "e.sqlite"))[0] == 0
    assert summary_of(tmp_path, "more")["throttled"] > 0


def test_a_local_run_leaves_its_state_in_one_file(capsys, tmp_path):
    """Copying the state file alone copies the state: the in-process emulator is closed at the end."""
    state = tmp_path / "state" / "emulator.sqlite"
    assert run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path, *local(state))[0] == 0
    assert sorted(p.name for p in state.parent.iterdir()) == ["emulator.sqlite"]
    copy = shutil.copy(state, tmp_path / "copy.sqlite")
    assert state_counts(copy)["users"] == 60
