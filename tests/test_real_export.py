"""A billing export as a Nordic retailer's system writes it, built here (never a committed copy):
title rows, Norwegian headers and values, CRM columns nobody meant to send, a status column.

Each test checks one way wrong data used to land quietly, or one output that did not tell the truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook

from helpers import MPIDS, local, read_csv, read_xlsx, run, state_counts, write_csv

HEADERS = ["Kundenummer", "Kunde", "Anlegg", "Anleggstype", "Målepunkt-ID", "Breddegrad", "Lengdegrad",
           "Enhetstype", "Serienummer", "User ID", "Status", "Telefon"]


def export_rows(count: int = 6) -> list[list[object]]:
    kinds = ["Varmtvannsbereder", "Elbillader", "Varmepumpe"]
    sites = ["Bolig", "Næring", "Hytte"]
    rows = []
    for i in range(count):
        rows.append([f"{70001 + i}", f"Kunde {i}", f"A{i}", sites[i % 3], MPIDS[i % len(MPIDS)],
                     "59,91" if i % 2 else "", "10,75" if i % 2 else "", kinds[i % 3], f"SN-{i:04d}", f"jdoe{i}",
                     "Aktiv" if i != 2 else "Avsluttet", f"+47 900 00 0{i:02d}"])
    return rows


def billing_export(path: Path, rows: list[list[object]] | None = None, headers: list[str] = HEADERS) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Kunder"
    sheet.append(["Kundeliste - eksport fra faktureringssystemet"])
    sheet.append(["Generert 2026-11-01 06:00"])
    sheet.append([])
    sheet.append(headers)
    for row in export_rows() if rows is None else rows:
        sheet.append(row)
    workbook.save(path)
    return path


# columns nobody meant, and columns that look like fields


def test_a_crm_user_id_is_carried_and_the_column_mapping_is_printed(capsys, tmp_path):
    source = billing_export(tmp_path / "export.xlsx")
    code, out, err = run(capsys, "run", source, *local(tmp_path / "e.sqlite"))
    assert code == 0, err
    assert "export.xlsx, sheet 'Kunder': header in row 4; columns:" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "-> customer_id" in lines["Kundenummer"] and "-> meter_point_ids" in lines["Målepunkt-ID"]
    assert "carried (not taken as the Spark user_id" in out and lines["Kunde"].rstrip().endswith("carried")
    results = read_xlsx(tmp_path / "export.results.xlsx")
    assert [r["User ID"] for r in results] == [f"jdoe{i}" for i in range(6)]
    assert not any(r["user_id"].startswith("jdoe") for r in results), "a CRM login is not a Spark userId"
    summary = load_workbook(tmp_path / "export.results.xlsx")["Summary"]
    uses = {r[0]: r[1] for r in summary.iter_rows(values_only=True) if r and r[0]}
    assert uses["Kundenummer"] == "customer_id" and uses["Telefon"] == "carried"
    assert json.loads((tmp_path / "export.summary.json").read_text())["columns"][0] == {
        "header": "Kundenummer", "use": "customer_id"}


@pytest.mark.parametrize("header", ["Spark user ID", "user_id", "spark_userId"])
def test_spark_ids_come_from_a_column_the_user_clearly_meant(capsys, tmp_path, header):
    path = write_csv(tmp_path / "in.csv", [["1", "chosen-1", MPIDS[0]]], ["customer_id", header, "meter_point_ids"])
    assert run(capsys, "run", path, *local(tmp_path / "e.sqlite"))[0] == 0
    assert read_csv(tmp_path / "in.results.csv")[0][header] == "chosen-1"
    assert state_counts(tmp_path / "e.sqlite")["users"] == 1


def test_a_column_that_cannot_be_told_apart_is_ignored_with_an_empty_mapping(capsys, tmp_path):
    rows = [["1", "Privat", "HVAC", MPIDS[0]], ["2", "Bedrift", "Charger", MPIDS[1]]]
    path = write_csv(tmp_path / "in.csv", rows, ["customer_id", "Type", "Device Type", "meter_point_ids"])
    code, _, err = run(capsys, "validate", path)
    assert code == 2 and "'Type' and 'Device Type' both hold resource_type" in err
    assert '--map "Type="' in err and "Traceback" not in err
    code, out, err = run(capsys, "validate", path, "--map", "Type=")
    assert code == 0, err
    assert "ignored (mapping)" in out
    (tmp_path / "ignore.toml").write_text('ignore = ["Type"]\n', encoding="utf-8")
    assert run(capsys, "validate", path, "--mapping", tmp_path / "ignore.toml")[0] == 0
    (tmp_path / "ignore.yaml").write_text("ignore:\n  - Type\n", encoding="utf-8")
    assert run(capsys, "validate", path, "--mapping", tmp_path / "ignore.yaml")[0] == 0


def test_a_customer_name_beside_the_customer_number_is_told_apart(capsys, tmp_path):
    path = write_csv(tmp_path / "in.csv", [["Kari Nordmann", "4711", MPIDS[0]]],
                     ["Customer", "Customer number", "meter_point_ids"])
    code, _, err = run(capsys, "validate", path)
    assert code == 2 and "'Customer' and 'Customer number' both hold customer_id" in err
    code, _, err = run(capsys, "run", path, "--map", "Customer=", *local(tmp_path / "e.sqlite"))
    assert code == 0, err
    assert read_csv(tmp_path / "in.results.csv")[0]["Customer"] == "Kari Nordmann"


def test_a_near_miss_header_stops_run_and_validate_until_mapped_or_ignored(capsys, tmp_path):
    path = write_csv(tmp_path / "in.csv", [["1", MPIDS[0], "59.9", "10.7"]],
                     ["customer_id", "meter_point_ids", "Lattitude", "longitude"])
    for command in (["validate", path], ["run", path, *local(tmp_path / "e.sqlite")]):
        code, _, err = run(capsys, *command)
        assert code == 2 and "column 'Lattitude' looks like latitude but is not used" in err
    assert state_counts(tmp_path / "e.sqlite")["users"] == 0 if (tmp_path / "e.sqlite").exists() else True
    code, _, err = run(capsys, "run", path, "--map", "Lattitude=latitude", *local(tmp_path / "e.sqlite"))
    assert code == 0, err
    assert read_csv(tmp_path / "in.results.csv")[0]["status"] == "created"


def test_common_columns_next_to_fields_are_not_near_misses(capsys, tmp_path):
    headers = ["customer_id", "Customer name", "meter_point_ids", "Site name", "Status", "Type of contract",
               "Kundenavn", "Notes"]
    path = write_csv(tmp_path / "in.csv", [["1", "Kari", MPIDS[0], "Hjemme", "Active", "Fixed", "Kari", "-"]],
                     headers)
    code, _, err = run(capsys, "validate", path)
    assert code == 0, err


# values in the partner's words


def test_norwegian_values_are_known_and_a_mapping_files_values_table_is_used(capsys, tmp_path):
    source = billing_export(tmp_path / "export.xlsx")
    code, _, err = run(capsys, "run", source, *local(tmp_path / "e.sqlite"))
    assert code == 0, err
    results = read_xlsx(tmp_path / "export.results.xlsx")
    assert {r["status"] for r in results} == {"created"}
    rows = [["1", "site", MPIDS[0], "Bereder 200L", "Enebolig m/ hybel"],
            ["2", "site", MPIDS[1], "Bereder 200L", "Enebolig m/ hybel"]]
    path = write_csv(tmp_path / "own.csv", rows, ["Kundenr", "Anlegg", "Målepunkt-ID", "Utstyr", "Boligtype"])
    code, _, err = run(capsys, "validate", path, "--map", "Utstyr=resource_type")
    assert code == 1
    assert ("resource_type values not recognised: 'Bereder 200L' (2 rows)" in err
            and '--map-value "resource_type:Bereder 200L=VALUE"' in err)
    (tmp_path / "map.toml").write_text(
        '[columns]\n"Utstyr" = "resource_type"\n\n'
        '[values.resource_type]\n"Bereder 200L" = "HotWaterTank"\n"Solfanger" = "SolarInverter"\n\n'
        '[values.location_type]\n"Enebolig m/ hybel" = "Residential"\n', encoding="utf-8")
    code, out, err = run(capsys, "run", path, "--mapping", tmp_path / "map.toml", *local(tmp_path / "e.sqlite"))
    assert code == 0, err
    assert "the mapping's resource_type value 'Solfanger' appears in no row" in err
    held = state_counts(tmp_path / "e.sqlite")
    assert held["resources"] == 6 + 2


def test_map_value_on_the_command_line_and_a_wrong_target_value(capsys, tmp_path):
    path = write_csv(tmp_path / "in.csv", [["1", MPIDS[0], "Pumpe X"]], ["customer_id", "meter_point_ids", "Type"])
    code, _, err = run(capsys, "validate", path, "--map-value", "resource_type:Pumpe X=HVAC")
    assert code == 0, err
    code, _, err = run(capsys, "validate", path, "--map-value", "resource_type:Pumpe X=Heatpump")
    assert code == 2 and "'Heatpump' is not one of" in err and "Traceback" not in err
    code, _, err = run(capsys, "validate", path, "--map-value", "Pumpe X=HVAC")
    assert code == 2 and "field:their word=value" in err


def test_unknown_values_are_grouped_with_counts(capsys, tmp_path):
    rows = [[str(i), MPIDS[0 if i < 2 else 1], "Varmtvannsbereder 300" if i < 3 else "Gadget"] for i in range(5)]
    path = write_csv(tmp_path / "in.csv", rows, ["customer_id", "meter_point_ids", "Enhetstype"])
    code, _, err = run(capsys, "validate", path)
    assert code == 1
    assert "'Varmtvannsbereder 300' (3 rows), 'Gadget' (2 rows)" in err
    summary = json.loads((tmp_path / "in.validation.json").read_text())
    assert summary["unrecognised_values"] == {"resource_type": {"Varmtvannsbereder 300": 3, "Gadget": 2}}


def test_a_mapping_key_that_matches_no_header_is_reported(capsys, tmp_path):
    path = write_csv(tmp_path / "in.csv", [["1", MPIDS[0]]], ["customer_id", "meter_point_ids"])
    code, _, err = run(capsys, "validate", path, "--map", "Kundenumer=customer_id")
    assert code == 0 and "the mapping names column 'Kundenumer', which the sheet does not have" in err


# choosing rows, reading ids


def test_where_selects_rows_and_the_rest_are_skipped_never_sent(capsys, tmp_path):
    source = billing_export(tmp_path / "export.xlsx")
    code, out, err = run(capsys, "run", source, "--where", "Status=Aktiv", *local(tmp_path / "e.sqlite"))
    assert code == 0, err
    results = read_xlsx(tmp_path / "export.results.xlsx")
    assert [r["status"] for r in results] == ["created", "created", "skipped", "created", "created", "created"]
    assert results[2]["user_id"] is None and "1 skipped" in out
    assert state_counts(tmp_path / "e.sqlite")["users"] == 5
    code, out, _ = run(capsys, "validate", source, "--where", "Status != aktiv", "--where", "Anlegg=A2")
    assert code == 0 and "5 skipped" in out
    code, _, err = run(capsys, "validate", source, "--where", "Tilstand=Aktiv")
    assert code == 2 and "no such column" in err and "'Status'" in err
    code, _, err = run(capsys, "validate", source, "--where", "Status")
    assert code == 2 and '"Column=value"' in err


def test_a_slash_separates_meter_point_ids(capsys, tmp_path):
    path = write_csv(tmp_path / "in.csv", [["1", f"{MPIDS[0]} / {MPIDS[1]}"]], ["customer_id", "meter_point_ids"])
    assert run(capsys, "run", path, *local(tmp_path / "e.sqlite"))[0] == 0
    assert state_counts(tmp_path / "e.sqlite")["locations"] == 1


def test_a_workbook_whose_data_is_on_another_sheet_names_it(capsys, tmp_path):
    workbook = Workbook()
    workbook.active.title = "Om eksporten"
    workbook.active.append(["Denne filen er generert automatisk"])
    data = workbook.create_sheet("Kunder")
    data.append(["Kundenummer", "Målepunkt-ID"])
    data.append(["1", MPIDS[0]])
    workbook.save(tmp_path / "book.xlsx")
    code, _, err = run(capsys, "validate", tmp_path / "book.xlsx")
    assert code == 2 and "sheet 'Kunder' does: add --sheet 'Kunder'" in err
    code, out, _ = run(capsys, "validate", tmp_path / "book.xlsx", "--sheet", "Kunder")
    assert code == 0 and "header in row 1" in out


def test_a_header_of_mapped_columns_only_is_found_below_title_rows(capsys, tmp_path):
    rows = [["Eksport"], [], ["Nr", "MP"], ["1", MPIDS[0]]]
    workbook = Workbook()
    for row in rows:
        workbook.active.append(row)
    workbook.save(tmp_path / "m.xlsx")
    code, out, err = run(capsys, "validate", tmp_path / "m.xlsx", "--map", "Nr=customer_id", "--map",
                         "MP=meter_point_ids")
    assert code == 0, err
    assert "header in row 3" in out


# outputs that tell the truth


def test_validate_after_a_run_keeps_the_record_of_what_was_created(capsys, tmp_path):
    source = billing_export(tmp_path / "export.xlsx")
    assert run(capsys, "run", source, *local(tmp_path / "e.sqlite"))[0] == 0
    before = (tmp_path / "export.results.xlsx").read_bytes()
    assert run(capsys, "validate", source)[0] == 0
    assert run(capsys, "run", source, "--dry-run")[0] == 0
    assert (tmp_path / "export.results.xlsx").read_bytes() == before
    assert {r["status"] for r in read_xlsx(tmp_path / "export.validation.xlsx")} == {"valid"}
    assert json.loads((tmp_path / "export.summary.json").read_text())["entities"]["users"]["created"] == 6


def test_gs1_warnings_are_summarised_in_the_terminal(capsys, tmp_path):
    rows = [[str(i), f"70705750001234{5670 + i}"] for i in range(4)]
    path = write_csv(tmp_path / "in.csv", rows, ["customer_id", "meter_point_ids"])
    code, _, err = run(capsys, "validate", path)
    assert code == 0 and "3 rows have a meter point id failing the GS1 check digit" in err


def test_the_summary_says_what_ran_where_and_when(capsys, tmp_path):
    import hashlib

    source = billing_export(tmp_path / "export.xlsx")
    assert run(capsys, "run", source, *local(tmp_path / "e.sqlite"))[0] == 0
    summary = json.loads((tmp_path / "export.summary.json").read_text())
    assert summary["tool"].startswith("onboard ") and summary["environment"] == "local"
    assert summary["input_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert summary["started"] <= summary["finished"] and summary["sheet"] == "Kunder" and summary["header_row"] == 4
    assert run(capsys, "run", source, *local(tmp_path / "e.sqlite"))[0] == 0
    again = json.loads((tmp_path / "export.summary.json").read_text())
    assert again["entities"]["users"] == {"created": 0, "exists": 6, "failed": 0}


def test_hidden_rows_are_counted_and_merged_customer_cells_fill_down(capsys, tmp_path):
    rows = export_rows()
    source = billing_export(tmp_path / "export.xlsx", rows)
    workbook = load_workbook(source)
    sheet = workbook["Kunder"]
    sheet.row_dimensions[6].hidden = sheet.row_dimensions[7].hidden = True  # filtered out in Excel
    sheet["A9"] = None
    sheet.merge_cells("A8:A9")  # one customer number merged over two device rows
    workbook.save(source)
    code, out, err = run(capsys, "run", source, *local(tmp_path / "e.sqlite"))
    assert code == 0, err
    assert "2 rows are hidden in the workbook" in err and '--where "Column=value"' in err
    assert json.loads((tmp_path / "export.summary.json").read_text())["notices"]["hidden rows"] == 2
    results = read_xlsx(tmp_path / "export.results.xlsx")
    assert results[4]["user_id"] == results[3]["user_id"], "row 9 takes the customer merged down from row 8"


def test_a_custom_base_url_is_recorded_as_such(capsys, tmp_path, monkeypatch):
    import subprocess
    import sys

    port = 18000 + (hash(str(tmp_path)) % 2000)
    server = subprocess.Popen([sys.executable, "-m", "onboard", "emulator", "--port", str(port), "--state",
                               str(tmp_path / "served.sqlite")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert "emulator at" in server.stdout.readline()
        monkeypatch.setenv("SPARK_CLIENT_ID", "partner")
        monkeypatch.setenv("SPARK_CLIENT_SECRET", "s3cret")
        base = f"http://127.0.0.1:{port}"
        path = write_csv(tmp_path / "in.csv", [["1", MPIDS[0]]], ["customer_id", "meter_point_ids"])
        code, _, err = run(capsys, "run", path, "--base-url", f"{base}/energy-coordination/v1", "--token-url",
                           f"{base}/connect/token", "--no-progress")
        assert code == 0, err
    finally:
        server.terminate()
        server.wait(timeout=10)
    summary = json.loads((tmp_path / "in.summary.json").read_text())
    assert summary["environment"] == "custom" and summary["base_url"] == f"{base}/energy-coordination/v1"


def test_sheet_text_cannot_repaint_the_terminal(capsys, tmp_path):
    path = write_csv(tmp_path / "in.csv", [["1\x1b]0;pwned\x07\x1b[31m", "12"]], ["customer_id", "meter_point_ids"])
    code, out, err = run(capsys, "validate", path)
    assert code == 1 and "has 2 digits" in err
    assert "\x1b" not in out + err and "\x07" not in out + err


def test_a_target_never_shows_a_url_password():
    from pydantic import SecretStr

    from onboard.settings import Target

    where = Target("sandbox", "https://me:hunter2@api.example/v1", "https://auth.example/t", "id", SecretStr("s"))
    assert "hunter2" not in repr(where) and "hunter2" not in str(where)


# found by trying it as a new user


def test_a_meter_point_shared_with_a_row_refused_for_something_else_never_lands_twice(capsys, tmp_path):
    headers = ["Kundenummer", "Anlegg", "Målepunkt-ID", "Enhetstype", "Serienummer"]
    path = write_csv(tmp_path / "m.csv", [["1001", "hjem", MPIDS[0], "Varmepumpe", "SN1"],
                                          ["1002", "hytta", MPIDS[0], "Dingsebomt", "SN2"]], headers, delimiter=";")
    state = tmp_path / "e.sqlite"
    code, _, err = run(capsys, "run", path, *local(state))
    assert code == 1 and "row 2 (invalid)" in err and "is also on row 3, which is refused for another reason" in err
    assert "row 3 (invalid)" in err and f"meter point id {MPIDS[0]} is also on row 2" in err
    assert state_counts(state)["locations"] == 0
    errors = tmp_path / "m.errors.csv"
    errors.write_text(errors.read_text(encoding="utf-8").replace("Dingsebomt", "Varmepumpe"), encoding="utf-8")
    code, _, err = run(capsys, "run", errors, *local(state))
    assert code == 1 and "is also on site 'hjem' of customer '1001'" in err
    assert state_counts(state)["locations"] == 0


def test_a_shared_meter_point_whose_site_also_has_a_row_refused_for_something_else_is_refused_not_a_crash(
        capsys, tmp_path):
    """Found by a new user's trial: customer 1's site holds a valid row and a refused one, customer 2's
    site the same meter point id. The refusal of customer 2's site (named by the refused row) left it no
    valid row, and naming it for customer 1's site then failed with an IndexError."""
    headers = ["Kundenummer", "Anlegg", "Målepunkt-ID", "Serienummer", "Enhetstype"]
    path = write_csv(tmp_path / "m.csv", [["1", "A", MPIDS[0], "D1", "HVAC"], ["1", "A", MPIDS[0], "D2", "Vindmølle"],
                                          ["2", "B", MPIDS[0], "", ""]], headers, delimiter=";")
    state = tmp_path / "e.sqlite"
    code, _, err = run(capsys, "run", path, *local(state))
    assert code == 1 and "Traceback" not in err
    assert (f"row 2 (invalid): Målepunkt-ID: meter point id {MPIDS[0]} is also on site 'B' of customer '2' "
            "(row 4)") in err
    assert "row 3 (invalid)" in err and "row 4 (invalid)" in err
    assert state_counts(state)["locations"] == 0


