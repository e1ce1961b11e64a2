"""The stages overlap: a location batch leaves as soon as its users are registered, a device as soon
as its site is, writes go on while discovery still reads, and the requests in flight stay at the
limit while work is ready. Measured on the wire: every API request's start and end, as a transport
between the tool and the emulator sees them."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest

from helpers import HEADERS, meter_point_id, write_csv
from onboard import api, contract, records, settings
from onboard import plan as planning
from onboard import sheet as sheets
from onboard.emulator import EmulatorSettings, Store, create_app
from onboard.emulator.store import Location as StoredLocation
from onboard.emulator.store import Resource as StoredResource
from onboard.journal import Journal
from onboard.pipeline import KINDS, BatchSize, Ledger, Outcome, Run

pytestmark = pytest.mark.anyio

LATENCY_MS = 100
SLOW_MS = 200
LIMIT = 4


@dataclass(frozen=True, eq=False)
class Span:
    started: float
    ended: float
    method: str
    path: str
    body: dict | None
    status: int

    @property
    def kind(self) -> str:
        if self.method == "GET":
            return "read"
        if self.path.endswith("/users/batch"):
            return "user"
        if self.path.endswith("/locations/batch"):
            return "location"
        return "resource"


class Timed(httpx.AsyncBaseTransport):
    """Passes traffic through, noting when each API request left and when its answer was read."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.spans: list[Span] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.startswith(contract.base_path()):
            return await self.inner.handle_async_request(request)
        body = json.loads(await request.aread() or b"null")
        started = time.perf_counter()
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self.spans.append(Span(started, time.perf_counter(), request.method, request.url.path, body,
                               response.status_code))
        return response


def sheet(tmp_path, customers: int, devices: int = 1, every: int = 1):
    """Customers of one site each (with a meter point), `devices` devices at every `every`th site
    (none at the others), and a car for every third customer."""
    rows = []
    for n in range(customers):
        site = [f"c{n}", "home", "", meter_point_id(n), "", ""]
        kinds = ("Charger", "HVAC") * devices if n % every == 0 else ()
        rows += [[*site, f"SN{n}-{d}", kind] for d, kind in enumerate(kinds[:devices])] or [[*site, "", ""]]
        if n % 3 == 0:
            rows.append([f"c{n}", "", "", "", "", "", f"VIN{n}", "Vehicle"])
    path = write_csv(tmp_path / f"in-{customers}-{devices}-{every}.csv", rows, HEADERS)
    return planning.build(records.check(sheets.read(path)))


async def onboard(plan, app, batch_size: int) -> tuple[list[Span], Ledger]:
    """Run the pipeline against the emulator in-process, with the garbage collector paused so that
    none of its pauses passes for a slot left idle."""
    timed = Timed(httpx.ASGITransport(app=app))
    ledger = Ledger()
    async with api.connect(settings.target("local"), concurrency=LIMIT, transport=timed) as client:
        await client.sign_in()
        gc.disable()
        try:
            await Run(client, plan, ledger, BatchSize(batch_size), concurrency=LIMIT, show_progress=False)()
        finally:
            gc.enable()
    return sorted(timed.spans, key=lambda s: s.started), ledger


def emulator(tmp_path, latency_ms: float = LATENCY_MS, **knobs):
    return create_app(EmulatorSettings(latency_ms=latency_ms, seed=7, state=tmp_path / "e.sqlite", **knobs), Store())


def of(spans: list[Span], kind: str) -> list[Span]:
    return [s for s in spans if s.kind == kind]


def ready_at(spans: list[Span]) -> dict[Span, float]:
    """When each write could have left at the earliest: once the requests that registered its
    parents had their answers (a user batch: once the users were looked up)."""
    registered: dict[tuple[str, str], float] = {}
    for span in spans:
        if 200 <= span.status < 300 and span.kind == "user":
            registered.update({("user", u["userId"]): span.ended for u in span.body["users"]})
        elif 200 <= span.status < 300 and span.kind == "location":
            registered.update({("location", loc["locationId"]): span.ended for loc in span.body["locations"]})
    looked_up = min(s.ended for s in of(spans, "read"))
    ready = {}
    for span in spans:
        if span.kind == "user":
            ready[span] = looked_up
        elif span.kind == "location":
            ready[span] = max(registered.get(("user", loc["userId"]), looked_up) for loc in span.body["locations"])
        elif span.kind == "resource":
            parts = span.path.split("/")
            parent = ("user", parts[-2]) if parts[-1] == "vehicles" else ("location", parts[-2])
            ready[span] = registered.get(parent, looked_up)
    return ready


