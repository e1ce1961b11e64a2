"""The fast paths `onboard validate` takes for the common cell, row and sheet give what the general
paths give: a text cell checked as text, a number as the number it is, a blank cell as nothing, and
the sheet scan's quick tests as its exact ones."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import pytest
from openpyxl import Workbook

from helpers import MPIDS, run
from onboard.records import Cell, check_cells
from onboard.sheet import XlsxReader
from onboard.sheet._package import SheetScan

ROW = {"customer_id": "4711", "location_ref": "home", "location_type": "Residential", "meter_point_ids": MPIDS[0],
       "resource_ref": "SN1", "resource_type": "HotWaterTank"}


def _as_cells(cells: dict[str, object]) -> dict[str, object]:
    """The general path: every cell a `Cell` of its text and value, as a workbook's typed cells come."""
    return {name: Cell(str(value), value) for name, value in cells.items()}


@pytest.mark.parametrize("cells", [
    ROW,
    {**ROW, "location_type": "cabin"},  # a choice refused
    {**ROW, "customer_id": "7.07058E+17"},  # a key Excel rounded, as it saved it
    {**ROW, "meter_point_ids": "12345"},  # a meter point id refused
    {**ROW, "meter_point_ids": f"{MPIDS[0]};{MPIDS[1]}"},
    {**ROW, "resource_ref": "", "location_type": ""},  # blank cells, given or left out
])
def test_text_cells_are_checked_as_their_cell_would_be(cells):
    fast, general = check_cells(5, dict(cells)), check_cells(5, _as_cells(cells))
    assert (fast.row, fast.problems, fast.warnings) == (general.row, general.problems, general.warnings)
    blank_left_out = check_cells(5, {name: value for name, value in cells.items() if value != ""})
    assert (blank_left_out.row, blank_left_out.problems) == (fast.row, fast.problems)


@pytest.mark.parametrize("latitude, longitude", [(59.9139, 10.7522), (60.0, -0.0), (-0.0, 179.99999)])
def test_a_numeric_coordinate_is_the_number_its_text_reads(latitude, longitude):
    """A number the workbook stored is taken as it is, and reads as its text does: -0.0 is 0."""
    from onboard.sheet import cell_text

    numbers = check_cells(5, {**ROW, "latitude": Cell(cell_text(latitude), latitude),
                              "longitude": Cell(cell_text(longitude), longitude)})
    texts = check_cells(5, {**ROW, "latitude": cell_text(latitude), "longitude": cell_text(longitude)})
    assert numbers.valid and (numbers.row.latitude, numbers.row.longitude) == (texts.row.latitude, texts.row.longitude)
    assert [math.copysign(1, v) for v in (numbers.row.latitude, numbers.row.longitude)] == \
        [math.copysign(1, v) for v in (texts.row.latitude, texts.row.longitude)]


def test_a_numeric_coordinate_out_of_range_is_refused_in_the_same_words():
    numbers = check_cells(5, {**ROW, "latitude": Cell("95.5", 95.5), "longitude": Cell("10.0", 10.0)})
    texts = check_cells(5, {**ROW, "latitude": "95.5", "longitude": "10.0"})
    assert numbers.problems == texts.problems and "outside -90..90" in numbers.problems[0].message


def _scan(xml: bytes, chunk: int) -> SheetScan:
    scan = SheetScan()
    for start in range(0, len(xml), chunk):
        scan.feed(xml[start:start + chunk])
    scan.close()
    return scan


EXCEL_ROWS = (b'<sheetData><row r="1" spans="1:3"><c r="A1" t="s"><v>0</v></c><c r="C1" s="2"/></row>'
              b'<row r="2" spans="1:3" hidden="1"><c r="A2"><v>1</v></c><c r="B2" s="1"/></row>'
              b'<row r="3" spans="1:3"><c r="B3"><v>2</v></c></row>'
              b'<row r="4" spans="1:3" hidden="true"><c r="AB4"><v>3</v></c></row></sheetData>')


@pytest.mark.parametrize("chunk", [7, 64, len(EXCEL_ROWS)])
def test_the_sheet_scan_finds_as_much_in_any_chunks(chunk):
    """Hidden rows as Excel marks them, empty styled cells (not counted as holding something), and
    the extent's lowest and rightmost cells, whether a chunk takes the quick tests or the exact ones."""
    facts = _scan(EXCEL_ROWS, chunk).facts
    assert facts.hidden_rows == {2, 4}
    assert facts.written == 4
    extent = facts.extent
    assert (extent.first_row, extent.last_row, extent.first_column, extent.last_column) == (1, 4, 1, 28)
    assert (extent.lowest, extent.rightmost) == ("AB4", "AB4")


def test_the_lowest_cell_is_the_last_of_its_row_not_one_ending_in_the_same_digits():
    xml = b'<sheetData><row r="11"><c r="A11"><v>1</v></c></row><row r="1"><c r="C1"><v>1</v></c></row></sheetData>'
    extent = _scan(xml, len(xml)).facts.extent
    assert (extent.last_row, extent.lowest) == (11, "A11")


def test_hidden_rows_and_columns_of_a_written_workbook_are_found(tmp_path: Path):
    book = Workbook()
    sheet = book.active
    sheet.append(["customer_id", "meter_point_ids", "notes"])
    for n in range(1, 5):
        sheet.append([str(n), MPIDS[n], "x"])
    sheet.row_dimensions[3].hidden = True
    sheet.column_dimensions["C"].hidden = True
    book.save(tmp_path / "hidden.xlsx")
    with zipfile.ZipFile(tmp_path / "hidden.xlsx") as archive:
        assert b'hidden="1"' in archive.read("xl/worksheets/sheet1.xml")
    reader = XlsxReader(tmp_path / "hidden.xlsx")
    assert reader.hidden_rows == {3} and reader.facts.hidden_columns == [(3, 3)]


def test_a_validation_workbook_has_no_empty_error_cells(capsys, tmp_path: Path):
    """A row's empty `error` and `warnings` are written as no cell at all, as before."""
    from openpyxl import load_workbook

    book = Workbook()
    book.active.append(["customer_id", "meter_point_ids"])
    book.active.append(["1", MPIDS[0]])
    book.save(tmp_path / "one.xlsx")
    assert run(capsys, "validate", tmp_path / "one.xlsx")[0] == 0
    sheet = load_workbook(tmp_path / "one.validation.xlsx")["Results"]
    header = [c.value for c in sheet[1]]
    assert [sheet.cell(2, header.index(name) + 1).value for name in ("status", "error", "warnings")] == \
        ["valid", None, None]
