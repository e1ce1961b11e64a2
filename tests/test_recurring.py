"""The weeks after the first import (issue 11): `run` tells a site the API holds otherwise than the
sheet (`differs`, exit 1, nothing changed), `run --update` PATCHes only what changed (`updated`),
and `onboard plan` says per row what a run would do, sending no writes.

Through the command line against `--env local`, and where the requests themselves are the point,
through `onboarding.send` / `preview` over `ContractChecked`, so each request is checked against
the vendor's spec independently of the emulator.
"""

from __future__ import annotations

import json

import httpx
import pytest

from helpers import (
    ContractChecked,
    Intercepting,
    Recording,
    local,
    location_of,
    meter_point_id,
    read_csv,
    run,
    state_counts,
    write_csv,
)
from onboard import onboarding, settings
from onboard.cleanup import decide
from onboard.emulator import EmulatorSettings, create_app
from onboard.followup import Recorded
from onboard.journal import Journal
from onboard.pipeline import Outcome, compare_location
from onboard.preview import preview

M1, M2, M3, M4 = (meter_point_id(n) for n in range(1, 5))
OSLO = ("59.9139", "10.7522")
BERGEN = ("60.3913", "5.3221")

SHEET = [
    ["1001", "home", "Residential", M1, "", "", "HV-1", "HVAC"],   # 2
    ["1001", "home", "Residential", M1, "", "", "CH-1", "Charger"],  # 3: the same site
    ["1002", "cabin", "Residential", M2, *OSLO, "", ""],          # 4
    ["1003", "flat", "Commercial", M3, "", "", "", ""],           # 5
]


def checked(state) -> Recording:
    return Recording(ContractChecked(httpx.ASGITransport(app=create_app(EmulatorSettings(state=state)))))


@pytest.fixture
def state(tmp_path):
    return tmp_path / "emulator.sqlite"


@pytest.fixture
def registered(capsys, tmp_path, state):
    """The sheet, run once: everything registered."""
    sheet = write_csv(tmp_path / "customers.csv", SHEET)
    code, _, err = run(capsys, "run", sheet, *local(state))
    assert code == 0, err
    return sheet


def changed(tmp_path, name="customers.csv"):
    """A month later: a new meter point id on row 2's site, the cabin moved, the flat now a home."""
    rows = [list(r) for r in SHEET]
    rows[0][3] = rows[1][3] = M4
    rows[2][4:6] = BERGEN
    rows[3][2] = "Residential"
    return write_csv(tmp_path / name, rows)


def by_row(path):
    return {int(r["row"]): r for r in read_csv(path)}


def test_a_changed_site_is_differs_names_the_fields_and_changes_nothing(capsys, registered, state, tmp_path):
    changed(tmp_path)
    before = state_counts(state)
    code, out, err = run(capsys, "run", registered, *local(state))
    assert code == 1
    rows = by_row(tmp_path / "customers.results.csv")
    assert [rows[n]["status"] for n in (2, 3, 4, 5)] == ["differs"] * 4
    assert rows[2]["error"].startswith(f"meter_point_ids: the API holds {M1}, the sheet says {M4} (location ")
    assert rows[4]["error"].startswith("latitude, longitude: the API holds 59.9139")
    assert rows[2]["error"].endswith("fix the sheet, or run with --update to change the site")
    assert rows[4]["error"].startswith("latitude, longitude: the API holds 59.9139, 10.7522, the sheet says "
                                       "60.3913, 5.3221")
    assert rows[5]["error"].startswith("location_type: the API holds Commercial, the sheet says Residential")
    assert [int(r["row"]) for r in read_csv(tmp_path / "customers.errors.csv")] == [2, 3, 4, 5]
    location = location_of(state, rows[2]["location_id"])
    assert location.meter_point_ids == [M1]  # nothing changed
    assert state_counts(state) == before
    summary = json.loads((tmp_path / "customers.summary.json").read_text())
    assert summary["status"]["differs"] == 4
    assert summary["entities"]["locations"]["differs"] == 3
    assert "4 differs" in out and "row 2 (differs): meter_point_ids" in err