def idle_while_ready(spans: list[Span], excuse: float) -> tuple[float, float]:
    """Slot-seconds a slot stood free while some write was ready and not yet sent (at each instant,
    the smaller of the free slots and the writes waiting), and the longest stretch this lasted, from
    the first write on. A slot freed less than `excuse` seconds before is not counted: the tool
    reads the answer first."""
    ready = ready_at(spans)
    ends = [s.ended for s in spans]
    first = min(s.started for s in ready)
    events = sorted(t for t in {t for s in spans for t in (s.started, s.ended, s.ended + excuse)} | set(ready.values())
                    if t >= first)
    idle = longest = stretch = 0.0
    for begin, end in itertools.pairwise(events):
        t = (begin + end) / 2
        inflight = sum(1 for s in spans if s.started <= t < s.ended)
        reading = sum(1 for e in ends if t - excuse < e <= t)
        waiting = sum(1 for s, r in ready.items() if r <= t < s.started)
        unused = min(max(0, LIMIT - inflight - reading), waiting)
        idle += unused * (end - begin)
        stretch = stretch + (end - begin) if unused else 0.0
        longest = max(longest, stretch)
    return idle, longest


def passed_over(spans: list[Span], slack: float) -> list[tuple[Span, Span]]:
    """Pairs (parent, child): a write of a parent kind was ready (by `slack` seconds, for the
    tool to read the answer that made it so) while a write of a child kind left before it."""
    order = {"user": 0, "location": 1, "resource": 2}
    ready = ready_at(spans)
    return [(first, second) for first in ready for second in ready
            if order[first.kind] < order[second.kind] and ready[first] + slack <= second.started < first.started]


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """15 customers of one site each, a device at every other site and a car for every third
    customer, in batches of 3: 5 user batches and 5 location batches on 4 slots, so a stage that
    waited for the one before it would leave slots idle. One slow run, shared by the tests."""
    folder = tmp_path_factory.mktemp("traced")
    plan = sheet(folder, 15, devices=1, every=2)
    spans, ledger = asyncio.run(onboard(plan, emulator(folder, latency_ms=SLOW_MS), batch_size=3))
    assert {o.state for o in ledger.outcomes.values()} == {"created"}
    return plan, spans


# the stages overlap


async def test_locations_leave_before_the_last_user_batch_and_devices_before_the_last_location_batch(traced):
    plan, spans = traced
    users, locations, resources = of(spans, "user"), of(spans, "location"), of(spans, "resource")
    assert len(users) == len(locations) == 5 and len(resources) == len(plan.resources) == 8 + 5
    assert min(s.started for s in locations) < max(s.ended for s in users)
    assert min(s.started for s in resources) < max(s.ended for s in locations)


async def test_the_slots_stay_busy_while_work_is_ready(traced):
    _, spans = traced
    writes = [s for s in spans if s.kind != "read"]
    busy = LIMIT * (max(s.started for s in writes) - min(s.started for s in writes))
    idle, longest = idle_while_ready(spans, excuse=SLOW_MS / 1000 / 10)
    # measured on a 2-core machine, also under two extra busy processes: a staged pipeline idles
    # 0.07-0.12 of the slot time, for stretches of 0.45-0.7 latencies; this one 0.00-0.03 and 0-0.25
    assert idle < 0.05 * busy, f"slots idle {idle:.3f} s of {busy:.3f} s while work was ready"
    assert longest < 0.4 * SLOW_MS / 1000, f"a slot idle for {longest:.3f} s while work was ready"
    assert max(sum(1 for o in spans if o.started <= s.started < o.ended) for s in spans) == LIMIT


async def test_parents_go_before_children_so_that_children_unblock_early(traced):
    _, spans = traced
    assert passed_over(spans, slack=SLOW_MS / 1000 / 4) == []
    assert max(s.started for s in of(spans, "user")) < min(s.started for s in of(spans, "location"))


