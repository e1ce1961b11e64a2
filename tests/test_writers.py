"""The outputs' writers: what a person needs kept in the large workbook, and rows streamed, never held.

Workbooks are read back with openpyxl, independently of the writer (rust_xlsxwriter) that made them.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook
from openpyxl.styles.numbers import is_date_format

from helpers import MPIDS, local, meter_point_id, read_xlsx, run
from onboard import report, workbook
from onboard import sheet as sheets
from onboard.sheet import CsvReader, Sheet, SheetRow

ROWS = 1_200
"""More than the rows sampled for the column widths, so rows past the sample are checked too."""
BAD = {7, 640, 1_150}
"""Data rows (1-based) whose meter point id is refused: one inside the width sample, two past it."""


def _big_workbook(path: Path) -> Path:
    book = Workbook()
    sheet = book.active
    sheet.append(["customer_id", "meter_point_ids", "resource_ref", "resource_type", "internal", "since", "read at"])
    for n in range(1, ROWS + 1):
        mpid = "12345" if n in BAD else meter_point_id(n)
        sheet.append([str(100_000 + n), mpid, f"SN-{n:05d}", "Charger", "secret", dt.date(2024, 5, 17),
                      dt.time(13, 5)])
    sheet.column_dimensions["E"].hidden = True
    book.save(path)
    return path


def _fill(cell) -> str:
    return cell.fill.fgColor.rgb[-6:] if cell.fill.fill_type == "solid" else ""


def _status_fill(sheet, cell) -> str:
    """The fill a spreadsheet program gives a status cell: the colour of the conditional format rule
    over its column that holds for its value (a rule reads `=OR($M2="valid",$M2="created")`)."""
    found = []
    for ranges, rules in sheet.conditional_formatting._cf_rules.items():
        if cell.coordinate not in ranges.sqref:
            continue
        for rule in rules:
            assert rule.type == "expression" and rule.formula[0].startswith("OR(")
            statuses = re.findall(r'\$?[A-Z]+\$?2="([^"]*)"', rule.formula[0])
            if cell.value in statuses:
                found.append(rule.dxf.fill.bgColor.rgb[-6:])
    assert len(found) <= 1, found
    return found[0] if found else ""


def test_the_large_workbook_keeps_what_a_person_needs(capsys, tmp_path):
    source = _big_workbook(tmp_path / "big.xlsx")
    code, _, err = run(capsys, "validate", source)
    assert code == 1 and "Traceback" not in err
    book = load_workbook(tmp_path / "big.validation.xlsx")
    assert book.sheetnames == ["Results", "Summary"]
    sheet = book["Results"]
    header = [c.value for c in sheet[1]]
    at = {name: header.index(name) + 1 for name in header}
    last = sheet.max_row
    assert last == ROWS + 1
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:{sheet.cell(1, len(header)).column_letter}{last}"
    assert all(c.font.b and _fill(c) == "DDEBF7" for c in sheet[1])
    assert sheet.column_dimensions["E"].hidden and not sheet.column_dimensions["D"].hidden
    assert sheet.column_dimensions["C"].width >= len("SN-00001")
    for n in (1, 639, ROWS):  # valid rows, inside and past the width sample
        line = n + 1
        status = sheet.cell(line, at["status"])
        assert status.value == "valid" and _status_fill(sheet, status) == "E2EFDA" and not _fill(status)
        for name in ("customer_id", "meter_point_ids", "resource_ref", "user_id", "location_id", "resource_id"):
            cell = sheet.cell(line, at[name])
            assert cell.number_format == "@" and isinstance(cell.value, str), (n, name)
        assert not _fill(sheet.cell(line, at["meter_point_ids"]))
        since, read_at = sheet.cell(line, at["since"]), sheet.cell(line, at["read at"])
        assert since.is_date and is_date_format(since.number_format) and "h" not in since.number_format
        assert read_at.value == dt.time(13, 5) and "h" in read_at.number_format
    for n in BAD:
        line = n + 1
        status, mpid = sheet.cell(line, at["status"]), sheet.cell(line, at["meter_point_ids"])
        assert status.value == "invalid" and _status_fill(sheet, status) == "FFEB9C"
        assert mpid.value == "12345" and _fill(mpid) == "FFC7CE" and mpid.number_format == "@"
        assert "it needs exactly 18" in mpid.comment.text
        assert "it needs exactly 18" in sheet.cell(line, at["error"]).value
        assert sheet.cell(line, at["user_id"]).number_format == "@"  # empty, and typed into as text
    summary = {r[0]: r[1] for r in book["Summary"].iter_rows(values_only=True) if r and r[0]}
    assert summary["rows"] == ROWS and summary["status valid"] == ROWS - len(BAD)


def test_marked_cells_past_the_note_limit_are_still_filled(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(workbook, "MAX_NOTES", 2)
    run(capsys, "validate", _big_workbook(tmp_path / "big.xlsx"))
    sheet = load_workbook(tmp_path / "big.validation.xlsx")["Results"]
    column = [c.value for c in sheet[1]].index("meter_point_ids") + 1
    marked = [sheet.cell(n + 1, column) for n in sorted(BAD)]
    assert [_fill(c) for c in marked] == ["FFC7CE"] * 3
    assert [c.comment is not None for c in marked] == [True, True, False]


def test_a_text_longer_than_an_excel_cell_is_cut_to_fit(capsys, tmp_path):
    """Excel holds 32,767 characters in a cell (and cuts longer ones when it opens a file): an error
    quoting a value near that long is cut to fit, and the outputs are still written."""
    book = Workbook()
    book.active.append(["customer_id", "meter_point_ids", "location_type", "resource_ref", "resource_type"])
    book.active.append(["1", MPIDS[0], "y" * 20_000, "SN-1", "x" * 20_000])
    book.save(tmp_path / "long.xlsx")
    code, _, err = run(capsys, "validate", tmp_path / "long.xlsx")
    assert code == 1 and "Traceback" not in err
    row = read_xlsx(tmp_path / "long.validation.xlsx")[0]
    assert row["resource_type"] == "x" * 20_000 and row["status"] == "invalid"
    assert len(row["error"]) == workbook.EXCEL_CELL_CHARACTERS and row["error"].endswith("x…")


# streaming


class Rereading:
    """A sheet's rows read from its CSV file anew on each pass, as a streaming reader gives them
    (every cell text); counts the passes."""

    def __init__(self, path: Path) -> None:
        self.path, self.passes = path, 0

    def __iter__(self) -> Iterator[SheetRow]:
        self.passes += 1
        records = CsvReader(self.path).records()
        next(records)
        for number, cells in records:
            yield SheetRow(number, cells, list(cells))


def _streamed(tmp_path: Path, rows: int, format: str) -> tuple[Sheet, Rereading, list[report.RowResult]]:
    path = tmp_path / "many.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["customer_id", "location_ref", "meter_point_ids", "resource_ref", "note"])
        writer.writerows([str(n), "home", MPIDS[0], f"SN-{n:08d}", "a note"] for n in range(rows - 1))
        writer.writerow([str(rows - 1), "home", "12345", f"SN-{rows - 1:08d}"])  # short: a reader need not pad it
    header = sheets.read(path)
    source = Rereading(path)
    sheet = Sheet(path, format, header.columns, source, header.header_row, csv_style=header.csv_style)  # type: ignore[arg-type]
    results = [report.RowResult(n, "valid", user_id=f"u{n}", location_id=f"l{n}", resource_id=f"r{n}")
               for n in range(2, rows + 2)]
    results[-1] = report.RowResult(rows + 1, "invalid", error="meter_point_ids: wrong",
                                   cell_problems={2: "wrong"}, reasons=["wrong"])
    return sheet, source, results


@pytest.mark.parametrize(("format", "rows", "bound_mb"), [("csv", 20_000, 6), ("xlsx", 20_000, 6)])
def test_writers_stream_rows_and_read_the_sheet_once_per_file(tmp_path, format, rows, bound_mb):
    """Each output reads the rows once, as it writes them, and holds none of them (beyond the few
    sampled for the column widths): Python's memory while writing stays flat, whatever the rows
    (2 MB here; holding 20,000 output rows took 11 to 15 MB). A row shorter than the header, as a
    CSV line may be, keeps its cells in their columns."""
    sheet, source, results = _streamed(tmp_path, rows, format)
    outputs = report.Outputs(tmp_path / f"many.results.{format}", tmp_path / f"many.errors.{format}",
                             tmp_path / "many.summary.json")
    summary = {"rows": rows, "status": {"valid": rows - 1, "invalid": 1}, "entities": {}}
    tracemalloc.start()
    try:
        assert report.write(outputs, sheet, results, summary)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert source.passes == 2  # the results, then the errors
    assert peak < bound_mb * 2**20, f"{peak / 2**20:.1f} MB"
    if format == "csv":
        with outputs.results.open(newline="", encoding="utf-8") as handle:
            assert sum(1 for _ in handle) == rows + 1
    errors = read_xlsx(outputs.errors) if format == "xlsx" else list(csv.DictReader(outputs.errors.open()))
    assert [(r["customer_id"], r["meter_point_ids"], r["note"], r["status"]) for r in errors] == [
        (str(rows - 1), "12345", "" if format == "csv" else None, "invalid")]


def test_the_folded_results_summary_counts_every_row(capsys, tmp_path):
    """The original results file, brought up to date by the errors file's run, is rewritten as a
    stream; its Summary counts the rows as they pass."""
    source = tmp_path / "in.xlsx"
    book = Workbook()
    book.active.append(["customer_id", "location_ref", "meter_point_ids", "resource_ref", "resource_type"])
    book.active.append(["1", "home", MPIDS[0], "SN-1", "Charger"])
    book.active.append(["2", "home", "12345", "SN-2", "Charger"])
    book.active.append(["3", "home", MPIDS[2], "SN-3", "Charger"])
    book.save(source)
    state = tmp_path / "e.sqlite"
    assert run(capsys, "run", source, *local(state))[0] == 1
    errors = load_workbook(tmp_path / "in.errors.xlsx")
    header = [c.value for c in errors.worksheets[0][1]]
    errors.worksheets[0].cell(2, header.index("meter_point_ids") + 1).value = MPIDS[1]
    errors.save(tmp_path / "in.errors.xlsx")
    code, out, err = run(capsys, "run", tmp_path / "in.errors.xlsx", *local(state))
    assert code == 0 and "1 row brought up to date" in out, err
    final = load_workbook(tmp_path / "in.results.xlsx")
    assert [r["status"] for r in read_xlsx(tmp_path / "in.results.xlsx")] == ["created"] * 3
    summary = {r[0]: r[1] for r in final["Summary"].iter_rows(values_only=True) if r and r[0]}
    assert summary["rows"] == 3 and summary["status created"] == 3
    assert summary["last brought up to date by"] == "in.errors.xlsx"
    assert str(summary["tool"]).startswith("onboard ") and summary["input"].endswith("in.xlsx")  # the first run's
