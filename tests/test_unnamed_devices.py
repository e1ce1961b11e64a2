"""A site the API holds with devices of a type the sheet does not name (registered earlier from rows
without serials, now listed with serials) is warned of where a person sees it: on its rows, in the
terminal at the end of the run, and counted in the summary, naming the site as the sheet does."""

from __future__ import annotations

import json

from openpyxl import Workbook, load_workbook

from helpers import HEADERS, MPIDS, local, read_csv, run, state_counts, write_csv

WARNING = ("site 'home' of customer '1001' (rows 3-5) already holds 2 HVAC devices this sheet does not name; "
           "this run adds 2 more")


def _row(customer, ref, mpid, serial, kind):
    return [customer, ref, "", mpid, "", "", serial, kind]


def _workbook(path, rows):
    book = Workbook()
    book.active.append(HEADERS)
    for row in rows:
        book.active.append(row)
    book.save(path)
    return path


def _summary_sheet(path) -> dict[str, object]:
    return {line[0]: line[1] for line in load_workbook(path)["Summary"].iter_rows(values_only=True) if line and line[0]}


def test_a_site_holding_unnamed_devices_is_warned_in_the_terminal_the_summary_and_its_rows(capsys, tmp_path):
    state = tmp_path / "e.sqlite"
    first = write_csv(tmp_path / "first.csv", [_row("1001", "home", MPIDS[0], "", "HVAC")] * 2)
    assert run(capsys, "run", first, *local(state))[0] == 0
    assert state_counts(state)["resources"] == 2

    named = _workbook(tmp_path / "second.xlsx", [
        _row("1002", "home", MPIDS[1], "EV-1", "Charger"),
        _row("1001", "home", MPIDS[0], "HP-1", "HVAC"),
        _row("1001", "home", MPIDS[0], "HP-2", "HVAC"),
        _row("1001", "home", MPIDS[0], "CH-1", "Charger"),
    ])
    code, out, err = run(capsys, "run", named, *local(state))
    assert code == 0, err
    assert err.count(WARNING) == 1 and f"onboard: {WARNING}" in err, "said once, at the end of the run"
    rows = load_workbook(tmp_path / "second.results.xlsx").worksheets[0]
    header = [c.value for c in rows[1]]
    warnings = [line[header.index("warnings")] for line in rows.iter_rows(min_row=2, values_only=True)]
    assert warnings == [None, WARNING, WARNING, WARNING]
    summary = json.loads((tmp_path / "second.summary.json").read_text())
    assert summary["checks"] == {"unnamed_devices": 3}
    assert _summary_sheet(tmp_path / "second.results.xlsx")[
        "rows flagged: a site the API holds with devices of a type the sheet does not name, warned"] == 3
    assert state_counts(state)["resources"] == 6

    code, out, err = run(capsys, "run", named, *local(state))
    assert code == 0 and "does not name" not in err, "every device the site holds is named now"
    assert json.loads((tmp_path / "second.summary.json").read_text())["checks"] == {}


def test_a_site_without_a_ref_is_named_by_its_meter_point_ids(capsys, tmp_path):
    state = tmp_path / "e.sqlite"
    first = write_csv(tmp_path / "first.csv", [_row("1001", "", MPIDS[0], "", "HVAC")])
    assert run(capsys, "run", first, *local(state))[0] == 0
    second = write_csv(tmp_path / "second.csv", [_row("1001", "", MPIDS[0], "HP-9", "HVAC")])
    code, _, err = run(capsys, "run", second, *local(state))
    note = (f"site with meter point ids '{MPIDS[0]}' of customer '1001' (row 2) already holds 1 HVAC device this "
            "sheet does not name; this run adds 1 more")
    assert code == 0 and note in err
    assert read_csv(tmp_path / "second.results.csv")[0]["warnings"] == note


# a meter point the API holds at another site: the same words as the sheet's own refusals


def test_a_meter_point_held_at_another_site_is_refused_in_its_column_naming_the_sites(capsys, tmp_path):
    state = tmp_path / "e.sqlite"
    first = write_csv(tmp_path / "first.csv", [_row("1001", "home", MPIDS[0], "", "")])
    assert run(capsys, "run", first, *local(state))[0] == 0
    book = Workbook()
    book.active.append(["Kundenummer", "Anlegg", "Målepunkt-ID", "Serienummer", "Enhetstype"])
    book.active.append(["1001", "cabin", MPIDS[1], "", ""])
    book.active.append(["1002", "home", MPIDS[0], "CH-1", "Charger"])
    book.active.append(["1002", "home", MPIDS[0], "CH-2", "Charger"])
    book.save(tmp_path / "second.xlsx")
    code, _, err = run(capsys, "run", tmp_path / "second.xlsx", *local(state))
    sheet = load_workbook(tmp_path / "second.errors.xlsx")["Errors"]
    header = [c.value for c in sheet[1]]
    error = sheet.cell(2, header.index("error") + 1).value
    assert code == 1 and error.startswith(f"Målepunkt-ID: meter point id {MPIDS[0]} is already registered at "
                                          "location ")
    assert "of the customer of row 2 (user " in error
    assert error.endswith("a meter point belongs to one site, so site 'home' of customer '1002' (rows 3-4) is not sent")
    marked = sheet.cell(2, header.index("Målepunkt-ID") + 1)
    assert marked.fill.fgColor.rgb.endswith("FFC7CE") and "already registered" in marked.comment.text
    assert f"row 3 (invalid): {error}" in err
