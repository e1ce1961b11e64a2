"""The million-row validation's shortcuts (issue 10): each agrees with the general path it stands in
for, on the sheets where they differ most, and what they let go of is gone.

Planning takes the rows as checking gives them; sites are held by their first row while rows are
held; a customer's rows are grouped as they come; similar refs are looked for only where a ref is
not plain; the summary reads a validation's outlines; CSV reading and writing look at a cell only
where a line can need it."""

from __future__ import annotations

import csv
import gc
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import onboard
from helpers import HEADERS, meter_point_id, write_csv
from onboard import onboarding, records, report
from onboard import plan as planning
from onboard import sheet as sheets
from onboard.sheet import CsvReader, protect, unprotect

MESSY_HEADERS = ["customer_id", "user_id", "location_ref", "meter_point_ids", "latitude", "longitude",
                 "resource_type", "resource_ref", "notes"]


def messy(tmp_path: Path) -> Path:
    """Customers split over the sheet, a site whose rows disagree, a meter point on two sites, a
    ref written two ways, a refused row, one --where leaves out, a device without a serial twice."""
    m = [meter_point_id(n) for n in range(8)]
    return write_csv(tmp_path / "messy.csv", [
        ["1001", "", "home", m[0], "59.9", "10.7", "HVAC", "SN-1", ""],
        ["1002", "", "home", m[1], "", "", "Charger", "SN-2", ""],
        ["1001", "", "cabin", m[2], "", "", "HVAC", "SN-3", ""],
        ["1003", "", "home", m[3], "60.1", "11.0", "HVAC", "SN-4", ""],
        ["1003", "", "home", m[3], "61.1", "11.0", "HVAC", "SN-5", ""],
        ["1004", "", "home", m[4], "", "", "HVAC", "SN-6", ""],
        ["1005", "", "home", m[4], "", "", "HVAC", "SN-7", ""],
        ["1006", "", "Home ", m[5], "", "", "HVAC", "SN-8", ""],
        ["1006", "", "home", m[6], "", "", "HVAC", "SN-9", ""],
        ["1007", "", "home", "12", "", "", "HVAC", "SN-10", ""],
        ["1008", "", "home", m[7], "", "", "HVAC", "SN-11", "skip"],
        ["", "u-9", "home", "", "59.0", "10.0", "Charger", "", ""],
        ["", "u-9", "home", "", "59.0", "10.0", "Charger", "", ""],
        ["1002", "", "home", m[1], "", "", "HVAC", "SN-12", ""],
    ], MESSY_HEADERS)


def outline(plan: planning.Plan) -> dict:
    """Everything a plan says, in a form two plans can be compared by."""
    return {
        "rows": [(type(r).__name__, r.number, r.user_id, r.location_id, r.resource_id, list(r.problems),
                  list(r.warnings), r.origin) for r in plan.rows],
        "users": [(u.id, u.customer) for u in plan.users.values()],
        "locations": [(k, loc, loc.site) for k, loc in plan.locations.items()],
        "resources": list(plan.resources.items()),
        "counts": dict(plan.counts),
        "names": [plan.site_name(k) for k in plan.locations],
    }


def test_planning_rows_as_they_come_plans_what_a_list_of_them_plans(tmp_path):
    sheet = sheets.read(messy(tmp_path))
    where = [records.Condition.parse("notes!=skip")]
    listed = planning.build(records.check(sheet, where=where))
    streamed = planning.build(records.checking(sheet, where=where))
    assert outline(streamed) == outline(listed)
    counts = outline(listed)["counts"]
    assert {"shared_meter_points", "similar_site_refs", "repeated_devices"} <= set(counts)
    assert any(type(r) is planning.SkippedRow for r in listed.rows)


def test_no_more_than_one_checked_row_is_held_while_planning(tmp_path):
    """Before, `records.check` made every row's `Checked` before planning began: a million of them."""
    sheet = sheets.read(messy(tmp_path))
    held = []

    def watched():
        for checked in records.checking(sheet):
            gc.collect()
            held.append(sum(1 for thing in gc.get_objects() if type(thing) is records.Checked))
            yield checked

    planning.build(watched())
    assert max(held) <= 2


