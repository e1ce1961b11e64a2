"""Onboarding a customer sheet end to end, from Python and from the command line alike.

`read` turns a sheet (a file, a DataFrame, or rows as dicts) into a checked `Intake`; `validated`
describes it without sending anything; `send` registers it and describes what happened. The
public `validate`, `run` and `run_async` (exported by `onboard`) put those together; the command
line calls the same functions and only renders what they return.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import gc
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from onboard import __version__
from onboard.errors import Interrupted, OnboardError

if TYPE_CHECKING:
    import httpx
    import pandas

    from onboard.mapping import Mapping
    from onboard.plan import Plan
    from onboard.report import Outputs, RowResult
    from onboard.settings import Target
    from onboard.sheet import Sheet

Source = "str | os.PathLike[str] | pandas.DataFrame | Iterable[dict[str, Any]]"
OUTPUT_COLUMNS = ("row", "status", "user_id", "location_id", "resource_id", "error", "warnings")


@contextlib.contextmanager
def bulk() -> Iterator[None]:
    """Hold Python's cycle collector while rows become records: it walks every live object each time
    enough new ones appear, which over a million rows costs more than the work itself, and rows make
    no cycles. What survives (the plan) is then frozen out of its walks for the rest of the run."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


# reading


@dataclass
class Intake:
    """A sheet read, checked and planned: what would be sent, and what the user should hear of."""

    sheet: Sheet
    plan: Plan
    notices: list[str] = field(default_factory=list)
    """Things worth saying about the sheet as a whole (hidden rows, unknown values, unused mappings)."""
    counts: dict[str, int] = field(default_factory=dict)
    unrecognised: dict[str, dict[str, int]] = field(default_factory=dict)
    started: str = ""
    source: Any = field(default=None, repr=False)
    """The DataFrame or rows read, when no file was: results keep their own values and dtypes."""


def mapping_of(mapping: Mapping | dict | str | os.PathLike | None, maps: Iterable[str] = (),
               map_values: Iterable[str] = ()) -> Mapping:
    """A `Mapping` from what a caller gives: one already made, a dict shaped like a mapping file, or
    the path of a TOML or YAML mapping file; `--map`-style and `--map-value`-style strings on top."""
    from onboard import mapping as mappings

    if isinstance(mapping, mappings.Mapping):
        base = mapping
    elif isinstance(mapping, dict):
        base = mappings.Mapping.of(mapping, "mapping")
    else:
        base = mappings.load(mapping)
    extra = mappings.load(None, maps, map_values)
    return base.merged(extra)


def read(source: Any, *, mapping: Mapping | dict | str | os.PathLike | None = None, sheet: str | None = None,
         where: Iterable[str] = (), strict_meter_ids: bool = False, name: str | None = None,
         columns_read: Callable[[Sheet], None] | None = None) -> Intake:
    """Read, check and plan a sheet. `columns_read` is called once the columns are known, before they
    are checked (the command line prints them there)."""
    from onboard import plan as planning
    from onboard import records, report
    from onboard import sheet as sheets

    started = now()
    with bulk():
        words = mapping_of(mapping)
        found = sheets.read(source, sheet, words, name)
        if columns_read is not None:
            columns_read(found)
        sheets.check_columns(found)
        conditions = [records.Condition.parse(text) for text in where]
        used: set[tuple[str, str]] = set()
        tally = _Tally()
        plan = planning.build(tally(records.checking(found, strict_meter_ids, words, conditions, used)))
        hidden, unrecognised = tally.hidden, tally.unrecognised
    intake = Intake(found, plan, started=started, source=None if isinstance(source, (str, os.PathLike)) else source,
                    unrecognised={k: dict(v.most_common()) for k, v in unrecognised.items()})
    _notice(intake, words, used, hidden, bool(conditions), unrecognised, report.CHECKS)
    return intake


