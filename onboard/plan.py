"""Planning: which users, locations and resources the sheet describes, and the ID of each.

The API lets the client choose every ID. An explicit ID from the sheet is used as it is; any
other is a UUID derived from the partner's own keys, so the same sheet yields the same IDs on
any machine, any day, and a re-run addresses the entities the first run created.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import math
import operator
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from onboard.records import Cell, Checked, Coordinates, Problem, Row, Sighting, check_cells, reads_like_total, words
from onboard.template import TEMPLATE_EXAMPLE

# Fixed forever: changing it would give every entity of every sheet a new ID.
NAMESPACE = uuid.UUID("5b0c3c3e-6f0e-5a43-9d35-0b6a1f1e7a10")


_NAMESPACE_BYTES = NAMESPACE.bytes
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""The hex digit a UUID's variant bits (10xx) make of the digest's 17th hex digit."""


def derived_id(kind: str, *keys: str) -> str:
    """`uuid.uuid5(NAMESPACE, kind + keys)` as text, computed on the digest's hex text without
    building UUID objects (version digit 5, variant bits 10): it runs once per entity, a million
    times for a large sheet."""
    text = hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join((kind, *keys)).encode()).hexdigest()
    return f"{text[:8]}-{text[8:12]}-5{text[13:16]}-{_VARIANT[text[16]]}{text[17:20]}-{text[20:32]}"


@dataclass(frozen=True, slots=True)
class User:
    id: str
    customer: str | None = field(default=None, compare=False)
    """The customer as the sheet names it (its customer_id, else its user_id), for `Plan.site_name`:
    a second field costs a User nothing (both fit the size the first one takes), and each of the
    customer's sites then needs only its key."""


@dataclass(frozen=True, slots=True)
class Location:
    id: str
    user_id: str
    location_type: str | None
    meter_point_ids: tuple[str, ...]
    coordinates: Coordinates | None
    site: str | None = field(default=None, compare=False)
    """The site's key among its customer's sites as the sheet has it, for `Plan.site_name` (with the
    customer's name its `User` keeps): one string shared by every customer's site of that name
    (`ref home`), put in words only for the few sites a message names."""


@dataclass(frozen=True, slots=True)
class Resource:
    id: str
    user_id: str
    resource_type: str
    location_id: str | None
    meter_point_id: str | None

    @property
    def is_vehicle(self) -> bool:
        return self.resource_type == "Vehicle"


@dataclass(slots=True)
class RowPlan:
    """What one row asks for: the IDs of its user, location and resource, or why it cannot."""

    number: int
    user_id: str | None = None
    location_id: str | None = None
    resource_id: str | None = None
    problems: list[Problem] | tuple[()] = ()
    warnings: list[Problem] | tuple[()] = ()
    """Both start as the shared empty tuple: a million rows, most without either, need no lists."""
    origin: int | None = None
    """The row of the original sheet, when this sheet is one of the tool's outputs run again."""
    row: Row | None = None
    """The validated cells, while planning needs them; let go once the plan is built. What only a
    few rows have (a totals cell, a refused row's meter point ids, being left out by --where) is
    kept aside: a field every row carries makes each of a million rows larger."""
    skipped: ClassVar[bool] = False
    """Left out by --where: registers nothing (a `SkippedRow`)."""

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def shown(self) -> int:
        """The row number messages name: the original sheet's, through every fix-and-rerun round."""
        return self.origin if self.origin is not None else self.number

    def refuse(self, problem: Problem) -> None:
        if not self.problems:
            self.problems = []
        self.problems.append(problem)

    def warn(self, problem: Problem) -> None:
        if not self.warnings:
            self.warnings = []
        self.warnings.append(problem)

    def entities(self) -> list[tuple[str, str]]:
        """(kind, id) of everything this row registers, parents first."""
        found = [("user", self.user_id)]
        if self.location_id:
            found.append(("location", self.location_id))
        if self.resource_id:
            found.append(("resource", self.resource_id))
        return found


@dataclass(slots=True)
class SkippedRow(RowPlan):
    """A row --where leaves out."""

    skipped: ClassVar[bool] = True


