"""What the user gets back: result, errors and summary files, row numbers, templates, exit codes."""

from __future__ import annotations

import json

import pytest
from openpyxl import load_workbook

from helpers import HEADERS, MPIDS, REPO, SAMPLES, local, read_csv, read_xlsx, run, write_csv


def test_validate_marks_rows_valid_or_invalid_and_exits_by_them(capsys, tmp_path):
    good = write_csv(tmp_path / "good.csv", [["1", "home", "", MPIDS[0], "", "", "", ""]])
    assert run(capsys, "validate", good)[0] == 0
    assert [r["status"] for r in read_csv(tmp_path / "good.validation.csv")] == ["valid"]
    bad = write_csv(tmp_path / "bad.csv", [["1", "home", "", MPIDS[0], "", "", "", ""],
                                           ["2", "home", "", "12", "", "", "", ""]])
    code, out, err = run(capsys, "validate", bad)
    assert code == 1 and "1 valid, 0 failed, 1 invalid" in out
    assert [r["row"] for r in read_csv(tmp_path / "bad.validation.csv") if r["status"] == "invalid"] == ["3"]
    assert not (tmp_path / "bad.results.csv").exists() and not (tmp_path / "bad.errors.csv").exists()
    assert run(capsys, "validate", good, "--env", "local", "--state", tmp_path / "unused.sqlite")[0] == 0
    assert not (tmp_path / "unused.sqlite").exists()


def test_results_keep_every_row_in_order_with_the_inputs_own_columns(capsys, tmp_path):
    headers = ["Notes", *HEADERS, "Customer name"]
    path = write_csv(tmp_path / "in.csv", [
        ["first", "1", "home", "", MPIDS[0], "", "", "SN1", "Charger", "Kari"],
        ["second", "2", "home", "", "bad", "", "", "", "", "Ola"],
    ], headers)
    run(capsys, "run", path, *local(tmp_path / "e.sqlite"))
    with (tmp_path / "in.results.csv").open() as handle:
        header = handle.readline().strip().split(",")
    assert header == headers + ["row", "status", "user_id", "location_id", "resource_id", "error", "warnings"]
    results = read_csv(tmp_path / "in.results.csv")
    assert [(r["Notes"], r["Customer name"], r["status"]) for r in results] == \
        [("first", "Kari", "created"), ("second", "Ola", "invalid")]
    assert all(results[0][c] for c in ("user_id", "location_id", "resource_id"))
    errors = read_csv(tmp_path / "in.errors.csv")
    assert [r["Notes"] for r in errors] == ["second"] and "must hold only the digits" in errors[0]["error"]


def test_a_results_file_run_again_replaces_the_tools_columns_and_keeps_the_ids(capsys, tmp_path):
    path = write_csv(tmp_path / "in.csv", [["1", "home", "", MPIDS[0], "", "", "SN1", "Charger"]])
    state = tmp_path / "e.sqlite"
    run(capsys, "run", path, *local(state))
    first = read_csv(tmp_path / "in.results.csv")
    code, _, _ = run(capsys, "run", tmp_path / "in.results.csv", *local(state))
    assert code == 0
    with (tmp_path / "in.results.results.csv").open() as handle:
        header = handle.readline().strip().split(",")
    assert header.count("status") == 1 and header.count("user_id") == 1 and header.count("row") == 1
    again = read_csv(tmp_path / "in.results.results.csv")
    assert again[0]["status"] == "exists" and again[0]["resource_id"] == first[0]["resource_id"]


def test_explicit_ids_in_a_returned_file_are_used(capsys, tmp_path):
    path = write_csv(tmp_path / "in.csv", [["1", "home", MPIDS[0], "chosen-user"]],
                     ["customer_id", "location_ref", "meter_point_ids", "user_id"])
    run(capsys, "run", path, *local(tmp_path / "e.sqlite"))
    assert read_csv(tmp_path / "in.results.csv")[0]["user_id"] == "chosen-user"