def test_a_totals_line_whose_count_sits_in_the_key_column_is_refused(capsys, tmp_path):
    rows = [["101", "Kari", "home", MPIDS[0]], ["102", "Ola", "home", MPIDS[1]], ["2", "Totalt", "", ""]]
    path = write_csv(tmp_path / "t.csv", rows, ["Kundenummer", "Navn", "Anlegg", "Målepunkt-ID"], delimiter=";")
    code, _, err = run(capsys, "validate", path)
    assert code == 1 and "row 4 (invalid)" in err and "reads like a totals line ('Totalt' in another column)" in err


def test_messages_of_an_errors_file_run_name_the_original_rows(capsys, tmp_path):
    from helpers import meter_point_id

    rows = [[str(100 + i), "home", meter_point_id(i + 10), "HVAC", f"SN{i}"] for i in range(10)]
    rows[9][2] = rows[8][2]  # rows 10 and 11 share a meter point
    rows[8][3] = "Gadget"  # and row 10 is refused for something else too
    path = write_csv(tmp_path / "x.csv", rows, ["customer_id", "location_ref", "meter_point_ids", "resource_type",
                                                "resource_ref"])
    state = tmp_path / "e.sqlite"
    run(capsys, "run", path, *local(state))
    code, _, err = run(capsys, "run", tmp_path / "x.errors.csv", *local(state))
    assert "row 2 (row 10 of the original sheet)" in err and "is also on row 11" in err


