"""Running the stages: find what exists, then create users, locations and resources, in that order.

Each stage is an async function over the plan and a shared `Ledger` of outcomes; a stage only
touches entities whose parent the ledger shows as registered. That keeps the stages separate, so
they can later overlap (a location batch leaving as soon as its users are confirmed) without a
rewrite.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from tqdm import tqdm

from onboard.api import Answer, Api
from onboard.errors import OnboardError
from onboard.plan import Location, Plan, Resource, User

LIST_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Outcome:
    state: str
    """created, exists, failed, or invalid: not sent, because what the API holds forbids it."""
    reason: str = ""
    warnings: tuple[str, ...] = ()
    final: bool = True
    """False for a failure the next run should try again (API down, interrupted)."""


class Journal(Protocol):
    """What the pipeline needs of `onboard.journal.Journal`."""

    resumed: bool
    discovered: bool

    def settled(self, kind: str, ids: Sequence[str], outcome: Outcome) -> None: ...

    def sending(self, kind: str, ids: Sequence[str]) -> None: ...

    def uncertain(self) -> set[tuple[str, str]]: ...

    def mark_discovered(self) -> None: ...


class Ledger:
    """Every planned entity's outcome so far; a journal, when given, keeps each one on disk."""

    def __init__(self, journal: Journal | None = None,
                 known: Iterable[tuple[str, str, Outcome]] = ()) -> None:
        self.outcomes: dict[tuple[str, str], Outcome] = {(kind, i): o for kind, i, o in known}
        self.journal = journal

    def get(self, kind: str, entity_id: str) -> Outcome | None:
        return self.outcomes.get((kind, entity_id))

    def settle(self, kind: str, entity_id: str, outcome: Outcome) -> None:
        self.settle_all(kind, [entity_id], outcome)

    def settle_all(self, kind: str, ids: Sequence[str], outcome: Outcome) -> None:
        """One outcome for many entities (a batch the API took), kept in one journal transaction."""
        for entity_id in ids:
            self.outcomes[kind, entity_id] = outcome
        if self.journal is not None:
            self.journal.settled(kind, ids, outcome)

    def sending(self, kind: str, ids: Sequence[str]) -> None:
        if self.journal is not None:
            self.journal.sending(kind, ids)

    def registered(self, kind: str, entity_id: str) -> bool:
        outcome = self.get(kind, entity_id)
        return outcome is not None and outcome.state in ("created", "exists")


