"""Wrong data never lands quietly: a billing export's totals and headings, one meter point on two
sites (in the sheet, or against what the API holds), devices without serials, swapped coordinates
and the template's example row. Refused rows name the other rows involved; doubtful ones warn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from openpyxl import Workbook

from helpers import MPIDS, local, meter_point_id, read_csv, read_xlsx, run, state_counts, summary_of, write_csv
from onboard import plan as planning
from onboard import records
from onboard import sheet as sheets
from onboard.plan import derived_id
from onboard.template import TEMPLATE_EXAMPLE

EXPORT = ["customer_id", "name", "location_ref", "meter_point_ids", "latitude", "longitude", "resource_ref",
          "resource_type", "phone"]
BLANK = [""] * len(EXPORT)
KEEP = ("delete the row, or, to register it as a customer on purpose, give it a site or a device, "
        "or fill its user_id")


def line(customer, name="", site="", mpid="", lat="", lon="", ref="", kind="", phone=""):
    """One row of a billing export, in EXPORT's columns."""
    return [customer, name, site, mpid, lat, lon, ref, kind, phone]


def by_row(path):
    rows = read_xlsx(path) if path.suffix == ".xlsx" else read_csv(path)
    return {int(r["row"]): r for r in rows}


def counts_of(path):
    return planning.build(records.check(sheets.read(path))).counts


def home_of(customer):
    return derived_id("location", customer, "ref\x1fhome")


# totals and headings


def test_totals_and_headings_are_refused_and_the_rest_lands(capsys, tmp_path):
    source = write_csv(tmp_path / "export.csv", [
        line("100001", "Kari", "home", MPIDS[0], "59.91", "10.75", "WH-1", "HotWaterTank", "+47 900"),  # 2
        line("100002", "Ola", "home", MPIDS[1], "60.39", "5.32"),                                        # 3
        line("100003", "Per"),                                                                           # 4
        BLANK,                                                                                           # 5
        line("Bedriftskunder"),                                                                          # 6
        line("200001", "Firma AS", "office", MPIDS[2], "", "", "CH-1", "Charger"),                       # 7
        line("Subtotal", "2 kunder"),                                                                    # 8
        BLANK, BLANK,                                                                                    # 9, 10
        line("Totalt", "2135 rader"),                                                                    # 11
        line("Sum", "", "", "", "", "", "", "", "2135"),                                                 # 12
        line("I alt"), line("Summa"), line("Yhteensä"), line("Grand total"), line("Sum total"),          # 13-17
        line("Rapport slutt"),                                                                           # 18
    ], EXPORT)
    state = tmp_path / "e.sqlite"
    code, _, err = run(capsys, "run", source, *local(state))
    rows = by_row(tmp_path / "export.results.csv")
    assert code == 1
    assert {n: r["status"] for n, r in rows.items() if r["status"] != "invalid"} == {
        2: "created", 3: "created", 4: "created", 7: "created"}
    assert rows[11]["error"] == (f"customer_id: 'Totalt' reads like a total, not a customer: the row has no site "
                                 f"and no device; {KEEP}")
    for number, key in ((8, "Subtotal"), (12, "Sum"), (13, "I alt"), (14, "Summa"), (15, "Yhteensä"),
                        (16, "Grand total"), (17, "Sum total")):
        assert rows[number]["error"].startswith(f"customer_id: {key!r} reads like a total"), number
    assert rows[6]["error"] == (
        "customer_id: 'Bedriftskunder' reads like a section heading, not a customer: the row has no site and no "
        "device, comes after blank row 5, and its key holds no digit unlike the other customer keys (such as "
        f"'100001' in row 2); {KEEP}")
    assert "'Rapport slutt' reads like a section heading" in rows[18]["error"]
    assert "is the sheet's last row" in rows[18]["error"]
    assert "row 11 (invalid): customer_id: 'Totalt' reads like a total" in err
    assert state_counts(state) == {"users": 4, "locations": 3, "resources": 2}
    assert summary_of(tmp_path, "export")["status"] == {"created": 4, "failed": 0, "invalid": 10}
    assert counts_of(source)["totals_or_headings"] == 10