class _Tally:
    """Counts what the notices say of the rows (hidden ones, unrecognised values) as they pass from
    checking to planning, which holds no row's `Checked` once it has taken what it needs."""

    def __init__(self) -> None:
        self.hidden = 0
        self.unrecognised: dict[str, Counter] = {}

    def __call__(self, checked: Iterable[Any]) -> Iterator[Any]:
        for c in checked:
            if c.hidden:
                self.hidden += 1
            for field_name, text in c.unknown:
                self.unrecognised.setdefault(field_name, Counter())[text] += 1
            yield c


def _notice(intake: Intake, words: Mapping, used: set, hidden: int, chosen: bool,
            unrecognised: dict[str, Counter], checks: dict[str, str]) -> None:
    from onboard import records
    from onboard.mapping import normalise

    notices, counts, plan = intake.notices, intake.counts, intake.plan
    headers = {normalise(c.header) for c in intake.sheet.columns}
    for given in words.columns:
        if normalise(given) not in headers:
            notices.append(f"the mapping names column {given!r}, which the sheet does not have")
    for name, word in records.unused_values(words, used):
        notices.append(f"the mapping's {name} value {word!r} appears in no row")
    if hidden:
        counts["hidden rows"] = hidden
        notices.append(f"{rows(hidden)} {'is' if hidden == 1 else 'are'} hidden in the workbook (filtered out or "
                       "hidden by hand); they are read like the others: choose rows with --where \"Column=value\""
                       if not chosen else
                       f"{rows(hidden)} {'is' if hidden == 1 else 'are'} hidden in the workbook; --where chooses "
                       "which rows are read")
    for name, found in unrecognised.items():
        listed = ", ".join(f"{word!r} ({rows(n)})" for word, n in found.most_common(8))
        more = f" and {len(found) - 8} more" if len(found) > 8 else ""
        word = found.most_common(1)[0][0]
        notices.append(f"{name} values not recognised: {listed}{more}; map them to the API's values with "
                       f'--map-value "{name}:{word}=VALUE" or a [values.{name}] table in a --mapping file')
    for name, n in sorted(plan.counts.items()):
        if n:
            notices.append(f"{rows(n)} flagged: {checks.get(name, name)} (see each row's error or warnings)")
    gs1 = sum(1 for r in plan.rows if any("GS1 check digit" in w.message for w in r.warnings))
    if gs1:
        counts["rows with a meter point id failing the GS1 check digit"] = gs1
        notices.append(f"{rows(gs1)} {'has' if gs1 == 1 else 'have'} a meter point id failing the GS1 check "
                       "digit: sent as they are (--strict-meter-ids refuses them)")


# results


@dataclass
class Result:
    """What a `validate` or `run` concluded, row by row, and in all.

    `rows` holds each input row's `RowResult`, in order (a validation's are made from the plan as they
    are read); `results` and `errors` are pandas DataFrames (one row per input row, in order; only the
    rows to fix); `summary` is the dict the summary JSON holds; `ok` is what exit code 0 means: every
    row registered (or valid), none to fix, none left unsent."""

    intake: Intake = field(repr=False)
    rows: Sequence[RowResult] = field(repr=False)
    summary: dict[str, Any]
    outputs: Outputs | None = None
    """Where the outputs were written, when they were."""
    errors_written: bool = False
    stopped: OnboardError | None = None
    """Why a run stopped before its end (the API stopped answering, Ctrl-C); what is done is kept."""
    folded: Any = None
    notices: list[str] = field(default_factory=list)
    """What the run found worth saying beyond the sheet's own notices (a site the API holds with
    devices the sheet does not name)."""

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in self.summary["status"].items())
        return f"<onboard.Result {self.summary['rows']} rows: {counts}{'' if self.ok else ' (not ok)'}>"

    @property
    def ok(self) -> bool:
        return self.stopped is None and not any(r.to_fix or r.status == "not sent" for r in self.rows)

    @property
    def results(self) -> pandas.DataFrame:
        return _frame(self.intake, self.rows, lambda r: True)

    @property
    def errors(self) -> pandas.DataFrame:
        return _frame(self.intake, self.rows, lambda r: r.to_fix)

    def write(self, out_dir: str | os.PathLike, stem: str | None = None,
              format: Literal["xlsx", "csv"] | None = None) -> Outputs:
        """Write the usual outputs (results, errors when some row is to fix, summary) into `out_dir`,
        as `<stem>.results.<format>`, and return where they went."""
        from onboard import report

        sheet = self.intake.sheet
        chosen = format or ("csv" if sheet.format == "csv" else "xlsx")
        stem = stem or sheet.path.stem
        kind = "run" if "requests" in self.summary or self.stopped else "validation"
        outputs = report.Outputs.at(Path(out_dir), stem, chosen, kind)
        self.errors_written = write_outputs(outputs, self.intake, self.rows, self.summary, chosen)
        self.outputs = outputs
        return outputs


