"""The benchmark of issue 10 (`make bench`): how close `onboard run` comes to the API's own pace.

Every figure is the tool as a user runs it: `onboard run` and `onboard validate` are subprocesses,
timed from start to exit, with their CPU and peak memory read from the kernel's accounting of that
one child (`os.wait4`). The emulator is served in its own process with the API's limits of the
issue (40 ms latency, 16 requests in flight, batches of 100), fresh for each run.

With one request per device, an import needs at least
    bound = (user batches + location batches + resources) x latency / in-flight limit
seconds; the ratio bound / measured seconds says how much of the API's pace the tool uses.

    python benchmarks/bench.py                      # everything (13 minutes; 9 with the sheets cached)
    python benchmarks/bench.py api sequential       # only these parts
    python benchmarks/bench.py --quick              # small sheets, a smoke run

Figures are printed as a Markdown table for the README and written to benchmarks/results.json.
Goals are reported beside the figures, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import platform
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import generate
import httpx

HERE = Path(__file__).resolve().parent
LATENCY_MS = 40
MAX_INFLIGHT = 16
MAX_BATCH = 100
ONBOARD = [sys.executable, "-m", "onboard"]
CREDENTIALS = {"SPARK_CLIENT_ID": "bench", "SPARK_CLIENT_SECRET": "bench"}
BOUND_GOALS = {6_000: 0.8, 20_000: 0.9}
SPEEDUP_GOAL = 35
PANDAS_GOAL = 4
MILLION_GOAL = {"seconds": 60, "peak_mb": 1000}

PANDAS_SCRIPT = """
import sys
import pandas
frame = pandas.read_excel(sys.argv[1], dtype=str, engine="openpyxl")
frame.to_excel(sys.argv[2], index=False, engine="openpyxl")
"""

FULL = {"api": [6_000, 20_000], "sequential": 500, "validate": 100_000, "memory": [100_000, 1_000_000], "cpu": 10_000}
QUICK = {"api": [600], "sequential": 60, "validate": 5_000, "memory": [10_000, 50_000], "cpu": 600}
PARTS = ("api", "sequential", "validate", "memory", "cpu")
CPU_GOAL_MS = 0.6
CPU_CONCURRENCY = (16, 64)


# measuring one command


@dataclass(frozen=True)
class Measured:
    """One child process: wall seconds, its own user+sys CPU seconds, its peak resident memory."""

    seconds: float
    cpu: float
    peak_mb: float
    code: int
    output: str


def _peak_mb(maxrss: int) -> float:
    """ru_maxrss is KiB on Linux, bytes on macOS; MB here are 10^6 bytes, as in '1 GB'."""
    return maxrss * (1 if sys.platform == "darwin" else 1024) / 1e6


def measure(command: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> Measured:
    """Run one command and account for it alone: wait4 gives this child's rusage, not all children's."""
    with tempfile.TemporaryFile("w+") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        return Measured(seconds, usage.ru_utime + usage.ru_stime, _peak_mb(usage.ru_maxrss), process.returncode,
                        output.read())


def checked(measured: Measured, what: str) -> Measured:
    if measured.code != 0:
        raise SystemExit(f"bench: {what} exited {measured.code}:\n{measured.output[-3000:]}")
    return measured


def client_env(folder: Path) -> dict[str, str]:
    """Credentials for the emulator, and a state folder of the run's own, never the user's."""
    return {**os.environ, **CREDENTIALS, "XDG_STATE_HOME": str(folder)}


# the emulator, served in its own process


@dataclass
class Emulator:
    base_url: str
    token_url: str
    cpu: float = 0.0
    """User+sys CPU seconds the emulator used, known once it has stopped."""
    answered: int | None = None
    held_ms: float | None = None
    """How long it held its answers on average, from a request's arrival (the latency asked is a mean)."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served(folder: Path) -> Iterator[Emulator]:
    """`onboard emulator` with the issue's limits and a fresh state file; its URLs as it prints them."""
    log = folder / "emulator.log"
    command = [*ONBOARD, "emulator", "--port", str(_free_port()), "--latency-ms", str(LATENCY_MS),
               "--max-inflight", str(MAX_INFLIGHT), "--max-batch", str(MAX_BATCH),
               "--state", str(folder / "emulator.sqlite")]
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=folder, env=client_env(folder), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"emulator at (\S+)\n\s+token endpoint: (\S+)", log.read_text())):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench: the emulator did not start:\n{log.read_text()}")
            time.sleep(0.05)
        emulator = Emulator(found[1], found[2])
        yield emulator
    finally:
        usage = _stop(process)
    emulator.cpu = usage.ru_utime + usage.ru_stime
    if stopped := re.search(r"answered (\d+) API requests", log.read_text()):
        emulator.answered = int(stopped[1])
    if held := re.search(r"answers held ([0-9.]+) ms on average", log.read_text()):
        emulator.held_ms = float(held[1])


