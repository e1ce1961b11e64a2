"""Reading and writing the cells of real sheets: what the tool writes, it reads back as the value the
user gave; merged, hidden and keep-as-text cells read as a person sees them; every character and
date written so Excel opens it."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openpyxl import Workbook, load_workbook
from openpyxl.styles.numbers import is_date_format

from helpers import HEADERS, MPIDS, local, read_csv, read_xlsx, run, state_counts, write_csv
from onboard import sheet as sheets
from onboard.sheet import protect, unprotect

# the CSV text convention: protect (writer) and unprotect (reader) are inverse


@given(st.text())
def test_every_text_the_csv_writer_protects_reads_back_as_itself(text):
    assert unprotect(protect(text)) == text


@given(st.text(alphabet="'=+-@\t\r 0123456789.,eAb\"", max_size=12))
def test_texts_made_of_the_tricky_characters_read_back_as_themselves(text):
    assert unprotect(protect(text)) == text


@given(st.text())
def test_the_writers_first_character_shortcut_agrees_with_the_whole_formula_check(text):
    from onboard.sheet._csv import _looks_like_formula

    assert protect(text) == ("'" + text if _looks_like_formula(text) else text)


@pytest.mark.parametrize("text, written", [
    ("-ACME", "'-ACME"), ("@home", "'@home"), ("=1+1", "'=1+1"), ("+47 912 34 567", "+47 912 34 567"),
    ("-12.5", "-12.5"), ("'-ACME", "''-ACME"), ("''=x", "'''=x"), ("'plain", "'plain"), ("-", "'-"),
    ('="007"', '\'="007"'), ("\tx", "'\tx"), ("ACME", "ACME"), ("", ""),
])
def test_what_the_csv_writer_writes(text, written):
    assert protect(text) == written and unprotect(written) == text


@pytest.mark.parametrize("field, text", [
    ('="707057500000010017"', "707057500000010017"), ('="a""b"', 'a"b'), ('=""', ""),
    ('="a"b"', '="a"b"'), ("'-ACME", "-ACME"), ("'plain", "'plain"), ("'-12", "'-12"),
])
def test_what_the_csv_reader_reads(field, text):
    assert unprotect(field) == text


def test_excel_keep_as_text_cells_in_csv_are_the_text(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(f'customer_id;meter_point_ids;note\n="000123";="{MPIDS[0]}";"=""a""""b"""\n', encoding="utf-8")
    sheet = sheets.read(path)
    assert list(sheet.rows)[0].cells == ["000123", MPIDS[0], 'a"b']


# 9.1: keys starting with - + = @ come back from the errors file as they went out


KEYS = [["-ACME", "-s1", "", MPIDS[0], "", "", "-d1", "Charger"],
        ["@home", "@s", "", MPIDS[1], "", "", "@d", "Charger"],
        ["+47 912 34 567", "+s", "", MPIDS[2], "", "", "+d", "Charger"],
        ["-ACME", "-s2", "", "70705750001234", "", "", "-d2", "Charger"]]


def _fix_errors_csv(path: Path) -> None:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    at = rows[0].index("meter_point_ids")
    assert len(rows) == 2 and rows[1][0] == "'-ACME"
    rows[1][at] = MPIDS[3]
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)


def _fix_errors_xlsx(path: Path) -> None:
    workbook = load_workbook(path)
    sheet = workbook.worksheets[0]
    header = [c.value for c in sheet[1]]
    assert sheet.max_row == 2 and sheet.cell(2, 1).value == "-ACME" and sheet.cell(2, 1).data_type == "s"
    sheet.cell(2, header.index("meter_point_ids") + 1).value = MPIDS[3]
    workbook.save(path)


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_keys_starting_with_formula_characters_survive_the_errors_loop(capsys, tmp_path, suffix):
    path = tmp_path / f"in{suffix}"
    if suffix == ".csv":
        write_csv(path, KEYS)
    else:
        workbook = Workbook()
        workbook.active.append(HEADERS)
        for row in KEYS:
            workbook.active.append(row)
        workbook.save(path)
    state = tmp_path / "e.sqlite"
    code, _, err = run(capsys, "run", path, *local(state))
    assert code == 1 and "row 5 (invalid)" in err
    assert state_counts(state) == {"users": 3, "locations": 3, "resources": 3}
    errors = tmp_path / f"in.errors{suffix}"
    (_fix_errors_csv if suffix == ".csv" else _fix_errors_xlsx)(errors)
    code, _, err = run(capsys, "run", errors, *local(state))
    assert code == 0, err
    assert state_counts(state) == {"users": 3, "locations": 4, "resources": 4}
    again = sheets.read(tmp_path / f"in.results{suffix}")
    assert [r.cells[0] for r in again.rows] == [k[0] for k in KEYS]
    assert [r.cells[6] for r in again.rows] == [k[6] for k in KEYS]
    read_back = read_csv if suffix == ".csv" else read_xlsx
    first, fixed = read_back(tmp_path / f"in.results{suffix}"), read_back(tmp_path / f"in.errors.results{suffix}")
    assert fixed[0]["status"] == "created" and fixed[0]["user_id"] == first[0]["user_id"]


# 9.2: characters xlsx cannot hold