def _frame(intake: Intake, results: Sequence[RowResult], keep: Callable[[RowResult], bool]) -> pandas.DataFrame:
    """The input's columns (a DataFrame's own, with their dtypes; a file's cells as read), then the
    tool's columns, for the rows `keep` keeps."""
    import pandas

    from onboard.report import own_values

    chosen = [i for i, result in enumerate(results) if keep(result)]
    if isinstance(intake.source, pandas.DataFrame):
        frame = intake.source.iloc[chosen].reset_index(drop=True)
    elif intake.source is not None:
        frame = pandas.DataFrame(list(intake.source)).iloc[chosen].reset_index(drop=True)
    else:
        sheet = intake.sheet
        headers = [c.header or f"column {c.index + 1}" for c in sheet.columns]
        kept = set(chosen)
        lines = [[None if v == "" else v for v in row.values] + [None] * (len(headers) - len(row.values))
                 for position, row in enumerate(sheet.rows) if position in kept]
        frame = pandas.DataFrame(lines, columns=headers)
    mine = pandas.DataFrame([own_values(results[i]) for i in chosen], columns=list(OUTPUT_COLUMNS))
    frame = frame.drop(columns=[c for c in OUTPUT_COLUMNS if c in frame.columns])
    return pandas.concat([frame, mine], axis=1)


def write_outputs(outputs: Outputs, intake: Intake, results: Sequence[RowResult], summary: dict,
                  format: str | None = None) -> bool:
    from onboard import report

    with bulk():
        return report.write(outputs, intake.sheet, results, summary, format)


def summarise(intake: Intake, results: Sequence[RowResult], ledger: Any, **extra: Any) -> dict[str, Any]:
    from onboard import report

    return report.summarise(intake.sheet, intake.plan, results, ledger, tool=f"onboard {__version__}",
                            input_sha256=fingerprint(intake.sheet), **extra, notices=intake.counts,
                            unrecognised_values=intake.unrecognised)


def fingerprint(sheet: Sheet) -> str:
    from onboard.journal import fingerprint as file_fingerprint

    return sheet.sha256 or file_fingerprint(sheet.path)


class Validation(Sequence["RowResult"]):
    """Every row's result when nothing is sent, made from the plan's row each time it is asked for:
    the plan already holds all a validation result says, so a million rows' results are never held
    beside it. Making them again on each of the few passes the summary and outputs make costs about
    what keeping a list of them does."""

    def __init__(self, sheet: Sheet, plan: Plan) -> None:
        self._sheet, self._plan = sheet, plan

    def __len__(self) -> int:
        return len(self._plan.rows)

    def __getitem__(self, index: int | slice) -> RowResult | list[RowResult]:  # type: ignore[override]
        from onboard.report import validation_result

        if isinstance(index, slice):
            return [validation_result(self._sheet, row_plan) for row_plan in self._plan.rows[index]]
        return validation_result(self._sheet, self._plan.rows[index])

    def __iter__(self) -> Iterator[RowResult]:
        from onboard.report import validation_result

        sheet = self._sheet
        for row_plan in self._plan.rows:
            yield validation_result(sheet, row_plan)

    def outlines(self) -> Iterator[tuple[str, Sequence[str], str]]:
        """Each row's status, reasons and warnings, as its result has them: what the summary reads,
        a million rows' worth without a million results made for it."""
        from onboard.report import validation_outline

        return map(validation_outline, self._plan.rows)