def _stop(process: subprocess.Popen) -> resource.struct_rusage:
    """Ctrl-C, as a user stops it; killed if it has not stopped within 10 s. Its rusage, once reaped."""
    process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    while True:
        pid, _, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = 0
            return usage
        if time.monotonic() > deadline:
            process.kill()
            deadline = math.inf
        time.sleep(0.05)


# the parts


def bound_seconds(users: int, locations: int, resources: int) -> float:
    requests = math.ceil(users / MAX_BATCH) + math.ceil(locations / MAX_BATCH) + resources
    return requests * LATENCY_MS / 1000 / MAX_INFLIGHT


def registered(summary: dict, kind: str) -> int:
    counts = summary["entities"][kind]
    return counts.get("created", 0) + counts.get("exists", 0)


def api_run(rows: int, suffix: str, cache: Path) -> dict:
    """`onboard run` of the sheet of `rows` rows against a fresh emulator."""
    source = generate.sheet(rows, suffix, cache)
    with tempfile.TemporaryDirectory(prefix="bench-api-") as folder:
        work = Path(folder)
        out = work / "out"
        with served(work) as emulator:
            measured = checked(measure([*ONBOARD, "run", str(source), "--out", str(out), "--no-progress",
                                        "--base-url", emulator.base_url, "--token-url", emulator.token_url],
                                       work, client_env(work)), f"onboard run of {source.name}")
        summary = json.loads((out / f"{source.stem}.summary.json").read_text())
    users, locations, resources = (registered(summary, kind) for kind in ("users", "locations", "resources"))
    bound = bound_seconds(users, locations, resources)
    requests = summary["requests"]
    return {
        "rows": rows, "sheet": source.name, "users": users, "locations": locations, "resources": resources,
        "seconds": round(measured.seconds, 2), "run_seconds_in_summary": summary["seconds"],
        "rows_per_second": round(rows / measured.seconds, 1), "requests": requests,
        "requests_per_second": round(requests / measured.seconds, 1),
        "client_cpu_seconds": round(measured.cpu, 2),
        "client_cpu_ms_per_request": round(1000 * measured.cpu / requests, 3),
        "client_peak_mb": round(measured.peak_mb), "emulator_cpu_seconds": round(emulator.cpu, 2),
        "emulator_answered": emulator.answered, "emulator_held_ms": emulator.held_ms,
        "bound_seconds": round(bound, 2), "ratio_to_bound": round(bound / measured.seconds, 3),
        "goal_ratio_to_bound": BOUND_GOALS.get(rows),
        "throttled": summary["throttled"], "retries": summary["retries"], "statuses": summary["statuses"],
    }


def postman_requests(row: list) -> Iterator[tuple[str, dict]]:
    """What one iteration of a Postman collection run over the CSV sends for a row: the user, the
    site and the device, each on its own, whether or not an earlier row already sent them."""
    cells = dict(zip(generate.HEADERS, row, strict=True))
    user = cells["customer_id"]
    location = f"{user}-{cells['location_ref']}"
    yield "/users", {"userId": user}
    site = {"locationId": location, "meterPointIds": cells["meter_point_ids"].split(";")}
    if cells["location_type"]:
        site["locationType"] = cells["location_type"]
    if cells["latitude"] is not None:
        site["coordinates"] = {"latitude": cells["latitude"], "longitude": cells["longitude"]}
    yield f"/users/{user}/locations", site
    kind = cells["resource_type"]
    if kind == "Vehicle":
        yield f"/users/{user}/vehicles", {"resourceId": cells["resource_ref"], "resourceType": kind}
    elif kind:
        yield f"/users/{user}/locations/{location}/resources", {"resourceId": cells["resource_ref"],
                                                               "resourceType": kind}


