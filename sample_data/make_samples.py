"""Writes the sample sheets in this folder (`make samples`). Deterministic: same files every time.

customers.xlsx / customers.csv   60 customers: meter-only, coordinates-only and both; several
                                 devices at a site; customers with two sites; vehicles.
customers-with-errors.xlsx       the same kind of sheet with the mistakes real sheets have, to show
                                 the fix-and-re-run loop.
billing-export.xlsx              a Norwegian billing system's export: title rows, Norwegian headers
(+ billing-export.toml)          and values, CRM columns, a status column, a customer merged over its
                                 device rows, rows filtered out, a totals row, a meter point id on two
                                 sites, a device repeated by a join; with the mapping file it needs.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Font

HERE = Path(__file__).resolve().parent
HEADERS = ["customer_id", "name", "location_ref", "location_type", "meter_point_ids", "latitude", "longitude",
           "resource_ref", "resource_type", "address", "notes"]
FIRST = ["Kari", "Ola", "Ingrid", "Lars", "Sigrid", "Erik", "Astrid", "Nils", "Liv", "Magnus", "Solveig", "Anders"]
LAST = ["Nordmann", "Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen", "Nilsen", "Berg", "Haugen"]
STREETS = ["Storgata", "Kirkeveien", "Fjordgata", "Skogveien", "Sjøgata", "Bakkeveien"]
TOWNS = [("Oslo", 59.9139, 10.7522), ("Bergen", 60.3913, 5.3221), ("Trondheim", 63.4305, 10.3951),
         ("Tromsø", 69.6492, 18.9553), ("Longyearbyen", 78.2166, 15.6351)]
DEVICES = ["HotWaterTank", "Charger", "HVAC", "SolarInverter", "Generic"]


def meter_point_id(rng: random.Random) -> str:
    body = "70705750" + "".join(rng.choice("0123456789") for _ in range(9))
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


def customers(rng: random.Random, count: int) -> list[list[object]]:
    rows: list[list[object]] = []
    for n in range(count):
        customer = str(100001 + n)
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        sites = 2 if n % 7 == 3 else 1
        for s in range(sites):
            town, lat, lon = rng.choice(TOWNS)
            address = f"{rng.choice(STREETS)} {rng.randint(1, 120)}, {town}"
            site = ["home", "cabin"][s]
            kind = n % 3  # 0: meter only, 1: coordinates only, 2: both
            mpid = meter_point_id(rng) if kind != 1 else ""
            latitude = round(lat + rng.uniform(-0.05, 0.05), 5) if kind != 0 else ""
            longitude = round(lon + rng.uniform(-0.05, 0.05), 5) if kind != 0 else ""
            location_type = "Residential" if s == 0 else rng.choice(["Residential", "Other", ""])
            devices = rng.choice([0, 1, 1, 2, 3]) if n % 11 else 0
            site_rows = []
            for d in range(devices):
                device = DEVICES[(n + d) % len(DEVICES)]
                serial = f"{device[:2].upper()}-{customer}-{s}{d}"
                site_rows.append([customer, name, site, location_type, mpid, latitude, longitude, serial, device,
                                  address, ""])
            if not site_rows:
                site_rows.append([customer, name, site, location_type, mpid, latitude, longitude, "", "",
                                  address, "site without devices"])
            rows += site_rows
        if n % 5 == 0:
            vin = "YV1" + "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ0123456789") for _ in range(14))
            rows.append([customer, name, "", "", "", "", "", vin, "Vehicle", "", "electric car"])
    return rows


def with_errors(rng: random.Random) -> list[list[object]]:
    rows = customers(rng, 12)
    rows[1][4] = "70705750001234"  # too short
    rows[3][5], rows[3][6] = 59.91, ""  # latitude without longitude
    rows[5][8] = "Heat pump X200"  # not a device type
    rows[7][4] = 7.07057500012346e17  # Excel turned the id into a number and dropped digits
    rows.append([rows[0][0], rows[0][1], rows[0][2], rows[0][3], meter_point_id(rng), rows[0][5], rows[0][6],
                 "EXTRA-1", "Charger", rows[0][9], "same site, other meter id"])
    rows.append(["", "Unknown Customer", "home", "", meter_point_id(rng), "", "", "", "", "", "no customer id"])
    return rows


def write_xlsx(path: Path, rows: list[list[object]]) -> None:
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Customers"
    sheet.append(HEADERS)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in rows:
        sheet.append([None if v == "" else v for v in row])
    for column in "ACEH":
        for cell in sheet[column][1:]:
            if isinstance(cell.value, str):
                cell.number_format = "@"
    workbook.save(path)


BILLING_HEADERS = ["Kundenummer", "Kunde", "Type", "Anlegg", "Anleggstype", "Målepunkt-ID", "Breddegrad",
                   "Lengdegrad", "Enhetstype", "Serienummer", "User ID", "Status", "Telefon"]
BILLING_DEVICES = ["Varmtvannsbereder", "Elbillader", "Varmepumpe", "Varmepumpe Nibe F2040", "Solcelleanlegg"]
BILLING_SITES = ["Bolig", "Hytte", "Næring"]


def billing_export(rng: random.Random) -> tuple[list[list[object]], set[int]]:
    """Rows of the export and the indexes of the rows Excel's filter hides."""
    rows: list[list[object]] = []
    hidden: set[int] = set()
    for n in range(40):
        customer = str(3100400 + n * 7)
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        town, lat, lon = rng.choice(TOWNS[:4])
        mpid = meter_point_id(rng)
        site = rng.choice(BILLING_SITES)
        status = "Avsluttet" if n % 13 == 5 else "Aktiv"
        latitude = f"{lat + rng.uniform(-0.05, 0.05):.5f}".replace(".", ",")
        longitude = f"{lon + rng.uniform(-0.05, 0.05):.5f}".replace(".", ",")
        for _ in range(rng.choice([1, 1, 2])):
            if status == "Avsluttet":
                hidden.add(len(rows))
            serial = "" if n == 17 else f"{rng.choice('ABCDEFGH')}{rng.randint(100000, 999999)}"
            rows.append([customer, name, "Bedrift" if site == "Næring" else "Privat", f"ANL-{customer}-1", site, mpid,
                         latitude, longitude, rng.choice(BILLING_DEVICES), serial, f"{name.split()[0].lower()}{n}", status,
                         f"+47 9{rng.randint(1000000, 9999999)}"])
    unnamed = next(i for i, row in enumerate(rows) if not row[9])  # a device exported without its serial
    rows.insert(unnamed + 1, [*rows[unnamed][:12], "+47 41234567"])  # repeated by a join on phone numbers
    alone = [i for i, row in enumerate(rows) if sum(r[0] == row[0] for r in rows) == 1 and row[11] == "Aktiv"]
    rows[alone[4]][5] = rows[alone[1]][5]  # a meter point id typed onto a second customer's site
    rows.append(["Totalt", f"{len(rows)} rader", "", "", "", "", "", "", "", "", "", "", ""])
    return rows, hidden


