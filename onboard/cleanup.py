"""`onboard cleanup`: delete what a results file says this tool created, and nothing else.

A results file says per row, not per entity, what a run did: `created` means something of the row
was created and all of it is registered; `exists` means all of it was registered before. So:

- Everything an `exists` row names (its user, location, resource) existed before the run: kept,
  even where a `created` row names it too (a new device at a site registered earlier). An `updated`
  or `differs` row's site was registered before too; its device may be new, but the row cannot
  tell, so everything it names is kept as well.
- The last entity a `created` row names (its resource, else its location, else its user) was
  created by the run: had it existed, its parents would have too, and the row would say `exists`.
- A user or location that `created` rows name only as the parent of something else may have existed
  before (a site registered last month that got a new device). It is deleted only when the run's
  summary proves it was not: the run found no more of its kind registered already than the
  `exists` rows name. Otherwise it is kept, and the output says why.
- Entities only `failed`, `invalid`, `not sent` or `skipped` rows name are kept: no row says this
  tool created them.
- Before a location or user goes, the API is asked what it still holds; deleting it would delete
  that too (deletes cascade), so one still holding anything this command did not delete (another
  program's device, a resource kept by the rules above, one whose deletion failed) is kept.

Resources go first, then locations, then users (`--keep-users` keeps users). An entity already gone
is `gone`, not an error; the command is resumable through its journal (`<stem>.cleanup.journal.sqlite`):
a run stopped part-way and started again deletes the rest and still says `deleted` of what it
deleted before. Refused before anything is sent: a results file of another API, and production
unless `--env production --yes`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onboard import followup
from onboard.errors import UsageError

if TYPE_CHECKING:
    import httpx

    from onboard.api import Answer, Api
    from onboard.journal import Journal
    from onboard.settings import Target
    from onboard.sheet import Sheet

ORDER = ("resource", "location", "user")
COLUMNS = ("resource_cleanup", "location_cleanup", "user_cleanup")
DELETED, GONE, WOULD, NOT_REACHED = "deleted", "gone", "would delete", "not reached"
SETTLED = (DELETED, GONE)

EXISTED = "a row says it existed before this tool's run (status exists, updated or differs)"
HELD_BEFORE = ("exists", "updated", "differs")
"""Row statuses that say the row's site (and so its user) was registered before the run."""
NOT_CREATED = "no row says this tool created it"
MAY_HAVE_EXISTED = "it may have existed before the run"
STILL_HOLDS = "it still holds what this command did not delete"
KEEP_USERS = "--keep-users"


@dataclass
class Entity:
    """One user, location or resource the results file names, and what becomes of it."""

    kind: str
    id: str
    user_id: str
    rows: list[followup.Recorded] = field(default_factory=list)
    kept: str = ""
    """Why it is not deleted (one of the reasons above), with what tells so; empty: it is to go."""
    said: str = NOT_REACHED

    @property
    def goes(self) -> bool:
        return not self.kept


def refuse_production(env: str, base_url: str | None, yes: bool, dry_run: bool = False) -> None:
    """Sandbox and local by default; production only when asked for by name and confirmed."""
    from onboard.settings import is_production, masked

    if not is_production(env, base_url):
        return
    if env != "production":
        raise UsageError(f"{masked(base_url or '')} is the production API: cleanup deletes there only with "
                         "--env production --yes; nothing was sent")
    if not (yes or dry_run):
        raise UsageError("cleanup deletes in production only with --env production --yes (--dry-run shows what it "
                         "would delete); nothing was sent")


def decide(rows: list[followup.Recorded], found_before: dict[str, int], keep_users: bool = False
           ) -> dict[tuple[str, str], Entity]:
    """Each entity the file names, with `kept` set where it must stay (the rules above).
    `found_before`: per kind, how many the runs that wrote the file found registered already."""
    entities: dict[tuple[str, str], Entity] = {}
    last_of_created: set[tuple[str, str]] = set()
    for row in rows:
        named = row.entities()
        for key in named:
            entities.setdefault(key, Entity(*key, row.user_id or key[1])).rows.append(row)
        if row.status == "created" and named:
            last_of_created.add(named[-1])
    existed_before = {kind: sum(1 for (k, _), e in entities.items() if k == kind and _row(e, *HELD_BEFORE))
                      for kind in ORDER}
    for key, entity in entities.items():
        existed = _row(entity, *HELD_BEFORE)
        created = _row(entity, "created")
        if existed is not None:
            entity.kept = f"{EXISTED}: row {existed.number}"
        elif created is None:
            statuses = ", ".join(dict.fromkeys(r.status or "empty" for r in entity.rows))
            entity.kept = f"{NOT_CREATED}: its rows' status is {statuses}"
        elif key not in last_of_created and found_before.get(entity.kind, 0) > existed_before[entity.kind]:
            entity.kept = (f"{MAY_HAVE_EXISTED}: the run found {found_before[entity.kind]} {entity.kind}s registered "
                           f"already and the file's exists rows name {existed_before[entity.kind]}; its rows name it "
                           "only as the parent of what they created")
        elif entity.kind == "user" and keep_users:
            entity.kept = KEEP_USERS
    return entities