def test_the_original_results_keep_every_row_true_whatever_the_errors_file_holds(capsys, tmp_path):
    rows = [["1", "home", MPIDS[0], "SN1", "HVAC"], ["2", "home", "12", "SN2", "HVAC"],
            ["3", "home", "13", "SN3", "HVAC"]]
    path = write_csv(tmp_path / "c.csv", rows, ["customer_id", "location_ref", "meter_point_ids", "resource_ref",
                                                "resource_type"])
    state = tmp_path / "e.sqlite"
    run(capsys, "run", path, *local(state))
    errors = read_csv(tmp_path / "c.errors.csv")
    errors[0]["meter_point_ids"] = MPIDS[1]  # row 3 fixed
    copy = dict(errors[0], resource_ref="SN2-EXTRA")  # a second device, copied from row 3
    typed = dict(errors[0], customer_id="5", row="", meter_point_ids=MPIDS[2], resource_ref="SN5")  # a new customer
    with (tmp_path / "c.errors.csv").open("w", newline="", encoding="utf-8") as handle:
        import csv

        writer = csv.DictWriter(handle, fieldnames=list(errors[0]))
        writer.writeheader()
        writer.writerows([errors[0], copy, errors[1], typed])
    code, out, err = run(capsys, "run", tmp_path / "c.errors.csv", "--where", "resource_ref!=SN3", *local(state))
    assert "1 row brought up to date" in out and "2 rows with no original row of their own" in out, out + err
    final = read_csv(tmp_path / "c.results.csv")
    assert [(r["row"], r["customer_id"], r["status"]) for r in final] == [
        ("2", "1", "created"), ("3", "2", "created"), ("4", "3", "invalid")]
    assert final[1]["resource_ref"] == "SN2" and final[2]["error"], "the skipped row keeps its refusal"
    assert state_counts(state)["users"] == 3