def write_billing_export(path: Path, rows: list[list[object]], hidden: set[int]) -> None:
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Kunder"
    sheet.append(["Kundeliste - eksport fra faktureringssystemet"])
    sheet.append(["Generert 2026-11-01 06:00, alle anlegg"])
    sheet.append([])
    sheet.append(BILLING_HEADERS)
    for cell in sheet[4]:
        cell.font = Font(bold=True)
    for row in rows:
        sheet.append([None if v == "" else v for v in row])
    for index in hidden:
        sheet.row_dimensions[index + 5].hidden = True
    first = next(i for i in range(len(rows) - 1) if rows[i][0] == rows[i + 1][0])  # merge a customer's cells
    sheet.cell(first + 6, 1).value = None
    sheet.merge_cells(start_row=first + 5, start_column=1, end_row=first + 6, end_column=1)
    sheet.auto_filter.ref = f"A4:M{len(rows) + 4}"
    workbook.save(path)


BILLING_MAPPING = """\
# How to read billing-export.xlsx: run with --mapping sample_data/billing-export.toml
ignore = ["Type"]                  # Privat/Bedrift: the customer's segment, not the device type

[values.resource_type]
"Varmepumpe Nibe F2040" = "HVAC"
"Solcelleanlegg" = "SolarInverter"
"""


def main() -> None:
    rows = customers(random.Random(2026), 60)
    write_xlsx(HERE / "customers.xlsx", rows)
    with (HERE / "customers.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADERS)
        writer.writerows(rows)
    write_xlsx(HERE / "customers-with-errors.xlsx", with_errors(random.Random(7)))
    write_billing_export(HERE / "billing-export.xlsx", *billing_export(random.Random(47)))
    (HERE / "billing-export.toml").write_text(BILLING_MAPPING, encoding="utf-8")


if __name__ == "__main__":
    main()