def _row(entity: Entity, *statuses: str) -> followup.Recorded | None:
    return next((r for r in entity.rows if r.status in statuses), None)


async def cleanup(source: str | Path | Sheet, where: Target, *, out: str | Path | None = None, dry_run: bool = False,
                  keep_users: bool = False, yes: bool = False, concurrency: int = 16, progress: bool | None = None,
                  state: str | Path | None = None, custom_url: bool = False,
                  transport: httpx.AsyncBaseTransport | None = None,
                  say: Callable[[str], None] = lambda text: None) -> followup.FollowUp:
    """Delete what the results file at `source` says this tool created (the rules above). With
    `out`, `<stem>.cleanup.<ext>`, `<stem>.cleanup.json` and the journal are written there; with
    `dry_run`, nothing is deleted and `<stem>.cleanup-dry-run.<ext>` and `.json` say what would go."""
    from onboard import api, report
    from onboard import sheet as sheets
    from onboard.onboarding import now

    refuse_production(where.env, where.base_url, yes, dry_run)
    clock, started = time.monotonic(), now()
    sheet = source if isinstance(source, sheets.Sheet) else sheets.read(Path(source))
    rows = followup.recorded_rows(sheet, "cleanup")
    runs = followup.same_api(sheet.path, where)
    found_before = {kind: sum(run.found.get(kind, 0) for run in runs) for kind in ORDER}
    kind = "cleanup-dry-run" if dry_run else "cleanup"
    outputs = report.Outputs.beside(sheet.path, Path(out), kind) if out is not None else None
    entities = decide(rows, found_before, keep_users)
    going = {kind: [e for (k, _), e in entities.items() if k == kind and e.goes] for kind in ORDER}
    knobs = followup.emulator_knobs(where, state)
    if knobs is not None:
        say(f"--env local: the emulator runs in-process, state in {knobs.state}")
    stats = api.Stats()
    journal = None if dry_run else _journal(sheet, where, knobs, outputs, going)
    with followup.journal_kept(journal, stats):
        settled = {(kind, entity_id): o.state for kind, entity_id, o in journal.outcomes(SETTLED)} if journal else {}
        if journal is not None and journal.resumed:
            say(f"resuming the unfinished cleanup of {sheet.path.name} ({len(settled)} entities already settled; "
                f"journal {journal.path})")
        async with followup.connected(where, concurrency, knobs, stats, transport) as client:
            work = Deleting(client, entities, journal, settled, dry_run, concurrency, progress)
            stopped = await followup.stopped_by(work(going))
        if journal is not None:
            journal.flush()  # before the outputs are written
        lines, counts, problems, notices = _conclude(rows, entities, dry_run)
        summary = followup.summary_of("cleanup", sheet.path, where, custom_url, started, clock, len(rows), counts,
                                      stats, dry_run=dry_run, keep_users=keep_users)
        result = followup.FollowUp("cleanup", COLUMNS, lines, summary, problems, notices, stopped=stopped)
        if outputs is not None:
            result.outputs = outputs
            followup.write(result, sheet, "Cleanup dry run" if dry_run else "Cleanup")
        if stopped is None and journal is not None:
            journal.finish()
    return result


def _journal(sheet: Sheet, where: Target, knobs: Any, outputs: Any, going: dict[str, list[Entity]]) -> Journal | None:
    if outputs is None:
        return None
    from onboard.journal import Journal, journal_path

    return Journal.open(journal_path(outputs.results.parent, sheet.path, "cleanup"), sheet.path,
                        followup.journal_key(where, knobs), {f"{kind}s": len(going[kind]) for kind in ORDER})


