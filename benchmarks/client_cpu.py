"""Client CPU per request of `onboard run`, all in, against the emulator served in its own process.

    .venv/bin/python benchmarks/client_cpu.py [--rows 10000] [--concurrency 16 64] [--latency-ms 40]
    .venv/bin/python benchmarks/client_cpu.py --floor [--requests 3000] [--concurrency 16 64]

For each concurrency: a fresh emulator (`--latency-ms L --max-inflight 64`), one `onboard run` of a
CSV of ROWS devices (two per customer and site), and the run's own CPU (user + sys of the child
process, start-up and output files included) divided by the requests its summary counts.

`--floor` measures, in this process, what the layers under the run cost for the same request
(`POST .../resources`, one device): aiohttp alone; httpx's `AsyncClient` over onboard's aiohttp
transport; and onboard's `Api.call` (the same, with its token flow, throttle, retries and answer
check). CPU of this process over REQUESTS requests, CONCURRENCY at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

API = "/energy-coordination/v1"


def sample(rows: int, folder: Path) -> Path:
    path = folder / f"cpu-{rows}.csv"
    lines = ["customer_id,location_ref,meter_point_ids,resource_ref,resource_type"]
    for n in range(rows):
        body = "70705750" + f"{n // 2:09d}"
        total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
        lines.append(f"{300000 + n // 2},home,{body}{(10 - total % 10) % 10},SN-{n},Charger")
    path.write_text("\n".join(lines) + "\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(state: Path, latency_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "onboard", "emulator", "--port", str(port), "--state", str(state),
                             "--latency-ms", str(latency_ms), "--max-inflight", "64"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    form = b"grant_type=client_credentials&client_id=b&client_secret=b"
    for _ in range(500):
        try:
            urllib.request.urlopen(f"{base}/connect/token", data=form, timeout=1).read()
            return proc, base
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the emulator did not start")


def measure(source: Path, out: Path, base: str, concurrency: int) -> dict:
    env = {**os.environ, "SPARK_CLIENT_ID": "b", "SPARK_CLIENT_SECRET": "b"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "onboard", "run", str(source), "--out", str(out), "--no-progress",
                           "--base-url", base + API, "--token-url", base + "/connect/token",
                           "--concurrency", str(concurrency)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    summary = json.loads((out / f"{source.stem}.summary.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"concurrency": concurrency, "requests": summary["requests"], "seconds": round(wall, 2),
            "requests_per_second": round(summary["requests"] / summary["seconds"], 1),
            "client_cpu_s": round(cpu, 2), "client_cpu_ms_per_request": round(1000 * cpu / summary["requests"], 3),
            "throttled": summary["throttled"]}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _floor(base: str, concurrency: int, requests: int) -> list[dict]:
    import asyncio

    import aiohttp
    import httpx
    from pydantic import SecretStr

    from onboard import api
    from onboard.settings import Target
    from onboard.transport import AiohttpTransport

    target = Target(env="custom", base_url=base + API, token_url=base + "/connect/token", client_id="b",
                    client_secret=SecretStr("b"))
    async with api.connect(target, concurrency) as client:
        await client.sign_in()
        await client.call("PostUsers", json={"users": [{"userId": f"u{n}"} for n in range(100)]})
        await client.call("PostLocations", json={"locations": [
            {"userId": f"u{n}", "locationId": f"l{n}", "locationType": "Residential",
             "coordinates": {"latitude": 60.0, "longitude": 10.0}} for n in range(100)]})
        token = client.auth._token
        slots = asyncio.Semaphore(concurrency)

        def path(n: int) -> str:
            return f"{base}{API}/users/u{n % 100}/locations/l{n % 100}/resources"

        async def by_aiohttp(session: aiohttp.ClientSession, layer: str, n: int) -> int:
            async with slots, session.post(path(n), json={"resourceId": f"{layer}{n}", "resourceType": "Charger"},
                                           headers={"Authorization": f"Bearer {token}"}) as answer:
                await answer.read()
                return answer.status

        async def by_httpx(session: httpx.AsyncClient, layer: str, n: int) -> int:
            async with slots:
                answer = await session.post(path(n), json={"resourceId": f"{layer}{n}", "resourceType": "Charger"},
                                            headers={"Authorization": f"Bearer {token}"})
                return answer.status_code

        async def by_api(_: object, layer: str, n: int) -> int:
            async with slots:
                return (await client.call("PostLocationBoundResource", json={"resourceId": f"{layer}{n}",
                        "resourceType": "Charger"}, userId=f"u{n % 100}", locationId=f"l{n % 100}")).status

        figures = []
        session_aiohttp = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
        session_httpx = httpx.AsyncClient(transport=AiohttpTransport(concurrency))
        for layer, one, session in (("aiohttp alone", by_aiohttp, session_aiohttp),
                                    ("httpx over onboard's aiohttp transport", by_httpx, session_httpx),
                                    ("onboard's Api.call", by_api, None)):
            tag = f"{concurrency}-{len(figures)}-"
            await one(session, tag + "warm", 0)
            started, wall = _cpu(), time.perf_counter()
            statuses = await asyncio.gather(*(one(session, tag, n) for n in range(requests)))
            cpu, wall = _cpu() - started, time.perf_counter() - wall
            if set(statuses) != {201}:
                raise SystemExit(f"{layer}: answers {sorted(set(statuses))}, not all 201")
            figures.append({"layer": layer, "concurrency": concurrency, "requests": requests,
                            "client_cpu_ms_per_request": round(1000 * cpu / requests, 3),
                            "requests_per_second": round(requests / wall, 1)})
        await session_aiohttp.close()
        await session_httpx.aclose()
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--latency-ms", type=float, default=40)
    parser.add_argument("--floor", action="store_true", help="what the layers under the run cost, in this process")
    parser.add_argument("--requests", type=int, default=3000, help="requests per layer, with --floor")
    args = parser.parse_args()
    if args.floor:
        import asyncio

        with tempfile.TemporaryDirectory() as folder:
            for concurrency in args.concurrency:
                proc, base = serve(Path(folder) / f"f{concurrency}.sqlite", args.latency_ms)
                try:
                    for figure in asyncio.run(_floor(base, concurrency, args.requests)):
                        print(json.dumps(figure), flush=True)
                finally:
                    proc.terminate()
                    proc.wait()
        return
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        source = sample(args.rows, work)
        for concurrency in args.concurrency:
            proc, base = serve(work / f"e{concurrency}.sqlite", args.latency_ms)
            try:
                print(json.dumps(measure(source, work / f"out{concurrency}", base, concurrency)), flush=True)
            finally:
                proc.terminate()
                proc.wait()


if __name__ == "__main__":
    main()
