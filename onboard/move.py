"""`onboard move`: the guide's "Move Locations", for every location of a results file at once.

`--test-area N` moves each registered location to its own point inside the sandbox's test area N
(`areas.place`, keyed by location ID: one point per location, the same on every run), with
`PATCH /users/{userId}/locations/{locationId}` and only `coordinates` in the body. `--restore`
moves each back to the coordinates its rows give in the sheet. A location the sheet gave no
coordinates has them removed with a PUT of the location as the API holds it, without coordinates:
the spec's PATCH cannot remove a field (its `coordinates` is not nullable, an absent field is left
as it was). The PUT keeps the location's type and meter point ids as the API holds them.

Each location is read first (`GET`), so the output says where it was; one already where it should
be is not sent again. The journal (`<stem>.move.journal.sqlite`) keeps where each location was
before this command first moved it, so a run stopped part-way and started again still says where
each location was, and that it was this command that moved it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onboard import followup
from onboard.errors import UsageError

if TYPE_CHECKING:
    import httpx

    from onboard.api import Api
    from onboard.journal import Journal
    from onboard.onboarding import Intake
    from onboard.settings import Target

COLUMNS = ("move", "was_latitude", "was_longitude", "now_latitude", "now_longitude", "now_in_test_area")
Point = tuple[float, float] | None
"""(latitude, longitude), or None for a location without coordinates."""

MOVED, THERE, REMOVED, GONE, NOT_REACHED = "moved", "already there", "coordinates removed", "gone", "not reached"


@dataclass
class Site:
    """One location of the results file: where it should go, and what became of it."""

    user_id: str
    location_id: str
    to: Point
    """Where it goes; None to remove its coordinates (`--restore` of a site the sheet gave none)."""
    cannot: str = ""
    """Why it cannot be moved as asked (its sheet coordinates cannot be read), when so."""
    said: str = NOT_REACHED
    was: Point = None
    now: Point = None


def refuse_production(env: str, base_url: str | None = None) -> None:
    """Moving locations is a sandbox rehearsal: production is refused before anything is sent."""
    from onboard.settings import PRODUCTION_URL, is_production, masked

    if is_production(env, base_url):
        raise UsageError(f"move is for the sandbox (the guide's test areas): refused for production "
                         f"({masked(base_url or PRODUCTION_URL)}); nothing was sent")


def _point(coordinates: dict[str, Any] | None) -> Point:
    if not coordinates or coordinates.get("latitude") is None or coordinates.get("longitude") is None:
        return None
    return float(coordinates["latitude"]), float(coordinates["longitude"])


def _same(a: Point, b: Point) -> bool:
    if a is None or b is None:
        return a is b
    return all(math.isclose(x, y, rel_tol=0, abs_tol=1e-9) for x, y in zip(a, b, strict=True))


def sites_of(intake: Intake, rows: list[followup.Recorded], area: int | None) -> dict[str, Site]:
    """Each registered location of the file, with where it goes: its point in `area`, or (without
    one) the coordinates its rows give in the sheet, or none."""
    from onboard import areas

    plan = intake.plan
    sites: dict[str, Site] = {}
    for row in rows:
        if _may_hold(row) and row.location_id and row.user_id and row.location_id not in sites:
            sites[row.location_id] = Site(row.user_id, row.location_id, None)
    if area is not None:
        for site, point in zip(sites.values(), areas.place(area, list(sites)), strict=True):
            site.to = point
        return sites
    unreadable: dict[str, str] = {}
    for row, row_plan in zip(rows, plan.rows, strict=True):
        if row.location_id and row_plan.problems:
            unreadable.setdefault(row.location_id, f"row {row.number}: "
                                  + "; ".join(problem.message for problem in row_plan.problems))
    for site in sites.values():
        location = plan.locations.get(site.location_id)
        if location is None:
            site.cannot = ("the sheet's coordinates of this site cannot be read ("
                           f"{unreadable.get(site.location_id, 'no valid row describes it')})")
        elif location.coordinates is not None:
            site.to = (location.coordinates.latitude, location.coordinates.longitude)
    return sites


async def move(intake: Intake, where: Target, *, area: int | None = None, restore: bool = False,
               out: str | Path | None = None, concurrency: int = 16, progress: bool | None = None,
               state: str | Path | None = None, custom_url: bool = False,
               transport: httpx.AsyncBaseTransport | None = None,
               say: Callable[[str], None] = lambda text: None) -> followup.FollowUp:
    """Move the locations of a results file into test area `area`, or back (`restore`). Refused
    before anything is sent for production, and for a results file of another API. With `out`,
    `<stem>.move.<ext>`, `<stem>.move.json` and the journal are written there."""
    from onboard import api, report

    if (area is None) == (not restore):
        raise UsageError("move needs one of --test-area N and --restore")
    refuse_production(where.env, where.base_url)
    if area is not None:
        from onboard import areas

        try:
            areas.area(area)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    clock = time.monotonic()
    sheet = intake.sheet
    rows = followup.recorded_rows(sheet, "move")
    followup.same_api(sheet.path, where)
    outputs = report.Outputs.beside(sheet.path, Path(out), "move") if out is not None else None
    sites = sites_of(intake, rows, area)
    to = f"test area {area}" if area is not None else "the sheet's coordinates"
    knobs = followup.emulator_knobs(where, state)
    if knobs is not None:
        say(f"--env local: the emulator runs in-process, state in {knobs.state}")
    stats = api.Stats()
    journal = _journal(intake, where, knobs, outputs, to, len(sites))
    with followup.journal_kept(journal, stats):
        known = dict(_journalled(journal))
        if journal is not None and journal.resumed:
            say(f"resuming the unfinished move of {sheet.path.name} to {to} (journal {journal.path})")
        async with followup.connected(where, concurrency, knobs, stats, transport) as client:
            progress_bar = followup.bar(f"locations to {to}", len(sites), "location", progress)
            try:
                stopped = await followup.stopped_by(followup.each(
                    sites.values(), lambda site: _move(client, site, journal, known, progress_bar), concurrency))
            finally:
                progress_bar.close()
        if journal is not None:
            journal.flush()  # before the outputs are written
        lines, counts, problems, notices = _conclude(rows, sites)
        summary = followup.summary_of("move", sheet.path, where, custom_url, intake.started, clock, len(rows),
                                      counts, stats, to=to)
        result = followup.FollowUp("move", COLUMNS, lines, summary, problems, notices, stopped=stopped)
        if outputs is not None:
            result.outputs = outputs
            followup.write(result, sheet, "Move")
        if stopped is None and journal is not None:
            journal.finish()
    return result


def _journal(intake: Intake, where: Target, knobs: Any, outputs: Any, to: str, planned: int) -> Journal | None:
    """The command's own journal, kept per destination: moving to an area and back are two runs."""
    if outputs is None:
        return None
    from onboard.journal import Journal, journal_path

    path = journal_path(outputs.results.parent, intake.sheet.path, "move")
    return Journal.open(path, intake.sheet.path, f"{followup.journal_key(where, knobs)} to {to}",
                        {"locations": planned})


