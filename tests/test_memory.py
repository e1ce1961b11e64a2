"""Issue 10's memory goal: a million-row CSV validates, and runs `--dry-run`, in well under 1 GB.

What a validation holds after reading is its plan; each row's result is made from the plan as the
summary and the outputs read it, so none is kept, and planning lets each customer's cells go once
that customer is planned. The slow test measures the peak of `onboard validate` per row, as the
benchmark does (`make bench BENCH=memory` gives the million-row figure)."""

from __future__ import annotations

import gc
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import onboard
from helpers import write_csv
from onboard import records, report
from onboard.plan import RowPlan
from onboard.report import RowResult

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
HEADERS = ["customer_id", "location_ref", "meter_point_ids", "latitude", "longitude", "resource_type",
           "resource_ref", "notes"]
GOOD, GS1_FAILING, OTHER = "707057500000000018", "707057500000000019", "707057500000000025"


def alive(kind: type) -> int:
    gc.unfreeze()  # what a bulk step froze out of the collector's walks is walked again, so counted
    gc.collect()
    return sum(1 for thing in gc.get_objects() if type(thing) is kind)


def messy(tmp_path: Path) -> Path:
    """Valid rows, a refused one, one --where leaves out, one with a warning, a site conflict."""
    return write_csv(tmp_path / "messy.csv", [
        ["1001", "home", GOOD, "59.9", "10.7", "HVAC", "SN-1", ""],
        ["1001", "home", GOOD, "59.9", "10.7", "Charger", "SN-2", ""],
        ["1002", "home", "12", "", "", "HVAC", "SN-3", ""],
        ["1003", "home", GS1_FAILING, "", "", "HVAC", "SN-4", "skip"],
        ["1004", "home", GS1_FAILING, "", "", "HVAC", "SN-5", ""],
        ["1005", "cabin", OTHER, "", "", "HVAC", "SN-6", ""],
        ["1005", "cabin", GOOD, "", "", "HVAC", "SN-7", ""],
    ], HEADERS)


def test_a_validation_keeps_no_row_result_and_no_rows_cells(tmp_path):
    """Before, a million `RowResult`s sat beside the plan they were made from (some 120 MB)."""
    result = onboard.validate(messy(tmp_path))
    assert len(result.rows) == 7
    assert alive(RowResult) == 0
    assert alive(records.Row) <= 1  # the template's example, kept to recognise it
    assert alive(RowPlan) == 7


def test_validation_results_are_the_ones_row_results_makes(tmp_path):
    """Made again on each reading, they are the results `row_results` would have kept, in every
    status a validation gives: valid, valid with a warning, invalid, skipped."""
    result = onboard.validate(messy(tmp_path), where=["notes!=skip"])
    intake = result.intake
    kept = report.row_results(intake.sheet, intake.plan, None)
    assert list(result.rows) == kept
    assert [result.rows[i] for i in range(-len(kept), len(kept))] == kept + kept
    assert result.rows[1:4] == kept[1:4]
    assert {r.status for r in kept} == {"valid", "invalid", "skipped"}
    assert any(r.warnings for r in kept if r.status == "valid")
    assert result.errors["row"].tolist() == [r.row for r in kept if r.to_fix]


def test_sites_known_by_the_same_ref_keep_one_key(tmp_path):
    """`home` of every customer is one string in the plan, not one a site."""
    plan = onboard.validate(write_csv(tmp_path / "s.csv", [
        [str(1000 + n), "home", f"70705750000000{n:03d}{d}", "", "", "", "", ""]
        for n, d in ((1, 7), (2, 4), (3, 1))], HEADERS)).intake.plan
    keys = [location.site for location in plan.locations.values()]
    assert len(keys) == 3 and all(key is keys[0] for key in keys)
    assert plan.site_name(next(iter(plan.locations))) == "site 'home' of customer '1001' (row 2)"


ROWS = 100_000
BYTES_A_ROW = 1_100
"""Peak memory a validated row may add: at this pace a million rows stay under the goal's 1 GB.
Measured by this test at 100,000 rows: 1,305 bytes a row before the leaner plan and results, 934
after."""


PEAK = """
import sys
from onboard.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as status:
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
sys.exit(code)
"""
"""`onboard` as the command line runs it, then its own peak resident memory in KiB. Read inside the
process: the rusage of a child counts its parent's memory too, when the parent was the larger."""


def peak_bytes(arguments: list[str], cwd: Path) -> int:
    done = subprocess.run([sys.executable, "-c", PEAK, *arguments], cwd=cwd, capture_output=True, text=True,
                          check=True)
    return int(done.stdout.split()[-1]) * 1024


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="the peak is read from /proc")
def test_validating_a_large_sheet_adds_at_most_1100_bytes_a_row(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    source = importlib.import_module("generate").sheet(ROWS, "csv", tmp_path)
    tiny = tmp_path / "tiny.csv"
    with source.open(encoding="utf-8") as lines:
        tiny.write_text(next(lines) + next(lines), encoding="utf-8")
    validate = ["validate", "--out", str(tmp_path / "out")]
    baseline = peak_bytes([*validate, str(tiny)], tmp_path)
    peak = peak_bytes([*validate, str(source)], tmp_path)
    assert (peak - baseline) / ROWS < BYTES_A_ROW, f"{(peak - baseline) / ROWS:.0f} bytes a row"