def test_xlsx_input_gives_xlsx_outputs_with_a_summary_sheet(capsys, tmp_path):
    run(capsys, "run", SAMPLES / "customers-with-errors.xlsx", "--out", tmp_path, *local(tmp_path / "e.sqlite"))
    results = load_workbook(tmp_path / "customers-with-errors.results.xlsx")
    assert results.sheetnames == ["Results", "Summary"]
    summary = {row[0]: row[1] for row in results["Summary"].iter_rows(values_only=True) if row and row[0]}
    assert summary["status created"] == 22 and summary["status invalid"] == 7
    assert load_workbook(tmp_path / "customers-with-errors.errors.xlsx").sheetnames == ["Errors", "Summary"]


def test_summary_json_counts_statuses_entities_and_requests(capsys, tmp_path):
    run(capsys, "run", SAMPLES / "customers-with-errors.xlsx", "--out", tmp_path, *local(tmp_path / "e.sqlite"))
    summary = json.loads((tmp_path / "customers-with-errors.summary.json").read_text())
    assert summary["rows"] == 29 and summary["status"] == {"created": 22, "failed": 0, "invalid": 7}
    assert set(summary["entities"]) == {"users", "locations", "resources"}
    assert summary["entities"]["users"] == {"created": 10, "exists": 0, "failed": 0}
    assert summary["requests"] >= 3 and summary["seconds"] >= 0 and summary["environment"] == "local"


def test_outputs_go_to_out_and_leave_no_temporary_files(capsys, tmp_path):
    out = tmp_path / "outputs"
    run(capsys, "run", SAMPLES / "customers.csv", "--out", out, *local(tmp_path / "e.sqlite"))
    assert sorted(p.name for p in out.iterdir()) == ["customers.journal.sqlite",
                                                     "customers.results.csv", "customers.summary.json"]


