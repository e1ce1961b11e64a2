"""The emulator's own CPU per request, without a server or a socket: the ASGI app called in-process
with the requests `onboard run` sends for the benchmark's sheet (user batches of 100, location
batches of 100, one request per resource), so that what the app costs shows apart from uvicorn's
HTTP parsing and the kernel's loopback. `make bench` reports the served emulator, all in.

    python benchmarks/emulator_cpu.py                # 3,000 users, locations and resources
    python benchmarks/emulator_cpu.py --entities 6000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
from pathlib import Path

from onboard.emulator import EmulatorSettings, create_app

API = "/energy-coordination/v1"
MPID = "707057500012345671"


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def call(app, method: str, path: str, body: object, token: str) -> int:
    """One request as uvicorn hands it to the app; the answer's status."""
    raw = json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"emulator"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(raw)).encode()), (b"authorization", f"Bearer {token}".encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    messages = [{"type": "http.request", "body": raw, "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client never hangs up
        raise AssertionError

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"]


async def measure(entities: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(EmulatorSettings(state=Path(folder) / "emulator.sqlite"))
        token = app.tokens.issue("bench", "bench")
        users = [str(100_001 + i) for i in range(entities)]
        batches = [users[i:i + 100] for i in range(0, entities, 100)]
        spent: dict[str, float] = {}

        async def phase(name: str, requests: list[tuple[str, object]]) -> None:
            started = cpu()
            for path, body in requests:
                status = await call(app, "POST", API + path, body, token)
                assert status == 201, (path, status)
            spent[name] = (cpu() - started) / len(requests)

        await phase("user batch of 100", [("/users/batch", {"users": [{"userId": u} for u in batch]})
                                          for batch in batches])
        await phase("location batch of 100", [("/users/locations/batch", {"locations": [
            {"userId": u, "locationId": f"{u}-home", "locationType": "Residential", "meterPointIds": [MPID],
             "coordinates": {"latitude": 60.1, "longitude": 10.2}} for u in batch]}) for batch in batches])
        await phase("resource", [(f"/users/{u}/locations/{u}-home/resources",
                                  {"resourceId": f"{u}-r1", "resourceType": "Charger"}) for u in users])
        return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=3000, help="users, locations and resources (each)")
    args = parser.parse_args()
    for name, seconds in asyncio.run(measure(args.entities)).items():
        print(f"{name}: {seconds * 1e6:,.0f} µs CPU per request")


if __name__ == "__main__":
    main()