@dataclass
class Deleting:
    """The deletions, kind after kind, each kind's concurrently."""

    client: Api
    entities: dict[tuple[str, str], Entity]
    journal: Journal | None
    settled: dict[tuple[str, str], str]
    """What a stopped run of this cleanup settled (`deleted`, `gone`), by kind and ID."""
    dry_run: bool
    concurrency: int
    progress: bool | None
    uncertain: set[tuple[str, str]] = field(default_factory=set)

    async def __call__(self, going: dict[str, list[Entity]]) -> None:
        if self.journal is not None and self.journal.resumed:
            self.uncertain = self.journal.uncertain()
        for kind, check in (("resource", self._resource), ("location", self._location), ("user", self._user)):
            progress_bar = followup.bar(f"{kind}s {'to check' if self.dry_run else 'to delete'}", len(going[kind]),
                                        kind, self.progress)
            try:
                await followup.each(going[kind], lambda e, check=check, b=progress_bar: self._one(e, check, b),
                                    self.concurrency)
            finally:
                progress_bar.close()

    async def _one(self, entity: Entity, check: Callable[[Entity], Any], progress_bar: Any) -> None:
        try:
            earlier = self.settled.get((entity.kind, entity.id))
            if earlier is not None:
                entity.said = earlier
                return
            holding = await check(entity)
            if holding is not None:
                entity.said = holding
            elif self.dry_run:
                entity.said = WOULD
            else:
                await self._delete(entity)
        finally:
            progress_bar.update(1)

    def _left(self, kind: str, ids: Iterable[str]) -> list[str]:
        """Of what a location or user holds, what is not going with this command: everything the API
        still lists after the deletions; in a dry run, what none of them would take."""
        return [i for i in ids if not (self.dry_run and (kind, i) in self.entities
                                       and self.entities[kind, i].goes)]

    async def _resource(self, entity: Entity) -> str | None:
        if not self.dry_run:
            return None
        answer = await self.client.resource(entity.id)
        if answer.status == 404:
            return GONE
        return None if answer.ok else f"failed: reading it: {followup.refusal(answer)}"

    async def _location(self, entity: Entity) -> str | None:
        answer = await self.client.resources_at(entity.user_id, entity.id)
        if answer.status == 404:
            return self._gone(entity)
        if not answer.ok:
            return f"failed: reading it: {followup.refusal(answer)}"
        left = self._left("resource", (r["resourceId"] for r in answer.body))
        return _holding(entity, {"resource": left}) if left else None

    async def _user(self, entity: Entity) -> str | None:
        answer = await self.client.user(entity.id)
        if answer.status == 404:
            return self._gone(entity)
        if not answer.ok:
            return f"failed: reading it: {followup.refusal(answer)}"
        locations, resources = await self.client.locations_of(entity.id), await self.client.resources_of(entity.id)
        for listed in (locations, resources):
            if not listed.ok:
                return f"failed: reading what it holds: {followup.refusal(listed)}"
        held = {"location": self._left("location", (loc["locationId"] for loc in locations.body)),
                "resource": self._left("resource", (r["resourceId"] for r in resources.body.get("resources", [])))}
        return _holding(entity, held) if any(held.values()) else None

    def _gone(self, entity: Entity) -> str:
        """Not there: gone before this command, or deleted by it before it was stopped."""
        return DELETED if (entity.kind, entity.id) in self.uncertain else GONE

    async def _delete(self, entity: Entity) -> None:
        from onboard.pipeline import Outcome

        if self.journal is not None:
            self.journal.sending(entity.kind, [entity.id])
        if entity.kind == "resource":
            answer = await self.client.delete_resource(entity.id)
        elif entity.kind == "location":
            answer = await self.client.delete_location(entity.user_id, entity.id)
        else:
            answer = await self.client.delete_user(entity.id)
        entity.said = _said(answer, (entity.kind, entity.id) in self.uncertain)
        if self.journal is not None and entity.said in SETTLED:
            self.journal.settled(entity.kind, [entity.id], Outcome(entity.said))


def _said(answer: Answer, sent_before: bool) -> str:
    if answer.ok:
        return DELETED
    if answer.status == 404:  # an earlier attempt of ours may have deleted it, and lost the answer
        return DELETED if answer.ambiguous or sent_before else GONE
    return f"failed: {followup.refusal(answer)}"


def _holding(entity: Entity, held: dict[str, list[str]]) -> str:
    """Kept, so that deleting it does not delete what it holds (deletes cascade)."""
    listed = "; ".join(f"{kind} {', '.join(ids[:3])}{f' and {len(ids) - 3} more' if len(ids) > 3 else ''}"
                       for kind, ids in held.items() if ids)
    entity.kept = f"{STILL_HOLDS}: {listed}"
    return f"kept: {entity.kept}"


def _conclude(rows: list[followup.Recorded], entities: dict[tuple[str, str], Entity], dry_run: bool
              ) -> tuple[list[followup.Line], dict[str, dict[str, int]], list[str], list[str]]:
    """Each row's cells (an entity's outcome on every row naming it), the counts, problems and notices."""
    for entity in entities.values():
        if entity.kept and not entity.said.startswith("kept"):
            entity.said = f"kept: {entity.kept}"
    lines: list[followup.Line] = []
    for row in rows:
        named = dict(row.entities())
        values = tuple(entities[kind, named[kind]].said if kind in named else "" for kind in ORDER)
        marked = {i: v for i, v in enumerate(values) if v.startswith(("failed", NOT_REACHED))}
        lines.append((marked, values))
    states = (WOULD, GONE, "kept") if dry_run else (DELETED, GONE, "kept")
    counts = {f"{kind}s": followup.counted((e.said.split(":")[0] for (k, _), e in entities.items() if k == kind),
                                          states) for kind in ORDER}
    problems = [f"{e.kind} {e.id}: {e.said}" for e in entities.values() if e.said.startswith("failed")]
    notices = []
    for kind in ORDER:
        kept: dict[str, list[Entity]] = {}
        for (k, _), entity in entities.items():
            if k == kind and entity.said.startswith("kept"):
                kept.setdefault(entity.kept.split(":")[0], []).append(entity)
        for which in kept.values():
            others = len(which) - 1
            more = f"; and {others} more {kind}{'s' if others > 1 else ''} for that reason" if others else ""
            notices.append(f"{kind} {which[0].id} kept: {which[0].kept}{more}")
    return lines, counts, problems, notices