def test_csv_row_numbers_are_lines_with_blank_lines_counted(capsys, tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(
        "customer_id,meter_point_ids,notes\n"
        f"1,{MPIDS[0]},ok\n"
        "\n"
        ",,\n"
        f'2,{MPIDS[1]},"two\nlines"\n'
        "3,bad,x\n"
    )
    run(capsys, "validate", path)
    results = read_csv(tmp_path / "in.validation.csv")
    assert [(r["row"], r["status"]) for r in results] == [("2", "valid"), ("5", "valid"), ("7", "invalid")]


def test_xlsx_row_numbers_are_excels_and_sheet_can_be_chosen(capsys, tmp_path):
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.active.title = "Cover"
    workbook.active.append(["nothing here"])
    data = workbook.create_sheet("Customers")
    data.append(["Customer export"])
    data.append([])
    data.append(["customer_id", "meter_point_ids"])
    data.append(["1", MPIDS[0]])
    data.append([])
    data.append(["2", "12"])
    workbook.save(tmp_path / "book.xlsx")
    code, _, err = run(capsys, "validate", tmp_path / "book.xlsx", "--sheet", "Customers")
    assert code == 1
    assert [(r["row"], r["status"]) for r in read_xlsx(tmp_path / "book.validation.xlsx")] == [(4, "valid"),
                                                                                           (6, "invalid")]
    assert "row 6 (invalid)" in err
    code, _, err = run(capsys, "validate", tmp_path / "book.xlsx", "--sheet", "Nope")
    assert code == 2 and "'Nope'" in err and "Customers" in err


@pytest.mark.parametrize("name, content, words", [
    ("missing.csv", None, "does not exist"),
    ("notes.pdf", b"%PDF", "reads Excel workbooks (.xlsx, .xls, .ods) and .csv files"),
    ("broken.xlsx", b"not a zip", "not a workbook"),
    ("empty.csv", b"", "is empty"),
    ("headers.csv", b"name,address\nKari,Oslo\n", "no customer_id column"),
    ("twice.csv", b"customer_id,customer number\n1,2\n", "both hold customer_id"),
])
def test_unreadable_input_is_exit_2_with_a_message(capsys, tmp_path, name, content, words):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    code, _, err = run(capsys, "validate", tmp_path / name)
    assert code == 2 and words in err and "Traceback" not in err


def test_missing_columns_message_lists_headers_found_and_expected(capsys, tmp_path):
    (tmp_path / "in.csv").write_text("Name,Address\nKari,Oslo\n")
    _, _, err = run(capsys, "validate", tmp_path / "in.csv")
    assert "'Name', 'Address'" in err and "customer_id, location_ref, location_type" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as stopped:
        run(capsys, "run")
    assert stopped.value.code == 2
    with pytest.raises(SystemExit) as stopped:
        run(capsys, "run", "x.csv", "--batch-size", "0")
    assert stopped.value.code == 2


def test_templates_hold_every_column_an_example_and_instructions(capsys, tmp_path):
    assert run(capsys, "template", tmp_path / "t.xlsx")[0] == 0
    workbook = load_workbook(tmp_path / "t.xlsx")
    assert workbook.sheetnames == ["Customers", "Instructions"]
    sheet = workbook["Customers"]
    header = [c.value for c in sheet[1]]
    assert header[:3] == ["customer_id", "user_id", "location_ref"] and len(header) == 12
    assert sheet["A2"].value == "4711" and sheet["A2"].number_format == "@"
    lists = {str(v.sqref): v.formula1 for v in sheet.data_validations.dataValidation}
    assert any("HotWaterTank" in f for f in lists.values()) and any("Residential" in f for f in lists.values())
    assert run(capsys, "template", tmp_path / "t.csv")[0] == 0
    assert (tmp_path / "t.csv").read_text().splitlines()[0].split(",") == header
    assert run(capsys, "validate", tmp_path / "t.xlsx")[0] == 0


def test_committed_templates_are_what_the_command_writes(capsys, tmp_path):
    run(capsys, "template", tmp_path / "t.csv")
    assert (REPO / "templates" / "customers-template.csv").read_text() == (tmp_path / "t.csv").read_text()
    run(capsys, "template", tmp_path / "t.xlsx")
    ours = load_workbook(REPO / "templates" / "customers-template.xlsx")
    fresh = load_workbook(tmp_path / "t.xlsx")
    for name in fresh.sheetnames:
        assert list(ours[name].values) == list(fresh[name].values)


def test_progress_bars_go_to_stderr(capsys, tmp_path):
    path = write_csv(tmp_path / "in.csv", [["1", "home", "", MPIDS[0], "", "", "SN1", "Charger"]])
    code, out, err = run(capsys, "run", path, "--env", "local", "--state", tmp_path / "e.sqlite", "--progress")
    assert code == 0
    assert "users: 100%" in err and "locations: 100%" in err and "resources: 100%" in err
    assert "100%" not in out


def test_unwritable_places_and_bad_urls_are_messages_not_tracebacks(capsys, tmp_path):
    good = write_csv(tmp_path / "in.csv", [["1", "home", "", MPIDS[0], "", "", "", ""]])
    (tmp_path / "a-file").write_text("")
    code, _, err = run(capsys, "validate", good, "--out", tmp_path / "a-file" / "sub")
    assert code == 2 and "cannot create the output folder" in err
    (tmp_path / "in.validation.csv").mkdir()  # an output path that cannot be replaced
    code, _, err = run(capsys, "validate", good)
    assert code == 2 and "cannot write" in err and "Traceback" not in err
    (tmp_path / "garbage.sqlite").write_text("this is not a database, it is a shopping list")
    code, _, err = run(capsys, "run", good, "--out", tmp_path / "o", "--env", "local", "--state",
                       tmp_path / "garbage.sqlite")
    assert code == 2 and "state file" in err and "Traceback" not in err
    code, _, err = run(capsys, "run", good, "--out", tmp_path / "o", "--env", "local", "--base-url", "emulator.local")
    assert code == 2 and "--base-url 'emulator.local' is not an http:// or https:// URL" in err
    (tmp_path / "o2").mkdir()
    (tmp_path / "o2" / "in.journal.sqlite").write_text("not a database")
    code, _, err = run(capsys, "run", good, "--out", tmp_path / "o2", *local(tmp_path / "e.sqlite"))
    assert code == 2 and "journal" in err and "move it away" in err
