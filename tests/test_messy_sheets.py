"""Real sheets as billing systems and Nordic Excel make them: taken as they are, refused only where
truly broken, and written back so a person can act on them (fixtures in tests/fixtures/)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from openpyxl import load_workbook

from helpers import MPIDS, local, read_xlsx, run, write_csv
from onboard import sheet as sheets
from onboard.records import check

FIXTURES = Path(__file__).resolve().parent / "fixtures"
A, B, C, D = MPIDS[0], MPIDS[1], "707057500012345695", "707057500012345701"


def results_csv(path: Path, delimiter=",", encoding="utf-8") -> list[dict[str, str]]:
    with path.open(newline="", encoding=encoding) as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


# reading CSV


def test_semicolon_cp1252_decimal_comma_and_stray_spaces(capsys, tmp_path):
    code, _, err = run(capsys, "run", FIXTURES / "nordic-semicolon-cp1252.csv", "--out", tmp_path,
                       *local(tmp_path / "e.sqlite"))
    assert code == 1
    rows = results_csv(tmp_path / "nordic-semicolon-cp1252.results.csv", ";", "cp1252")
    assert [r["name"] for r in rows] == ["Bjørn Ærø", "Åse Søvik", "Øystein; the second", "Ola"]
    assert [r["status"] for r in rows] == ["created", "created", "created", "invalid"]
    assert [r["row"] for r in rows] == ["2", "3", "4", "5"]
    assert "70705750001234 has 14 digits" in rows[3]["error"]
    sheet = sheets.read(FIXTURES / "nordic-semicolon-cp1252.csv")
    assert sheet.csv_style == sheets.CsvStyle("cp1252", ";")
    first, second, third, _ = check(sheet)
    assert first.row.meter_point_ids == (A,) and (first.row.latitude, first.row.longitude) == (59.9139, 10.7522)
    assert second.row.meter_point_ids == (B,)
    assert third.row.meter_point_ids == (C, D) and third.row.resource_type == "Charger"


def test_outputs_keep_the_inputs_delimiter_and_encoding(capsys, tmp_path):
    run(capsys, "validate", FIXTURES / "nordic-semicolon-cp1252.csv", "--out", tmp_path)
    raw = (tmp_path / "nordic-semicolon-cp1252.validation.csv").read_bytes()
    text = raw.decode("cp1252")
    assert text.splitlines()[0].startswith("customer_id;name;location_ref;")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    run(capsys, "validate", FIXTURES / "excel-unicode-text.txt", "--out", tmp_path)
    unicode_text = (tmp_path / "excel-unicode-text.validation.txt").read_bytes()
    assert unicode_text.startswith(b"\xff\xfe") and "José" in unicode_text.decode("utf-16")
    assert unicode_text.decode("utf-16").splitlines()[0].startswith("customer_id\tlocation_ref\t")


def test_bom_utf8_with_crlf_and_blank_lines(capsys, tmp_path):
    sheet = sheets.read(FIXTURES / "bom-utf8.csv")
    assert sheet.columns[0].header == "customer_id" and sheet.csv_style.encoding == "utf-8-sig"
    assert [r.number for r in sheet.rows] == [2, 4]
    code, _, _ = run(capsys, "validate", FIXTURES / "bom-utf8.csv", "--out", tmp_path)
    assert code == 0
    assert (tmp_path / "bom-utf8.validation.csv").read_bytes().startswith(b"\xef\xbb\xbf")


def test_tab_separated_utf16(capsys, tmp_path):
    sheet = sheets.read(FIXTURES / "excel-unicode-text.txt")
    assert sheet.csv_style == sheets.CsvStyle("utf-16", "\t") and list(sheet.rows)[0].cells[3] == "José"


def test_quoted_fields_hold_delimiters_and_line_breaks(capsys, tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(f'customer_id;meter_point_ids;notes\n1;"{A}\n{B}";"a; b"\n2;{C};x\n', encoding="utf-8")
    sheet = sheets.read(path)
    assert [r.number for r in sheet.rows] == [2, 4] and list(sheet.rows)[0].cells[2] == "a; b"
    assert check(sheet)[0].row.meter_point_ids == (A, B)


# reading xlsx


def test_title_rows_above_the_header_and_excel_row_numbers(capsys, tmp_path):
    sheet = sheets.read(FIXTURES / "title-rows.xlsx")
    assert sheet.header_row == 4 and [r.number for r in sheet.rows] == [5, 7]
    assert [c.field for c in sheet.columns] == ["customer_id", "location_ref", "meter_point_ids",
                                                "resource_type", "resource_ref"]
    code, _, _ = run(capsys, "validate", FIXTURES / "title-rows.xlsx", "--out", tmp_path)
    assert code == 0
    assert [r["row"] for r in read_xlsx(tmp_path / "title-rows.validation.xlsx")] == [5, 7]


def test_numbers_typed_in_excel(capsys, tmp_path):
    sheet = sheets.read(FIXTURES / "numbers-as-ids.xlsx")
    checked = check(sheet)
    first = checked[0].row
    assert (first.customer_id, first.location_ref, first.resource_ref) == ("4711", "1", "123456")
    for damaged in checked[1:4]:
        assert not damaged.valid
        assert damaged.problems[0].field == "meter_point_ids"
        assert ("stored as a number, Excel dropped digits: format the column as Text and type the id again"
                in damaged.problems[0].message)
    assert checked[4].problems[0].field == "customer_id" and "Excel dropped digits" in checked[4].problems[0].message


def test_a_damaged_id_is_never_guessed(capsys, tmp_path):
    run(capsys, "run", FIXTURES / "numbers-as-ids.xlsx", "--out", tmp_path, *local(tmp_path / "e.sqlite"))
    rows = read_xlsx(tmp_path / "numbers-as-ids.results.xlsx")
    assert [r["status"] for r in rows] == ["created", "invalid", "invalid", "invalid", "invalid"]
    assert rows[1]["meter_point_ids"] == 7.070575000123457e17, "what Excel kept, as the number it is, never sent"


# headers


@pytest.mark.parametrize("header, field", [
    ("Meter Point ID", "meter_point_ids"), ("MeterPointIds", "meter_point_ids"), ("meter_point_ids", "meter_point_ids"),
    ("METER-POINT-ID", "meter_point_ids"), ("mpid", "meter_point_ids"), ("GSRN", "meter_point_ids"),
    ("Metering point id", "meter_point_ids"), ("Customer Number", "customer_id"), ("customer no.", "customer_id"),
    ("Lat", "latitude"), ("lng", "longitude"), ("Lon", "longitude"), ("long", "longitude"),
    ("Resource Type", "resource_type"), ("location ref", "location_ref"), ("User ID", None),
    ("Spark user ID", "user_id"), ("user_id", "user_id"), ("spark_locationId", "location_id"),
    ("Målepunkt-ID", "meter_point_ids"), ("Kundenr", "customer_id"), ("Breddegrad", "latitude"),
    ("Serial number", "resource_ref"), ("VIN", "resource_ref"),
])
def test_header_names_and_aliases(header, field):
    assert sheets.known_field(header) == field


@pytest.mark.parametrize("how", [["--map", "Kundenummer=customer_id", "--map", "Anlegg=location_ref",
                                  "--map", "Målepunkt-ID=meter_point_ids", "--map", "Breddegrad=latitude",
                                  "--map", "Lengdegrad=longitude", "--map", "Enhetstype=resource_type",
                                  "--map", "Serienummer=resource_ref"],
                                 ["--mapping", str(FIXTURES / "norwegian.toml")],
                                 ["--mapping", str(FIXTURES / "norwegian.yaml")]])
def test_norwegian_headers_with_a_mapping(capsys, tmp_path, how):
    code, _, err = run(capsys, "run", FIXTURES / "norwegian-headers.xlsx", "--out", tmp_path, *how,
                       *local(tmp_path / "e.sqlite"))
    assert code == 0, err
    rows = read_xlsx(tmp_path / "norwegian-headers.results.xlsx")
    assert [r["status"] for r in rows] == ["created"] * 3
    assert list(rows[0])[:9] == ["Kundenummer", "Navn", "Anlegg", "Målepunkt-ID", "Breddegrad", "Lengdegrad",
                                 "Enhetstype", "Serienummer", "Merknad"]
    assert rows[2]["Merknad"] == "varmepumpe"


def test_unmapped_headers_exit_2_listing_what_was_found(capsys, tmp_path):
    path = write_csv(tmp_path / "in.csv", [["1", A, "x"]], ["Klantnummer", "Meetpunt", "Naam"])
    code, _, err = run(capsys, "validate", path)
    assert code == 2
    assert "'Klantnummer', 'Meetpunt', 'Naam'" in err and "Expected columns: customer_id" in err


def test_nordic_headers_are_known_without_a_mapping(capsys, tmp_path):
    code, out, err = run(capsys, "run", FIXTURES / "norwegian-headers.xlsx", "--out", tmp_path,
                         *local(tmp_path / "e.sqlite"))
    assert code == 0, err
    assert "Kundenummer" in out and "-> customer_id" in out and "Navn" in out and "carried" in out


def test_a_near_miss_header_stops_until_mapped_or_ignored(capsys, tmp_path):
    path = write_csv(tmp_path / "in.csv", [["1", A]], ["customer_id", "Meterpont IDs"])
    code, _, err = run(capsys, "validate", path)
    assert code == 2
    assert "column 'Meterpont IDs' looks like meter_point_ids but is not used" in err
    assert '--map "Meterpont IDs=meter_point_ids"' in err and '--map "Meterpont IDs="' in err


def test_two_columns_for_one_field_exit_2_naming_both(capsys, tmp_path):
    path = write_csv(tmp_path / "in.csv", [["1", A, B]], ["customer_id", "MPID", "GSRN"])
    code, _, err = run(capsys, "validate", path)
    assert code == 2 and "'MPID' and 'GSRN' both hold meter_point_ids" in err


def test_a_mapping_to_an_unknown_field_is_a_clear_error(capsys, tmp_path):
    path = write_csv(tmp_path / "in.csv", [["1", A]], ["Kunde", "meter_point_ids"])
    code, _, err = run(capsys, "validate", path, "--map", "Kunde=customer")
    assert code == 2 and "there is no such field" in err and "customer_id" in err
    (tmp_path / "bad.toml").write_text("= nope")
    code, _, err = run(capsys, "validate", path, "--mapping", tmp_path / "bad.toml")
    assert code == 2 and "not valid TOML" in err and "Traceback" not in err


# values


def test_every_enum_spelling(capsys, tmp_path):
    sheet = sheets.read(FIXTURES / "enum-spellings.csv")
    expected = sheet.column("customer_id").index + 6
    for sheet_row, checked in zip(sheet.rows, check(sheet), strict=True):
        assert checked.valid, checked.problems
        assert sheet_row.cells[expected] in (checked.row.resource_type, checked.row.location_type)


# writing for people


def test_errors_workbook_marks_the_cells_to_fix(capsys, tmp_path):
    run(capsys, "run", FIXTURES / "numbers-as-ids.xlsx", "--out", tmp_path, *local(tmp_path / "e.sqlite"))
    workbook = load_workbook(tmp_path / "numbers-as-ids.errors.xlsx")
    sheet = workbook["Errors"]
    assert sheet.freeze_panes == "A2" and sheet.auto_filter.ref.startswith("A1:")
    header = [c.value for c in sheet[1]]
    mpid = sheet.cell(2, header.index("meter_point_ids") + 1)
    assert mpid.fill.fgColor.rgb.endswith("FFC7CE") and "Excel dropped digits" in mpid.comment.text
    assert mpid.number_format == "@" and isinstance(mpid.value, float), "the damaged number, so it is refused again"
    for name in ("user_id", "location_id", "resource_id"):
        assert sheet.cell(2, header.index(name) + 1).number_format == "@"
    assert sheet.column_dimensions["A"].width >= len("customer_id")
    summary = [r for r in workbook["Summary"].iter_rows(values_only=True) if r and r[0]]
    heading = ("most frequent reasons (an example of each)", "rows")
    reasons = summary[summary.index(heading) + 1:]
    assert reasons[0][1] == 3 and "Excel dropped digits" in reasons[0][0] and "…" not in reasons[0][0]


def test_carried_columns_keep_their_numbers_and_dates(capsys, tmp_path):
    import datetime as dt

    from openpyxl import Workbook

    workbook = Workbook()
    workbook.active.append(["customer_id", "meter_point_ids", "kWh", "since"])
    workbook.active.append(["1", A, 1234.5, dt.date(2024, 5, 17)])
    workbook.save(tmp_path / "in.xlsx")
    run(capsys, "validate", tmp_path / "in.xlsx")
    row = read_xlsx(tmp_path / "in.validation.xlsx")[0]
    assert row["kWh"] == 1234.5 and row["since"].date() == dt.date(2024, 5, 17)


def test_formulas_are_neutralised_in_every_output(capsys, tmp_path):
    run(capsys, "validate", FIXTURES / "formula-injection.csv", "--out", tmp_path)
    rows = results_csv(tmp_path / "formula-injection.validation.csv")
    assert rows[0]["notes"] == "'=HYPERLINK(\"http://evil.example\",\"click\")"
    assert rows[0]["phone"] == "+47 22 33 44 55"
    assert rows[1]["notes"] == "'@SUM(A1:A9)" and rows[1]["phone"] == "-12.5"
    assert rows[2]["notes"] == "'+1+2" and rows[2]["phone"] == "'-"
    assert rows[3]["customer_id"] == "'=6004" and rows[3]["notes"] == "'-cmd|' /C calc'!A0"
    errors = [r for r in rows if r["status"] == "invalid"]
    assert errors == [] or all(not v.startswith(("=", "@", "+")) for r in errors for v in r.values())
    xlsx = write_csv(tmp_path / "x.csv", [["1", A, "=1+1"]], ["customer_id", "meter_point_ids", "notes"])
    run(capsys, "validate", xlsx)
    assert results_csv(tmp_path / "x.validation.csv")[0]["notes"] == "'=1+1"
    from openpyxl import Workbook

    book = Workbook()
    book.active.append(["customer_id", "meter_point_ids", "notes"])
    book.active.append(["1", A, "@cmd"])
    book.save(tmp_path / "f.xlsx")
    run(capsys, "validate", tmp_path / "f.xlsx")
    cell = load_workbook(tmp_path / "f.validation.xlsx").worksheets[0]["C2"]
    assert cell.value == "@cmd" and cell.data_type == "s"  # a text cell is never a formula: no prefix


@pytest.mark.parametrize("name", ["title-rows.ods", "title-rows.xls"])
def test_other_workbook_formats_read_alike_and_answer_in_xlsx(capsys, tmp_path, name):
    """Converted from title-rows.xlsx by LibreOffice (soffice --convert-to ods|xls)."""
    sheet = sheets.read(FIXTURES / name)
    assert sheet.header_row == 4 and [r.number for r in sheet.rows] == [5, 7]
    assert [r.cells[:3] for r in sheet.rows] == [r.cells[:3] for r in sheets.read(FIXTURES / "title-rows.xlsx").rows]
    assert run(capsys, "validate", FIXTURES / name, "--out", tmp_path)[0] == 0
    assert [r["status"] for r in read_xlsx(tmp_path / f"{Path(name).stem}.validation.xlsx")] == ["valid", "valid"]