@pytest.mark.anyio
async def test_update_patches_only_the_changed_fields_then_all_is_unchanged(capsys, registered, state, tmp_path):
    sheet = changed(tmp_path)
    record = checked(state)
    result = await onboarding.send(onboarding.read(sheet), settings.target("local"), out=tmp_path,
                                   progress=False, update=True, transport=record)
    assert result.ok, result.errors
    assert list(result.results["status"]) == ["updated"] * 4
    patches = [(path.rsplit("/", 1)[-1], body) for method, path, body in record.sent if method == "PATCH"]
    ids = {int(r.row): r.location_id for r in result.results.itertuples()}
    assert sorted(patches, key=str) == sorted([
        (ids[2], {"meterPointIds": [M4]}),
        (ids[4], {"coordinates": {"latitude": 60.3913, "longitude": 5.3221}}),
        (ids[5], {"locationType": "Residential"}),
    ], key=str)
    assert location_of(state, ids[2]).meter_point_ids == [M4]
    assert (location_of(state, ids[4]).latitude, location_of(state, ids[5]).location_type) == (60.3913, "Residential")
    again = await onboarding.send(onboarding.read(sheet), settings.target("local"), progress=False,
                                  transport=checked(state))
    assert set(again.results["status"]) == {"exists"}


def test_update_on_the_command_line_and_the_errors_file_loop(capsys, registered, state, tmp_path):
    changed(tmp_path)
    assert run(capsys, "run", registered, *local(state))[0] == 1
    errors = tmp_path / "customers.errors.csv"
    code, out, err = run(capsys, "run", errors, *local(state), "--update")
    assert code == 0, err
    assert "4 updated" in out
    rows = by_row(tmp_path / "customers.results.csv")  # folded back into the original results
    assert {rows[n]["status"] for n in (2, 3, 4, 5)} == {"updated"}


def test_a_resumed_run_keeps_differs_and_updated(tmp_path):
    journal = Journal.open(tmp_path / "j.sqlite", tmp_path / "customers.csv", "http://api", {"users": 1},
                           sha256="0" * 64)
    journal.settled("location", ["a"], Outcome("differs", "meter_point_ids: ..."))
    journal.settled("location", ["b"], Outcome("updated"))
    journal.release()
    again = Journal.open(tmp_path / "j.sqlite", tmp_path / "customers.csv", "http://api", {"users": 1},
                         sha256="0" * 64)
    try:
        assert again.resumed
        assert {(i, o.state) for _, i, o in again.outcomes()} == {("a", "differs"), ("b", "updated")}
    finally:
        again.release()


def test_cleanup_keeps_what_updated_and_differs_rows_name():
    rows = [Recorded(2, "updated", "u1", "l1", "r1"), Recorded(3, "differs", "u2", "l2")]
    entities = decide(rows, {})
    assert all(entity.kept for entity in entities.values())


def test_a_site_in_a_test_area_stays_there(capsys, registered, state, tmp_path):
    """`--test-area` or `move` put it there on purpose: a later run of the sheet is not a change."""
    assert run(capsys, "move", tmp_path / "customers.results.csv", "--test-area", "2", *local(state))[0] == 0
    code, out, err = run(capsys, "run", registered, *local(state))
    assert code == 0, err
    rows = by_row(tmp_path / "customers.results.csv")
    assert rows[4]["status"] == "exists" and "is in the sandbox's test area 2" in rows[4]["warnings"]
    planned = onboarding.read(registered).plan.locations[rows[4]["location_id"]]
    moved = {"locationId": planned.id, "userId": planned.user_id, "locationType": "Residential",
             "meterPointIds": [M2],
             "coordinates": {"latitude": location_of(state, planned.id).latitude,
                             "longitude": location_of(state, planned.id).longitude}}
    assert compare_location(planned, moved, test_areas=False).changes == ("coordinates",), "production: a change"


# plan


def test_plan_of_a_new_sheet_is_all_create_and_sends_no_writes(capsys, tmp_path, state):
    sheet = write_csv(tmp_path / "customers.csv", SHEET + [["1004", "x", "", "12345", "", "", "", ""]])
    code, out, err = run(capsys, "plan", sheet, *local(state))
    assert code == 1  # the invalid row
    rows = read_csv(tmp_path / "customers.plan.csv")
    assert [r["plan"] for r in rows[:4]] == ["create"] * 4
    assert rows[4]["plan"].startswith("invalid: meter_point_ids:")
    assert not any(state_counts(state).values())
    assert "rows:          4 create, 0 update, 0 unchanged, 0 conflict, 1 invalid" in out
    assert "row 6: invalid: meter_point_ids" in err


