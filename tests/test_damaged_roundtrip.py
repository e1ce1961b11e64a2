"""An id Excel already rounded (a cell holding the number 7.07058E+17) is refused, and stays refused
through the fix-and-rerun loop: the outputs write it back so that the tool's own reading sees the
same damage (in xlsx the number itself, in CSV the text Excel shows for it), never as the rounded
digits in text, which would be taken as a good id on the next run."""

from __future__ import annotations

import pandas as pd
from openpyxl import Workbook, load_workbook

import onboard
from helpers import MPIDS, local, read_csv, run, state_counts, write_csv

HEADERS = ["customer_id", "location_ref", "meter_point_ids", "resource_ref", "resource_type"]
ROUNDED = 7.07058e17
"""What Excel kept of a 18-digit id typed into a General cell: 15 digits, shown as 7.07058E+17."""


def _workbook(path, rows):
    book = Workbook()
    sheet = book.active
    sheet.append(HEADERS)
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def _cells(path) -> dict[int, dict[str, object]]:
    """Original row number -> the cells of a table the tool wrote, as Excel holds them."""
    rows = list(load_workbook(path).worksheets[0].iter_rows(values_only=True))
    return {line[rows[0].index("row")]: dict(zip(rows[0], line, strict=True)) for line in rows[1:]}


def _errors(cells: dict[int, dict[str, object]]) -> dict[int, str]:
    return {row: line["error"] for row, line in cells.items() if line["status"] == "invalid"}


DAMAGED_XLSX = [
    ["1001", "home", MPIDS[0], "HP-1", "HVAC"],
    ["1002", "home", ROUNDED, "", ""],
    [1.23456789012346e18, "home", MPIDS[1], "", ""],
    ["1003", "home", MPIDS[2], ROUNDED, "HVAC"],
]


def test_an_xlsx_damaged_id_is_refused_again_when_its_errors_file_is_run_unchanged(capsys, tmp_path):
    state = tmp_path / "e.sqlite"
    path = _workbook(tmp_path / "in.xlsx", DAMAGED_XLSX)
    assert run(capsys, "run", path, *local(state))[0] == 1
    first = _cells(tmp_path / "in.errors.xlsx")
    reasons = _errors(first)
    assert sorted(reasons) == [3, 4, 5] and all("Excel dropped digits" in r for r in reasons.values())
    assert first[3]["meter_point_ids"] == ROUNDED, "written back as the number Excel holds, not as text"
    assert first[4]["customer_id"] == 1.23456789012346e18 and first[5]["resource_ref"] == ROUNDED
    landed = state_counts(state)

    assert run(capsys, "run", tmp_path / "in.errors.xlsx", *local(state))[0] == 1
    assert _errors(_cells(tmp_path / "in.errors.errors.xlsx")) == reasons, "the same rows, the same reasons"
    assert state_counts(state) == landed, "the rounded ids were never registered"

    results = _cells(tmp_path / "in.results.xlsx")  # brought up to date by the errors file's run
    assert results[2]["meter_point_ids"] == MPIDS[0] and results[2]["status"] == "created"
    assert results[3]["meter_point_ids"] == ROUNDED and results[5]["resource_ref"] == ROUNDED
    assert run(capsys, "run", tmp_path / "in.results.xlsx", *local(state))[0] == 1
    again = _cells(tmp_path / "in.results.results.xlsx")
    assert _errors(again) == reasons and again[2]["status"] == "exists"
    assert again[2]["meter_point_ids"] == MPIDS[0], "a good id, text, round-trips exactly"
    assert state_counts(state) == landed


def test_a_csv_damaged_id_is_refused_again_when_its_errors_file_is_run_unchanged(capsys, tmp_path):
    state = tmp_path / "e.sqlite"
    path = write_csv(tmp_path / "in.csv", [
        ["1001", "home", MPIDS[0], "HP-1", "HVAC"],
        ["1002", "home", "7.07058E+17", "", ""],
        ["7.07058E+17", "home", MPIDS[1], "", ""],
        ["1003", "home", MPIDS[2], "1,23457E+18", "HVAC"],
    ], HEADERS)
    assert run(capsys, "run", path, *local(state))[0] == 1
    errors = read_csv(tmp_path / "in.errors.csv")
    reasons = {r["row"]: r["error"] for r in errors}
    assert sorted(reasons) == ["3", "4", "5"] and all("Excel dropped digits" in r for r in reasons.values())
    assert reasons["4"].startswith("customer_id: 7.07058E+17 was stored as a number")
    assert reasons["5"].startswith("resource_ref: 1,23457E+18 was stored as a number")
    landed = state_counts(state)
    assert run(capsys, "run", tmp_path / "in.errors.csv", *local(state))[0] == 1
    assert {r["row"]: r["error"] for r in read_csv(tmp_path / "in.errors.errors.csv")} == reasons
    assert state_counts(state) == landed
    results = read_csv(tmp_path / "in.results.csv")
    assert results[0]["meter_point_ids"] == MPIDS[0] and results[0]["status"] == "created"


def test_a_number_written_to_csv_is_the_text_excel_shows_and_is_refused_again(tmp_path):
    frame = pd.DataFrame({"customer_id": ["1001", "1002", 1.23456789012346e18],
                          "meter_point_ids": [MPIDS[0], ROUNDED, MPIDS[1]],
                          "resource_ref": ["HP-1", 7.1e17, "HP-3"], "resource_type": ["HVAC"] * 3})
    result = onboard.validate(frame)
    assert list(result.results["status"]) == ["valid", "invalid", "invalid"]
    result.write(tmp_path, stem="frame", format="csv")
    written = read_csv(tmp_path / "frame.validation.csv")
    assert [r["meter_point_ids"] for r in written] == [MPIDS[0], "7.07058E+17", MPIDS[1]]
    assert [r["customer_id"] for r in written] == ["1001", "1002", "1.23457E+18"]
    assert written[1]["resource_ref"] == "7.1E+17"
    again = onboard.validate(tmp_path / "frame.validation.csv")
    assert list(again.results["status"]) == ["valid", "invalid", "invalid"]
    first = [e.split(": ")[0] for e in result.results["error"]]
    assert [e.split(": ")[0] for e in again.results["error"]] == first
    assert all("Excel dropped digits" in e for e in again.results["error"][1:])
