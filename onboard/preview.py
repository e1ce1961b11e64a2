"""`onboard plan`: what a run of the sheet would do, told row by row, without a single write.

It is `run` with its writes left out: the same discovery reads what the API holds for the sheet's
users, the same comparisons and refusals decide, and where `run` would send, the entity is settled
`planned` instead (so its children are planned too). Each row then says `create`, `unchanged`,
`update: <fields>` (a site the API holds otherwise: what `run --update` would PATCH), `conflict:
<why>` (what `run` would refuse: an ID another user holds, a resource of another type, a meter
point of another site) or `invalid: <why>` (the sheet's own fault). Nothing is written to the API,
so there is no journal: running it again reads again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from onboard import followup
from onboard.pipeline import FIELDS, BatchSize, Ledger, Outcome, Run

if TYPE_CHECKING:
    import httpx

    from onboard.onboarding import Intake
    from onboard.plan import RowPlan
    from onboard.settings import Target

COLUMNS = ("row", "plan", "plan_detail")
"""`row`: the row of the original sheet, as messages name it (an export's title rows above its
header shift every row of the plan file against the input's)."""
VERDICTS = ("create", "update", "unchanged", "conflict", "invalid", "not checked", "skipped")


async def preview(intake: Intake, where: Target, *, out: str | Path | None = None, concurrency: int = 16,
                  progress: bool | None = None, state: str | Path | None = None, custom_url: bool = False,
                  transport: httpx.AsyncBaseTransport | None = None,
                  say: Callable[[str], None] = lambda text: None) -> followup.FollowUp:
    """Compare the intake with what the API at `where` holds; with `out`, write `<stem>.plan.<ext>`
    and `<stem>.plan.json` there."""
    from onboard import api, report

    clock = time.monotonic()
    sheet, plan = intake.sheet, intake.plan
    outputs = report.Outputs.beside(sheet.path, Path(out), "plan") if out is not None else None
    knobs = followup.emulator_knobs(where, state)
    if knobs is not None:
        say(f"--env local: the emulator runs in-process, state in {knobs.state}")
    stats, ledger = api.Stats(), Ledger()
    async with followup.connected(where, concurrency, knobs, stats, transport) as client:
        stopped = await followup.stopped_by(
            Run(client, plan, ledger, BatchSize(100), concurrency, show_progress=progress, dry=True,
                test_areas=not where.production)())
    validated = report.row_results(sheet, plan, None)
    lines: list[followup.Line] = []
    problems: list[str] = []
    for row, checked in zip(plan.rows, validated, strict=True):
        verdict, detail = _verdict(row, checked.error, ledger)
        lines.append(({1: verdict} if verdict.startswith(("conflict", "invalid", "not checked")) else {},
                      (checked.row, verdict, detail)))
        if verdict.startswith(("conflict", "invalid")):
            problems.append(f"{checked.named}: {verdict}" + (f" ({detail})" if detail else ""))
    counts = {
        "rows": followup.counted((values[1].split(":")[0] for _, values in lines), VERDICTS[:4]),
        **{f"{kind}s": followup.counted((_state(ledger.get(kind, i)) for i in items), order)
           for kind, items, order in (("user", plan.users, ("create", "exists")),
                                      ("location", plan.locations, ("create", "exists", "update")),
                                      ("resource", plan.resources, ("create", "exists")))},
    }
    summary = followup.summary_of("plan", sheet.path, where, custom_url, intake.started, clock, len(plan.rows),
                                  counts, stats)
    result = followup.FollowUp("plan", COLUMNS, lines, summary, problems, stopped=stopped)
    if outputs is not None:
        result.outputs = outputs
        followup.write(result, sheet, "Plan")
    return result


def _state(outcome: Outcome | None) -> str:
    if outcome is None or (outcome.state == "failed" and not outcome.final):
        return "not checked"
    return {"planned": "create", "differs": "update", "failed": "conflict", "invalid": "conflict"}.get(
        outcome.state, outcome.state)


def _verdict(row: RowPlan, error: str, ledger: Ledger) -> tuple[str, str]:
    """What `run` would do with the row, and why (the fields that differ, what conflicts)."""
    if row.skipped:
        return "skipped: left out by --where", ""
    if not row.valid:
        return f"invalid: {error}", ""
    entities = row.entities()
    outcomes = [ledger.get(kind, entity_id) for kind, entity_id in entities]
    refused = [o for o in outcomes if o is not None and (o.state == "invalid" or (o.state == "failed" and o.final))]
    if refused:
        return f"conflict: {refused[-1].reason}", ""
    unknown = [o for o in outcomes if o is None or o.state == "failed"]
    if unknown:
        return "not checked", unknown[-1].reason if unknown[-1] else "the API was not reached for it"
    new = [kind for (kind, _), o in zip(entities, outcomes, strict=True) if o.state == "planned"]
    differs = [o for o in outcomes if o.state == "differs"]
    if differs:
        also = f"; and create the {', '.join(new)}" if new else ""
        return f"update: {', '.join(FIELDS[c] for c in differs[-1].changes)}{also}", differs[-1].reason
    if new and len(new) < len(entities):
        return f"create: {', '.join(new)}", f"already registered: {', '.join(k for k, _ in entities if k not in new)}"
    if new:
        return "create", ""
    warnings = "; ".join(dict.fromkeys(w for o in outcomes for w in o.warnings))
    return "unchanged", warnings