@dataclass
class Plan:
    rows: list[RowPlan]
    users: dict[str, User] = field(default_factory=dict)
    locations: dict[str, Location] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    """Rows each cross-row check refused or warned about, by check (e.g. `repeated_devices`)."""
    _rows_of: dict[str, list[int]] | None = field(default=None, repr=False, compare=False)

    def site_name(self, location_id: str) -> str:
        """The site as the sheet names it (`site 'home' of customer '1001' (rows 5-6)`), for messages
        about what the API holds: a person knows the site by its ref and rows, not by its UUID."""
        location = self.locations.get(location_id)
        user = self.users.get(location.user_id) if location is not None else None
        if location is None or location.site is None or user is None or user.customer is None:
            return ""
        if self._rows_of is None:
            self._rows_of = defaultdict(list)
            for row in self.rows:
                if row.location_id is not None and row.valid:
                    self._rows_of[row.location_id].append(row.shown)
        return f"{_site_name(user.customer, location.site)} ({row_spans(self._rows_of[location_id])})"

    def requests(self, batch_size: int) -> dict[str, int]:
        """How many requests creating everything takes, when nothing exists yet."""
        return {
            "users": -(-len(self.users) // batch_size),
            "locations": -(-len(self.locations) // batch_size),
            "resources": len(self.resources),
        }


SPANS_SHOWN = 6
"""Runs of rows a site's name lists; a site of more rows says how many more."""


def row_spans(numbers: list[int]) -> str:
    """`row 5`, `rows 5-6`, `rows 2, 4-6`: the rows in runs, the first few of them."""
    ordered = sorted(set(numbers))
    spans: list[list[int]] = []
    for n in ordered:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    shown = [f"{a}-{b}" if b > a else str(a) for a, b in spans[:SPANS_SHOWN]]
    rest = sum(b - a + 1 for a, b in spans[SPANS_SHOWN:])
    return ("row " if len(ordered) == 1 else "rows ") + ", ".join(shown) + (f" and {rest} more" if rest else "")


def _rows_named(numbers: list[int], this: int) -> str:
    others = [str(n) for n in numbers if n != this]
    return ("row " if len(others) == 1 else "rows ") + ", ".join(others)


def _site_key(row: Row) -> str | None:
    """Which site of its customer a row describes. Without a location_ref, the site is known by
    its explicit ID, else by its meter point ids, else by its coordinates."""
    if row.location_ref:
        return _ref_key(row.location_ref)
    if row.location_id:
        return "id\x1f" + row.location_id
    if row.meter_point_ids:
        return "mp\x1f" + ",".join(sorted(row.meter_point_ids))
    if row.coordinates:
        return f"geo\x1f{row.latitude!r},{row.longitude!r}"
    return None


@functools.lru_cache(maxsize=4096)
def _ref_key(location_ref: str) -> str:
    """The key of a site known by its ref: one string for the `home` of every customer, which each
    planned site keeps, rather than one each."""
    return "ref\x1f" + location_ref


def _site_name(customer: str, site: str) -> str:
    kind, _, value = site.partition("\x1f")
    label = {"ref": "site", "id": "site", "mp": "site with meter point ids", "geo": "site at"}[kind]
    return f"{label} {value!r} of customer {customer!r}"


def _conflict(values: dict[int, object]) -> list[int] | None:
    """Rows holding the differing values when filled cells disagree; blank cells agree with all."""
    filled = {n: v for n, v in values.items() if v not in (None, (), frozenset())}
    return sorted(filled) if len(set(filled.values())) > 1 else None


_SITE_CELLS = operator.attrgetter("location_id", "location_type", "meter_point_ids", "latitude", "longitude")
_USER_CELLS = operator.attrgetter("user_id")


def _alike(rows: list[tuple[RowPlan, Row]], cells: operator.attrgetter) -> bool:
    """Whether the rows hold the same `cells`, as the rows of one site mostly do: then they cannot
    disagree, and none of their values need comparing one by one."""
    first = cells(rows[0][1])
    return all(cells(row) == first for _, row in rows)


def _refuse_conflicts(rows: list[tuple[RowPlan, Row]], name: str, checks: dict[str, dict[int, object]]) -> bool:
    """Refuse every row of a group whose rows describe it differently, naming the other rows."""
    refused = False
    for column, values in checks.items():
        numbers = _conflict(values)
        if numbers is None:
            continue
        refused = True
        for row_plan, _ in rows:
            shown = {p.number: p.shown for p, _ in rows}
            others = _rows_named([shown[n] for n in numbers], row_plan.shown)
            row_plan.refuse(Problem(column, f"{name} has a different {column} in {others}"))
    return refused


def build(checked: Iterable[Checked]) -> Plan:
    """The plan of a checked sheet. `checked` is read once, and each row becomes its row plan as it
    comes (`records.checking` gives them one at a time), so a million `Checked` are never held at
    once; each customer's cells are let go as soon as that customer is planned.

    A device named by neither resource_ref nor resource_id takes its ID from its customer, site, type
    and position among such devices, counted over every row so a refused row keeps its place."""
    rows: list[RowPlan] = []
    positional: dict[int, str] = {}
    positions: dict[tuple[str, ...], int] = defaultdict(int)
    totals: dict[int, str] = {}
    lone: set[int] = set()
    sighted: list[tuple[RowPlan, Sighting]] = []
    for c in checked:
        resource_id = None
        if c.slot:
            positions[c.slot] += 1
            resource_id = positional[c.number] = derived_id("resource", *c.slot, str(positions[c.slot]))
        row_plan = (SkippedRow if c.skipped else RowPlan)(
            c.number, None, None, resource_id, c.problems, c.warnings, c.origin, c.row if c.valid else None)
        rows.append(row_plan)
        if c.total_cell is not None:
            totals[c.number] = c.total_cell
        if c.lone:
            lone.add(c.number)
        if c.meters is not None and not c.valid:
            sighted.append((row_plan, c.meters))
    del positions
    plan = Plan(rows=rows)
    valid = [p for p in plan.rows if p.row is not None]
    _refuse_totals_and_headings(plan, valid, totals, lone)
    valid = [p for p in valid if p.valid]

    _refuse_shared_meter_points(plan, valid, sighted)
    _refuse_shared_ids(plan, valid)
    _warn_similar_site_refs(plan, valid)
    _warn_repeated_devices(plan, valid)
    _warn_template_example(plan, valid)
    valid = [p for p in valid if p.valid]
    reordered = _plan_customers(plan, valid, positional)
    _register(plan, valid, reordered)
    _warn_swapped_coordinates(plan)
    for row_plan in plan.rows:
        row_plan.row = None
    return plan


def _plan_customers(plan: Plan, valid: list[RowPlan], positional: dict[int, str]) -> bool:
    """Each customer's user, sites and devices, customer by customer in the sheet's order. A
    customer's rows are let go of as soon as it is planned, its cells with them: the plan grows as
    the rows shrink, so a million rows never sit beside a million rows' plan. Each customer with a
    row still valid becomes a user of `plan.users`; True when some customer's first row was refused
    meanwhile, so that the users, in the order of their first valid rows, must be put in order again."""
    reordered = False
    for n, plans in enumerate(_customers(valid), 1):
        if n % GIVE_BACK_EVERY == 0:
            give_back_freed_memory()
        customer = _customer_key(plans[0].row)
        rows = [(p, p.row) for p in plans]
        label = rows[0][1].customer_id or rows[0][1].user_id
        if len(rows) > 1 and not _alike(rows, _USER_CELLS) and _refuse_conflicts(rows, f"customer {label!r}",
                                               {"user_id": {p.number: r.user_id for p, r in rows}}):
            for row_plan in plans:
                row_plan.row = None
            continue
        user_id = (rows[0][1].user_id if len(rows) == 1 else next((r.user_id for _, r in rows if r.user_id), None)
                   ) or derived_id("user", customer)
        for row_plan, _ in rows:
            row_plan.user_id = user_id
        _plan_sites(plan, customer, label, user_id, rows)
        _plan_devices(plan, customer, label, user_id, rows, positional)
        for row_plan in plans:
            row_plan.row = None
        if plans[0].valid:
            plan.users[user_id] = User(user_id, label)
        elif any(p.valid for p in plans):
            plan.users[user_id] = User(user_id, label)
            reordered = True
    return reordered


GIVE_BACK_EVERY = 32_768
"""Customers planned between two `give_back_freed_memory` calls."""


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to call
        return None


def give_back_freed_memory() -> None:
    """Return to the system the C heap's pages that were freed (glibc's `malloc_trim`; elsewhere
    nothing). The plan's tables grow by doubling while planning: each table left behind stays part
    of the process, untouched but counted, unless given back (the benchmark's million-row CSV peaked
    33 MB lower with it). What is given back is taken again only when used."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _customers(valid: list[RowPlan]) -> Iterator[list[RowPlan]]:
    """Each customer's rows, customers in the order of their first rows. A sheet lists a customer's
    rows one after another, nearly always: then each customer's list is made only as it is planned,
    never a million of them at once (they would stay as holes in memory the plan cannot use)."""
    seen: set[str] = set()
    above = None
    for row_plan in valid:
        key = _customer_key(row_plan.row)
        if key != above:
            if key in seen:
                break
            seen.add(key)
            above = key
    else:
        del seen
        for _, rows in itertools.groupby(valid, lambda p: _customer_key(p.row)):
            yield list(rows)
        return
    del seen
    groups: list[list[RowPlan] | None] = []
    customers: dict[str, list[RowPlan]] = {}
    for row_plan in valid:
        key = _customer_key(row_plan.row)
        if key in customers:
            customers[key].append(row_plan)
        else:
            groups.append(customers.setdefault(key, [row_plan]))
    del customers  # the groups, in the sheet's order, are all planning needs: a million keys' table goes now
    for at, plans in enumerate(groups):
        groups[at] = None
        yield plans


def _customer_key(row: Row) -> str:
    return row.customer_id or "\x1fuser\x1f" + row.user_id


def _pairs(plans: list[RowPlan]) -> Iterator[tuple[RowPlan, Row]]:
    """(row plan, its row) for each, made as they are used rather than kept."""
    for row_plan in plans:
        yield row_plan, row_plan.row


def _plan_sites(plan, customer, label, user_id, rows) -> None:
    sites: dict[str, list[tuple[RowPlan, Row]]] = {}
    for pair in rows:
        key = _site_key(pair[1])
        if key in sites:
            sites[key].append(pair)
        elif key:
            sites[key] = [pair]
    for key, site_rows in sites.items():
        same = len(site_rows) == 1 or _alike(site_rows, _SITE_CELLS)
        if not same and _refuse_conflicts(site_rows, _site_name(label, key), {
            "location_id": {p.number: r.location_id for p, r in site_rows},
            "location_type": {p.number: r.location_type for p, r in site_rows},
            "meter_point_ids": {p.number: frozenset(r.meter_point_ids) for p, r in site_rows},
            "latitude": {p.number: r.coordinates for p, r in site_rows},
        }):
            continue
        if same:
            row = site_rows[0][1]
            explicit, location_type, meter_point_ids, coordinates = (row.location_id, row.location_type,
                                                                     row.meter_point_ids, row.coordinates)
        else:
            explicit = next((r.location_id for _, r in site_rows if r.location_id), None)
            location_type = next((r.location_type for _, r in site_rows if r.location_type), None)
            meter_point_ids = next((r.meter_point_ids for _, r in site_rows if r.meter_point_ids), ())
            coordinates = next((r.coordinates for _, r in site_rows if r.coordinates), None)
        location = Location(explicit or derived_id("location", customer, key), user_id, location_type,
                            meter_point_ids, coordinates, key)
        if not location.meter_point_ids and location.coordinates is None:
            for row_plan, _ in site_rows:
                row_plan.refuse(Problem("meter_point_ids", f"{_site_name(label, key)} has neither meter "
                                                 "point ids nor latitude/longitude on any row: fill one of them"))
            continue
        for row_plan, _ in site_rows:
            row_plan.location_id = location.id
        plan.locations[location.id] = location


def _plan_devices(plan, customer, label, user_id, rows, positional) -> None:
    devices: dict[str, list[tuple[RowPlan, Row]]] = {}
    for pair in rows:
        row_plan, row = pair
        if not row.has_resource or not row_plan.valid:
            continue
        if row.resource_ref:
            key = "ref\x1f" + row.resource_ref
        else:
            key = "id\x1f" + (row.resource_id or positional[row_plan.number])
        if key in devices:
            devices[key].append(pair)
        else:
            devices[key] = [pair]
    for key, device_rows in devices.items():
        name = f"device {key.split(chr(31), 1)[1]!r} of customer {label!r}" if len(device_rows) > 1 else ""
        if len(device_rows) > 1 and _refuse_conflicts(device_rows, name, {
            "resource_id": {p.number: r.resource_id for p, r in device_rows},
            "resource_type": {p.number: r.resource_type for p, r in device_rows},
            "location_ref": {p.number: p.location_id for p, r in device_rows if r.resource_type != "Vehicle"},
            "resource_meter_point_id": {p.number: r.resource_meter_point_id for p, r in device_rows},
        }):
            continue
        first = device_rows[0][1]
        vehicle = first.resource_type == "Vehicle"
        explicit = first.resource_id if len(device_rows) == 1 else next(
            (r.resource_id for _, r in device_rows if r.resource_id), None)
        positioned = positional.get(device_rows[0][0].number)
        resource = Resource(explicit or positioned or derived_id("resource", customer, key), user_id,
                            first.resource_type, None if vehicle else device_rows[0][0].location_id,
                            None if vehicle else first.resource_meter_point_id)
        if not vehicle and resource.location_id is None:
            for row_plan, _ in device_rows:
                row_plan.refuse(Problem("location_ref", f"device {key.split(chr(31), 1)[1]!r} of customer "
                                                 f"{label!r} is at a site that could not be planned"))
            continue
        for row_plan, _ in device_rows:
            row_plan.resource_id = resource.id
        plan.resources[resource.id] = resource


def _refuse_shared_ids(plan: Plan, valid: list[RowPlan]) -> None:
    """An explicit ID names one entity: two customers (or sites, or devices) may not share it. Only
    the rows with an explicit ID are looked at again, one pass finding them: nearly always none."""
    explicit_rows = [(row_plan, row) for row_plan, row in _pairs(valid)
                     if row.user_id or row.location_id or row.resource_id]
    for kind, attr, owner in (("user_id", "user_id", lambda r: r.customer_id),
                              ("location_id", "location_id", lambda r: (r.customer_id, _site_key(r))),
                              ("resource_id", "resource_id", lambda r: (r.customer_id, r.resource_ref))):
        holders: dict[str, dict[object, list[RowPlan]]] = defaultdict(lambda: defaultdict(list))
        for row_plan, row in explicit_rows:
            explicit = getattr(row, attr)
            if explicit and row_plan.valid:
                holders[explicit][owner(row)].append(row_plan)
        for explicit, owners in holders.items():
            if len(owners) > 1:
                rows = [p for group in owners.values() for p in group]
                numbers = sorted(p.shown for p in rows)
                for row_plan in rows:
                    row_plan.refuse(Problem(kind, f"{kind} {explicit!r} names different entities "
                                                     f"in rows {', '.join(map(str, numbers))}"))


def _register(plan: Plan, valid: list[RowPlan], reordered: bool = False) -> None:
    """Keep only what valid rows still ask for; a refused row registers nothing, though it keeps a
    position-derived device ID, which the errors file carries to the re-run. Only the entities of
    rows refused while planning are looked at again, and dropped in place: a million-row plan is
    never copied. The users, in the order of their first valid rows, are those planning kept; they
    are put in that order anew only when planning `reordered` them."""
    users: dict[str, User] = {}
    gone_locations: set[str] = set()
    gone_resources: set[str] = set()
    for row_plan in valid:
        if row_plan.valid:
            if reordered and row_plan.user_id not in users:
                users[row_plan.user_id] = plan.users[row_plan.user_id]
        else:
            gone_locations.add(row_plan.location_id)
            gone_resources.add(row_plan.resource_id)
    if reordered:
        plan.users = users
    if gone_locations or gone_resources:
        for row_plan in valid:
            if row_plan.valid:
                gone_locations.discard(row_plan.location_id)
                gone_resources.discard(row_plan.resource_id)
        for location_id in gone_locations:
            plan.locations.pop(location_id, None)
        for resource_id in gone_resources:
            plan.resources.pop(resource_id, None)
    for row_plan in plan.rows:
        if not row_plan.valid:
            row_plan.user_id = row_plan.location_id = None


# rows that are not customers: totals and section headings

KEEP_ON_PURPOSE = ("delete the row, or, to register it as a customer on purpose, give it a site or a device, "
                   "or fill its user_id")
DIGIT_KEYS = 0.9
"""Share of the real customer keys holding a digit above which a key without one stands out."""


def _has_digit(key: str) -> bool:
    return any(map(str.isdigit, key))


def _placement(number: int, numbers: list[int]) -> str | None:
    """Where a row stands out as a heading would: first, last, or after blank rows."""
    at = bisect.bisect_left(numbers, number)
    if at == len(numbers) - 1:
        return "is the sheet's last row"
    if at == 0:
        return "is the sheet's first row"
    gap = range(numbers[at - 1] + 1, number)
    if not gap:
        return None
    return f"comes after blank row {gap[0]}" if len(gap) == 1 else f"comes after blank rows {gap[0]}-{gap[-1]}"


def _refuse_totals_and_headings(plan: Plan, valid: list[RowPlan], totals: dict[int, str],
                                lone: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    """A billing export's `Totalt` or `Bedriftskunder` line has a customer cell and nothing else
    the tool reads: it would become a user. A customer with a site, a device or a user_id on any
    row is real and never refused here. `totals`: row number -> a cell outside the fields reading
    like a totals line (`Totalt`), on a row without site or device; `lone`: such rows with one
    filled cell in all (a heading merged across the row, between a region's customers). Only a row
    with a customer cell and nothing else can be one: without such a row, nothing is looked at."""
    if not any(row.customer_id and not row.user_id and not (row.has_location or row.has_resource)
               for _, row in _pairs(valid)):
        return
    real: dict[str, int] = {}
    for row_plan, row in _pairs(valid):
        if row.customer_id and (row.has_location or row.has_resource or row.user_id):
            real.setdefault(row.customer_id, row_plan.shown)
    keyed = sum(1 for k in real if _has_digit(k))
    digits = len(real) >= 3 and keyed >= DIGIT_KEYS * len(real)

    @functools.cache
    def numbers() -> list[int]:
        """Every row's number, sorted: asked for only when a key reads like a heading."""
        return sorted(p.number for p in plan.rows)

    for row_plan, row in _pairs(valid):
        key = row.customer_id
        if not key or key in real or row.user_id:
            continue
        if reads_like_total(key):
            reason = f"{key!r} reads like a total, not a customer: the row has no site and no device"
        elif total_cell := totals.get(row_plan.number):
            reason = (f"the row reads like a totals line ({total_cell!r} in another column), not customer "
                      f"{key!r}: it has no site and no device")
        elif digits and not _has_digit(key) and words(key) and (
                placed := _placement(row_plan.number, numbers())
                or ("is the only filled cell of its row" if row_plan.number in lone else None)):
            example, at = next((k, n) for k, n in real.items() if _has_digit(k))
            reason = (f"{key!r} reads like a section heading, not a customer: the row has no site and no device, "
                      f"{placed}, and its key holds no digit unlike the other customer keys "
                      f"(such as {example!r} in row {at})")
        else:
            continue
        row_plan.refuse(Problem("customer_id", f"{reason}; {KEEP_ON_PURPOSE}"))
        plan.counts["totals_or_headings"] += 1


# one meter point, one site

def _same_but_spelling(a: str | None, b: str | None) -> bool:
    return bool(a and b) and a != b and _plain(a) == _plain(b)


def _plain(ref: str) -> str:
    return "".join(ref.split()).casefold()  # str.split() splits at the whitespace r"\s" matches


@functools.lru_cache(maxsize=4096)
def _is_plain(ref: str) -> bool:
    """Whether a ref is its own `_plain` form; asked once per distinct ref (`home` of every customer)."""
    return _plain(ref) == ref


Site = tuple[str, str]
"""(customer key, site key): a site as the sheet describes it, before it has an ID."""


def _refuse_shared_meter_points(plan: Plan, valid: list[RowPlan], sighted: list[tuple[RowPlan, Sighting]]) -> None:
    """A meter point measures one site: two planned sites holding it (of two customers, or two
    spellings of one customer's site) would register it twice. Every row of each is refused. A site
    is known by its first row's meter point ids; a meter point held by one site alone (nearly all of
    them) keeps that site, not a list of one.

    A site is held as its first row (`_site_of` names it) rather than as a (customer, key) pair:
    a million sites' pairs, made while every row's cells are held, would stay as holes in memory the
    plan cannot use."""
    seen: dict[str, str | set[str]] = {}
    """Each customer's sites so far: its one site key, or the set of them."""
    holders: dict[str, RowPlan | list[RowPlan]] = {}
    for row_plan, row in _pairs(valid):
        if row_plan.valid and row.meter_point_ids:
            customer, key = _customer_key(row), _site_key(row)
            known = seen.get(customer)
            if known is None:
                seen[customer] = key
            elif known.__class__ is set:
                if key in known:
                    continue
                known.add(key)
            elif known == key:
                continue
            else:
                seen[customer] = {known, key}
            for mpid in row.meter_point_ids:
                held = holders.get(mpid)
                if held is None:
                    holders[mpid] = row_plan
                elif held.__class__ is list:
                    held.append(row_plan)
                else:
                    holders[mpid] = [held, row_plan]
    del seen
    _refuse_meters_of_refused_rows(plan, valid, holders, sighted)
    shared: dict[tuple[str, str], dict[tuple[str, str], list[str]]] = defaultdict(lambda: defaultdict(list))
    for mpid, firsts in holders.items():
        if firsts.__class__ is not list:
            continue
        location_ids = [_site_of(first) for first in firsts]
        for one in sorted(location_ids):
            for other in location_ids:
                if other != one:
                    shared[one][other].append(mpid)
    if not shared:
        return
    sites: dict[tuple[str, str], list[tuple[RowPlan, Row]]] = defaultdict(list)
    for row_plan, row in _pairs(valid):  # rows refused meanwhile (above) still name their site
        if (site := (_customer_key(row), _site_key(row))) in shared:
            sites[site].append((row_plan, row))
    for location_id, others in shared.items():
        mine = sites[location_id][0][1]
        by_ids: dict[tuple[str, ...], list[str]] = defaultdict(list)
        respelt = []
        for other, mpids in others.items():
            rows = sites[other]
            first = rows[0][1]
            label = first.customer_id or first.user_id
            numbers = ", ".join(str(p.shown) for p, _ in rows)
            by_ids[tuple(mpids)].append(f"{_site_name(label, _site_key(first))} "
                                        f"(row{'s' if len(rows) > 1 else ''} {numbers})")
            if first.customer_id == mine.customer_id and _same_but_spelling(first.location_ref, mine.location_ref):
                respelt.append(f"{first.location_ref!r} and {mine.location_ref!r} differ only in case or spaces: "
                               "write them alike if they are one site")
        said = [f"meter point id {', '.join(ids)} is also on {' and '.join(names)}" for ids, names in by_ids.items()]
        message = "; ".join(said) + ": a meter point belongs to one site" + "".join(f"; {r}" for r in respelt)
        for row_plan, _ in sites[location_id]:
            if row_plan.valid:
                row_plan.refuse(Problem("meter_point_ids", message))
                plan.counts["shared_meter_points"] += 1


def _site_of(first: RowPlan) -> Site:
    """The site a site's first row describes."""
    return _customer_key(first.row), _site_key(first.row)


def _holding(holders: dict[str, RowPlan | list[RowPlan]], mpid: str) -> list[Site]:
    held = holders.get(mpid)
    return [] if held is None else [_site_of(first) for first in held] if held.__class__ is list else [_site_of(held)]


def _refuse_meters_of_refused_rows(plan: Plan, valid: list[RowPlan], holders: dict[str, RowPlan | list[RowPlan]],
                                   refused: list[tuple[RowPlan, Sighting]]) -> None:
    """A row refused for another reason still names its meter point ids: a site of another row
    holding one is refused too, both naming each other, so fixing the other cell later cannot let
    the meter point onto two sites."""
    named = {site for _, sighting in refused for mpid in sighting.meter_point_ids for site in _holding(holders, mpid)}
    if not named:
        return
    rows_of: dict[Site, list[RowPlan]] = defaultdict(list)
    for row_plan, row in _pairs(valid):
        if row_plan.valid and row.meter_point_ids and (site := (_customer_key(row), _site_key(row))) in named:
            rows_of[site].append(row_plan)
    for other, sighting in refused:
        for mpid in sighting.meter_point_ids:
            for site in _holding(holders, mpid):
                plans = rows_of[site]
                if site[0] == sighting.customer:  # the customer's own site: a refusal of its own is enough
                    continue
                numbers = ", ".join(str(p.shown) for p in plans)
                other.refuse(Problem("meter_point_ids", f"meter point id {mpid} is also on row"
                                     f"{'s' if len(plans) > 1 else ''} {numbers}: a meter point belongs to one site"))
                for row_plan in plans:
                    row_plan.refuse(Problem("meter_point_ids", (
                        f"meter point id {mpid} is also on row {other.shown}, which is refused for another "
                        "reason: a meter point belongs to one site")))
                    plan.counts["shared_meter_points"] += 1


def _warn_similar_site_refs(plan: Plan, valid: list[RowPlan]) -> None:
    """`home` and `Home ` are two keys, so two sites with two IDs; say so, since it is rarely meant.
    They are not merged: the ref is the partner's key, and every ID derived from it must stay put.
    Two refs alike but not equal cannot both be written plainly (no space, no capital), so only the
    customers with a ref that is not are looked at: nearly always none."""
    customers = {row.customer_id or row.user_id for _, row in _pairs(valid)
                 if row.location_ref and not _is_plain(row.location_ref)}
    if not customers:
        return
    first: dict[tuple[str | None, str], str] = {}
    alike: set[tuple[str | None, str]] = set()
    for _, row in _pairs(valid):
        if row.location_ref and (row.customer_id or row.user_id) in customers:
            key = (row.customer_id or row.user_id, _plain(row.location_ref))
            if first.setdefault(key, row.location_ref) != row.location_ref:
                alike.add(key)
    if not alike:
        return
    written: dict[tuple[str | None, str], list[RowPlan]] = defaultdict(list)
    for row_plan, row in _pairs(valid):
        if row.location_ref and (row.customer_id or row.user_id, _plain(row.location_ref)) in alike:
            written[row.customer_id or row.user_id, row.location_ref].append(row_plan)
    spellings: dict[tuple[str | None, str], dict[str, list[RowPlan]]] = defaultdict(dict)
    for (customer, ref), rows in written.items():
        spellings[customer, _plain(ref)][ref] = rows
    for refs in spellings.values():
        if len(refs) < 2:
            continue
        for ref, rows in refs.items():
            others = "; ".join(f"{o!r} in row{'s' if len(r) > 1 else ''} {', '.join(str(p.shown) for p in r)}"
                               for o, r in refs.items() if o != ref)
            for row_plan in rows:
                if row_plan.valid:
                    row_plan.warn(Problem("location_ref", (
                        f"location_ref {ref!r} differs from {others} only in case or spaces: they are registered "
                        "as different sites; write them alike if they are one")))
                    plan.counts["similar_site_refs"] += 1


# devices without a serial

def _warn_repeated_devices(plan: Plan, valid: list[RowPlan]) -> None:
    """Rows alike in every cell the tool reads, naming a device without a resource_ref (a join that
    repeated it per phone number), each register a device: legitimate for two heat pumps without
    serials, a duplicate otherwise. Only the partner can tell."""
    alike: dict[Row, list[RowPlan]] = defaultdict(list)
    for row_plan, row in _pairs(valid):
        if row_plan.valid and row.has_resource and not row.resource_ref and not row.resource_id:
            alike[row].append(row_plan)
    for row, rows in alike.items():
        if len(rows) < 2:
            continue
        numbers = [p.shown for p in rows]
        label = row.customer_id or row.user_id
        site = _site_key(row)
        owner = _site_name(label, site) if site and row.resource_type != "Vehicle" else f"customer {label!r}"
        for row_plan in rows:
            row_plan.warn(Problem("resource_ref", (
                f"{_rows_named(numbers, row_plan.shown)} describe{'s' if len(rows) == 2 else ''} the same "
                f"{row.resource_type} of {owner} without a resource_ref: each row registers a device "
                f"({len(rows)} in all); if it is one device, delete the repeated rows, otherwise give each "
                "its serial in resource_ref")))
            plan.counts["repeated_devices"] += 1


# coordinates and the template's example

SWAP_REACH = 10.0
"""Degrees a point may lie beyond the quartiles of the sheet's other points and still be among them."""


def _quantile(values: list[float], q: float, skip: int) -> float:
    """The q-quantile (inclusive) of sorted `values` without the one at index `skip`."""
    def at(k: int) -> float:
        return values[k if k < skip else k + 1]

    position = (len(values) - 2) * q
    low = math.floor(position)
    high = min(low + 1, len(values) - 2)
    return at(low) + (at(high) - at(low)) * (position - low)


def _among(value: float, values: list[float], own: float) -> bool:
    """Whether value lies within the Tukey fences of `values` without one `own` value."""
    skip = bisect.bisect_left(values, own)
    q1, q3 = _quantile(values, 0.25, skip), _quantile(values, 0.75, skip)
    reach = max(1.5 * (q3 - q1), SWAP_REACH)
    return q1 - reach <= value <= q3 + reach


def _core(values: list[float]) -> tuple[float, float]:
    """Where a value lies among the others whichever one value is left out: most points, found
    without working out the others' quartiles for each."""
    return _quantile(values, 0.25, 0) - SWAP_REACH, _quantile(values, 0.75, len(values) - 1) + SWAP_REACH


def _warn_swapped_coordinates(plan: Plan) -> None:
    """A site whose point lies away from the sheet's other sites while its swap lies among them
    had latitude and longitude typed in each other's columns."""
    # sorted as the tuples they are, (latitude, longitude), then told apart by their neighbours: a key
    # function would make a tuple for each of the million points and a set one entry each, at the
    # moment the whole plan is held
    points = sorted(loc.coordinates for loc in plan.locations.values() if loc.coordinates)
    points[:] = (c for c, _ in itertools.groupby(points))
    if len(points) < 3:
        return
    lats = sorted(c.latitude for c in points)
    lons = sorted(c.longitude for c in points)
    lat_core, lon_core = _core(lats), _core(lons)
    swapped = set()
    for c in points:
        if lat_core[0] <= c.latitude <= lat_core[1] and lon_core[0] <= c.longitude <= lon_core[1]:
            continue
        here = _among(c.latitude, lats, c.latitude) and _among(c.longitude, lons, c.longitude)
        there = _among(c.longitude, lats, c.latitude) and _among(c.latitude, lons, c.longitude)
        if there and not here:
            swapped.add(c)
    if not swapped:
        return
    for row_plan in plan.rows:
        location = plan.locations.get(row_plan.location_id) if row_plan.valid else None
        if location and location.coordinates in swapped:
            c = location.coordinates
            row_plan.warn(Problem("latitude", (
                f"latitude {c.latitude:g} and longitude {c.longitude:g} look swapped: the point lies away from the "
                "sheet's other sites, and swapped it would lie among them; swap the two cells if so")))
            plan.counts["swapped_coordinates"] += 1


@functools.cache
def _template_example() -> Row:
    return check_cells(0, {k: Cell(v) for k, v in TEMPLATE_EXAMPLE.items()}).row


def _warn_template_example(plan: Plan, valid: list[RowPlan]) -> None:
    """The template's example row, left in a filled sheet, would register a customer nobody has."""
    example = _template_example()
    mine = example.as_dict()
    for row_plan, row in _pairs(valid):
        if not (row_plan.valid and row.customer_id == example.customer_id
                and (row.resource_ref == example.resource_ref or row.meter_point_ids == example.meter_point_ids)):
            continue
        if all(mine[k] == v for k, v in row.as_dict().items() if v not in (None, ())):
            row_plan.warn(Problem("customer_id", (
                f"this is the template's example row (customer {example.customer_id}, device "
                f"{example.resource_ref}): delete it unless you mean to register it")))
            plan.counts["template_example"] += 1
