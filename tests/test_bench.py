"""The benchmark of issue 10 (`benchmarks/bench.py`): its sheets have the reference shape, and the
harness runs end to end on tiny sheets, so it cannot rot between the times someone measures."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from onboard import plan as planning
from onboard import records
from onboard import sheet as sheets

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def generate(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("generate")


def test_the_6000_row_sheet_has_the_shape_of_the_issues_reference_sheet(generate, tmp_path):
    """Issue 10's reference: 4,000 customers, 6,017 rows: 40 user batches, 46 location batches,
    5,118 resources. The benchmark's bound is only meaningful on sheets of that shape."""
    plan = planning.build(records.check(sheets.read(generate.sheet(6_000, "csv", tmp_path))))
    assert all(row.valid and not row.warnings for row in plan.rows)
    requests = plan.requests(100)
    assert 38 <= requests["users"] <= 42
    assert 44 <= requests["locations"] <= 48
    assert math.isclose(requests["resources"], 5_118, rel_tol=0.05)
    vehicles = sum(1 for r in plan.resources.values() if r.is_vehicle)
    assert 0.04 < vehicles / len(plan.resources) < 0.12
    assert 3 in {len([r for r in plan.locations.values() if r.user_id == u]) for u in plan.users}


def test_sheets_are_the_same_for_the_same_seed_and_a_smaller_one_is_a_prefix(generate, tmp_path):
    small = generate.sheet(200, "csv", tmp_path / "a").read_text().splitlines()
    again = generate.sheet(200, "csv", tmp_path / "b").read_text().splitlines()
    large = generate.sheet(600, "csv", tmp_path / "a").read_text().splitlines()
    assert small == again
    assert large[:201] == small
    assert generate.sheet(200, "csv", tmp_path / "c", seed=11).read_text().splitlines() != small


def test_a_generated_workbook_plans_exactly_like_the_csv_of_the_same_rows(generate, tmp_path):
    csv, xlsx = (planning.build(records.check(sheets.read(generate.sheet(300, suffix, tmp_path))))
                 for suffix in ("csv", "xlsx"))
    assert all(row.valid and not row.warnings for row in xlsx.rows)
    assert (xlsx.users, xlsx.locations, xlsx.resources) == (csv.users, csv.locations, csv.resources)
    assert any(location.coordinates for location in xlsx.locations.values())


@pytest.mark.slow
def test_the_harness_runs_every_part_on_tiny_sheets(tmp_path):
    results = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench.py"), "--api-rows", "200", "--sequential-rows", "20",
         "--validate-rows", "200", "--memory-rows", "200,300", "--cpu-rows", "200", "--cache", str(tmp_path / "cache"),
         "--results", str(results)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| what | measured | goal |" in done.stdout
    parts = json.loads(results.read_text())["parts"]
    assert set(parts) == {"api", "sequential", "validate", "memory", "cpu"}

    (run,) = parts["api"]["figures"]
    assert run["rows"] == 200 and run["users"] > 100 and run["resources"] > 100
    assert run["bound_seconds"] == round((math.ceil(run["users"] / 100) + math.ceil(run["locations"] / 100)
                                          + run["resources"]) * 0.04 / 16, 2)
    assert 0 < run["ratio_to_bound"] < 1.2
    assert run["requests"] >= run["resources"] and run["client_cpu_ms_per_request"] > 0
    assert run["emulator_answered"] == run["requests"]
    assert 30 < run["emulator_held_ms"] < 60
    assert run["throttled"] == 0 and run["client_peak_mb"] > 10 and run["speedup_over_sequential"] > 1

    sequential = parts["sequential"]["figures"]
    assert sequential["rows"] == 20 and sequential["requests"] >= 40
    assert set(sequential["statuses"]) <= {"201", "400", "409"}

    validate = parts["validate"]["figures"]
    assert validate["onboard"]["valid"] == 200 and validate["pandas"]["seconds"] > 0
    assert [m["valid"] for m in parts["memory"]["figures"]] == [200, 300]

    cpu = parts["cpu"]["figures"]
    assert [r["concurrency"] for r in cpu["runs"]] == [16, 64] and all(r["requests"] >= 200 for r in cpu["runs"])
    assert {f["layer"] for f in cpu["floor"]} == {"aiohttp alone", "httpx over onboard's aiohttp transport",
                                                  "onboard's Api.call"}
    assert all(f["client_cpu_ms_per_request"] > 0 for f in cpu["floor"])

    again = subprocess.run([sys.executable, str(BENCHMARKS / "bench.py"), "memory", "--memory-rows", "200",
                            "--cache", str(tmp_path / "cache"), "--results", str(results)],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    kept = json.loads(results.read_text())["parts"]
    assert kept["api"] == parts["api"] and [m["rows"] for m in kept["memory"]["figures"]] == [200]
