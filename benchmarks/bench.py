"""Benchmarks: `make bench`. Prints a table for the README and writes benchmarks/results.json.

Figures are wall-clock seconds on whatever machine runs this; the README names the machine the
committed figures come from. The emulator runs as its own process (uvicorn on loopback) where the
client's CPU per request is measured, so the two do not share a CPU budget in the measurement.
"""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from openpyxl import Workbook, load_workbook

from onboard import plan as planning
from onboard import records
from onboard import sheet as sheets

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
API = "/energy-coordination/v1"


def big_xlsx(rows: int = 100_000) -> Path:
    """100k rows x 10 columns, as a partner's export: ids as text, a few numbers and notes."""
    path = CACHE / f"customers-{rows}-v3.xlsx"
    if path.exists():
        return path
    CACHE.mkdir(exist_ok=True)
    rng = random.Random(1)
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Customers")
    sheet.append(["customer_id", "name", "location_ref", "meter_point_ids", "latitude", "longitude",
                  "resource_ref", "resource_type", "kwh_per_year", "notes"])
    kinds = ["HotWaterTank", "Charger", "HVAC", "SolarInverter", "Generic"]
    for n in range(rows):
        body = "70705750" + f"{n // 2:09d}"
        total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
        mpid = body + str((10 - total % 10) % 10)
        site = random.Random(n // 2)
        sheet.append([str(200000 + n // 2), f"Customer {n // 2}", "home", mpid, round(59 + site.random(), 5),
                      round(10 + site.random(), 5), f"SN-{n}", kinds[n % 5], rng.randint(1000, 30000), "note"])
    workbook.save(path)
    return path


def timed(work) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(state: Path, *knobs: str) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "onboard", "emulator", "--port", str(port), "--state",
                             str(state), *knobs], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            httpx.post(f"{base}/connect/token", data={"grant_type": "client_credentials", "client_id": "b",
                                                      "client_secret": "b"}, timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.02)
    return proc, base, time.perf_counter() - started


def run_cli(source: Path, out: Path, base: str, *extra: str) -> dict:
    """One `onboard run` against a served emulator; wall time, the client's CPU, and its summary."""
    env = {**os.environ, "SPARK_CLIENT_ID": "b", "SPARK_CLIENT_SECRET": "b"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "onboard", "run", str(source), "--out", str(out), "--no-progress",
                           "--base-url", base + API, "--token-url", base + "/connect/token", *extra],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    summary = json.loads((out / f"{source.stem}.summary.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": round(wall, 2), "requests": summary["requests"],
            "requests_per_second": round(summary["requests"] / wall, 1),
            "client_cpu_ms_per_request": round(1000 * cpu / summary["requests"], 2),
            "throttled": summary["throttled"], "retries": summary["retries"]}


def sample(rows: int, folder: Path) -> Path:
    """A CSV of `rows` devices, two per customer and site."""
    path = folder / f"bench-{rows}.csv"
    lines = ["customer_id,location_ref,meter_point_ids,resource_ref,resource_type"]
    for n in range(rows):
        body = "70705750" + f"{n // 2:09d}"
        total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
        lines.append(f"{300000 + n // 2},home,{body}{(10 - total % 10) % 10},SN-{n},Charger")
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    figures: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    book = big_xlsx()
    seconds, sheet = timed(lambda: sheets.read(book))
    figures["read 100k x 10 xlsx (onboard: python-calamine, typed cells)"] = round(seconds, 2)
    seconds, _ = timed(lambda: sum(1 for _ in load_workbook(book, read_only=True).worksheets[0].iter_rows(
        values_only=True)))
    figures["read 100k x 10 xlsx (openpyxl read-only, for comparison)"] = round(seconds, 2)
    seconds, plan = timed(lambda: planning.build(records.check(sheet)))
    figures["validate and plan 100k rows"] = round(seconds, 2)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        env = {**os.environ, "XDG_STATE_HOME": str(work)}
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "onboard", "validate", str(book), "--out", str(work)],
                       capture_output=True, env=env)
        figures["onboard validate 100k rows, outputs written (whole command)"] = round(
            time.perf_counter() - started, 2)

        proc, base, up = serve(work / "e.sqlite")
        figures["emulator served and answering (seconds from start)"] = round(up, 2)
        source = sample(10_000, work)
        figures["run 10k rows: 5k users, 5k locations, 10k resources, nothing exists"] = run_cli(
            source, work / "first", base)
        figures["run the same 10k rows again: everything exists"] = run_cli(source, work / "second", base)
        proc.terminate()
        proc.wait()

        proc, base, _ = serve(work / "limited.sqlite", "--rate", "200")
        limited = run_cli(sample(2_000, work), work / "limited", base)
        limited["share of the 200/s limit used"] = round(limited["requests_per_second"] / 200, 2)
        figures["run 2k rows against --rate 200 (requests/s limit)"] = limited
        proc.terminate()
        proc.wait()

    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    (HERE / "results.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