def test_a_workbook_total_with_numbers_in_carried_columns_is_refused(capsys, tmp_path):
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Kundenummer", "Navn", "Målepunkt", "Anlegg", "Forbruk kWh"])
    sheet.append(["Privatkunder"])
    sheet.append([100001, "Kari", MPIDS[0], "home", 12000])
    sheet.append([100002, "Ola", MPIDS[1], "home", 8000])
    sheet.append([100003, "Per", MPIDS[2], "home", 9000])
    sheet.append([])
    sheet.append(["Sum", 3, None, None, 29000])
    workbook.save(tmp_path / "export.xlsx")
    code, _, _ = run(capsys, "validate", tmp_path / "export.xlsx", "--map", "Kundenummer=customer_id",
                     "--map", "Målepunkt=meter_point_ids", "--map", "Anlegg=location_ref")
    rows = by_row(tmp_path / "export.validation.xlsx")
    assert code == 1 and [rows[n]["status"] for n in (3, 4, 5)] == ["valid"] * 3
    assert rows[7]["status"] == "invalid" and "'Sum' reads like a total" in rows[7]["error"]
    assert rows[2]["status"] == "invalid" and "is the sheet's first row" in rows[2]["error"]


def test_a_heading_merged_across_the_row_between_customers_is_refused_a_named_customer_is_not(capsys, tmp_path):
    """Found by a new user's trial: `Region Nord` merged across A:J between two customers' rows, with
    no blank row before it, became a user. Alone on its row it is a heading; `Nordlys` with a name
    beside it, in the same place, is a customer without a site and lands."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Kundenummer", "Navn", "Målepunkt", "Anlegg"])
    sheet.append([100001, "Kari", MPIDS[0], "home"])
    sheet.append([100002, "Ola", MPIDS[1], "home"])
    sheet.append(["Region Nord"])
    sheet.merge_cells("A4:D4")
    sheet.append([100003, "Per", MPIDS[2], "home"])
    sheet.append(["Nordlys", "Nordlys Energi AS"])
    sheet.append([100004, "Eva", MPIDS[3], "home"])
    workbook.save(tmp_path / "export.xlsx")
    code, _, err = run(capsys, "validate", tmp_path / "export.xlsx", "--map", "Kundenummer=customer_id",
                       "--map", "Målepunkt=meter_point_ids", "--map", "Anlegg=location_ref")
    rows = by_row(tmp_path / "export.validation.xlsx")
    assert code == 1 and rows[4]["status"] == "invalid"
    assert rows[4]["error"].startswith("Kundenummer: 'Region Nord' reads like a section heading, not a customer: the "
                                       "row has no site and no device, is the only filled cell of its row")
    assert [rows[n]["status"] for n in (2, 3, 5, 6, 7)] == ["valid"] * 5
    assert "row 4 (invalid)" in err


def test_a_customer_with_a_site_a_device_or_a_user_id_is_never_taken_for_a_total(capsys, tmp_path):
    source = write_csv(tmp_path / "kept.csv", [
        ["Total", "", "home", MPIDS[0], "", ""],   # a site
        ["Total", "", "", "", "", ""],             # the same customer: real
        ["Sum", "", "", "", "VIN-1", "EV"],        # a vehicle
        ["Yhteensä", "spark-user-7", "", "", "", ""],  # an explicit user_id: meant
        ["100004", "", "home", MPIDS[1], "", ""],
        ["100005", "", "home", MPIDS[2], "", ""],
        ["Ola Nordmann", "", "", "", "", ""],      # no blank row before it, not last: a customer
        ["100006", "", "", "", "", ""],
    ], ["customer_id", "user_id", "location_ref", "meter_point_ids", "resource_ref", "resource_type"])
    state = tmp_path / "e.sqlite"
    code, _, err = run(capsys, "run", source, *local(state))
    assert code == 0, err
    assert {r["status"] for r in read_csv(tmp_path / "kept.results.csv")} == {"created"}
    assert state_counts(state) == {"users": 7, "locations": 3, "resources": 1}


def test_words_as_keys_are_no_heading_when_every_key_is_words(capsys, tmp_path):
    source = write_csv(tmp_path / "names.csv", [
        line("Kari Nordmann", "", "home", MPIDS[0]),
        line("Ola Nordmann", "", "home", MPIDS[1]),
        line("Per Hansen", "", "home", MPIDS[2]),
        BLANK,
        line("Anne Berg"),
    ], EXPORT)
    code, _, _ = run(capsys, "validate", source)
    assert code == 0 and by_row(tmp_path / "names.validation.csv")[6]["status"] == "valid"


# one meter point, one site


def test_one_meter_point_on_two_sites_refuses_every_row_of_both(capsys, tmp_path):
    source = write_csv(tmp_path / "export.csv", [
        line("100001", "Kari", "home", MPIDS[0], "", "", "", "HVAC"),     # 2
        line("100002", "Ola", "home", MPIDS[0], "", "", "CH-1", "Charger"),  # 3: another customer, same meter
        line("100002", "Ola", "home", "", "", "", "VIN-1", "EV"),         # 4: the same site of 100002
        line("100003", "Per", "home", MPIDS[1]),                          # 5
        line("100003", "Per", " Home ", MPIDS[1]),                        # 6: the same meter, respelt ref
        line("100004", "Ada", "cabin", MPIDS[2]),                         # 7
        line("100004", "Ada", "Cabin", MPIDS[3]),                         # 8: respelt, but its own meter
    ], EXPORT)
    state = tmp_path / "e.sqlite"
    code, _, _ = run(capsys, "run", source, *local(state))
    rows = by_row(tmp_path / "export.results.csv")
    assert code == 1 and [rows[n]["status"] for n in range(2, 9)] == ["invalid"] * 5 + ["created"] * 2
    assert rows[2]["error"] == (f"meter_point_ids: meter point id {MPIDS[0]} is also on site 'home' of customer "
                                "'100002' (rows 3, 4): a meter point belongs to one site")
    assert rows[3]["error"] == rows[4]["error"] == (
        f"meter_point_ids: meter point id {MPIDS[0]} is also on site 'home' of customer '100001' (row 2): "
        "a meter point belongs to one site")
    assert rows[5]["error"] == (
        f"meter_point_ids: meter point id {MPIDS[1]} is also on site 'Home' of customer '100003' (row 6): "
        "a meter point belongs to one site; 'Home' and 'home' differ only in case or spaces: write them alike "
        "if they are one site")
    assert "is also on site 'home' of customer '100003' (row 5)" in rows[6]["error"]
    assert rows[7]["warnings"] == ("location_ref 'cabin' differs from 'Cabin' in row 8 only in case or spaces: "
                                   "they are registered as different sites; write them alike if they are one")
    assert state_counts(state) == {"users": 1, "locations": 2, "resources": 0}
    assert counts_of(source)["shared_meter_points"] == 5 and counts_of(source)["similar_site_refs"] == 2


def test_a_run_refuses_a_site_whose_meter_point_the_api_holds_for_a_user_in_the_sheet(capsys, tmp_path):
    state = tmp_path / "e.sqlite"
    first = write_csv(tmp_path / "first.csv", [line("100001", "Kari", "home", MPIDS[0], "", "", "WH-1",
                                                    "HotWaterTank")], EXPORT)
    assert run(capsys, "run", first, *local(state))[0] == 0
    second = write_csv(tmp_path / "second.csv", [
        line("100001", "Kari", "cabin", MPIDS[1]),                             # 2: lands
        line("100002", "Ola", "home", MPIDS[0], "", "", "CH-1", "Charger"),    # 3: 100001's meter point
        line("100002", "Ola", "home", "", "", "", "VIN-1", "EV"),              # 4: at that site too
    ], EXPORT)
    code, out, _ = run(capsys, "run", second, *local(state))
    rows = by_row(tmp_path / "second.results.csv")
    assert code == 1 and [rows[n]["status"] for n in (2, 3, 4)] == ["created", "invalid", "invalid"]
    kari = derived_id("user", "100001")
    reason = (f"meter_point_ids: meter point id {MPIDS[0]} is already registered at location {home_of('100001')} "
              f"of the customer of row 2 (user {kari}): a meter point belongs to one site, so site 'home' of "
              "customer '100002' (rows 3-4) is not sent")
    assert rows[3]["error"] == rows[4]["error"] == reason
    assert [int(r["row"]) for r in read_csv(tmp_path / "second.errors.csv")] == [3, 4]
    assert state_counts(state) == {"users": 1, "locations": 2, "resources": 1}  # Ola, his site, his devices: none

    respelt = write_csv(tmp_path / "third.csv", [line("100001", "Kari", "Home", MPIDS[0], "", "", "HP-1", "HVAC")],
                        EXPORT)
    code, _, _ = run(capsys, "run", respelt, *local(state))
    error = by_row(tmp_path / "third.results.csv")[2]["error"]
    assert code == 1 and error.startswith(f"meter_point_ids: meter point id {MPIDS[0]} is already registered at "
                                          f"location {home_of('100001')} of this customer (user {kari})")
    assert error.endswith(f"; if these rows describe that site, fill location_id {home_of('100001')} on them")
    assert state_counts(state) == {"users": 1, "locations": 2, "resources": 1}


@pytest.mark.slow
def test_a_resumed_run_still_refuses_the_claimed_site(tmp_path):
    """The journal keeps no refusals: a resumed run must find them again before it sends anything."""
    state = tmp_path / "e.sqlite"
    first = write_csv(tmp_path / "first.csv", [line("100001", "Kari", "home", MPIDS[0])], EXPORT)
    assert _start(first, tmp_path, state, latency_ms=0).wait(timeout=120) == 0
    rows = [line("100002", "Ola", "home", MPIDS[0], "", "", "CH-1", "Charger"), line("100001", "Kari")]
    rows += [line(f"3{n:05d}", "", "home", meter_point_id(n), "", "", f"SN-{n}", "HVAC") for n in range(40)]
    source = write_csv(tmp_path / "big.csv", rows, EXPORT)
    proc = _start(source, tmp_path, state, latency_ms=40)
    journal = tmp_path / "big.journal.sqlite"
    deadline = time.monotonic() + 60
    while not _journal_holds(journal, "location", "created"):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    resumed = _start(source, tmp_path, state, latency_ms=0)
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 1 and "resuming the unfinished run" in err
    results = by_row(tmp_path / "big.results.csv")
    assert results[2]["status"] == "invalid" and "is already registered at location" in results[2]["error"]
    assert {r["status"] for n, r in results.items() if n != 2} == {"created", "exists"}
    assert state_counts(state) == {"users": 41, "locations": 41, "resources": 40}


def _start(source, out, state, latency_ms):
    return subprocess.Popen(
        [sys.executable, "-m", "onboard", "run", str(source), "--out", str(out), "--concurrency", "2",
         *local(state)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "ONBOARD_EMULATOR_LATENCY_MS": str(latency_ms)},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _journal_holds(journal, kind, state):
    import sqlite3

    if not journal.exists():
        return False
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT count(*) FROM entities WHERE kind = ? AND state = ?",
                              (kind, state)).fetchone()[0] > 0
        finally:
            db.close()
    except sqlite3.OperationalError:
        return False


# devices without a serial


def test_identical_device_rows_without_a_serial_warn_naming_each_other(capsys, tmp_path):
    source = write_csv(tmp_path / "joined.csv", [
        line("100001", "Kari", "home", MPIDS[0], "", "", "", "HVAC", "+47 900 00 001"),
        line("100001", "Kari", "home", MPIDS[0], "", "", "", "HVAC", "+47 900 00 002"),
        line("100001", "Kari", "home", MPIDS[0], "", "", "", "HVAC", "+47 900 00 003"),
        line("100001", "Kari", "home", MPIDS[0], "", "", "", "Charger", "+47 900 00 001"),
        line("100002", "Ola", "home", MPIDS[1], "", "", "HP-1", "HVAC"),
        line("100002", "Ola", "home", MPIDS[1], "", "", "HP-1", "HVAC"),
    ], EXPORT)
    state = tmp_path / "e.sqlite"
    code, _, _ = run(capsys, "run", source, *local(state))
    rows = by_row(tmp_path / "joined.results.csv")
    assert code == 0 and {r["status"] for r in rows.values()} == {"created"}
    assert rows[2]["warnings"] == (
        "rows 3, 4 describe the same HVAC of site 'home' of customer '100001' without a resource_ref: each row "
        "registers a device (3 in all); if it is one device, delete the repeated rows, otherwise give each its "
        "serial in resource_ref")
    assert rows[3]["warnings"].startswith("rows 2, 4 describe the same HVAC")
    assert rows[5]["warnings"] == rows[6]["warnings"] == rows[7]["warnings"] == ""
    assert state_counts(state)["resources"] == 5
    assert counts_of(source)["repeated_devices"] == 3


def test_a_site_holding_devices_the_sheet_does_not_name_warns_before_adding_more(capsys, tmp_path):
    state = tmp_path / "e.sqlite"
    unnamed = write_csv(tmp_path / "first.csv", [line("100001", "Kari", "home", MPIDS[0], "", "", "", "HVAC", p)
                                                 for p in ("+47 1", "+47 2")], EXPORT)
    assert run(capsys, "run", unnamed, *local(state))[0] == 0
    named = write_csv(tmp_path / "second.csv", [
        line("100001", "Kari", "home", MPIDS[0], "", "", "HP-1", "HVAC"),
        line("100001", "Kari", "home", MPIDS[0], "", "", "HP-2", "HVAC"),
        line("100001", "Kari", "home", MPIDS[0], "", "", "CH-1", "Charger"),
    ], EXPORT)
    code, _, _ = run(capsys, "run", named, *local(state))
    rows = by_row(tmp_path / "second.results.csv")
    assert code == 0 and {r["status"] for r in rows.values()} == {"created"}
    assert {r["warnings"] for r in rows.values()} == {
        "site 'home' of customer '100001' (rows 2-4) already holds 2 HVAC devices this sheet does not name; "
        "this run adds 2 more"}
    assert state_counts(state)["resources"] == 5
    again = run(capsys, "run", named, *local(state))
    assert again[0] == 0 and {r["warnings"] for r in read_csv(tmp_path / "second.results.csv")} == {""}


# coordinates and the template's example


def test_swapped_coordinates_and_the_template_example_warn(capsys, tmp_path):
    example = [TEMPLATE_EXAMPLE.get(f, "") for f in EXPORT]
    source = write_csv(tmp_path / "sites.csv", [
        line("100001", "Oslo", "home", MPIDS[1], "59.9139", "10.7522"),
        line("100002", "Bergen", "home", MPIDS[2], "60.3913", "5.3221"),
        line("100003", "Trondheim", "home", MPIDS[3], "10.3951", "63.4305"),  # swapped
        line("100004", "Tromsø", "home", MPIDS[4], "69.6492", "18.9553"),
        line("100005", "Madrid", "home", MPIDS[5], "40.4168", "-3.7038"),     # far, but not swapped
        example,
    ], EXPORT)
    code, _, _ = run(capsys, "validate", source)
    rows = by_row(tmp_path / "sites.validation.csv")
    assert code == 0 and {r["status"] for r in rows.values()} == {"valid"}
    assert rows[4]["warnings"] == ("latitude 10.3951 and longitude 63.4305 look swapped: the point lies away from "
                                   "the sheet's other sites, and swapped it would lie among them; swap the two "
                                   "cells if so")
    assert rows[7]["warnings"] == ("this is the template's example row (customer 4711, device SN-0001): delete it "
                                   "unless you mean to register it")
    assert [n for n, r in rows.items() if r["warnings"]] == [4, 7]
    assert counts_of(source) == {"swapped_coordinates": 1, "template_example": 1}


def test_coordinates_0_0_are_refused_as_an_exports_placeholder_a_meridian_site_is_not(capsys, tmp_path):
    """Found by a new user's trial: `0`/`0`, `-0.0`/`0.0` and `-0,0` landed as a site at 0, 0."""
    source = write_csv(tmp_path / "null.csv", [["1", "home", "0", "0"], ["2", "home", "-0.0", "0.0"],
                                               ["3", "home", "51.4779", "0"], ["4", "home", "-0,0", "0,0"]],
                       ["customer_id", "location_ref", "latitude", "longitude"])
    code, _, _ = run(capsys, "validate", source)
    rows = by_row(tmp_path / "null.validation.csv")
    assert code == 1 and rows[4]["status"] == "valid"
    for number in (2, 3, 5):
        assert rows[number]["status"] == "invalid"
        assert rows[number]["error"].startswith("latitude: latitude and longitude are both 0: that is where an export "
                                                "puts a site it has no coordinates for"), number