def test_a_site_keeps_its_key_and_its_customer_is_its_users(tmp_path):
    plan = onboard.validate(messy(tmp_path)).intake.plan
    by_ref = [loc.site for loc in plan.locations.values() if loc.site == "ref\x1fhome"]
    assert len(by_ref) >= 3 and all(key is by_ref[0] for key in by_ref)
    assert all(isinstance(loc.site, str) for loc in plan.locations.values())
    names = {plan.site_name(k) for k in plan.locations}
    assert "site 'cabin' of customer '1001' (row 4)" in names
    assert "site 'home' of customer 'u-9' (rows 13-14)" in names
    assert planning.User("x", "a") == planning.User("x", "b")


def test_users_keep_the_order_of_their_first_valid_rows_when_planning_refuses_a_first_row(tmp_path):
    """Customer 1001's first row is refused while it is planned (its home's rows disagree), so its
    first valid row comes after customer 1002's: the users are put in that order again."""
    m = [meter_point_id(n) for n in range(4)]
    path = write_csv(tmp_path / "order.csv", [
        ["1001", "home", "", m[0], "59.1", "10.0", "SN-1", "HVAC"],
        ["1002", "home", "", m[1], "", "", "SN-2", "HVAC"],
        ["1001", "home", "", m[0], "59.2", "10.0", "SN-3", "HVAC"],
        ["1001", "cabin", "", m[2], "", "", "SN-4", "HVAC"],
    ], HEADERS)
    plan = planning.build(records.check(sheets.read(path)))
    assert [r.valid for r in plan.rows] == [False, True, False, True]
    first_valid = list(dict.fromkeys(r.user_id for r in plan.rows if r.valid))
    assert list(plan.users) == first_valid
    assert [u.customer for u in plan.users.values()] == ["1002", "1001"]


def test_a_site_is_known_by_its_first_rows_meter_point_ids_when_its_customer_has_several(tmp_path):
    """1001's home is known by its first row's id; its later row's other id (refused there for the
    disagreement) is no site's, so 1002 may hold it. Sites held as their first rows keep that rule
    once a customer has a second site."""
    m = [meter_point_id(n) for n in range(4)]
    path = write_csv(tmp_path / "first.csv", [
        ["1001", "home", "", m[0], "", "", "SN-1", "HVAC"],
        ["1001", "cabin", "", m[1], "", "", "SN-2", "HVAC"],
        ["1001", "home", "", m[2], "", "", "SN-3", "HVAC"],
        ["1002", "home", "", m[2], "", "", "SN-4", "HVAC"],
        ["1003", "home", "", m[1], "", "", "SN-5", "HVAC"],
    ], HEADERS)
    plan = planning.build(records.check(sheets.read(path)))
    problems = {r.number: " ".join(p.message for p in r.problems) for r in plan.rows}
    assert problems[5] == ""
    assert "also on" in problems[3] and "also on" in problems[6]
    assert plan.counts["shared_meter_points"] == 2


def _grouped(rows: list[planning.RowPlan]) -> list[list[planning.RowPlan]]:
    groups: dict[str, list[planning.RowPlan]] = {}
    for row in rows:
        groups.setdefault(planning._customer_key(row.row), []).append(row)
    return list(groups.values())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=12))
def test_customers_rows_grouped_as_they_come_are_grouped_as_by_their_first_rows(keys):
    rows = []
    for number, key in enumerate(keys, 2):
        row_plan = planning.RowPlan(number)
        row_plan.row = records.check_cells(number, {"customer_id": key}).row
        rows.append(row_plan)
    assert list(planning._customers(rows)) == _grouped(rows)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["1", "2"]), st.sampled_from(["home", "Home", "home ", "h ome", "cabin"])),
                min_size=1, max_size=8))