def sequential_run(rows: int) -> dict:
    """The per-row sequential client on the first `rows` rows: one request after another, as a
    Postman runner over a CSV sends them. An entity an earlier row sent is answered 400 or 409
    ('already exists'), which such a runner logs and passes over."""
    chosen = list(itertools.islice(generate.rows(), rows))
    expected = (len({r[0] for r in chosen}) + len({(r[0], r[2]) for r in chosen})
                + sum(1 for r in chosen if r[7]))
    with tempfile.TemporaryDirectory(prefix="bench-sequential-") as folder, served(Path(folder)) as emulator, \
            httpx.Client(timeout=60) as http:
        started = time.perf_counter()
        token = http.post(emulator.token_url, data={"grant_type": "client_credentials",
                                                    "client_id": CREDENTIALS["SPARK_CLIENT_ID"],
                                                    "client_secret": CREDENTIALS["SPARK_CLIENT_SECRET"]})
        http.headers["authorization"] = f"Bearer {token.raise_for_status().json()['access_token']}"
        statuses: Counter[int] = Counter()
        for row in chosen:
            for path, body in postman_requests(row):
                statuses[http.post(emulator.base_url + path, json=body).status_code] += 1
        seconds = time.perf_counter() - started
    if statuses[201] != expected:
        raise SystemExit(f"bench: the sequential client created {statuses[201]} entities, not {expected}: "
                         f"answers {dict(statuses)}")
    requests = statuses.total()
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds, 2),
            "requests": requests, "requests_per_second": round(requests / seconds, 1),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


def validate_run(source: Path) -> dict:
    """`onboard validate` of one sheet, outputs written."""
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as folder:
        work = Path(folder)
        measured = checked(measure([*ONBOARD, "validate", str(source), "--out", str(work)], work, client_env(work)),
                           f"onboard validate of {source.name}")
        summary = json.loads((work / f"{source.stem}.validation.json").read_text())
    return {"sheet": source.name, "rows": summary["rows"], "valid": summary["status"].get("valid", 0),
            "seconds": round(measured.seconds, 2), "cpu_seconds": round(measured.cpu, 2),
            "peak_mb": round(measured.peak_mb)}


def pandas_run(source: Path) -> dict:
    """The script a data person would write instead: read every cell as text, write the sheet back."""
    with tempfile.TemporaryDirectory(prefix="bench-pandas-") as folder:
        work = Path(folder)
        measured = checked(measure([sys.executable, "-c", PANDAS_SCRIPT, str(source), str(work / "out.xlsx")], work),
                           "the pandas script")
    return {"sheet": source.name, "seconds": round(measured.seconds, 2), "cpu_seconds": round(measured.cpu, 2),
            "peak_mb": round(measured.peak_mb)}


# the report


@dataclass
class Report:
    lines: list[tuple[str, str, str]] = field(default_factory=list)
    figures: dict[str, object] = field(default_factory=dict)

    def add(self, what: str, figure: str, goal: str = "") -> None:
        self.lines.append((what, figure, goal))
        print(f"  {what}: {figure}" + (f"  [goal {goal}]" if goal else ""), flush=True)

    def table(self) -> str:
        lines = ["| what | measured | goal |", "|---|---|---|"]
        lines += [f"| {what} | {figure} | {goal} |" for what, figure, goal in self.lines]
        return "\n".join(lines)


def _verdict(ratio: float, goal: float | None, unit: str = "") -> str:
    if goal is None:
        return ""
    return f"≥ {goal}{unit} ({'met' if ratio >= goal else 'not met'})"


def run_api(report: Report, sizes: list[int], suffix: str, cache: Path) -> list[dict]:
    runs = []
    for rows in sizes:
        run = api_run(rows, suffix, cache)
        runs.append(run)
        report.add(f"`onboard run`, {rows:,} {suffix} rows ({run['users']:,} users, {run['locations']:,} locations, "
                   f"{run['resources']:,} resources)",
                   f"{run['seconds']} s: {run['rows_per_second']:,} rows/s, {run['requests']:,} requests, "
                   f"{run['requests_per_second']:,} requests/s, {run['client_cpu_ms_per_request']} ms client CPU "
                   f"per request, {run['client_peak_mb']} MB peak; emulator CPU {run['emulator_cpu_seconds']} s, its "
                   f"answers held {run['emulator_held_ms']} ms on average")
        report.add(f"ratio to the bound, {rows:,} rows (bound {run['bound_seconds']} s)",
                   f"{run['ratio_to_bound']}", _verdict(run["ratio_to_bound"], run["goal_ratio_to_bound"]))
    return runs