async def test_overlap_costs_no_request_a_full_batch_would_save(tmp_path):
    plan = sheet(tmp_path, 40, devices=1)
    spans, _ = await onboard(plan, emulator(tmp_path), batch_size=7)
    assert len(of(spans, "user")) == len(of(spans, "location")) == -(-40 // 7)
    assert len(spans) == 1 + 2 * -(-40 // 7) + len(plan.resources)


async def test_writes_go_while_discovery_still_reads(tmp_path):
    app = emulator(tmp_path)
    await onboard(sheet(tmp_path, 12, devices=1), app, batch_size=100)
    plan = sheet(tmp_path, 12, devices=3)  # the same customers and sites, two devices more a site
    spans, ledger = await onboard(plan, app, batch_size=100)
    reads, writes = of(spans, "read"), [s for s in spans if s.kind == "resource"]
    assert len(reads) == 1 + 12 + 12 and len(writes) == 24
    assert min(s.started for s in writes) < max(s.ended for s in reads)
    states = {kind: Counter(o.state for (k, _), o in ledger.outcomes.items() if k == kind) for kind in KINDS}
    assert states == {"user": {"exists": 12}, "location": {"exists": 12}, "resource": {"exists": 16, "created": 24}}


async def test_a_batch_goes_unfilled_rather_than_leave_the_slots_idle(tmp_path):
    """When the API holds many more users than the sheet, each user is looked up on its own, and
    they become known one by one. With nothing else to send, a batch does not wait to fill."""
    app = emulator(tmp_path)
    app.store.add_users([f"other-{n}" for n in range(5000)])
    path = write_csv(tmp_path / "in.csv", [[f"c{n}", "home", "", "", "59.9", f"10.{n}", "", ""] for n in range(3)])
    spans, ledger = await onboard(planning.build(records.check(sheets.read(path))), app, batch_size=100)
    lookups = [s for s in of(spans, "read") if s.path.rsplit("/", 2)[-2] == "users"]  # GET /users/{userId}
    assert len(lookups) == 3 and {o.state for o in ledger.outcomes.values()} == {"created"}
    assert min(s.started for s in of(spans, "user")) < max(s.ended for s in lookups)


# what the meter point check holds back


async def test_a_site_whose_meter_point_the_api_holds_is_refused_with_its_user_and_devices(tmp_path):
    """The check waits for the sites of every registered user of the sheet; a user and devices only
    the refused site's rows ask for are `invalid` too, never sent, never taken for blocked."""
    app = emulator(tmp_path)
    app.store.add_users(["kari"])
    app.store.add_locations([StoredLocation("kari-home", "kari", "Unknown", [meter_point_id(0)])])
    rows = [["", "kari", "cabin", meter_point_id(99), "", ""],
            ["c0", "", "home", meter_point_id(0), "SN0", "Charger"],  # kari's meter point
            ["c0", "", "home", meter_point_id(0), "VIN0", "Vehicle"]]
    rows += [[f"c{n}", "", "home", meter_point_id(n), f"SN{n}", "Charger"] for n in range(1, 6)]
    path = write_csv(tmp_path / "in.csv", rows, ["customer_id", "user_id", "location_ref", "meter_point_ids",
                                                 "resource_ref", "resource_type"])
    plan = planning.build(records.check(sheets.read(path)))
    spans, ledger = await onboard(plan, app, batch_size=2)
    refused = {*plan.rows[1].entities(), *plan.rows[2].entities()}
    assert len(refused) == 4 and {ledger.get(*entity).state for entity in refused} == {"invalid"}
    assert "kari-home of the customer of row 2 (user kari)" in ledger.get("location", plan.rows[1].location_id).reason
    assert {o.state for entity, o in ledger.outcomes.items() if entity not in refused} == {"created", "exists"}
    user = plan.rows[1].user_id
    assert not [s for s in spans if s.kind != "read" and (user in json.dumps(s.body) or user in s.path)]


# resuming a run killed while discovery still read


async def test_a_run_killed_before_discovery_ended_resumes_telling_created_from_exists(tmp_path):
    """With the stages overlapping, writes leave before discovery has read everything: a run killed
    then leaves a journal not marked discovered, holding writes sent. The resumed run reads again:
    what it finds that the journal says was sent is `created`, and what a user that existed holds
    is still read (the journal has that user as `exists`)."""
    path = write_csv(tmp_path / "in.csv", [
        ["old", "home", "", meter_point_id(1), "", "", "SN-1", "Charger"],
        ["old", "home", "", meter_point_id(1), "", "", "SN-2", "HVAC"],
        ["new", "home", "", meter_point_id(2), "", "", "SN-3", "Charger"],
    ], HEADERS)
    plan = planning.build(records.check(sheets.read(path)))
    old, new = plan.rows[0], plan.rows[2]
    app = emulator(tmp_path)
    app.store.add_users([old.user_id, new.user_id])  # `new`: the killed run's user batch landed
    app.store.add_locations([StoredLocation(old.location_id, old.user_id, "Unknown", [meter_point_id(1)])])
    app.store.add_resource(StoredResource(old.resource_id, old.user_id, "Charger", old.location_id))
    journal_path = tmp_path / "in.journal.sqlite"
    killed = Journal.open(journal_path, path, "emulator", {"users": 2, "locations": 2, "resources": 3})
    Ledger(killed).settle("user", old.user_id, Outcome("exists"))
    killed.sending("user", [new.user_id])
    killed.release()

    journal = Journal.open(journal_path, path, "emulator", {"users": 2, "locations": 2, "resources": 3})
    try:
        assert journal.resumed and not journal.discovered
        ledger = Ledger(journal, journal.outcomes())
        async with api.connect(settings.target("local"), concurrency=LIMIT, transport=httpx.ASGITransport(app=app)
                               ) as client:
            await client.sign_in()
            await Run(client, plan, ledger, BatchSize(100), concurrency=LIMIT, show_progress=False)()
        assert journal.discovered and client.stats.by_status.keys() <= {200, 201}
    finally:
        journal.release()
    assert {entity: ledger.get(*entity).state for row in plan.rows for entity in row.entities()} == {
        ("user", old.user_id): "exists", ("location", old.location_id): "exists",
        ("resource", old.resource_id): "exists", ("resource", plan.rows[1].resource_id): "created",
        ("user", new.user_id): "created", ("location", new.location_id): "created",
        ("resource", new.resource_id): "created"}