def test_similar_refs_are_warned_of_as_when_every_ref_was_looked_at(tmp_path_factory, pairs):
    """The general path: every customer's refs compared, as when no ref were plain."""
    path = write_csv(tmp_path_factory.mktemp("refs") / "refs.csv", [
        [customer, ref, "", meter_point_id(n), "", "", f"SN-{n}", "HVAC"] for n, (customer, ref) in enumerate(pairs)
    ], HEADERS)
    sheet = sheets.read(path)
    quick = outline(planning.build(records.check(sheet)))
    real = planning._is_plain
    try:
        planning._is_plain = lambda ref: False
        assert outline(planning.build(records.check(sheet))) == quick
    finally:
        planning._is_plain = real


def test_the_summary_of_a_validation_is_the_summary_of_its_results(tmp_path):
    result = onboard.validate(messy(tmp_path), where=["notes!=skip"])
    intake = result.intake
    quick = report.summarise(intake.sheet, intake.plan, result.rows, None)
    made = report.summarise(intake.sheet, intake.plan, list(result.rows), None)
    assert json.dumps(quick) == json.dumps(made)
    assert set(quick["status"]) >= {"valid", "invalid", "skipped"} and quick["reasons"]
    assert list(result.rows.outlines()) == [(r.status, list(r.reasons) if r.reasons else (), r.warnings)
                                            for r in result.rows]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-5, 10**6), st.text(max_size=6),
                          st.sampled_from(["=1+2", "+47 22", "-3", "@SUM(A1)", "'x", "\tx", "\rx", "", "'"])),
                max_size=8))
def test_a_csv_output_line_is_each_value_as_protect_writes_it(values):
    assert report.csv_line(values) == ["" if v is None else protect(str(v)) for v in values]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.text(alphabet="ab=' \n,\"", max_size=5), min_size=2, max_size=2), min_size=1,
                max_size=5))
def test_a_csv_records_cells_are_unprotected_as_when_every_field_was_looked_at(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("csv") / "in.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["x", "y"], *lines])
    with path.open(newline="", encoding="utf-8") as handle:
        expected = [[unprotect(f) for f in record] for record in csv.reader(handle)]
    assert [values for _, values in CsvReader(path).records()] == expected


def test_a_field_starting_with_equals_on_a_records_second_line_is_unprotected(tmp_path):
    path = tmp_path / "lines.csv"
    path.write_bytes(b'customer_id,notes,location_ref\r\n1001,"two\r\nlines",="007"\r\n1002,plain,home\r\n')
    rows = list(sheets.read(path).rows)
    assert [row.cells for row in rows] == [["1001", "two\r\nlines", "007"], ["1002", "plain", "home"]]


def test_giving_back_freed_memory_after_every_customer_plans_the_same(tmp_path, monkeypatch):
    sheet = sheets.read(messy(tmp_path))
    usual = outline(planning.build(records.check(sheet)))
    monkeypatch.setattr(planning, "GIVE_BACK_EVERY", 1)
    assert outline(planning.build(records.check(sheet))) == usual
    planning.give_back_freed_memory()


def test_validation_outputs_of_the_messy_sheet_keep_every_cell(tmp_path):
    """The CSV outputs' cells are the input's as read (a formula-like one protected), the rows each
    with its result: the shortcuts leave the outputs as the general path writes them."""
    path = write_csv(tmp_path / "cells.csv", [
        ["1001", "home", "", meter_point_id(1), "", "", "=SN-1", "HVAC"],
        ["1002", "home", "", meter_point_id(2), "", "", "'quoted", "HVAC"],
    ], HEADERS)
    result = onboarding.validated(onboarding.read(path), tmp_path / "out")
    with result.outputs.results.open(newline="", encoding="utf-8") as handle:
        written = list(csv.reader(handle))
    assert written[1][HEADERS.index("resource_ref")] == "'=SN-1"
    assert written[2][HEADERS.index("resource_ref")] == "'quoted"
    assert [line[len(HEADERS) + 1] for line in written[1:]] == ["valid", "valid"]