def validated(intake: Intake, out: str | os.PathLike | None = None) -> Result:
    """Every row `valid` or `invalid`: nothing is sent. With `out`, the validation outputs are
    written there (`<stem>.validation.<ext>` and `<stem>.validation.json`)."""
    results = Validation(intake.sheet, intake.plan)
    result = Result(intake, results, summarise(intake, results, None, started=intake.started, finished=now()))
    if out is not None:
        from onboard import report

        outputs = report.Outputs.beside(intake.sheet.path, Path(out), "validation")
        result.errors_written = write_outputs(outputs, intake, results, result.summary)
        result.outputs = outputs
    return result


# sandbox test areas


def refuse_production(where: Target, what: str) -> None:
    """Steps the vendor's guide gives for the sandbox only never reach production."""
    from onboard.errors import UsageError

    if where.production:
        raise UsageError(f"{what} is for the sandbox (the guide's test areas): refused for production "
                         f"({where.shown_base_url}); nothing was sent")


def place_in_test_area(intake: Intake, number: int) -> None:
    """Give every planned location its own point inside test area `number` (one per location ID,
    the same for the same sheet), keeping its meter point ids; each row says where it went."""
    from dataclasses import replace

    from onboard import areas
    from onboard.records import Coordinates, Problem

    plan = intake.plan
    ids = sorted(plan.locations)
    points = dict(zip(ids, areas.place(number, ids), strict=True))
    for location_id, (latitude, longitude) in points.items():
        plan.locations[location_id] = replace(plan.locations[location_id],
                                              coordinates=Coordinates(latitude, longitude))
    name = areas.area(number).name
    for row in plan.rows:
        if row.location_id in points and row.valid:
            latitude, longitude = points[row.location_id]
            row.warn(Problem("latitude", f"placed in test area {number} ({name}) at {latitude}, {longitude}: "
                                         "the sheet's own coordinates, if any, are not sent"))


# sending


def target(env: str = "sandbox", base_url: str | None = None, token_url: str | None = None,
           client_id: str | None = None, client_secret: str | None = None) -> Target:
    """Where a run goes and with which credentials: the arguments, else the environment and `.env`."""
    from onboard.settings import target as resolve

    return resolve(env, base_url, token_url, client_id, client_secret)