def run_sequential(report: Report, rows: int) -> dict:
    run = sequential_run(rows)
    report.add(f"per-row sequential client, first {rows:,} rows (3 requests a row, one after another)",
               f"{run['seconds']} s: {run['rows_per_second']} rows/s, {run['requests']:,} requests, "
               f"{run['requests_per_second']} requests/s")
    return run


def report_speedups(report: Report, runs: list[dict], sequential: dict) -> None:
    for run in runs:
        speedup = run["rows_per_second"] / sequential["rows_per_second"]
        run["sequential_seconds_extrapolated"] = round(run["rows"] / sequential["rows_per_second"], 1)
        run["speedup_over_sequential"] = round(speedup, 1)
        report.add(f"speed-up over the sequential client, {run['rows']:,} rows (sequential extrapolated from its "
                   f"first {sequential['rows']:,} rows: {run['sequential_seconds_extrapolated']:,} s)",
                   f"{speedup:.1f}×", _verdict(speedup, SPEEDUP_GOAL, "×"))


def run_validate(report: Report, rows: int, cache: Path) -> dict:
    source = generate.sheet(rows, "xlsx", cache)
    ours, theirs = validate_run(source), pandas_run(source)
    ratio = theirs["seconds"] / ours["seconds"]
    report.add(f"`onboard validate`, {rows:,} xlsx rows, outputs written",
               f"{ours['seconds']} s, {ours['peak_mb']} MB peak")
    report.add(f'`pandas.read_excel(dtype=str, engine="openpyxl")` + `to_excel`, same {rows:,} rows',
               f"{theirs['seconds']} s, {theirs['peak_mb']} MB peak")
    report.add("`onboard validate` faster than pandas by", f"{ratio:.2f}×", _verdict(ratio, PANDAS_GOAL, "×"))
    return {"onboard": ours, "pandas": theirs, "ratio": round(ratio, 2), "goal_ratio": PANDAS_GOAL}


def run_memory(report: Report, sizes: list[int], cache: Path) -> list[dict]:
    runs = []
    for rows in sizes:
        run = validate_run(generate.sheet(rows, "csv", cache))
        runs.append(run)
        goal = ""
        if rows == 1_000_000:
            met = run["seconds"] < MILLION_GOAL["seconds"] and run["peak_mb"] < MILLION_GOAL["peak_mb"]
            goal = f"< {MILLION_GOAL['seconds']} s and < 1 GB ({'met' if met else 'not met'})"
        report.add(f"`onboard validate`, {rows:,} csv rows, outputs written", f"{run['seconds']} s, "
                   f"{run['peak_mb']:,} MB peak", goal)
    return runs