@dataclass
class BatchSize:
    """The batch size in use: starts at `--batch-size`, halves for the rest of the run on a 413."""

    value: int

    def shrink(self, refused: int) -> None:
        if refused <= self.value:
            self.value = max(1, refused // 2)


@dataclass(frozen=True)
class Match:
    """What a GET found for a planned entity."""

    found: bool
    same: bool = True
    reason: str = ""
    warnings: tuple[str, ...] = ()


MISSING = Match(found=False)


# comparing what the API holds with what the sheet asks for


def compare_location(planned: Location, held: dict[str, Any]) -> Match:
    if held.get("userId") not in (None, planned.user_id):
        return Match(True, False, f"location ID {planned.id} is registered to another user")
    warnings = []
    if planned.meter_point_ids and set(held.get("meterPointIds") or []) != set(planned.meter_point_ids):
        warnings.append(f"location {planned.id} is registered with meter point ids "
                        f"{', '.join(held.get('meterPointIds') or []) or '(none)'}, not "
                        f"{', '.join(planned.meter_point_ids)}")
    held_at = held.get("coordinates") or {}
    if planned.coordinates and not (
        math.isclose(held_at.get("latitude", math.inf), planned.coordinates.latitude)
        and math.isclose(held_at.get("longitude", math.inf), planned.coordinates.longitude)
    ):
        warnings.append(f"location {planned.id} is registered at other coordinates")
    if planned.location_type and held.get("locationType") != planned.location_type:
        warnings.append(f"location {planned.id} is registered as {held.get('locationType')}, "
                        f"not {planned.location_type}")
    return Match(True, True, warnings=tuple(warnings))


def compare_resource(planned: Resource, held: dict[str, Any]) -> Match:
    where = "as a vehicle" if planned.is_vehicle else f"at location {planned.location_id}"
    differs = (held.get("userId") != planned.user_id or held.get("resourceType") != planned.resource_type
               or held.get("locationId") != planned.location_id)
    if differs:
        held_where = f"at location {held.get('locationId')}" if held.get("locationId") else "as a vehicle"
        owner = "this user" if held.get("userId") == planned.user_id else "another user"
        return Match(True, False, f"resource ID {planned.id} is registered as a {held.get('resourceType')} of "
                                  f"{owner} {held_where}; the sheet has a {planned.resource_type} {where}")
    warnings = ()
    if planned.meter_point_id and held.get("meterPointId") != planned.meter_point_id:
        warnings = (f"resource {planned.id} is registered with meter point id {held.get('meterPointId')}, "
                    f"not {planned.meter_point_id}",)
    return Match(True, True, warnings=warnings)


def _claimed(location: Location, clashes: list[tuple[str, str, str]]) -> str:
    """Why a planned location is refused: which held locations, of whom, hold its meter points."""
    said = [f"meter point id {mpid} is already registered at location {held_id} of "
            + (f"this customer (user {user_id})" if user_id == location.user_id else f"user {user_id}")
            for mpid, held_id, user_id in clashes]
    own = sorted({held_id for _, held_id, user_id in clashes if user_id == location.user_id})
    hint = f"; if these rows describe that site, fill location_id {own[0]} on them" if len(own) == 1 else ""
    return "; ".join(said) + f": a meter point belongs to one site, so location {location.id} is not sent" + hint


# running many small tasks, a bounded number at a time


async def each(items: Iterable, work: Callable[[Any], Awaitable[None]], width: int) -> None:
    """Run `work` over items, at most `width` at once; the first user-facing error stops them all."""
    slots = asyncio.Semaphore(width)
    try:
        async with asyncio.TaskGroup() as group:
            for item in items:
                await slots.acquire()
                group.create_task(work(item)).add_done_callback(lambda _: slots.release())
    except BaseExceptionGroup as grouped:
        raise _first(grouped) from None


async def together(*awaitables: Awaitable) -> list:
    """`asyncio.gather`, except that the first failure cancels the others (a TaskGroup)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(a) for a in awaitables]
    except BaseExceptionGroup as grouped:
        raise _first(grouped) from None
    return [task.result() for task in tasks]


def _first(grouped: BaseExceptionGroup) -> BaseException:
    for exc in grouped.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if isinstance(exc, OnboardError):
            return exc
    return grouped.exceptions[0]


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# the stages


@dataclass
class Stage:
    """One kind of entity and how the API creates and shows it."""

    kind: str
    create: Callable[[list], Awaitable[Answer]]
    probe: Callable[[Any], Awaitable[Match]]
    batched: bool


@dataclass
class Run:
    api: Api
    plan: Plan
    ledger: Ledger
    batch: BatchSize
    concurrency: int = 16
    show_progress: bool | None = None
    bars: dict[str, tqdm] = field(default_factory=dict)
    held: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Locations the API holds, by user, as discovery read them."""

    def stages(self) -> list[Stage]:
        return [
            Stage("user", self.api.create_users, self.probe_user, batched=True),
            Stage("location", self.api.create_locations, self.probe_location, batched=True),
            Stage("resource", lambda items: self.api.create_resource(items[0]), self.probe_resource,
                  batched=False),
        ]

    # probes

    async def probe_user(self, user: User) -> Match:
        answer = await self.api.user(user.id)
        return Match(True) if answer.ok else MISSING

    async def probe_location(self, location: Location) -> Match:
        answer = await self.api.location(location.user_id, location.id)
        return compare_location(location, answer.body) if answer.ok else MISSING

    async def probe_resource(self, resource: Resource) -> Match:
        answer = await self.api.resource(resource.id)
        return compare_resource(resource, answer.body) if answer.ok else MISSING

    # discovery

    async def discover(self) -> None:
        """Find what of the plan is registered already, by reading, before any write: a re-run
        then sends only what is missing, and `exists` is told apart from `created`."""
        users = [u for u in self.plan.users if self.ledger.get("user", u) is None]
        if not users:
            return
        with self._bar("finding users", 0, "request") as bar:
            existing = await self._existing_users(users, bar)
        for user_id in existing:
            self.ledger.settle("user", user_id, Outcome("exists"))
        locations: dict[str, list[Location]] = defaultdict(list)
        for location in self.plan.locations.values():
            if location.user_id in existing and self.ledger.get("location", location.id) is None:
                locations[location.user_id].append(location)
        resources: dict[str, list[Resource]] = defaultdict(list)
        for resource in self.plan.resources.values():
            if resource.user_id in existing and self.ledger.get("resource", resource.id) is None:
                resources[resource.user_id].append(resource)

        devices: dict[str, list[dict[str, Any]]] = {}

        async def held_locations(user_id: str) -> None:
            held = await self._held_locations(user_id)
            for location in locations[user_id]:
                if location.id in held:
                    self._settle_match("location", location.id, compare_location(location, held[location.id]),
                                       "exists")

        async def held_resources(user_id: str) -> None:
            answer = await self.api.resources_of(user_id)
            held = {h["resourceId"]: h for h in (answer.body or {}).get("resources", [])} if answer.ok else {}
            devices[user_id] = list(held.values())
            for resource in resources[user_id]:
                if resource.id in held:
                    self._settle_match("resource", resource.id, compare_resource(resource, held[resource.id]),
                                       "exists")

        with self._bar("reading their sites and devices", len(existing) + len(resources), "request") as bar:
            async def counted(work, user_id: str) -> None:
                await work(user_id)
                bar.update(1)

            await together(each(existing, lambda u: counted(held_locations, u), self.concurrency),
                           each(resources, lambda u: counted(held_resources, u), self.concurrency))
        self._warn_unnamed_devices(devices)

    async def _held_locations(self, user_id: str) -> dict[str, dict[str, Any]]:
        answer = await self.api.locations_of(user_id)
        held = {h["locationId"]: h for h in answer.body or []} if answer.ok else {}
        self.held[user_id] = list(held.values())
        return held

    def _warn_unnamed_devices(self, devices: dict[str, list[dict[str, Any]]]) -> None:
        """Devices registered from rows without serials get IDs by position; the same devices with
        serials later get other IDs, and would be registered again. Only the partner can tell."""
        named = set(self.plan.resources)
        adding: dict[str, Counter[str]] = defaultdict(Counter)
        for resource in self.plan.resources.values():
            if resource.location_id and self.ledger.get("resource", resource.id) is None:
                adding[resource.location_id][resource.resource_type] += 1
        unnamed: dict[str, Counter[str]] = defaultdict(Counter)
        for held in devices.values():
            for device in held:
                if device.get("locationId") in adding and device.get("resourceId") not in named:
                    unnamed[device["locationId"]][device.get("resourceType")] += 1
        for location_id, kinds in unnamed.items():
            outcome = self.ledger.get("location", location_id)
            notes = tuple(f"location {location_id} already holds {n} {kind} device{'s' if n > 1 else ''} this sheet "
                          f"does not name; this run adds {adding[location_id][kind]} more"
                          for kind, n in kinds.items() if adding[location_id][kind])
            if notes and outcome is not None and outcome.state == "exists":
                self.ledger.settle("location", location_id, replace(outcome, warnings=outcome.warnings + notes))

    async def refuse_claimed_meter_points(self) -> None:
        """A site the sheet plans may not take a meter point that another location of the sheet's
        users already holds (another customer's, or this customer's site under another ref): its
        rows are refused before anything is sent. Run after discovery and on every resume, since
        the journal keeps no refusals."""
        pending = [loc for loc in self.plan.locations.values()
                   if loc.meter_point_ids and self.ledger.get("location", loc.id) is None]
        if not pending:
            return
        owners = [u for u in self.plan.users if self.ledger.registered("user", u) and u not in self.held]
        await each(owners, self._held_locations, self.concurrency)
        holders: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for user_id, held in self.held.items():
            for location in held:
                for mpid in location.get("meterPointIds") or []:
                    holders[mpid].append((location["locationId"], user_id))
        refused = {}
        for location in pending:
            clashes = [(mpid, held_id, user_id) for mpid in location.meter_point_ids
                       for held_id, user_id in holders.get(mpid, ()) if held_id != location.id]
            if clashes:
                refused[location.id] = _claimed(location, clashes)
        self._refuse_rows(refused)

    def _refuse_rows(self, locations: dict[str, str]) -> None:
        """Settle refused locations as invalid, and with them the users and devices that only
        their rows ask for."""
        if not locations:
            return
        for location_id, reason in locations.items():
            self.ledger.settle("location", location_id, Outcome("invalid", reason))
        wanted: dict[tuple[str, str], bool] = {}
        reasons: dict[tuple[str, str], str] = {}
        for row in self.plan.rows:
            if not row.valid:
                continue
            reason = locations.get(row.location_id or "")
            for entity in row.entities():
                wanted[entity] = wanted.get(entity, False) or reason is None
                if reason is not None:
                    reasons.setdefault(entity, reason)
        for (kind, entity_id), needed in wanted.items():
            if not needed and kind != "location" and self.ledger.get(kind, entity_id) is None:
                self.ledger.settle(kind, entity_id, Outcome("invalid", reasons[kind, entity_id]))

    async def _existing_users(self, users: list[str], bar: tqdm) -> set[str]:
        """Listing every user costs a page per thousand; asking for each costs one per user: take
        the cheaper of the two."""
        first = await self.api.users_page(1, LIST_PAGE_SIZE)
        found: set[str] = set()
        if first.ok:
            size = first.body["pagination"]["pageSize"]
            pages = math.ceil(first.body["pagination"]["totalRecords"] / max(1, size))
            if pages - 1 <= len(users):
                bar.reset(total=max(1, pages))
                bar.update(1)
                listed = {u["userId"] for u in first.body.get("users", [])}

                async def page(n: int) -> None:
                    answer = await self.api.users_page(n, size)
                    listed.update(u["userId"] for u in (answer.body or {}).get("users", []))
                    bar.update(1)

                await each(range(2, pages + 1), page, self.concurrency)
                return {u for u in users if u in listed}
        bar.reset(total=len(users))

        async def ask(user_id: str) -> None:
            if (await self.api.user(user_id)).ok:
                found.add(user_id)
            bar.update(1)

        await each(users, ask, self.concurrency)
        return found

    def _bar(self, desc: str, total: int, unit: str) -> tqdm:
        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                    disable=None if self.show_progress is None else not self.show_progress)

    # creating

    def _settle_match(self, kind: str, entity_id: str, match: Match, same_state: str) -> None:
        if match.same:
            self.ledger.settle(kind, entity_id, Outcome(same_state, warnings=match.warnings))
        else:
            self.ledger.settle(kind, entity_id, Outcome("failed", match.reason))
        self._tick(kind)

    def _tick(self, kind: str, n: int = 1) -> None:
        bar = self.bars.get(kind)
        if bar is not None:
            bar.update(n)

    def _parent(self, kind: str, item: Any) -> tuple[str, str] | None:
        if kind == "location":
            return "user", item.user_id
        if kind == "resource":
            return ("user", item.user_id) if item.is_vehicle else ("location", item.location_id)
        return None

    def _blocked(self, kind: str, item: Any) -> Outcome | None:
        """The outcome of an entity whose parent did not get registered, else None."""
        parent = self._parent(kind, item)
        if parent is None or self.ledger.registered(*parent):
            return None
        held = self.ledger.get(*parent) or Outcome("failed", "it was not sent", final=False)
        root = held.reason.removeprefix("blocked: ")
        if not held.reason.startswith("blocked: "):
            root = f"{parent[0]} {parent[1]} was not registered: {held.reason}"
        return Outcome("failed", f"blocked: {root}", final=held.final)

    async def create(self, stage: Stage, items: dict[str, Any],
                     uncertain: set[tuple[str, str]] = frozenset()) -> None:
        """Send what of `items` is not settled; what an interrupted run sent without keeping the
        answer (`uncertain`) is looked up first."""
        pending, unsure = [], []
        for entity_id, item in items.items():
            if self.ledger.get(stage.kind, entity_id) is not None:
                continue
            blocked = self._blocked(stage.kind, item)
            if blocked:
                self.ledger.settle(stage.kind, entity_id, blocked)
                self._tick(stage.kind)
            else:
                (unsure if (stage.kind, entity_id) in uncertain else pending).append(item)
        size = self.batch.value if stage.batched else 1
        work = [(chunk, True) for chunk in _chunks(unsure, size)]
        work += [(chunk, False) for chunk in _chunks(pending, size)]
        await each(work, lambda job: self._send(stage, *job), self.concurrency)

    async def _send(self, stage: Stage, items: list, ambiguous: bool = False) -> None:
        if ambiguous:
            items = await self._unconfirmed(stage, items)
        if not items:
            return
        if stage.batched and len(items) > self.batch.value:
            for chunk in _chunks(items, self.batch.value):
                await self._send(stage, chunk)
            return
        self.ledger.sending(stage.kind, [i.id for i in items])
        answer = await stage.create(items)
        if answer.ok:
            self.ledger.settle_all(stage.kind, [item.id for item in items], Outcome("created"))
            self._tick(stage.kind, len(items))
        elif answer.status == 413 and len(items) > 1:
            self.batch.shrink(len(items))
            await self._send(stage, items)
        elif answer.malformed:  # it may have happened: no retry here; the next run looks it up
            self.ledger.settle_all(stage.kind, [item.id for item in items], Outcome("failed", answer.message))
            self._tick(stage.kind, len(items))
        elif answer.ambiguous:
            await self._send(stage, items, ambiguous=True)
        elif len(items) == 1:
            await self._refused(stage, items[0], answer)
        else:
            half = len(items) // 2
            await together(self._send(stage, items[:half]), self._send(stage, items[half:]))

    async def _unconfirmed(self, stage: Stage, items: list) -> list:
        """After a write whose answer was lost: what the API holds was created by this run; the rest
        goes again."""
        matches = await together(*(stage.probe(item) for item in items))
        rest = []
        for item, match in zip(items, matches, strict=True):
            if match.found:
                self._settle_match(stage.kind, item.id, match, "created")
            else:
                rest.append(item)
        return rest

    async def _refused(self, stage: Stage, item: Any, answer: Answer) -> None:
        if answer.says_exists(item.id):
            match = await stage.probe(item)
            if match.found:
                # Discovery saw it absent; in a resumed run the interrupted one may have sent it.
                resumed = self.ledger.journal is not None and self.ledger.journal.resumed
                self._settle_match(stage.kind, item.id, match, "created" if resumed else "exists")
                return
            reason = f"the API says {stage.kind} ID {item.id} exists, but not for this user ({answer.message})"
        elif answer.status == 413:
            reason = "the API refuses even a single item as too large (413)"
        else:
            reason = f"refused by the API ({answer.status}): {answer.message}"
        self.ledger.settle(stage.kind, item.id, Outcome("failed", reason))
        self._tick(stage.kind)

    async def __call__(self) -> None:
        journal = self.ledger.journal
        if journal is None or not journal.discovered:
            await self.discover()
            if journal is not None:
                journal.mark_discovered()
        await self.refuse_claimed_meter_points()
        uncertain = journal.uncertain() if journal is not None else set()
        items = {"user": self.plan.users, "location": self.plan.locations, "resource": self.plan.resources}
        for stage in self.stages():
            total = len(items[stage.kind])
            with self._bar(f"{stage.kind}s", total, stage.kind) as bar:
                bar.update(sum(1 for i in items[stage.kind] if self.ledger.get(stage.kind, i) is not None))
                self.bars[stage.kind] = bar
                await self.create(stage, items[stage.kind], uncertain)


def stop_everything(plan: Plan, ledger: Ledger, reason: str) -> None:
    """Mark what was not reached when the run stopped early; the next run sends it."""
    for kind, items in (("user", plan.users), ("location", plan.locations), ("resource", plan.resources)):
        for entity_id in items:
            if ledger.get(kind, entity_id) is None:
                ledger.outcomes[kind, entity_id] = Outcome("failed", reason, final=False)