async def send(intake: Intake, where: Target, *, out: str | os.PathLike | None = None, batch_size: int = 100,
               concurrency: int = 16, progress: bool | None = None, state: str | os.PathLike | None = None,
               custom_url: bool = False, enroll: bool = False, update: bool = False,
               transport: httpx.AsyncBaseTransport | None = None,
               say: Callable[[str], None] = lambda text: None) -> Result:
    """Register the intake's plan at `where` and describe what happened. With `out`, the outputs and
    the journal are written there, and an interrupted run of the same sheet resumes; without it the
    run keeps its progress in memory. Refused credentials raise before anything is sent; the API
    stopping part-way (or a cancellation) ends the run with `Result.stopped` set. With `enroll`, every
    registered user is then enrolled in the program (a user must be eligible: in the sandbox, a
    location inside a test area). A site the API holds with other fields than the sheet's is
    `differs` and left alone; with `update`, those fields are changed (`updated`). `transport`
    replaces the network (or, for `--env local`, the in-process emulator) under the same client."""
    from onboard import api, report
    from onboard.pipeline import BatchSize, Ledger, Run, stop_everything
    from onboard.settings import Tuning, load

    clock = time.monotonic()
    sheet, plan = intake.sheet, intake.plan
    outputs = report.Outputs.beside(sheet.path, Path(out)) if out is not None else None
    tuning, stats, batch, knobs = load(Tuning, "ONBOARD_* settings"), api.Stats(), BatchSize(batch_size), None
    if where.local:
        from onboard.emulator.faults import EmulatorSettings

        knobs = load(EmulatorSettings, "ONBOARD_EMULATOR_* settings", **({"state": Path(state)} if state else {}))
        say(f"--env local: the emulator runs in-process, state in {knobs.state}")
    journal = _journal(intake, where, knobs, outputs)
    try:
        ledger = Ledger(journal, journal.outcomes() if journal is not None and journal.resumed else ())
        if journal is not None and journal.resumed:
            say(f"resuming the unfinished run of {sheet.path.name} ({len(ledger.outcomes)} entities already "
                f"settled; journal {journal.path})")
        stopped: OnboardError | None = None
        try:
            async with api.connect(where, concurrency, tuning, transport=transport, emulator_knobs=knobs,
                                   stats=stats) as client:
                await client.sign_in()
                test_areas = not where.production
                await Run(client, plan, ledger, batch, concurrency, show_progress=progress, test_areas=test_areas)()
                if update:
                    await _update(client, plan, ledger, concurrency, progress, test_areas)
                if enroll:
                    await _enroll(client, plan, ledger, concurrency, progress)
        except OnboardError as exc:
            if not stats.token_fetches:
                if journal is not None:
                    journal.discard()
                raise
            stopped = exc
        except (KeyboardInterrupt, asyncio.CancelledError):
            stopped = Interrupted("interrupted: what is done is kept; run the same command again to resume")
        try:
            ledger.flush()  # before the outputs are written: a run killed meanwhile has nothing to look up
        except OnboardError as exc:  # the journal cannot be written: the outputs still say what was done
            stopped = stopped or exc
        if stopped is not None:
            stop_everything(plan, ledger, f"not sent: {stopped}")
        results = report.row_results(sheet, plan, ledger, enrolled=enroll)
        summary = summarise(
            intake, results, ledger, started=intake.started, finished=now(),
            environment="custom" if custom_url and not where.local else where.env,
            base_url=where.shown_base_url, resumed=bool(journal and journal.resumed), **stats.as_dict(),
            batch_size=batch.value, seconds=round(time.monotonic() - clock, 2),
            journal="closed" if stopped is None or journal is None else str(journal.path),
        )
        result = Result(intake, results, summary, stopped=stopped, notices=_run_notices(plan, ledger))
        if outputs is not None:
            result.errors_written = write_outputs(outputs, intake, results, summary)
            result.outputs = outputs
            folded_into = report.original_results(sheet.path, outputs)
            if folded_into is not None:
                from onboard import sheet as sheets

                result.folded = (folded_into, report.fold_back(folded_into, sheet, results, sheets.read))
        if stopped is None and journal is not None:
            journal.finish()
    finally:
        if journal is not None:
            journal.release()
    return result


SHOWN_SITES = 10
"""Sites holding devices the sheet does not name that the end of a run lists; the rest are counted."""


def _run_notices(plan: Plan, ledger: Any) -> list[str]:
    """What the run found that the rows' warnings alone would bury: said once, at its end."""
    from onboard.pipeline import unnamed_devices

    notes = unnamed_devices(plan, ledger)
    if len(notes) > SHOWN_SITES:
        notes = notes[:SHOWN_SITES] + [f"... and {len(notes) - SHOWN_SITES} more sites holding devices the sheet "
                                       "does not name: see the warnings column of the results"]
    return notes


async def _enroll(client: Any, plan: Plan, ledger: Any, concurrency: int, progress: bool | None) -> None:
    from tqdm.auto import tqdm

    from onboard import enrollment

    users = enrollment.pending(plan, ledger)
    with tqdm(total=len(users), desc="enrollments", unit="user",
              disable=None if progress is None else not progress) as bar:
        await enrollment.enroll(client, users, ledger, concurrency, tick=lambda: bar.update(1))


async def _update(client: Any, plan: Plan, ledger: Any, concurrency: int, progress: bool | None,
                  test_areas: bool) -> None:
    from tqdm.auto import tqdm

    from onboard import update

    locations = update.pending(plan, ledger)
    if not locations:
        return
    with tqdm(total=len(locations), desc="updates", unit="location",
              disable=None if progress is None else not progress) as bar:
        await update.update(client, locations, ledger, concurrency, test_areas, tick=lambda: bar.update(1))


def _journal(intake: Intake, where: Target, knobs: Any, outputs: Outputs | None):
    if outputs is None:
        return None
    from onboard.journal import Journal, journal_path

    plan, sheet = intake.plan, intake.sheet
    planned = {"users": len(plan.users), "locations": len(plan.locations), "resources": len(plan.resources)}
    key = where.shown_base_url + (f" (state {knobs.state.resolve()})" if where.local else "")
    return Journal.open(journal_path(outputs.results.parent, sheet.path), sheet.path, key, planned,
                        sha256=sheet.sha256)