def _control_workbook(path: Path) -> Path:
    """Cells holding BEL and ESC, as Excel stores them (`_x0007_`): openpyxl writes text as it is."""
    workbook = Workbook()
    workbook.active.append(["customer_id", "meter_point_ids", "resource_type", "note_x001B_"])
    workbook.active.append(["1", MPIDS[0], "Charger", "ring_x0007_bell"])
    workbook.active.append(["2", MPIDS[1], "Jet_x0007_pack", "escape_x001B_[0m"])
    workbook.active.append(["3", MPIDS[2], "Charger", "literal _x005F_x0041_ stays"])
    workbook.save(path)
    return path


def test_control_characters_never_lose_an_output(capsys, tmp_path):
    path = _control_workbook(tmp_path / "in.xlsx")
    sheet = sheets.read(path)
    assert sheet.columns[3].header == "note\x1b" and list(sheet.rows)[0].cells[3] == "ring\x07bell"
    code, _, err = run(capsys, "run", path, *local(tmp_path / "e.sqlite"))
    assert code == 1 and "Traceback" not in err
    results = sheets.read(tmp_path / "in.results.xlsx")
    assert [c.header for c in results.columns][:4] == ["customer_id", "meter_point_ids", "resource_type", "note\x1b"]
    assert [r.cells[3] for r in results.rows] == ["ring\x07bell", "escape\x1b[0m", "literal _x0041_ stays"]
    errors = sheets.read(tmp_path / "in.errors.xlsx")
    assert [r.cells[2] for r in errors.rows] == ["Jet\x07pack"]
    error = list(errors.rows)[0].cells[[c.header for c in errors.columns].index("error")]
    assert "'Jet\\x07pack'" in error
    marked = load_workbook(tmp_path / "in.errors.xlsx").worksheets[0]["C2"]
    assert marked.value == "Jet_x0007_pack" and marked.comment is not None  # as Excel stores BEL
    assert (tmp_path / "in.summary.json").exists()


# 8.9, 8.10: merged and hidden cells


def test_a_vertically_merged_customer_is_the_customer_of_every_row(tmp_path):
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Customer export"])
    sheet.merge_cells("A1:C1")
    sheet.append(["customer_id", "meter_point_ids", "resource_ref"])
    sheet.append(["ACME", MPIDS[0], "d1"])
    sheet.append([None, MPIDS[0], "d2"])
    sheet.append([None, MPIDS[0], "d3"])
    sheet.append(["BETA", MPIDS[1], "d4"])
    sheet.merge_cells("A3:A5")
    sheet.merge_cells("C6:C8")  # runs past the last row with data: those rows stay blank
    workbook.save(tmp_path / "merged.xlsx")
    read = sheets.read(tmp_path / "merged.xlsx")
    assert [(r.number, r.cells) for r in read.rows] == [
        (3, ["ACME", MPIDS[0], "d1"]), (4, ["ACME", MPIDS[0], "d2"]), (5, ["ACME", MPIDS[0], "d3"]),
        (6, ["BETA", MPIDS[1], "d4"])]


def test_hidden_rows_and_columns_are_known(tmp_path):
    workbook = Workbook()
    sheet = workbook.active
    sheet["B2"], sheet["C2"], sheet["D2"], sheet["E2"] = "customer_id", "meter_point_ids", "internal", "note"
    for n, customer in enumerate(["1", "2", "3", "4"], start=3):
        sheet[f"B{n}"], sheet[f"C{n}"], sheet[f"D{n}"], sheet[f"E{n}"] = customer, MPIDS[0], "x", "y"
    sheet.row_dimensions[4].hidden = True
    sheet.row_dimensions[6].hidden = True
    sheet.column_dimensions["D"].hidden = True
    sheet.auto_filter.ref = "B2:E6"
    workbook.save(tmp_path / "filtered.xlsx")
    read = sheets.read(tmp_path / "filtered.xlsx")
    assert [(r.number, r.hidden) for r in read.rows] == [(3, False), (4, True), (5, False), (6, True)]
    assert read.hidden_columns == {2}  # internal: D, the third column from B
    assert not any(r.hidden for r in sheets.read(write_csv(tmp_path / "x.csv", [["1"]], ["customer_id"])).rows)


# 8.16: xlsx outputs keep hidden columns hidden and dates as dates


def test_outputs_keep_hidden_columns_hidden_and_dates_as_dates(capsys, tmp_path):
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["customer_id", "meter_point_ids", "internal", "since", "read at"])
    sheet.append(["1", MPIDS[0], "secret", dt.date(2024, 5, 17), dt.datetime(2024, 5, 17, 13, 5)])
    sheet.append(["2", "123", "secret", dt.date(2023, 1, 2), dt.datetime(2023, 1, 2, 8, 30)])
    sheet.column_dimensions["C"].hidden = True
    workbook.save(tmp_path / "in.xlsx")
    run(capsys, "run", tmp_path / "in.xlsx", *local(tmp_path / "e.sqlite"))
    for name, rows in (("results", 2), ("errors", 1)):
        out = load_workbook(tmp_path / f"in.{name}.xlsx").worksheets[0]
        assert out.column_dimensions["C"].hidden and not out.column_dimensions["B"].hidden
        assert out.max_row == rows + 1
        since, read_at = out["D2"], out["E2"]
        assert since.is_date and is_date_format(since.number_format) and "h" not in since.number_format
        assert read_at.is_date and "h" in read_at.number_format
    out = load_workbook(tmp_path / "in.results.xlsx").worksheets[0]
    assert out["D2"].value.date() == dt.date(2024, 5, 17) and out["E2"].value == dt.datetime(2024, 5, 17, 13, 5)
