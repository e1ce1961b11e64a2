"""Customer sheets of realistic shape for the benchmark, the same for the same seed on any machine.

The shape follows the partner sheet that issue 10 takes as its reference (4,000 customers, 6,017
rows: 40 user batches, 46 location batches, 5,118 resources): most customers have one site, some
two or three; a site has 0 to 3 devices, and a site without a device is a row without one; about
one device in twelve is a vehicle. Rows come from one seeded stream, so the sheet of N rows is the
first N rows of every larger one: a prefix of the 20,000-row sheet is the 6,000-row sheet.
"""

from __future__ import annotations

import csv
import itertools
import random
from collections.abc import Iterator
from pathlib import Path

from openpyxl import Workbook

SEED = 10
VERSION = 1
"""Bump when the shape changes, so cached sheets of the old shape are not reused."""

HEADERS = ["customer_id", "customer_name", "location_ref", "location_type", "meter_point_ids", "latitude",
           "longitude", "resource_type", "resource_ref", "address", "notes"]
SITES = {"home": 88, "cabin": 10, "garage": 2}
"""How many sites a customer has, as weights of 1, 2 and 3 sites (the refs the extra sites take)."""
DEVICES_PER_SITE = {0: 20, 1: 55, 2: 17, 3: 8}
DEVICE_TYPES = {"HotWaterTank": 30, "Charger": 25, "HVAC": 20, "SolarInverter": 12, "Generic": 5, "Vehicle": 8}
LOCATION_TYPES = {"Residential": 60, "Commercial": 8, "Other": 2, "": 30}
STREETS = ["Storgata", "Kirkeveien", "Bygdøy allé", "Trondheimsveien", "Skogveien", "Fjordgata"]
TOWNS = ["0155 Oslo", "5003 Bergen", "7010 Trondheim", "4006 Stavanger", "9008 Tromsø"]


def meter_point_id(serial: int) -> str:
    """An 18-digit GSRN with a valid GS1 check digit, so rows carry no warnings."""
    body = f"70705750{serial:09d}"
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


def _pick(rng: random.Random, weights: dict) -> object:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def rows(seed: int = SEED) -> Iterator[list[object]]:
    """Customer after customer, one row per device (or per site without one), without end."""
    rng = random.Random(seed)
    meters = itertools.count(1)
    devices = itertools.count(1)
    for customer in itertools.count(100_001):
        name = f"Kunde {customer}"
        sites = list(SITES)[: list(SITES).index(_pick(rng, SITES)) + 1]
        for site in sites:
            ids = [meter_point_id(next(meters)) for _ in range(2 if rng.random() < 0.05 else 1)]
            has_coordinates = rng.random() < 0.6
            latitude = round(rng.uniform(58.0, 70.0), 5) if has_coordinates else None
            longitude = round(rng.uniform(5.0, 30.0), 5) if has_coordinates else None
            address = f"{rng.choice(STREETS)} {rng.randint(1, 120)}, {rng.choice(TOWNS)}"
            site_cells = [str(customer), name, site, _pick(rng, LOCATION_TYPES), ";".join(ids), latitude, longitude]
            count = _pick(rng, DEVICES_PER_SITE)
            if not count:
                yield [*site_cells, None, None, address, "no device yet"]
            for _ in range(count):
                kind = _pick(rng, DEVICE_TYPES)
                serial = next(devices)
                ref = f"WVWZZZ{serial:011d}" if kind == "Vehicle" else f"SN-{serial:08d}"
                yield [*site_cells, kind, ref, address, None]


def sheet(count: int, suffix: str, cache: Path, seed: int = SEED) -> Path:
    """The first `count` rows as .csv or .xlsx, generated once into `cache`."""
    path = cache / f"customers-{count}-seed{seed}-v{VERSION}.{suffix}"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    chosen = itertools.islice(rows(seed), count)
    if suffix == "csv":
        with partial.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(HEADERS)
            writer.writerows(["" if cell is None else cell for cell in row] for row in chosen)
    else:
        workbook = Workbook(write_only=True)
        worksheet = workbook.create_sheet("Customers")
        worksheet.append(HEADERS)
        for row in chosen:
            worksheet.append(row)
        workbook.save(partial)
    partial.replace(path)
    return path