@pytest.mark.anyio
async def test_plan_says_create_unchanged_update_and_conflict(capsys, registered, state, tmp_path):
    rows = [list(r) for r in SHEET]
    rows[2][4:6] = BERGEN                                              # 4: moved
    rows[1][7] = "HVAC"                                                # 3: CH-1 now an HVAC: another type
    rows.append(["1002", "cabin", "Residential", M2, *BERGEN, "PV-1", "SolarInverter"])  # 6: a new device
    rows[3] = ["1003", "", "", "", "", "", "EV-1", "Vehicle"]          # 5: a new car; its flat is read
    rows.append(["1009", "home", "Residential", M3, "", "", "", ""])   # 7: the flat's meter point
    rows.append(["1010", "home", "Residential", "", *OSLO, "", ""])     # 8: all new
    sheet = write_csv(tmp_path / "next-month.csv", rows)
    record = checked(state)
    before = state_counts(state)
    result = await preview(onboarding.read(sheet), settings.target("local"), out=tmp_path, progress=False,
                           transport=record)
    assert {method for method, _, _ in record.sent} == {"GET"}
    assert state_counts(state) == before
    assert [values[0] for _, values in result.lines] == list(range(2, 9))
    plan = [values[1:] for _, values in result.lines]
    assert plan[0] == ("unchanged", "")
    assert plan[1][0].startswith("conflict: resource_type: the API holds this device (resource ")
    assert "as a Charger, the sheet says HVAC" in plan[1][0]
    assert plan[2][0] == "update: coordinates"
    assert plan[2][1].startswith("latitude, longitude: the API holds 59.9139, 10.7522, the sheet says 60.3913")
    assert plan[3] == ("create: resource", "already registered: user")
    assert plan[4][0] == "update: coordinates; and create the resource"
    assert plan[5][0].startswith(f"conflict: meter_point_ids: meter point id {M3} is already registered at location ")
    assert plan[6] == ("create", "")
    assert not result.ok and len(result.problems) == 2
    assert result.summary["counts"]["rows"] == {"create": 2, "update": 2, "unchanged": 1, "conflict": 2}
    assert result.summary["counts"]["locations"] == {"create": 1, "exists": 1, "update": 1, "conflict": 1}
    written = read_csv(tmp_path / "next-month.plan.csv")
    assert [r["plan"] for r in written] == [p[0] for p in plan]
    assert written[0]["customer_id"] == "1001"


def test_plan_creates_only_the_new_device_of_an_existing_site(capsys, registered, state, tmp_path):
    sheet = write_csv(tmp_path / "more.csv", SHEET + [["1003", "flat", "Commercial", M3, "", "", "EV-1", "Charger"]])
    code, out, err = run(capsys, "plan", sheet, *local(state))
    assert code == 0, err
    rows = read_csv(tmp_path / "more.plan.csv")
    assert rows[-1]["plan"] == "create: resource"
    assert rows[-1]["plan_detail"] == "already registered: user, location"
    assert [r["plan"] for r in rows[:-1]] == ["unchanged"] * 4


def test_the_python_api_updates_too(registered, state, tmp_path):
    import onboard

    sheet = changed(tmp_path, "december.csv")
    first = onboard.run(sheet, env="local", state=state, progress=False)
    assert not first.ok and set(first.errors["status"]) == {"differs"}
    second = onboard.run(sheet, env="local", state=state, progress=False, update=True)
    assert second.ok and set(second.results["status"]) == {"updated"}


def test_a_meter_point_id_another_site_holds_is_refused_not_updated(capsys, registered, state, tmp_path):
    """Row 2's site would take the flat's meter point (customer 1003's, registered): --update must
    not PATCH it there; the row is invalid, naming the holder, and the plan says conflict."""
    rows = [list(r) for r in SHEET]
    rows[0][3] = rows[1][3] = M3
    rows[3] = ["1003", "", "", "", "", "", "EV-1", "Vehicle"]  # 1003 is in the sheet: its flat is read
    sheet = write_csv(tmp_path / "customers.csv", rows)
    code, out, err = run(capsys, "plan", sheet, *local(state))
    assert code == 1
    assert read_csv(tmp_path / "customers.plan.csv")[0]["plan"].startswith(
        f"conflict: meter_point_ids: meter point id {M3} is already registered at location ")
    code, out, err = run(capsys, "run", sheet, *local(state), "--update")
    assert code == 1
    rows = by_row(tmp_path / "customers.results.csv")
    assert rows[2]["status"] == rows[3]["status"] == "invalid"
    assert f"meter point id {M3} is already registered at location" in rows[2]["error"]
    assert location_of(state, rows[2]["location_id"]).meter_point_ids == [M1]


