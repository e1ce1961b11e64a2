"""Running the stages: find what exists, and create users, locations and resources, all at once.

The stages overlap: a location batch leaves as soon as its users are settled, a device as soon as
its location is, and reading what existing users hold goes on beside the writes. What is ready
goes parents first, so children unblock early, and as the throttle frees a slot, so the slots the
API allows never sit idle while work is ready. A shared `Ledger` keeps every outcome (and, given a
journal, keeps it on disk); an entity goes only once the ledger shows its parent registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import sys
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from tqdm import tqdm

from onboard.api import Answer, Api, Throttle
from onboard.errors import OnboardError
from onboard.plan import Location, Plan, Resource, User, row_spans

LIST_PAGE_SIZE = 1000
CLAIMED_COLUMN = "meter_point_ids"
"""The column a refusal for a meter point the API holds at another site names (`report` puts the
sheet's own header there and marks the cell)."""
UNNAMED_DEVICES = "this sheet does not name"
"""The words of the warning on a site holding devices the sheet does not name, by which the
summary counts and the terminal repeats it (a resumed run has it from the journal only)."""


REGISTERED = ("created", "exists", "differs", "updated", "planned")
"""States of an entity the API holds (or, in a plan, would hold): its children may go."""


@dataclass(frozen=True)
class Outcome:
    state: str
    """created, exists, failed, or invalid: not sent, because what the API holds forbids it; for a
    location the API holds with other fields than the sheet's, differs (left as it is) or updated
    (`--update` changed those fields); in a plan, which sends nothing, planned: it would be created."""
    reason: str = ""
    warnings: tuple[str, ...] = ()
    final: bool = True
    """False for a failure the next run should try again (API down, interrupted)."""
    changes: tuple[str, ...] = ()
    """For `differs`: the fields (the spec's names) the sheet would change."""


class Journal(Protocol):
    """What the pipeline needs of `onboard.journal.Journal`."""

    resumed: bool
    discovered: bool

    def settled(self, kind: str, ids: Sequence[str], outcome: Outcome) -> None: ...

    def sending(self, kind: str, ids: Sequence[str], ahead: Iterable[str] = ()) -> None: ...

    def uncertain(self) -> set[tuple[str, str]]: ...

    def mark_discovered(self) -> None: ...

    def flush(self) -> None: ...


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

    def sending(self, kind: str, ids: Sequence[str], ahead: Iterable[str] = ()) -> None:
        if self.journal is not None:
            self.journal.sending(kind, ids, ahead)

    def flush(self) -> None:
        """The work ended: the journal writes the outcomes it held for the next write-ahead."""
        if self.journal is not None:
            self.journal.flush()

    def registered(self, kind: str, entity_id: str) -> bool:
        outcome = self.get(kind, entity_id)
        return outcome is not None and outcome.state in REGISTERED


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
    changes: tuple[str, ...] = ()
    """The fields (the spec's names) where a location the API holds differs from the sheet."""


MISSING = Match(found=False)
COORDINATE_TOLERANCE = 1e-6
"""Degrees (about 0.1 m): an API that keeps fewer decimals than the sheet has is not a moved site."""
FIELDS = {"locationType": "location type", "meterPointIds": "meter point ids", "coordinates": "coordinates"}
"""A location's fields that `--update` changes, in words."""


# comparing what the API holds with what the sheet asks for


def compare_location(planned: Location, held: dict[str, Any], test_areas: bool = False) -> Match:
    """A field the sheet leaves empty is not compared: the sheet says nothing of it. With
    `test_areas` (any API but production), a site the API holds inside one of the sandbox's test
    areas stays there: `--test-area` or `move` put it there on purpose."""
    if held.get("userId") not in (None, planned.user_id):
        return Match(True, False, f"location ID {planned.id} is registered to another user")
    said = []
    if planned.location_type and held.get("locationType") != planned.location_type:
        said.append(("locationType", f"location_type: the API holds {held.get('locationType') or '(none)'}, "
                                     f"the sheet says {planned.location_type}"))
    if planned.meter_point_ids and set(held.get("meterPointIds") or []) != set(planned.meter_point_ids):
        said.append(("meterPointIds", f"meter_point_ids: the API holds "
                                      f"{', '.join(held.get('meterPointIds') or []) or '(none)'}, the sheet says "
                                      f"{', '.join(planned.meter_point_ids)}"))
    held_at = held.get("coordinates") or {}
    warnings = ()
    if planned.coordinates and not (
        math.isclose(held_at.get("latitude", math.inf), planned.coordinates.latitude, abs_tol=COORDINATE_TOLERANCE)
        and math.isclose(held_at.get("longitude", math.inf), planned.coordinates.longitude,
                         abs_tol=COORDINATE_TOLERANCE)
    ):
        where = (f"{held_at['latitude']}, {held_at['longitude']}" if "latitude" in held_at and "longitude" in held_at
                 else "(none)")
        area = _test_area(held_at) if test_areas else None
        if area is not None:
            warnings = (f"location {planned.id} is in the sandbox's test area {area}, where --test-area or move "
                        "placed it: it stays there (move --restore moves it back to the sheet's coordinates)",)
        else:
            said.append(("coordinates", f"latitude, longitude: the API holds {where}, the sheet says "
                                    f"{planned.coordinates.latitude}, {planned.coordinates.longitude}"))
    if not said:
        return Match(True, warnings=warnings)
    return Match(True, True, "; ".join(text for _, text in said) + f" (location {planned.id}): fix the sheet, or "
                 "run with --update to change the site", warnings, changes=tuple(name for name, _ in said))


def _test_area(held_at: dict[str, Any]) -> int | None:
    latitude, longitude = held_at.get("latitude"), held_at.get("longitude")
    if not isinstance(latitude, int | float) or not isinstance(longitude, int | float):
        return None
    from onboard.areas import which_area

    return which_area(latitude, longitude)


def compare_resource(planned: Resource, held: dict[str, Any]) -> Match:
    """A device keeps its owner, type and site under its ID (derived from its resource_ref): one
    the API holds otherwise is refused, in the sheet's words, never changed."""
    if held.get("userId") != planned.user_id:
        return Match(True, False, f"resource_ref: resource ID {planned.id} is registered to another user: this "
                                  "row's resource_ref names another customer's device")
    said = []
    if held.get("resourceType") != planned.resource_type:
        said.append(f"resource_type: the API holds this device (resource {planned.id}) as a "
                    f"{held.get('resourceType')}, the sheet says {planned.resource_type}")
    if held.get("locationId") != planned.location_id:
        held_where = f"at location {held.get('locationId')}" if held.get("locationId") else "as a vehicle"
        where = "as a vehicle" if planned.is_vehicle else f"at location {planned.location_id}"
        said.append(f"location_ref: the API holds this device (resource {planned.id}) {held_where}, the sheet "
                    f"has it {where}")
    if said:
        return Match(True, False, "; ".join(said) + ": a device keeps its type and site under its resource_ref, "
                                  "so give a new device a resource_ref of its own")
    warnings = ()
    if planned.meter_point_id and held.get("meterPointId") != planned.meter_point_id:
        warnings = (f"resource {planned.id} is registered with meter point id {held.get('meterPointId')}, "
                    f"not {planned.meter_point_id}",)
    return Match(True, True, warnings=warnings)


def unnamed_devices(plan: Plan, ledger: Ledger) -> list[str]:
    """The warnings of this run on sites holding devices the sheet does not name, one a site."""
    found = []
    for location_id in plan.locations:
        outcome = ledger.get("location", location_id)
        if outcome is not None and outcome.warnings:
            found += [w for w in outcome.warnings if UNNAMED_DEVICES in w]
    return found


def _claimed(location: Location, clashes: list[tuple[str, str, str]], plan: Plan, owners: dict[str, str],
             refused: set[str] = frozenset()) -> str:
    """Why a planned location is refused: which held locations, of whom, hold its meter points. A held
    location this sheet also describes is named as the sheet names it; another by its ID and its
    user (`owners`: the customer of which rows). The reason starts with its column, as a refusal of
    the sheet's own rules does. Where the holder is a site the sheet gives other meter point ids,
    the next run takes the id once `--update` has changed the holder, unless the holder is itself
    refused (`refused`: two sites swapping ids wait for each other: one must be changed by hand)."""
    def holder(held_id: str, user_id: str) -> str:
        if name := plan.site_name(held_id):
            return name
        if user_id == location.user_id:
            return f"location {held_id} of this customer (user {user_id})"
        return f"location {held_id} of {owners[user_id]} (user {user_id})" if user_id in owners else \
            f"location {held_id} of user {user_id}"

    said = [f"meter point id {mpid} is already registered at {holder(held_id, user_id)}"
            for mpid, held_id, user_id in clashes]
    own = sorted({held_id for _, held_id, user_id in clashes if user_id == location.user_id})
    hint = f"; if these rows describe that site, fill location_id {own[0]} on them" if len(own) == 1 else ""
    planned = plan.locations
    giving_up = {held_id for mpid, held_id, _ in clashes if held_id in planned
                 and planned[held_id].meter_point_ids and mpid not in planned[held_id].meter_point_ids}
    if giving_up and giving_up & refused:
        hint += ("; that site waits for this one's meter point ids in turn: change one of the two by hand (PATCH), "
                 "then run again")
    elif giving_up:
        hint += ("; the sheet gives that site other meter point ids: once run --update has changed it, the "
                 "next run takes this one")
    site = plan.site_name(location.id) or f"location {location.id}"
    return (f"{CLAIMED_COLUMN}: " + "; ".join(said) + f": a meter point belongs to one site, so {site} is not sent"
            + hint)


# running jobs as the API's slots free up

Job = Callable[[], Awaitable[None]]


class Dispatcher:
    """Starts the job `pick` chooses whenever the throttle has a free slot, until no job runs and
    none is ready; the first user-facing error stops them all.

    Jobs are chosen as slots free, never queued at the throttle, so requests leave in the order
    `pick` prefers, and after a 429 (the throttle allowing fewer) fewer start. At most `width` jobs
    are under way: while one waits out a Retry-After the others go on, but no more start, since
    more work sent to an API that throttles only meets more 429s."""

    POLL_SECONDS = 0.05
    """How often to look at the throttle when it alone holds work back: a request that waits out a
    Retry-After gives its slot back without ending its job."""

    def __init__(self, throttle: Throttle, width: int) -> None:
        self.throttle = throttle
        self.width = width
        self.running = 0
        self.starting = 0
        """Jobs started that have not run yet: each takes a slot as it first runs."""
        self.starved = False
        self._wake = asyncio.Event()

    def ready(self) -> None:
        """New work is ready: worth a look only when the last look found none."""
        if self.starved:
            self._wake.set()

    def _room(self) -> bool:
        return (self.running < self.width
                and self.throttle.inflight + self.starting < max(1, int(self.throttle.limit)))

    async def run(self, pick: Callable[[], Job | None]) -> None:
        self._pick = pick
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    self._wake.clear()
                    self.starved = False
                    while self._room():
                        job = pick()
                        if job is None:
                            self.starved = True
                            break
                        self.running += 1
                        self.starting += 1
                        group.create_task(self._job(job))
                    if not self.running:
                        return
                    if self.starved or self.running >= self.width:
                        await self._wake.wait()
                        continue
                    with contextlib.suppress(TimeoutError):  # the throttle holds work back
                        async with asyncio.timeout(self.POLL_SECONDS):
                            await self._wake.wait()
        except BaseExceptionGroup as grouped:
            raise _first(grouped) from None

    async def _job(self, job: Job | None) -> None:
        """`job`, then the next one, while there is room and work: a slot that frees takes its
        next request at once, without a task or a turn of the dispatcher for each. Not while a
        request waits for the throttle (a retry after a 429): that one goes first."""
        self.starting -= 1
        try:
            while job is not None:
                await job()
                self.running -= 1
                job = self._pick() if self._room() and not self.throttle.waiting else None
                self.running += 1
        finally:
            self.running -= 1
            self._wake.set()


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


KINDS = ("user", "location", "resource")
"""Parents first: the order in which ready work of each kind goes."""


class Overlap:
    """Which work may go now, and which goes first.

    An entity is ready once everything it needs is known: a user once discovery knows it is
    missing; a location once its user is registered; a device once its location (a vehicle: its
    user) is. A child of a user that existed also waits for the read of what that user holds (it
    may be there already), and whatever the meter point check may refuse (sites with meter point
    ids, and users and vehicles only their rows ask for) waits for that check, which needs the
    sites of every registered user of the sheet read. Work goes in the order: reads, users,
    locations, devices; a batch goes full, or as the last of its kind, or when a slot would
    otherwise stay idle."""

    def __init__(self, run: Run, scope: dict[str, dict[str, Any]], uncertain: set[tuple[str, str]],
                 claims: bool) -> None:
        self.run = run
        self.ledger = run.ledger
        self.scope = scope
        self.stages = {stage.kind: stage for stage in run.stages() if stage.kind in scope}
        self.uncertain = set(uncertain)
        self.dispatcher = Dispatcher(run.api.throttle, run.concurrency)
        self.reads: tuple[deque[Job], ...] = (deque(), deque(), deque())
        """Finding users first, then users' sites, then their devices."""
        self.ready: dict[str, dict[str, Any]] = {kind: {} for kind in scope}
        self.unsure: dict[str, dict[str, Any]] = {kind: {} for kind in scope}
        """Ready, but sent by an interrupted run without an answer kept: looked up first."""
        settled = self.ledger.outcomes
        self.waiting: dict[str, set[str]] = {
            kind: {i for i in items if (kind, i) not in settled} if settled else set(items)
            for kind, items in scope.items()}
        self.sites: dict[str, list[Location]] = defaultdict(list)
        """Planned locations by user; devices by user, by location, and cars by user."""
        self.devices: dict[str, list[Resource]] = defaultdict(list)
        self.devices_at: dict[str, list[Resource]] = defaultdict(list)
        self.cars: dict[str, list[Resource]] = defaultdict(list)
        for location in scope.get("location", {}).values():
            self.sites[location.user_id].append(location)
        for resource in scope.get("resource", {}).values():
            self.devices[resource.user_id].append(resource)
            (self.cars[resource.user_id] if resource.is_vehicle else self.devices_at[resource.location_id]
             ).append(resource)
        self.unknown: set[str] = set()
        """Users whether the API holds is not known yet."""
        self.reading: dict[str, set[str]] = {"location": set(), "resource": set()}
        """Users that existed, whose sites (devices) are still to be read before theirs go."""
        self.asked: set[str] = set()
        self.held_devices: dict[str, list[dict[str, Any]]] = {}
        self.listed: set[str] = set()
        self.pages_left = 0
        self.discovering = False
        self.claims_open = claims and any(run.unchecked(loc) for loc in run.plan.locations.values())
        self.claim_reads: set[str] = set()
        self._bound: set[tuple[str, str]] | None = None

    # starting

    def start(self, discovering: bool) -> None:
        plan = self.run.plan
        self.discovering = discovering
        if discovering:
            self.unknown = {u for u in plan.users if self.ledger.get("user", u) is None}
            if self.unknown:
                self.run._open_bar("finding", "finding users", 0, "request")
                self._queue_read(0, self._first_page)
            for user_id in plan.users:
                if (outcome := self.ledger.get("user", user_id)) is not None and outcome.state == "exists":
                    self._discover_children(user_id)
        if self.claims_open:
            for user_id in plan.users:
                if self.ledger.registered("user", user_id):
                    self._read_locations(user_id, claims=True)
        self._consider_known()
        self._progress()

    def _consider_known(self) -> None:
        """What may be ready once something was holding everything back: users known, and the
        children of what is settled (by a run this one resumes) or not this run's to send."""
        if "user" in self.scope and not self.unknown:
            for user_id in list(self.waiting["user"]):
                self.consider("user", self.scope["user"][user_id])
        for parent_kind, by_parent, kind in (("user", self.sites, "location"), ("user", self.cars, "resource"),
                                             ("location", self.devices_at, "resource")):
            if parent_kind in self.scope and not self.ledger.outcomes:
                continue  # nothing settled: every parent is still to come
            for parent_id, children in list(by_parent.items()):
                if parent_kind not in self.scope or self.ledger.get(parent_kind, parent_id) is not None:
                    for child in children:
                        self.consider(kind, child)

    def _bound_by_claims(self) -> set[tuple[str, str]]:
        """Users and devices that only rows with a site still to be checked ask for: the meter point
        check may refuse all of those rows, and then these are not sent either. Found when first
        asked: a run that finds no user registered passes the check before it needs this."""
        if self._bound is not None:
            return self._bound
        checked = {loc.id for loc in self.run.plan.locations.values() if self.run.unchecked(loc)}
        wanted: dict[tuple[str, str], bool] = {}
        for row in self.run.plan.rows:
            if row.valid and row.user_id is not None:
                sure = row.location_id not in checked
                for entity in row.entities():
                    wanted[entity] = wanted.get(entity, False) or sure
        self._bound = {entity for entity, sure in wanted.items() if not sure and entity[0] != "location"}
        return self._bound

    # what is ready

    def consider(self, kind: str, item: Any) -> None:
        """Make an entity ready if nothing holds it back, or settle it as blocked if its parent
        did not get registered."""
        waiting = self.waiting.get(kind)
        if waiting is None or item.id not in waiting:
            return
        if self.ledger.get(kind, item.id) is not None:
            waiting.discard(item.id)
            return
        if self._held_back(kind, item):
            return
        blocked = self.run._blocked(kind, item)
        if blocked is not None:
            self.run._settle(kind, [item.id], blocked)
            return
        waiting.discard(item.id)
        pool = self.unsure if (kind, item.id) in self.uncertain else self.ready
        pool[kind][item.id] = item
        self.dispatcher.ready()

    def _held_back(self, kind: str, item: Any) -> bool:
        if kind == "user":
            return item.id in self.unknown or self._awaits_claims(kind, item)
        parent = self.run._parent(kind, item)
        if self.ledger.get(*parent) is None:
            return parent[0] in self.scope
        if not self.ledger.registered(*parent):
            return False
        return item.user_id in self.reading[kind] or self._awaits_claims(kind, item)

    def _awaits_claims(self, kind: str, item: Any) -> bool:
        return self.claims_open and ((kind == "location" and bool(item.meter_point_ids))
                                     or (kind, item.id) in self._bound_by_claims())

    def settled(self, kind: str, ids: Sequence[str]) -> None:
        """Entities got their outcomes: they are no longer waiting, and their children may go."""
        for entity_id in ids:
            if kind in self.waiting:
                self.waiting[kind].discard(entity_id)
                self.ready[kind].pop(entity_id, None)
                self.unsure[kind].pop(entity_id, None)
            if kind == "user":
                for location in self.sites.get(entity_id, ()):
                    self.consider("location", location)
                for car in self.cars.get(entity_id, ()):
                    self.consider("resource", car)
            elif kind == "location":
                for resource in self.devices_at.get(entity_id, ()):
                    self.consider("resource", resource)

    # what goes next

    def pick(self) -> Job | None:
        for reads in self.reads:
            if reads:
                return reads.popleft()
        for partial in (False, True):
            for kind in self.stages:  # parents first
                if (self.ready[kind] or self.unsure[kind]) and (job := self._take(kind, partial)) is not None:
                    return job
        return None

    def upcoming(self, stage: Stage) -> Iterable[str]:
        """The single requests likely to go next after this one (a round: as many as may be in
        flight), for the journal to write ahead in one commit; read only when it commits, once a
        round. Batches are few: each writes its own."""
        if stage.batched:
            return ()
        return itertools.islice(self.ready[stage.kind], self.dispatcher.width)

    def _take(self, kind: str, partial: bool) -> Job | None:
        """A batch of ready entities: full, or the last of its kind, or (`partial`) whatever is
        ready, when a slot would otherwise stay idle."""
        stage = self.stages[kind]
        size = self.run.batch.value if stage.batched else 1
        for pool, ambiguous in ((self.unsure[kind], True), (self.ready[kind], False)):
            if not pool or (not ambiguous and not partial and len(pool) < size and self.waiting[kind]):
                continue
            chunk = [pool.pop(entity_id) for entity_id in list(itertools.islice(pool, size))]
            return functools.partial(self.run._send, stage, chunk, ambiguous)
        return None

    # discovery: what the API holds already

    def _queue_read(self, order: int, job: Job) -> None:
        self.reads[order].append(job)
        if order:
            self.run._open_bar("reading", "reading their sites and devices", 0, "request").total += 1
        self.dispatcher.ready()

    async def _first_page(self) -> None:
        """Listing every user costs a page per thousand; asking for each costs one per user: take
        the cheaper of the two."""
        users = [u for u in self.run.plan.users if u in self.unknown]
        bar = self.run.bars["finding"]
        first = await self.run.api.users_page(1, LIST_PAGE_SIZE)
        if first.ok:
            size = first.body["pagination"]["pageSize"]
            pages = math.ceil(first.body["pagination"]["totalRecords"] / max(1, size))
            if pages - 1 <= len(users):
                bar.reset(total=max(1, pages))
                bar.update(1)
                self.listed = {u["userId"] for u in first.body.get("users", [])}
                self.pages_left = max(0, pages - 1)
                for number in range(2, pages + 1):
                    self._queue_read(0, functools.partial(self._page, number, size))
                if not self.pages_left:
                    self._listed_all()
                return
        bar.reset(total=len(users))
        for user_id in users:
            self._queue_read(0, functools.partial(self._ask, user_id))

    async def _page(self, number: int, size: int) -> None:
        answer = await self.run.api.users_page(number, size)
        self.listed.update(u["userId"] for u in (answer.body or {}).get("users", []))
        self.run.bars["finding"].update(1)
        self.pages_left -= 1
        if not self.pages_left:
            self._listed_all()

    def _listed_all(self) -> None:
        users = [u for u in self.run.plan.users if u in self.unknown]
        for user_id in users:
            self._known(user_id, user_id in self.listed)
        self._progress()
        for user_id in users:
            self.consider("user", self.run.plan.users[user_id])

    async def _ask(self, user_id: str) -> None:
        found = (await self.run.api.user(user_id)).ok
        self.run.bars["finding"].update(1)
        self._known(user_id, found)
        self._progress()
        self.consider("user", self.run.plan.users[user_id])

    def _known(self, user_id: str, found: bool) -> None:
        """Whether the API holds a user is known. Found, it `exists`, unless an interrupted run
        sent it: then this run's (resumed) work created it. Missing, it is considered next."""
        self.unknown.discard(user_id)
        key = ("user", user_id)
        if not found:
            self.uncertain.discard(key)
            return
        if key in self.uncertain:
            self.run._settle("user", [user_id], Outcome("created"))
        else:
            self._discover_children(user_id)
            self.run._settle("user", [user_id], Outcome("exists"))
        if self.claims_open:
            self._read_locations(user_id, claims=True)

    def _discover_children(self, user_id: str) -> None:
        """A user that existed may hold the sheet's sites and devices already: they wait for the reads."""
        self.reading["location"].add(user_id)
        self._read_locations(user_id)
        if any(self.ledger.get("resource", r.id) is None for r in self.devices.get(user_id, ())):
            self.reading["resource"].add(user_id)
            self._queue_read(2, functools.partial(self._resources_of, user_id))

    def _read_locations(self, user_id: str, claims: bool = False) -> None:
        if claims:
            self.claim_reads.add(user_id)
        if user_id not in self.asked:
            self.asked.add(user_id)
            self._queue_read(1, functools.partial(self._locations_of, user_id))

    async def _locations_of(self, user_id: str) -> None:
        held = await self.run._held_locations(user_id)
        if user_id in self.reading["location"]:
            self._settle_found("location", self.sites.get(user_id, ()), held,
                               functools.partial(compare_location, test_areas=self.run.test_areas))
            self.reading["location"].discard(user_id)
            self._warn_unnamed(user_id)
            for location in self.sites.get(user_id, ()):
                self.consider("location", location)
        self.claim_reads.discard(user_id)
        self.run.bars["reading"].update(1)
        self._progress()

    async def _resources_of(self, user_id: str) -> None:
        answer = await self.run.api.resources_of(user_id)
        held = {h["resourceId"]: h for h in (answer.body or {}).get("resources", [])} if answer.ok else {}
        self.held_devices[user_id] = list(held.values())
        self._settle_found("resource", self.devices.get(user_id, ()), held, compare_resource)
        self.reading["resource"].discard(user_id)
        self._warn_unnamed(user_id)
        for resource in self.devices.get(user_id, ()):
            self.consider("resource", resource)
        self.run.bars["reading"].update(1)
        self._progress()

    def _settle_found(self, kind: str, planned: Iterable, held: dict[str, dict[str, Any]],
                      compare: Callable[[Any, dict[str, Any]], Match]) -> None:
        for item in planned:
            key = (kind, item.id)
            if self.ledger.get(*key) is not None:
                continue
            if item.id in held:
                self.run._settle_match(kind, item.id, compare(item, held[item.id]),
                                       "created" if key in self.uncertain else "exists")
            else:
                self.uncertain.discard(key)

    def _warn_unnamed(self, user_id: str) -> None:
        if user_id in self.held_devices and user_id not in self.reading["location"] | self.reading["resource"]:
            self.run._warn_unnamed_devices(self.devices.get(user_id, ()), self.held_devices.pop(user_id))

    def _progress(self) -> None:
        """Discovery done: the journal says so. Every registered user's sites read: the meter
        point check, and what it held back goes."""
        if self.discovering and not (self.unknown or self.reading["location"] or self.reading["resource"]):
            self.discovering = False
            if self.ledger.journal is not None:
                self.ledger.journal.mark_discovered()
        if self.claims_open and not (self.unknown or self.claim_reads):
            self.claims_open = False
            self.run.refuse_claimed_meter_points()
            self._consider_known()


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
    dry: bool = False
    """Read what the API holds, send nothing: what would be created is settled `planned`."""
    test_areas: bool = False
    """Not production: a site the API holds in a sandbox test area is not moved back (`compare_location`)."""
    bars: dict[str, tqdm] = field(default_factory=dict)
    held: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Locations the API holds, by user, as discovery read them."""
    unread: dict[str, str] = field(default_factory=dict)
    """Users whose sites the API would not list (what it said): the meter point check cannot see them."""
    overlap: Overlap | None = field(default=None, init=False, repr=False)
    _open_bars: contextlib.ExitStack | None = field(default=None, init=False, repr=False)

    def stages(self) -> list[Stage]:
        return [
            Stage("user", self.api.create_users, self.probe_user, batched=True),
            Stage("location", self.api.create_locations, self.probe_location, batched=True),
            Stage("resource", lambda items: self.api.create_resource(items[0]), self.probe_resource,
                  batched=False),
        ]

    async def __call__(self) -> None:
        """Find what exists and send what is missing, every stage at once: a location batch leaves
        as soon as its users are settled, a device as soon as its location is."""
        journal = self.ledger.journal
        uncertain = journal.uncertain() if journal is not None else set()
        scope = {"user": self.plan.users, "location": self.plan.locations, "resource": self.plan.resources}
        with contextlib.ExitStack() as bars:
            self._open_bars = bars
            discovering = journal is None or not journal.discovered
            if discovering and any(self.ledger.get("user", u) is None for u in self.plan.users):
                self._open_bar("finding", "finding users", 0, "request")  # the first bar on screen
            for kind, items in scope.items():
                bar = self._open_bar(kind, f"{kind}s", len(items), kind)
                bar.update(sum(1 for i in items if self.ledger.get(kind, i) is not None))
            await self._overlapped(scope, uncertain, discovering, claims=True)

    async def create(self, stage: Stage, items: dict[str, Any],
                     uncertain: set[tuple[str, str]] = frozenset()) -> None:
        """Send what of `items`, of one kind, is not settled, without discovery; their parents must
        be settled already. What an interrupted run sent without keeping the answer (`uncertain`)
        is looked up first."""
        await self._overlapped({stage.kind: items}, uncertain, discovering=False, claims=False)

    async def _overlapped(self, scope: dict[str, dict[str, Any]], uncertain: set[tuple[str, str]],
                          discovering: bool, claims: bool) -> None:
        self.overlap = Overlap(self, scope, uncertain, claims)
        try:
            self.overlap.start(discovering)
            await self.overlap.dispatcher.run(self.overlap.pick)
        finally:
            self.overlap = None
            self.ledger.flush()

    # probes

    async def probe_user(self, user: User) -> Match:
        answer = await self.api.user(user.id)
        return Match(True) if answer.ok else MISSING

    async def probe_location(self, location: Location) -> Match:
        answer = await self.api.location(location.user_id, location.id)
        return compare_location(location, answer.body, self.test_areas) if answer.ok else MISSING

    async def probe_resource(self, resource: Resource) -> Match:
        answer = await self.api.resource(resource.id)
        return compare_resource(resource, answer.body) if answer.ok else MISSING

    # what the API holds

    async def _held_locations(self, user_id: str) -> dict[str, dict[str, Any]]:
        answer = await self.api.locations_of(user_id)
        held = {h["locationId"]: h for h in answer.body or []} if answer.ok else {}
        if not answer.ok:
            self.unread[user_id] = f"{answer.status}: {answer.message}".rstrip(": ")
        self.held[user_id] = list(held.values())
        return held

    def _warn_unnamed_devices(self, planned: Iterable[Resource], devices: list[dict[str, Any]]) -> None:
        """Devices registered from rows without serials get IDs by position; the same devices with
        serials later get other IDs, and would be registered again. Only the partner can tell."""
        adding: dict[str, Counter[str]] = defaultdict(Counter)
        for resource in planned:
            if resource.location_id and self.ledger.get("resource", resource.id) is None:
                adding[resource.location_id][resource.resource_type] += 1
        unnamed: dict[str, Counter[str]] = defaultdict(Counter)
        for device in devices:
            if device.get("locationId") in adding and device.get("resourceId") not in self.plan.resources:
                unnamed[device["locationId"]][device.get("resourceType")] += 1
        for location_id, kinds in unnamed.items():
            outcome = self.ledger.get("location", location_id)
            if outcome is None or outcome.state != "exists":
                continue
            site = self.plan.site_name(location_id) or f"location {location_id}"
            notes = tuple(note for kind, n in kinds.items() if adding[location_id][kind]
                          if (note := f"{site} already holds {n} {kind} device{'s' if n > 1 else ''} "
                                      f"{UNNAMED_DEVICES}; this run adds {adding[location_id][kind]} more")
                          not in outcome.warnings)
            if notes:
                self.ledger.settle("location", location_id, replace(outcome, warnings=outcome.warnings + notes))

    def unchecked(self, location: Location) -> bool:
        """Whether the meter point check may still refuse the site: it has meter point ids, and is
        not settled yet, or is registered with other fields (`differs`), so its ids may be new."""
        if not location.meter_point_ids:
            return False
        outcome = self.ledger.get("location", location.id)
        return outcome is None or outcome.state == "differs"

    def refuse_claimed_meter_points(self) -> None:
        """A site the sheet plans may not take a meter point that another location of the sheet's
        users already holds (another customer's, or this customer's site under another ref): its
        rows are refused, and nothing only they ask for is sent. Checked once the sites of every
        registered user are read (`held`), on every resume too, since the journal keeps no
        refusals; until then, what it may refuse is held back. A registered site the sheet gives
        another meter point id (`differs`) is refused the same way: `--update` must not move a
        meter point onto it from another site."""
        pending = [loc for loc in self.plan.locations.values() if self.unchecked(loc)]
        if not pending:
            return
        if self.unread:
            pending = self._unsure_of_meter_points(pending)
        holders: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for user_id, held in self.held.items():
            for location in held:
                for mpid in location.get("meterPointIds") or []:
                    holders[mpid].append((location["locationId"], user_id))
        found = {}
        for location in pending:
            clashes = [(mpid, held_id, user_id) for mpid in location.meter_point_ids
                       for held_id, user_id in holders.get(mpid, ()) if held_id != location.id]
            if clashes:
                found[location] = clashes
        if not found:
            return
        owners = self._customers_of({user_id for clashes in found.values() for _, _, user_id in clashes})
        refused = {location.id for location in found}
        self._refuse_rows({location.id: _claimed(location, clashes, self.plan, owners, refused)
                           for location, clashes in found.items()})

    def _unsure_of_meter_points(self, pending: list[Location]) -> list[Location]:
        """Some user's sites could not be read: a registered site may not take a new meter point id
        now (it may be that user's), so `--update` leaves it for the next run; the rest is checked."""
        user_id, said = next(iter(self.unread.items()))
        rest = []
        for location in pending:
            outcome = self.ledger.get("location", location.id)
            if outcome is not None and (not outcome.changes or "meterPointIds" in outcome.changes):
                self._settle("location", [location.id], Outcome(
                    "failed", f"not checked: the API would not list the sites of user {user_id} ({said}), so a "
                              "new meter point id of this site cannot be checked against them: run again",
                    final=False))
            else:
                rest.append(location)
        return rest

    def _customers_of(self, users: set[str]) -> dict[str, str]:
        """`the customer of rows 2-3` for each of `users` the sheet's valid rows name."""
        rows: dict[str, list[int]] = defaultdict(list)
        for row in self.plan.rows:
            if row.valid and row.user_id in users:
                rows[row.user_id].append(row.shown)
        return {user_id: f"the customer of {row_spans(numbers)}" for user_id, numbers in rows.items()}

    def _refuse_rows(self, locations: dict[str, str]) -> None:
        """Settle refused locations as invalid, and with them the users and devices that only
        their rows ask for."""
        if not locations:
            return
        refused = {("location", location_id): reason for location_id, reason in locations.items()}
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
                refused[kind, entity_id] = reasons[kind, entity_id]
        # children first, so that none is taken for blocked by its refused parent
        for (kind, entity_id), reason in sorted(refused.items(), key=lambda item: -KINDS.index(item[0][0])):
            self._settle(kind, [entity_id], Outcome("invalid", reason))

    # progress

    def _bar(self, desc: str, total: int, unit: str) -> tqdm:
        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                    disable=None if self.show_progress is None else not self.show_progress)

    def _open_bar(self, key: str, desc: str, total: int, unit: str) -> tqdm:
        """The bar `key`, shown from now until the run ends: with the stages overlapping, every
        bar is on screen at once."""
        if key not in self.bars:
            bar = self._bar(desc, total, unit)
            self.bars[key] = self._open_bars.enter_context(bar) if self._open_bars is not None else bar
        return self.bars[key]

    def _tick(self, kind: str, n: int = 1) -> None:
        bar = self.bars.get(kind)
        if bar is not None:
            bar.update(n)

    # creating

    def _settle(self, kind: str, ids: Sequence[str], outcome: Outcome) -> None:
        """An outcome for entities: kept, counted, and their children considered."""
        self.ledger.settle_all(kind, ids, outcome)
        self._tick(kind, len(ids))
        if self.overlap is not None:
            self.overlap.settled(kind, ids)

    def _settle_match(self, kind: str, entity_id: str, match: Match, same_state: str) -> None:
        """`same_state` is `created` where this run sent the entity (its answer lost): then what
        differs is how the API keeps what was sent, a warning, not a change to make."""
        if match.same and match.changes and same_state == "created":
            self._settle(kind, [entity_id], Outcome("created", warnings=match.warnings + (match.reason,)))
        elif match.same and match.changes:
            self._settle(kind, [entity_id], Outcome("differs", match.reason, match.warnings, changes=match.changes))
        elif match.same:
            self._settle(kind, [entity_id], Outcome(same_state, warnings=match.warnings))
        else:
            self._settle(kind, [entity_id], Outcome("failed", match.reason))

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

    async def _send(self, stage: Stage, items: list, ambiguous: bool = False) -> None:
        if ambiguous:
            items = await self._unconfirmed(stage, items)
        if not items:
            return
        if self.dry:
            self._settle(stage.kind, [item.id for item in items], Outcome("planned"))
            return
        if stage.batched and len(items) > self.batch.value:
            for chunk in _chunks(items, self.batch.value):
                await self._send(stage, chunk)
            return
        ahead = self.overlap.upcoming(stage) if self.overlap is not None else ()
        self.ledger.sending(stage.kind, [i.id for i in items], ahead)
        answer = await stage.create(items)
        if answer.ok:
            self._settle(stage.kind, [item.id for item in items], Outcome("created"))
        elif answer.status == 413 and len(items) > 1:
            self.batch.shrink(len(items))
            await self._send(stage, items)
        elif answer.malformed:  # it may have happened: no retry here; the next run looks it up
            self._settle(stage.kind, [item.id for item in items], Outcome("failed", answer.message))
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
        self._settle(stage.kind, [item.id], Outcome("failed", reason))


def stop_everything(plan: Plan, ledger: Ledger, reason: str) -> None:
    """Mark what was not reached when the run stopped early; the next run sends it."""
    for kind, items in (("user", plan.users), ("location", plan.locations), ("resource", plan.resources)):
        for entity_id in items:
            if ledger.get(kind, entity_id) is None:
                ledger.outcomes[kind, entity_id] = Outcome("failed", reason, final=False)