def _journalled(journal: Journal | None):
    """Where each location was before this command first moved it, for a resumed run."""
    if journal is None or not journal.resumed:
        return
    for _, location_id, outcome in journal.outcomes(("sent", MOVED, REMOVED)):
        try:
            was = json.loads(outcome.reason)
        except ValueError:
            continue
        yield location_id, (outcome.state, tuple(was) if was else None)


async def _move(client: Api, site: Site, journal: Journal | None, known: dict[str, tuple[str, Point]],
                progress_bar: Any) -> None:
    try:
        await _settle(client, site, journal, known.get(site.location_id))
    finally:
        progress_bar.update(1)


async def _settle(client: Api, site: Site, journal: Journal | None, earlier: tuple[str, Point] | None) -> None:
    from onboard import api
    from onboard.pipeline import Outcome

    if site.cannot:
        site.said = f"failed: cannot restore: {site.cannot}"
        return
    held = await client.location(site.user_id, site.location_id)
    if held.status == 404:
        site.said = GONE
        return
    if not held.ok:
        site.said = f"failed: reading it: {followup.refusal(held)}"
        return
    site.was = site.now = _point(held.body.get("coordinates"))
    if earlier is not None:  # this command moved it, or sent the move, before it was stopped
        site.was = earlier[1]
    if _same(site.now, site.to):
        site.said = (REMOVED if site.to is None else MOVED) if earlier is not None else THERE
        return
    if site.to is None and not held.body.get("meterPointIds"):
        site.said = ("failed: the sheet gives this site no coordinates, but the API holds no meter point ids for it: "
                     "a location needs one or the other, so its coordinates stay")
        return
    if journal is not None and earlier is None:
        journal.settled("location", [site.location_id], Outcome("sent", json.dumps(site.was)))
    if site.to is None:
        answer = await client.put_location(site.user_id, site.location_id, api.without_coordinates_body(held.body))
    else:
        answer = await client.patch_location(site.user_id, site.location_id, api.coordinates_body(*site.to))
    if answer.status == 404:
        site.said = GONE
    elif not answer.ok:
        site.said = f"failed: {followup.refusal(answer)}"
    else:
        site.now = _point(answer.body.get("coordinates")) if answer.body is not None else site.to
        if site.to is None and site.now is not None:
            site.said = "failed: the API kept the coordinates (a PUT without them did not remove them)"
        else:
            site.said = REMOVED if site.to is None else MOVED
    if journal is not None and site.said in (MOVED, REMOVED):
        journal.settled("location", [site.location_id], Outcome(site.said, json.dumps(site.was)))