def _client_cpu(*arguments: str) -> list[dict]:
    done = subprocess.run([sys.executable, str(HERE / "client_cpu.py"), *arguments], capture_output=True, text=True,
                          env={**os.environ, **CREDENTIALS})
    if done.returncode != 0:
        raise SystemExit(f"bench: client_cpu.py {' '.join(arguments)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def run_cpu(report: Report, rows: int) -> dict:
    """`benchmarks/client_cpu.py`: the whole run at 16 and 64 in flight (`--max-inflight 64`), then
    what the layers under it cost for the same request, in the same sitting."""
    wide = [str(c) for c in CPU_CONCURRENCY]
    runs = _client_cpu("--rows", str(rows), "--concurrency", *wide)
    floor = _client_cpu("--floor", "--requests", str(max(300, min(3000, rows // 3))), "--concurrency", *wide)
    figures = {run["concurrency"]: run["client_cpu_ms_per_request"] for run in runs}
    met = all(ms <= CPU_GOAL_MS for ms in figures.values())
    report.add(f"client CPU per request, `onboard run` of {rows:,} csv devices ({runs[0]['requests']:,} requests), "
               "all in (start-up, reading, journal, outputs)",
               ", ".join(f"{ms} ms at {c} in flight ({run['requests_per_second']:,} requests/s)"
                         for (c, ms), run in zip(figures.items(), runs, strict=True)),
               f"≤ {CPU_GOAL_MS} ms at 16 and 64 ({'met' if met else 'not met'})")
    for layer in dict.fromkeys(f["layer"] for f in floor):
        report.add(f"the same request, {layer}",
                   ", ".join(f"{f['client_cpu_ms_per_request']} ms at {f['concurrency']} in flight"
                             for f in floor if f["layer"] == layer))
    return {"runs": runs, "floor": floor, "goal_ms": CPU_GOAL_MS}


def machine() -> dict[str, object]:
    return {"machine": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
            "system": platform.system()}


def previous(path: Path, here: dict[str, object]) -> dict[str, object]:
    """The parts an earlier run wrote on this machine, so re-running one part keeps the others."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return earlier.get("parts", {}) if earlier.get("machine") == here else {}


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", metavar="PART",
                        help=f"which parts to run: {', '.join(PARTS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sheets: a smoke run, not figures")
    parser.add_argument("--api-rows", type=_sizes, metavar="N,N", help="sheet sizes for `onboard run`")
    parser.add_argument("--api-format", choices=("xlsx", "csv"), default="xlsx", help="sheet format for runs")
    parser.add_argument("--sequential-rows", type=int, metavar="N", help="rows the sequential client sends")
    parser.add_argument("--validate-rows", type=int, metavar="N", help="xlsx rows for validate and pandas")
    parser.add_argument("--memory-rows", type=_sizes, metavar="N,N", help="csv sizes for validate's memory")
    parser.add_argument("--cpu-rows", type=int, metavar="N", help="csv devices for client CPU at 16 and 64 in flight")
    parser.add_argument("--cache", type=Path, default=HERE / ".cache", help="where generated sheets are kept")
    parser.add_argument("--results", type=Path, help="JSON file to write (default: benchmarks/results.json; "
                        "with --quick, results-quick.json in the cache)")
    args = parser.parse_args(argv)
    if unknown := [part for part in args.parts if part not in PARTS]:
        parser.error(f"unknown part {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    sizes = QUICK if args.quick else FULL
    for part in PARTS:
        if getattr(args, f"{part}_rows") is None:
            setattr(args, f"{part}_rows", sizes[part])
    args.parts = args.parts or list(PARTS)
    if args.results is None:
        args.results = args.cache / "results-quick.json" if args.quick else HERE / "results.json"
    return args


def _sizes(text: str) -> list[int]:
    return [int(n) for n in text.split(",")]


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments(argv)
    here = machine()
    parts = previous(args.results, here)
    settings = {"latency_ms": LATENCY_MS, "max_inflight": MAX_INFLIGHT, "max_batch": MAX_BATCH, "seed": generate.SEED}
    print(f"onboard benchmark; {here['machine']}, {here['cores']} cores, Python {here['python']}; load average "
          f"{_load()}; emulator at {LATENCY_MS} ms latency, {MAX_INFLIGHT} in flight, batches of {MAX_BATCH}",
          flush=True)
    report = Report()

    def save() -> None:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps({"machine": here, "settings": settings, "parts": parts}, indent=2,
                                           ensure_ascii=False) + "\n")

    def measured(part: str, work: Callable[[], Any]) -> Any:
        """One part's figures, dated and with the machine's load as it started (the machine may be
        shared), saved at once so a later part that fails loses nothing."""
        when = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        parts[part] = {"date": when, "load_average_at_start": _load(), "quick": args.quick, "figures": work()}
        save()
        return parts[part]["figures"]

    runs = measured("api", lambda: run_api(report, args.api_rows, args.api_format, args.cache)) \
        if "api" in args.parts else []
    if "sequential" in args.parts:
        sequential = measured("sequential", lambda: run_sequential(report, args.sequential_rows))
        report_speedups(report, runs, sequential)
        save()
    if "validate" in args.parts:
        measured("validate", lambda: run_validate(report, args.validate_rows, args.cache))
    if "memory" in args.parts:
        measured("memory", lambda: run_memory(report, args.memory_rows, args.cache))
    if "cpu" in args.parts:
        measured("cpu", lambda: run_cpu(report, args.cpu_rows))
    print(f"\n{report.table()}\n\nfigures written to {args.results}")


if __name__ == "__main__":
    main()