def test_differs_speaks_in_the_sheets_own_headers_and_marks_the_cells(capsys, tmp_path, state):
    headers = ["Kundenummer", "Anlegg", "Anleggstype", "Målepunkt-ID", "Breddegrad", "Lengdegrad", "Serienummer",
               "Enhetstype"]
    first = write_csv(tmp_path / "kunder.csv", SHEET, headers)
    assert run(capsys, "run", first, *local(state))[0] == 0
    rows = [list(r) for r in SHEET]
    rows[2][4:6] = BERGEN
    rows[0][3] = rows[1][3] = M4
    rows[1][7] = "Vehicle"
    moved = write_csv(tmp_path / "kunder-next.csv", rows, headers)
    code, out, err = run(capsys, "run", moved, *local(state))
    assert code == 1
    got = by_row(tmp_path / "kunder-next.results.csv")
    assert got[2]["error"].startswith(f"Målepunkt-ID: the API holds {M1}, the sheet says {M4}")
    assert got[4]["error"].startswith("Breddegrad, Lengdegrad: the API holds 59.9139, 10.7522")
    assert got[3]["status"] == "failed"
    assert got[3]["error"].startswith("Enhetstype: the API holds this device (resource ")
    assert "as a Charger, the sheet says Vehicle" in got[3]["error"]


def test_an_enrollment_alone_does_not_make_a_row_created(capsys, registered, state, tmp_path):
    """`cleanup` deletes by `created`: a re-run that only enrolls must not claim the rows' entities."""
    assert run(capsys, "move", tmp_path / "customers.results.csv", "--test-area", "2", *local(state))[0] == 0
    code, out, err = run(capsys, "run", registered, *local(state), "--enroll")
    assert code == 0, err
    assert "enrollments 3 created" in out
    assert {r["status"] for r in read_csv(tmp_path / "customers.results.csv")} == {"exists"}


def test_plan_needs_no_journal_of_its_own(capsys, registered, state, tmp_path):
    """A cleanup's journal is named as a run's of `<stem>.results.cleanup.<ext>` would be: no matter to `plan`."""
    results = tmp_path / "customers.results.csv"
    assert run(capsys, "cleanup", results, *local(state))[0] == 0
    code, out, err = run(capsys, "plan", tmp_path / "customers.results.cleanup.csv", *local(state))
    assert code in (0, 1) and "holds the outputs and journal" not in err


def test_a_meter_point_moving_between_two_sites_goes_in_two_runs(capsys, registered, state, tmp_path):
    """The cabin takes home's meter point, home gets a new one: the first --update changes home and
    refuses the cabin, saying why; the second changes the cabin. Never one id on two sites."""
    rows = [list(r) for r in SHEET]
    rows[0][3] = rows[1][3] = M4
    rows[2][3] = M1
    sheet = write_csv(tmp_path / "customers.csv", rows)
    assert run(capsys, "run", sheet, *local(state), "--update")[0] == 1
    got = by_row(tmp_path / "customers.results.csv")
    assert (got[2]["status"], got[4]["status"]) == ("updated", "invalid")
    assert got[4]["error"].endswith("once run --update has changed it, the next run takes this one")
    assert location_of(state, got[4]["location_id"]).meter_point_ids == [M2]
    assert run(capsys, "run", sheet, *local(state), "--update")[0] == 0
    assert location_of(state, got[4]["location_id"]).meter_point_ids == [M1]
    assert location_of(state, got[2]["location_id"]).meter_point_ids == [M4]


def test_two_sites_swapping_meter_points_say_a_hand_is_needed(capsys, registered, state, tmp_path):
    rows = [list(r) for r in SHEET]
    rows[0][3] = rows[1][3] = M2
    rows[2][3] = M1
    sheet = write_csv(tmp_path / "customers.csv", rows)
    assert run(capsys, "run", sheet, *local(state), "--update")[0] == 1
    got = by_row(tmp_path / "customers.results.csv")
    assert got[2]["status"] == got[4]["status"] == "invalid"
    assert got[4]["error"].endswith("that site waits for this one's meter point ids in turn: change one of the two "
                                    "by hand (PATCH), then run again")
    assert location_of(state, got[2]["location_id"]).meter_point_ids == [M1]