# the public face


def validate(source: Any, mapping: Mapping | dict | str | os.PathLike | None = None,
             strict_meter_ids: bool = False, *, sheet: str | None = None, where: Iterable[str] = (),
             out: str | os.PathLike | None = None, name: str | None = None) -> Result:
    """Check every row of a sheet without calling the API.

    `source` is a path (.xlsx, .xls, .ods, .csv), a pandas DataFrame or an iterable of dicts, read
    with the same header names and aliases as a file, and `mapping` (a dict shaped like a mapping
    file, e.g. `{"columns": {"Kundenr": "customer_id"}}`, or a mapping file's path). Rows are
    `valid` or `invalid`; with `out`, the validation outputs are written there."""
    return validated(read(source, mapping=mapping, sheet=sheet, where=where, strict_meter_ids=strict_meter_ids,
                          name=name), out)


def run(source: Any, env: str = "sandbox", base_url: str | None = None, token_url: str | None = None,
        client_id: str | None = None, client_secret: str | None = None, out: str | os.PathLike | None = None,
        batch_size: int = 100, concurrency: int = 16, progress: bool | None = None, *,
        mapping: Mapping | dict | str | os.PathLike | None = None, sheet: str | None = None,
        where: Iterable[str] = (), strict_meter_ids: bool = False, state: str | os.PathLike | None = None,
        name: str | None = None, test_area: int | None = None, enroll: bool = False,
        update: bool = False) -> Result:
    """Register a sheet's customers, sites and devices in the Energy Coordination API.

    `env` is "sandbox", "production" or "local" (the emulator, in-process; `state` is its SQLite
    file). Credentials come from the arguments, else SPARK_CLIENT_ID / SPARK_CLIENT_SECRET in the
    environment or a `.env` file. With `out`, the outputs and the journal are written there and an
    interrupted run resumes, as on the command line. `test_area` (1 or 2, the sandbox's) places every
    location at its own point inside that test area; `enroll` then enrolls every registered user;
    `update` changes the sites the API holds with other fields than the sheet's (else they are
    `differs`, and left alone).

    Inside a running event loop (a Jupyter cell), the run goes on in a worker thread with a loop of
    its own, and this call waits for it; `await onboard.run_async(...)` runs in the caller's loop."""
    coroutine = run_async(source, env, base_url, token_url, client_id, client_secret, out, batch_size, concurrency,
                          progress, mapping=mapping, sheet=sheet, where=where, strict_meter_ids=strict_meter_ids,
                          state=state, name=name, test_area=test_area, enroll=enroll, update=update)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="onboard") as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def run_async(source: Any, env: str = "sandbox", base_url: str | None = None, token_url: str | None = None,
                    client_id: str | None = None, client_secret: str | None = None,
                    out: str | os.PathLike | None = None, batch_size: int = 100, concurrency: int = 16,
                    progress: bool | None = None, *, mapping: Mapping | dict | str | os.PathLike | None = None,
                    sheet: str | None = None, where: Iterable[str] = (), strict_meter_ids: bool = False,
                    state: str | os.PathLike | None = None, name: str | None = None,
                    test_area: int | None = None, enroll: bool = False, update: bool = False) -> Result:
    """`run`, in the caller's event loop."""
    where_to = target(env, base_url, token_url, client_id, client_secret)
    if test_area is not None:
        refuse_production(where_to, "test_area")
    intake = read(source, mapping=mapping, sheet=sheet, where=where, strict_meter_ids=strict_meter_ids, name=name)
    if test_area is not None:
        place_in_test_area(intake, test_area)
    return await send(intake, where_to, out=out, batch_size=batch_size, concurrency=concurrency, progress=progress,
                      state=state, custom_url=base_url is not None, enroll=enroll, update=update)


# words


def now() -> str:
    return dt.datetime.now(dt.UTC).astimezone().isoformat(timespec="seconds")


def rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"