def _where(point: Point) -> str:
    from onboard import areas

    inside = areas.which_area(*point) if point is not None else None
    return f"in test area {inside}" if inside else "outside the test areas"


def _may_hold(row: followup.Recorded) -> bool:
    """A registered row's site is there; a failed row's may be (what failed may be its device, or
    its user's enrollment, which needs the site in a test area): each is read before it is moved."""
    return row.registered or row.status == "failed"


def _conclude(rows: list[followup.Recorded], sites: dict[str, Site]
              ) -> tuple[list[followup.Line], dict[str, dict[str, int]], list[str], list[str]]:
    """Each row's cells (a location's on every row of it), the counts, problems and notices."""
    from onboard import areas

    lines: list[followup.Line] = []
    for row in rows:
        site = sites.get(row.location_id or "") if _may_hold(row) else None
        if site is None:
            why = "no site" if _may_hold(row) else f"not moved: the row's status is {row.status or 'empty'}"
            lines.append(({}, (why, None, None, None, None, None)))
            continue
        was, now = site.was or (None, None), site.now or (None, None)
        inside = areas.which_area(*site.now) if site.now is not None else None
        values = (site.said, *was, *now, inside if inside is not None else ("no" if site.now is not None else None))
        lines.append(({0: site.said} if site.said.startswith(("failed", NOT_REACHED)) else {}, values))
    counts = {"locations": followup.counted((s.said.split(":")[0] for s in sites.values()),
                                            (MOVED, THERE) if any(s.to for s in sites.values()) else (REMOVED,)),
              "now": followup.counted((_where(s.now) for s in sites.values()), ())}
    problems = [f"location {s.location_id}: {s.said}" for s in sites.values() if s.said.startswith("failed")]
    notices = [f"location {s.location_id} of user {s.user_id} is gone: nothing to move"
               for s in sites.values() if s.said == GONE]
    return lines, counts, problems, notices
