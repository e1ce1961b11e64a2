"""Changing the sites the sheet describes otherwise than the API holds them (`run --update`).

Discovery compares every site the API already holds with its row (`pipeline.compare_location`);
one that differs is settled `differs` and left alone, so a changed meter point id is never missed
in a warnings column nor changed unasked. With `--update` the run then PATCHes each such site,
sending only the fields that differ, after a fresh look at it (the journal may be a day old);
the rows get the status `updated`. PATCH is idempotent, so a run killed between the PATCH and
its record sends it again on resume, and nothing is marked `sending` for it.
"""

from __future__ import annotations

import asyncio

from onboard.api import Api, patch_body
from onboard.pipeline import Ledger, Outcome, compare_location, together
from onboard.plan import Location, Plan

STATE = "differs"


def pending(plan: Plan, ledger: Ledger) -> list[Location]:
    """The sheet's sites settled as differing from what the API holds, not yet updated."""
    return [location for location_id, location in plan.locations.items()
            if (outcome := ledger.get("location", location_id)) is not None and outcome.state == STATE]


async def update(api: Api, locations: list[Location], ledger: Ledger, width: int, test_areas: bool = False,
                 tick=lambda: None) -> None:
    """PATCH each differing site, at most `width` at a time; each outcome is settled as it comes.
    `test_areas` as for `pipeline.compare_location`."""
    slots = asyncio.Semaphore(width)

    async def one(location: Location) -> None:
        async with slots:
            before = ledger.get("location", location.id)
            ledger.settle("location", location.id, await _updated(api, location, before, test_areas))
            ledger.flush()  # nothing here is marked `sending`: no write-ahead would carry it
            tick()

    await together(*(one(location) for location in locations))


async def _updated(api: Api, location: Location, before: Outcome, test_areas: bool) -> Outcome:
    held = await api.location(location.user_id, location.id)
    if not held.ok:
        return Outcome("failed", f"location {location.id} could not be read before updating it "
                                 f"({held.status}): {held.message}", final=not held.ambiguous)
    match = compare_location(location, held.body, test_areas)
    if not match.same:
        return Outcome("failed", match.reason)
    if not match.changes:
        return Outcome("updated", warnings=before.warnings)
    answer = await api.patch_location(location.user_id, location.id, patch_body(location, match.changes))
    if not answer.ok:
        return Outcome("failed", f"the API did not update location {location.id} ({answer.status}): "
                                 f"{answer.message}", final=not answer.ambiguous)
    return Outcome("updated", warnings=before.warnings)