def test_headers_with_a_qualifier_or_alternatives_are_known(capsys, tmp_path):
    headers = ["Kundenr", "Breddegrad (WGS84)", "Lengdegrad (WGS84)", "Serienummer/VIN", "Målepunkt ID [GSRN]",
               "Enhetstype"]
    path = write_csv(tmp_path / "q.csv", [["1", "59,91", "10,75", "SN-1", MPIDS[0], "Varmepumpe"]], headers,
                     delimiter=";")
    code, out, err = run(capsys, "run", path, *local(tmp_path / "e.sqlite"))
    assert code == 0, err
    assert "-> latitude" in out and "-> longitude" in out and "-> resource_ref" in out and "-> meter_point_ids" in out
    location = read_csv(tmp_path / "q.results.csv", delimiter=";")[0]
    assert location["resource_id"] and state_counts(tmp_path / "e.sqlite")["resources"] == 1


def test_without_a_known_header_the_message_shows_the_fullest_row(capsys, tmp_path):
    (tmp_path / "h.csv").write_text("Eksport 2025\n\nKlantnr,Meetpunt,Naam\n1,x,y\n", encoding="utf-8")
    code, _, err = run(capsys, "validate", tmp_path / "h.csv")
    assert code == 2 and "Headers found in row 3" in err and "'Klantnr', 'Meetpunt', 'Naam'" in err


def test_a_near_miss_is_marked_in_the_column_print_out(capsys, tmp_path):
    path = write_csv(tmp_path / "n.csv", [["1", MPIDS[0], "10.7"]], ["customer_id", "meter_point_ids", "Lengdegard"])
    code, out, _ = run(capsys, "validate", path)
    assert code == 2 and "Lengdegard" in out and "not used: looks like longitude" in out