@pytest.mark.anyio
async def test_a_differs_site_from_a_resumed_journal_still_gets_the_meter_point_check(registered, state, tmp_path):
    """A resumed run holds `differs` from its journal: the check must still run before --update."""
    from onboard import api, update
    from onboard.pipeline import BatchSize, Ledger, Run

    rows = [list(r) for r in SHEET]
    rows[0][3] = rows[1][3] = M2  # the cabin's, whose cell is now blank: the API still holds it there
    rows[2][3] = ""
    plan = onboarding.read(write_csv(tmp_path / "resumed.csv", rows)).plan
    home = next(loc for loc in plan.locations.values() if loc.meter_point_ids == (M2,))
    known = [("location", home.id, Outcome("differs", "meter_point_ids: ..."))]
    known += [("user", u, Outcome("exists")) for u in plan.users]
    known += [("location", loc.id, Outcome("exists")) for loc in plan.locations.values() if loc is not home]
    ledger = Ledger(known=known)
    record = checked(state)
    async with api.connect(settings.target("local"), transport=record) as client:
        await client.sign_in()
        await Run(client, plan, ledger, BatchSize(100), show_progress=False)()
        await update.update(client, update.pending(plan, ledger), ledger, 16)
    assert ledger.get("location", home.id).state == "invalid"
    assert not [body for method, _, body in record.sent if method == "PATCH"]
    assert location_of(state, home.id).meter_point_ids == [M1]


def test_the_api_stopping_during_the_updates_ends_the_run_with_a_message(capsys, registered, state, tmp_path,
                                                                          monkeypatch):
    changed(tmp_path)

    def down_for_patches(request):
        return httpx.ConnectError("the API went away", request=request) if request.method == "PATCH" else None

    monkeypatch.setenv("ONBOARD_RETRY_DEADLINE", "0.5")
    import asyncio

    transport = Intercepting(checked(state), down_for_patches)
    result = asyncio.run(onboarding.send(onboarding.read(registered), settings.target("local"), out=tmp_path,
                                         progress=False, update=True, transport=transport))
    assert result.stopped is not None and not result.ok
    assert list(result.results["status"]) == ["differs"] * 4, "nothing was changed: the next --update does it"
    assert location_of(state, result.results["location_id"][0]).meter_point_ids == [M1]
    assert (tmp_path / "customers.results.csv").exists()


def test_no_meter_point_id_is_changed_while_a_customers_sites_cannot_be_read(capsys, registered, state, tmp_path):
    """The API refuses to list one customer's sites: a new meter point id elsewhere might be that
    customer's, so --update leaves it (not sent, run again) and changes only what it can check."""
    import asyncio

    rows = [list(r) for r in SHEET]
    rows[0][3] = rows[1][3] = M4
    rows[2][4:6] = BERGEN
    sheet = write_csv(tmp_path / "customers.csv", rows)
    flat_owner = onboarding.read(sheet).plan.rows[3].user_id

    def unlisting(request):
        if request.method == "GET" and request.url.path.endswith(f"/users/{flat_owner}/locations"):
            return httpx.Response(400, json={"message": "not today"}, request=request)
        return None

    result = asyncio.run(onboarding.send(onboarding.read(sheet), settings.target("local"), progress=False,
                                         update=True, transport=Intercepting(checked(state), unlisting)))
    statuses = list(result.results["status"])
    assert statuses[:3] == ["not sent", "not sent", "updated"]
    assert "the API would not list the sites of user" in result.results["error"][0]
    assert location_of(state, result.results["location_id"][0]).meter_point_ids == [M1]


def test_coordinates_an_api_rounds_are_not_a_moved_site():
    from onboard.plan import Coordinates, Location

    planned = Location("l", "u", None, (), Coordinates(59.91390012, 10.75220049))
    rounded = {"locationId": "l", "userId": "u", "coordinates": {"latitude": 59.913900, "longitude": 10.752200}}
    assert compare_location(planned, rounded).changes == ()
    moved = {"locationId": "l", "userId": "u", "coordinates": {"latitude": 59.91391, "longitude": 10.7522}}
    assert compare_location(planned, moved).changes == ("coordinates",)
