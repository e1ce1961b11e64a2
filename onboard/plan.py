"""Planning: which users, locations and resources the sheet describes, and the ID of each.

The API lets the client choose every ID. An explicit ID from the sheet is used as it is; any
other is a UUID derived from the partner's own keys, so the same sheet yields the same IDs on
any machine, any day, and a re-run addresses the entities the first run created.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from onboard.records import Checked, Coordinates, Problem, Row

# Fixed forever: changing it would give every entity of every sheet a new ID.
NAMESPACE = uuid.UUID("5b0c3c3e-6f0e-5a43-9d35-0b6a1f1e7a10")


def derived_id(kind: str, *keys: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "\x1f".join((kind, *keys))))


@dataclass(frozen=True)
class User:
    id: str


@dataclass(frozen=True)
class Location:
    id: str
    user_id: str
    location_type: str | None
    meter_point_ids: tuple[str, ...]
    coordinates: Coordinates | None


@dataclass(frozen=True)
class Resource:
    id: str
    user_id: str
    resource_type: str
    location_id: str | None
    meter_point_id: str | None

    @property
    def is_vehicle(self) -> bool:
        return self.resource_type == "Vehicle"


@dataclass
class RowPlan:
    """What one row asks for: the IDs of its user, location and resource, or why it cannot."""

    number: int
    user_id: str | None = None
    location_id: str | None = None
    resource_id: str | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    skipped: bool = False
    """Left out by --where: registers nothing."""

    @property
    def valid(self) -> bool:
        return not self.problems

    def entities(self) -> list[tuple[str, str]]:
        """(kind, id) of everything this row registers, parents first."""
        found = [("user", self.user_id)]
        if self.location_id:
            found.append(("location", self.location_id))
        if self.resource_id:
            found.append(("resource", self.resource_id))
        return found


@dataclass
class Plan:
    rows: list[RowPlan]
    users: dict[str, User] = field(default_factory=dict)
    locations: dict[str, Location] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)

    def requests(self, batch_size: int) -> dict[str, int]:
        """How many requests creating everything takes, when nothing exists yet."""
        return {
            "users": -(-len(self.users) // batch_size),
            "locations": -(-len(self.locations) // batch_size),
            "resources": len(self.resources),
        }


def _rows_named(numbers: list[int], this: int) -> str:
    others = [str(n) for n in numbers if n != this]
    return ("row " if len(others) == 1 else "rows ") + ", ".join(others)


def _site_key(row: Row) -> str | None:
    """Which site of its customer a row describes. Without a location_ref, the site is known by
    its explicit ID, else by its meter point ids, else by its coordinates."""
    if row.location_ref:
        return "ref\x1f" + row.location_ref
    if row.location_id:
        return "id\x1f" + row.location_id
    if row.meter_point_ids:
        return "mp\x1f" + ",".join(sorted(row.meter_point_ids))
    if row.coordinates:
        return f"geo\x1f{row.latitude!r},{row.longitude!r}"
    return None


def _site_name(customer: str, site: str) -> str:
    kind, _, value = site.partition("\x1f")
    label = {"ref": "site", "id": "site", "mp": "site with meter point ids", "geo": "site at"}[kind]
    return f"{label} {value!r} of customer {customer!r}"


def _conflict(values: dict[int, object]) -> list[int] | None:
    """Rows holding the differing values when filled cells disagree; blank cells agree with all."""
    filled = {n: v for n, v in values.items() if v not in (None, (), frozenset())}
    return sorted(filled) if len(set(filled.values())) > 1 else None


def _refuse_conflicts(rows: list[tuple[RowPlan, Row]], name: str, checks: dict[str, dict[int, object]]) -> bool:
    """Refuse every row of a group whose rows describe it differently, naming the other rows."""
    refused = False
    for column, values in checks.items():
        numbers = _conflict(values)
        if numbers is None:
            continue
        refused = True
        for row_plan, _ in rows:
            others = _rows_named(numbers, row_plan.number)
            row_plan.problems.append(Problem(column, f"{name} has a different {column} in {others}"))
    return refused


def _positions(checked: list[Checked]) -> dict[int, str]:
    """IDs of devices named by neither resource_ref nor resource_id: customer, site, type and their
    position among such devices, counted over every row so a refused row keeps its place."""
    counts: dict[tuple[str, ...], int] = defaultdict(int)
    ids = {}
    for c in checked:
        if c.slot:
            counts[c.slot] += 1
            ids[c.number] = derived_id("resource", *c.slot, str(counts[c.slot]))
    return ids


def build(checked: list[Checked]) -> Plan:
    plan = Plan(rows=[RowPlan(c.number, problems=list(c.problems), warnings=list(c.warnings), skipped=c.skipped)
                      for c in checked])
    positional = _positions(checked)
    for row_plan in plan.rows:
        row_plan.resource_id = positional.get(row_plan.number)
    valid = [(p, c.row) for p, c in zip(plan.rows, checked, strict=True) if c.valid]

    customers: dict[str, list[tuple[RowPlan, Row]]] = defaultdict(list)
    for row_plan, row in valid:
        customers[row.customer_id or "\x1fuser\x1f" + row.user_id].append((row_plan, row))

    for customer, rows in customers.items():
        label = rows[0][1].customer_id or rows[0][1].user_id
        if _refuse_conflicts(rows, f"customer {label!r}", {"user_id": {p.number: r.user_id for p, r in rows}}):
            continue
        user_id = next((r.user_id for _, r in rows if r.user_id), None) or derived_id("user", customer)
        for row_plan, _ in rows:
            row_plan.user_id = user_id
        _plan_sites(plan, customer, label, user_id, rows)
        _plan_devices(plan, customer, label, user_id, rows, positional)

    _refuse_shared_ids(plan, valid)
    _register(plan, valid)
    return plan


def _plan_sites(plan, customer, label, user_id, rows) -> None:
    sites: dict[str, list[tuple[RowPlan, Row]]] = defaultdict(list)
    for row_plan, row in rows:
        key = _site_key(row)
        if key:
            sites[key].append((row_plan, row))
    for key, site_rows in sites.items():
        name = _site_name(label, key)
        if _refuse_conflicts(site_rows, name, {
            "location_id": {p.number: r.location_id for p, r in site_rows},
            "location_type": {p.number: r.location_type for p, r in site_rows},
            "meter_point_ids": {p.number: frozenset(r.meter_point_ids) for p, r in site_rows},
            "latitude": {p.number: r.coordinates for p, r in site_rows},
        }):
            continue
        explicit = next((r.location_id for _, r in site_rows if r.location_id), None)
        location = Location(
            id=explicit or derived_id("location", customer, key),
            user_id=user_id,
            location_type=next((r.location_type for _, r in site_rows if r.location_type), None),
            meter_point_ids=next((r.meter_point_ids for _, r in site_rows if r.meter_point_ids), ()),
            coordinates=next((r.coordinates for _, r in site_rows if r.coordinates), None),
        )
        if not location.meter_point_ids and location.coordinates is None:
            for row_plan, _ in site_rows:
                row_plan.problems.append(Problem("meter_point_ids", f"{name} has neither meter point ids nor "
                                                 "latitude/longitude on any row: fill one of them"))
            continue
        for row_plan, _ in site_rows:
            row_plan.location_id = location.id
        plan.locations[location.id] = location


def _plan_devices(plan, customer, label, user_id, rows, positional) -> None:
    devices: dict[str, list[tuple[RowPlan, Row]]] = defaultdict(list)
    for row_plan, row in rows:
        if not row.has_resource or not row_plan.valid:
            continue
        if row.resource_ref:
            key = "ref\x1f" + row.resource_ref
        else:
            key = "id\x1f" + (row.resource_id or positional[row_plan.number])
        devices[key].append((row_plan, row))
    for key, device_rows in devices.items():
        name = f"device {key.split(chr(31), 1)[1]!r} of customer {label!r}"
        if _refuse_conflicts(device_rows, name, {
            "resource_id": {p.number: r.resource_id for p, r in device_rows},
            "resource_type": {p.number: r.resource_type for p, r in device_rows},
            "location_ref": {p.number: p.location_id for p, r in device_rows if r.resource_type != "Vehicle"},
            "resource_meter_point_id": {p.number: r.resource_meter_point_id for p, r in device_rows},
        }):
            continue
        first = device_rows[0][1]
        vehicle = first.resource_type == "Vehicle"
        explicit = next((r.resource_id for _, r in device_rows if r.resource_id), None)
        positioned = positional.get(device_rows[0][0].number)
        resource = Resource(
            id=explicit or positioned or derived_id("resource", customer, key),
            user_id=user_id,
            resource_type=first.resource_type,
            location_id=None if vehicle else device_rows[0][0].location_id,
            meter_point_id=None if vehicle else first.resource_meter_point_id,
        )
        if not vehicle and resource.location_id is None:
            for row_plan, _ in device_rows:
                row_plan.problems.append(Problem("location_ref", f"{name} is at a site that could not be planned"))
            continue
        for row_plan, _ in device_rows:
            row_plan.resource_id = resource.id
        plan.resources[resource.id] = resource


def _refuse_shared_ids(plan: Plan, valid: list[tuple[RowPlan, Row]]) -> None:
    """An explicit ID names one entity: two customers (or sites, or devices) may not share it."""
    for kind, attr, owner in (("user_id", "user_id", lambda r: r.customer_id),
                              ("location_id", "location_id", lambda r: (r.customer_id, _site_key(r))),
                              ("resource_id", "resource_id", lambda r: (r.customer_id, r.resource_ref))):
        holders: dict[str, dict[object, list[RowPlan]]] = defaultdict(lambda: defaultdict(list))
        for row_plan, row in valid:
            explicit = getattr(row, attr)
            if explicit and row_plan.valid:
                holders[explicit][owner(row)].append(row_plan)
        for explicit, owners in holders.items():
            if len(owners) > 1:
                rows = [p for group in owners.values() for p in group]
                numbers = sorted(p.number for p in rows)
                for row_plan in rows:
                    row_plan.problems.append(Problem(kind, f"{kind} {explicit!r} names different entities "
                                                     f"in rows {', '.join(map(str, numbers))}"))


def _register(plan: Plan, valid: list[tuple[RowPlan, Row]]) -> None:
    """Keep only what valid rows still ask for; a refused row registers nothing, though it keeps a
    position-derived device ID, which the errors file carries to the re-run."""
    wanted = [p for p, _ in valid if p.valid]
    locations = {p.location_id for p in wanted}
    resources = {p.resource_id for p in wanted}
    plan.users = {p.user_id: User(p.user_id) for p in wanted}
    plan.locations = {k: v for k, v in plan.locations.items() if k in locations}
    plan.resources = {k: v for k, v in plan.resources.items() if k in resources}
    for row_plan in plan.rows:
        if not row_plan.valid:
            row_plan.user_id = row_plan.location_id = None
