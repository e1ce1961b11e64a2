"""`onboard eligibility`: which meter points and users the SPARK program takes, and who is enrolled.

The sheet (or a results file) is read and planned as `run` reads it, so each row has its user's and
site's IDs; then each distinct meter point id and each distinct user is asked once, concurrently:
`GET /meters/{mpid}/eligible`, `GET /users/{userId}/eligibility`, `GET /users/{userId}/enrollment`.
Nothing is written to the API, so there is no journal: running it again asks again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onboard import followup

if TYPE_CHECKING:
    import httpx

    from onboard.api import Answer, Api
    from onboard.onboarding import Intake
    from onboard.settings import Target

COLUMNS = ("eligible", "user_eligible", "enrolled")
NOT_REACHED = "not reached"
NOT_REGISTERED = "not registered"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _failed(answer: Answer) -> str:
    return f"failed: {followup.refusal(answer)}"


def meter_said(answer: Answer) -> str:
    return _yes(answer.body["isEligible"]) if answer.ok else _failed(answer)


def user_said(answer: Answer) -> str:
    if answer.status == 404:
        return NOT_REGISTERED
    return _yes(answer.body["isEligible"]) if answer.ok else _failed(answer)


def enrollment_said(answer: Answer) -> str:
    """`isEnrolled` where the answer has it; else an enrollment ID says so (the spec makes neither required)."""
    if answer.status == 404:
        return NOT_REGISTERED
    if not answer.ok:
        return _failed(answer)
    enrolled = answer.body.get("isEnrolled")
    return _yes(enrolled if enrolled is not None else bool(answer.body.get("enrollmentId")))


def combined(said: list[str]) -> str:
    """A cell of several meter point ids: `yes` or `no` when all agree, `mixed` when they do not;
    an id the API could not answer for makes the whole cell unknown."""
    trouble = next((s for s in said if s not in ("yes", "no")), None)
    if trouble is not None:
        return trouble
    return said[0] if len(set(said)) == 1 else "mixed"


async def eligibility(intake: Intake, where: Target, *, out: str | Path | None = None, concurrency: int = 16,
                      progress: bool | None = None, state: str | Path | None = None, custom_url: bool = False,
                      transport: httpx.AsyncBaseTransport | None = None,
                      say: Callable[[str], None] = lambda text: None) -> followup.FollowUp:
    """Ask the API about every meter point and user of the intake; with `out`, write
    `<stem>.eligibility.<ext>` and `<stem>.eligibility.json` there."""
    from onboard import api, report

    clock = time.monotonic()
    sheet, plan = intake.sheet, intake.plan
    outputs = report.Outputs.beside(sheet.path, Path(out), "eligibility") if out is not None else None
    meters_of = {lid: location.meter_point_ids for lid, location in plan.locations.items()}
    meters = list(dict.fromkeys(m for row in plan.rows if row.location_id for m in meters_of.get(row.location_id, ())))
    users = list(dict.fromkeys(row.user_id for row in plan.rows if row.user_id))
    knobs = followup.emulator_knobs(where, state)
    if knobs is not None:
        say(f"--env local: the emulator runs in-process, state in {knobs.state}")
    stats = api.Stats()
    meter: dict[str, str] = {}
    user: dict[str, tuple[str, str]] = {}
    async with followup.connected(where, concurrency, knobs, stats, transport) as client:
        bars = {"meter": followup.bar("meter points", len(meters), "id", progress),
                "user": followup.bar("users", len(users), "user", progress)}
        try:
            stopped = await followup.stopped_by(followup.each(
                [("meter", m) for m in meters] + [("user", u) for u in users],
                lambda job: _ask(client, job, meter, user, bars), concurrency))
        finally:
            for each_bar in bars.values():
                each_bar.close()
    lines, counts, problems = _conclude(intake, meter, user, meters, users)
    summary = followup.summary_of("eligibility", sheet.path, where, custom_url, intake.started, clock,
                                  len(plan.rows), counts, stats)
    result = followup.FollowUp("eligibility", COLUMNS, lines, summary, problems, stopped=stopped)
    if outputs is not None:
        result.outputs = outputs
        followup.write(result, sheet, "Eligibility")
    return result


async def _ask(client: Api, job: tuple[str, str], meter: dict[str, str], user: dict[str, tuple[str, str]],
               bars: dict[str, Any]) -> None:
    kind, value = job
    if kind == "meter":
        meter[value] = meter_said(await client.meter_eligibility(value))
    else:
        async with asyncio.TaskGroup() as both:
            eligible = both.create_task(client.user_eligibility(value))
            enrolled = both.create_task(client.enrollment(value))
        user[value] = (user_said(eligible.result()), enrollment_said(enrolled.result()))
    bars[kind].update(1)


def _conclude(intake: Intake, meter: dict[str, str], user: dict[str, tuple[str, str]], meters: list[str],
              users: list[str]) -> tuple[list[followup.Line], dict[str, dict[str, int]], list[str]]:
    """Each row's cells, the counts, and what could not be told."""
    plan = intake.plan
    lines: list[followup.Line] = []
    for row in plan.rows:
        if row.skipped or not row.valid:
            why = "not asked: left out by --where" if row.skipped else "not asked: the row is invalid"
            lines.append(({}, (why, why, why)))
            continue
        location = plan.locations.get(row.location_id) if row.location_id else None
        if location is None:
            eligible = ""
        elif not location.meter_point_ids:
            eligible = "no meter point id"
        else:
            eligible = combined([meter.get(m, NOT_REACHED) for m in location.meter_point_ids])
        user_eligible, enrolled = user.get(row.user_id, (NOT_REACHED, NOT_REACHED))
        values = (eligible, user_eligible, enrolled)
        marked = {i: v for i, v in enumerate(values) if v.startswith(("failed", NOT_REACHED))}
        lines.append((marked, values))
    problems = [f"meter point id {m}: {meter[m]}" for m in meters if meter.get(m, "").startswith("failed")]
    for u in users:
        said = user.get(u, (NOT_REACHED, NOT_REACHED))
        problems += [f"user {u}: {what} {s}" for what, s in zip(("eligibility", "enrollment"), said, strict=True)
                     if s.startswith("failed")]
    names = {"yes": "eligible", "no": "not eligible"}
    counts = {
        "meter points": followup.counted((names.get(s, s.split(":")[0]) for s in (meter.get(m, NOT_REACHED)
                                                                                   for m in meters)),
                                         ("eligible", "not eligible")),
        "users": followup.counted((names.get(s, s.split(":")[0]) for s, _ in (user.get(u, (NOT_REACHED,) * 2)
                                                                              for u in users)),
                                  ("eligible", "not eligible")),
        "enrollments": followup.counted(({"yes": "enrolled", "no": "not enrolled"}.get(s, s.split(":")[0])
                                         for _, s in (user.get(u, (NOT_REACHED,) * 2) for u in users)),
                                        ("enrolled", "not enrolled")),
        "rows eligible": followup.counted((values[0].split(":")[0] or "no site" for _, values in lines),
                                          ("yes", "no", "mixed")),
    }
    return lines, counts, problems
