"""What the commands that follow a run share: reading a results file back, knowing which API it was
written against, a session with that API, and writing the input's rows with the command's columns.

`eligibility`, `move` and `cleanup` carry on from the outputs of `onboard run`. Their requests go
through the same `Api.call` as a run's (retries, throttle, redaction, every answer checked against
the contract), at most `--concurrency` in flight; their outputs sit beside the input, in its format.
"""

from __future__ import annotations

import asyncio
import glob
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onboard import __version__
from onboard.errors import ConfigError, InputError, Interrupted, OnboardError

if TYPE_CHECKING:
    import httpx
    from tqdm.auto import tqdm

    from onboard.api import Answer, Api, Stats
    from onboard.emulator.faults import EmulatorSettings
    from onboard.journal import Journal
    from onboard.report import Outputs
    from onboard.settings import Target
    from onboard.sheet import Sheet

REGISTERED = ("created", "updated", "exists", "differs")
KINDS = ("user", "location", "resource")


# what a results file says


@dataclass(frozen=True, slots=True)
class Recorded:
    """One row of a results file as the run left it: its status and the IDs it was given."""

    number: int
    status: str
    user_id: str | None = None
    location_id: str | None = None
    resource_id: str | None = None

    @property
    def registered(self) -> bool:
        return self.status in REGISTERED

    def entities(self) -> list[tuple[str, str]]:
        """(kind, id) of everything the row names, parents first."""
        named = (("user", self.user_id), ("location", self.location_id), ("resource", self.resource_id))
        return [(kind, entity_id) for kind, entity_id in named if entity_id]


def recorded_rows(sheet: Sheet, command: str) -> list[Recorded]:
    """Each row's status and IDs, from the tool's own columns; a sheet without them is refused."""
    from onboard.report import recorded

    if not any(c.own == "status" for c in sheet.columns) or sheet.column("user_id") is None:
        raise InputError(f"{sheet.path.name} is not a results file of `onboard run` (it has no status and user_id "
                         f"columns): `onboard {command}` reads the <stem>.results file a run wrote")
    rows = []
    for row in sheet.rows:
        said = recorded(sheet, row)
        ids = [(said.get(name) or "").strip() or None for name in ("user_id", "location_id", "resource_id")]
        rows.append(Recorded(row.number, said["status"].strip(), *ids))
    return rows


# which API a results file was written against


@dataclass(frozen=True)
class Origin:
    """A run whose rows a results file holds, as its summary records it."""

    environment: str
    base_url: str
    told_by: str
    """Where this was read: the file's Summary sheet, or a summary JSON beside it."""
    found: Mapping[str, int] = field(default_factory=dict)
    """Entities of each kind (`user`, ...) the run found registered already (`exists`), by count."""


def _run_stem(results: Path) -> str:
    """The stem of the input the run read: `customers` for `customers.results.xlsx` (and for its
    errors file), `customers.errors` for the results of an errors file run again."""
    stem = results.stem
    for suffix in (".results", ".errors"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _origin(said: Mapping[str, Any], found: Mapping[str, int], told_by: str) -> Origin | None:
    environment, base_url = said.get("environment"), said.get("base_url")
    if not isinstance(environment, str) or not isinstance(base_url, str) or not base_url:
        return None
    return Origin(environment, base_url, told_by, found)


def _from_summary_sheet(results: Path) -> Origin | None:
    """A results workbook carries its run's summary: the first `environment` and `base_url` lines
    (a workbook brought up to date by an errors-file run keeps the original run's lines below)."""
    from python_calamine import CalamineError, CalamineWorkbook

    try:
        book = CalamineWorkbook.from_path(str(results))
        lines = book.get_sheet_by_name("Summary").to_python() if "Summary" in book.sheet_names else []
    except (CalamineError, OSError, ValueError):
        return None
    said: dict[str, Any] = {}
    for line in lines:
        if len(line) >= 2 and isinstance(line[0], str):
            said.setdefault(line[0], line[1])
    found = {}
    for kind in KINDS:
        try:
            found[kind] = int(float(said.get(f"{kind}s exists", 0) or 0))
        except (TypeError, ValueError):
            found[kind] = 0
    return _origin(said, found, f"the Summary sheet of {results.name}")


def _from_summary_json(path: Path) -> Origin | None:
    try:
        said = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(said, dict):
        return None
    entities = said.get("entities") if isinstance(said.get("entities"), dict) else {}
    found = {}
    for kind in KINDS:
        counts = entities.get(f"{kind}s")
        found[kind] = counts.get("exists", 0) if isinstance(counts, dict) and isinstance(counts.get("exists"), int) \
            else 0
    return _origin(said, found, path.name)


def origins(results: Path) -> list[Origin]:
    """The runs a results file holds rows of: the run that wrote it (its Summary sheet, else the
    `<stem>.summary.json` beside it), and the errors-file runs brought up to date into it (their
    `<stem>.errors....summary.json` beside it)."""
    stem = _run_stem(results)
    first = _from_summary_sheet(results) if results.suffix.lower() == ".xlsx" else None
    found = [first] if first else []
    summaries = [results.with_name(f"{stem}.summary.json")] if first is None else []
    summaries += sorted(results.parent.glob(f"{glob.escape(stem)}.errors*.summary.json"))
    for path in summaries:
        origin = _from_summary_json(path) if path.is_file() else None
        if origin is not None:
            found.append(origin)
    return found


def same_api(results: Path, where: Target) -> list[Origin]:
    """The runs a results file holds, refused (exit 2) unless every one went to the API this command
    would send to: run's IDs are derived from the sheet, so the same rows name entities in every
    environment, and a sandbox rehearsal's results must never steer writes in production."""
    found = origins(results)
    if not found:
        raise ConfigError(f"cannot tell which API {results.name} was written against: it has no Summary sheet and "
                          f"no {_run_stem(results)}.summary.json beside it; put the summary that run wrote back "
                          "beside it")
    here = where.shown_base_url.rstrip("/")
    for origin in found:
        if origin.base_url.rstrip("/") != here:
            raise ConfigError(
                f"{results.name} holds the results of a run against {origin.base_url} ({origin.environment}, says "
                f"{origin.told_by}), but this command would send to {here} ({where.env}): its rows say what that "
                "run did there, not here. Run it with that run's --env or --base-url; nothing was sent")
    return found


# a session with the API


def emulator_knobs(where: Target, state: str | Path | None) -> EmulatorSettings | None:
    if not where.local:
        return None
    from onboard.emulator.faults import EmulatorSettings
    from onboard.settings import load

    return load(EmulatorSettings, "ONBOARD_EMULATOR_* settings", **({"state": Path(state)} if state else {}))


def journal_key(where: Target, knobs: EmulatorSettings | None) -> str:
    """What a journal is kept for, besides the input: the API (for the emulator, its state file)."""
    return where.shown_base_url + (f" (state {knobs.state.resolve()})" if knobs is not None else "")


@asynccontextmanager
async def connected(where: Target, concurrency: int, knobs: EmulatorSettings | None, stats: Stats,
                    transport: httpx.AsyncBaseTransport | None = None) -> AsyncIterator[Api]:
    """A signed-in `Api`: refused credentials raise here, before anything is sent."""
    from onboard import api
    from onboard.settings import Tuning, load

    tuning = load(Tuning, "ONBOARD_* settings")
    async with api.connect(where, concurrency, tuning, transport=transport, emulator_knobs=knobs,
                           stats=stats) as client:
        await client.sign_in()
        yield client


@contextmanager
def journal_kept(journal: Journal | None, stats: Stats) -> Iterator[None]:
    """A command's journal for the length of its work: let go of at the end, and forgotten when the
    work failed before a token was fetched (credentials refused: nothing was sent, nothing to resume)."""
    try:
        yield
    except BaseException:
        if journal is not None and not stats.token_fetches:
            journal.discard()
        raise
    finally:
        if journal is not None:
            journal.release()


async def stopped_by(work: Awaitable[None]) -> OnboardError | None:
    """Run the work; the API stopping part-way (or Ctrl-C) ends it with what is done kept."""
    try:
        await work
    except OnboardError as exc:
        return exc
    except (KeyboardInterrupt, asyncio.CancelledError):
        return Interrupted("interrupted: what is done is kept; run the same command again to resume")
    return None


async def each(items: Iterable[Any], work: Callable[[Any], Awaitable[None]], width: int) -> None:
    """Run `work` over items, at most `width` at once; the first failure stops them all."""
    slots = asyncio.Semaphore(width)
    try:
        async with asyncio.TaskGroup() as group:
            for item in items:
                await slots.acquire()
                group.create_task(work(item)).add_done_callback(lambda _: slots.release())
    except BaseExceptionGroup as grouped:
        raise _first(grouped) from None


def _first(grouped: BaseExceptionGroup) -> BaseException:
    for exc in grouped.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return grouped.exceptions[0]


def refusal(answer: Answer) -> str:
    """An answer that is not a success, in words: its status, and what the API said."""
    said = answer.message or ""
    return said if said.startswith(str(answer.status)) else f"{answer.status}: {said}".rstrip(": ")


def bar(desc: str, total: int, unit: str, show: bool | None) -> tqdm:
    """A progress bar on stderr: shown when it is a terminal, unless `show` says otherwise."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None if show is None else not show)


# what a command concluded


Line = tuple[dict[int, str], tuple[Any, ...]]
"""One row's values of the command's columns, and the cells to mark (index -> reason)."""


@dataclass
class FollowUp:
    """What `eligibility`, `move` or `cleanup` concluded: a line of its columns for each input row,
    the summary its JSON holds, and what the terminal should say."""

    command: str
    columns: tuple[str, ...]
    lines: list[Line] = field(repr=False)
    summary: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    """What the API refused or could not answer: each makes the exit code 1. What a stopped command
    did not reach is not listed here: `stopped` says so, and the next run of it goes on."""
    notices: list[str] = field(default_factory=list)
    """What the user should hear of that went as designed (an entity kept, a row left alone)."""
    outputs: Outputs | None = None
    stopped: OnboardError | None = None

    @property
    def ok(self) -> bool:
        return self.stopped is None and not self.problems

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The command's columns of each input row, as dicts."""
        return [dict(zip(self.columns, values, strict=True)) for _, values in self.lines]


def summary_of(command: str, source: Path, where: Target, custom_url: bool, started: str, clock: float,
               rows: int, counts: dict[str, dict[str, int]], stats: Stats | None, **extra: Any) -> dict[str, Any]:
    from onboard.onboarding import now

    return {
        "tool": f"onboard {__version__}",
        "command": command,
        "input": str(source),
        "environment": "custom" if custom_url and not where.local else where.env,
        "base_url": where.shown_base_url,
        "started": started,
        "finished": now(),
        **extra,
        "rows": rows,
        "counts": counts,
        **(stats.as_dict() if stats is not None else {}),
        "seconds": round(time.monotonic() - clock, 2),
    }


def summary_lines(summary: Mapping[str, Any]) -> list[list[Any]]:
    """The summary as the Summary sheet shows it: one label and value a line."""
    lines: list[list[Any]] = [[key, summary[key]] for key in ("tool", "command", "input", "environment", "base_url",
                                                              "started", "finished", "to", "dry_run", "keep_users")
                              if summary.get(key) is not None]
    lines.append(["rows", summary["rows"]])
    for kind, counts in summary["counts"].items():
        lines += [[f"{kind} {state}", n] for state, n in counts.items()]
    lines += [[key, summary[key]] for key in ("requests", "retries", "throttled", "token_refreshes", "seconds")
              if key in summary]
    return lines


def write(result: FollowUp, sheet: Sheet, title: str) -> None:
    """The input's rows with the command's columns, and the summary JSON, where `result.outputs` says."""
    from onboard.files import atomic
    from onboard.report import write_annotated

    outputs = result.outputs
    lines = ((row, marked, values) for row, (marked, values) in zip(sheet.rows, result.lines, strict=True))
    write_annotated(outputs.results, sheet, result.columns, lines, title, lambda: summary_lines(result.summary))
    with atomic(outputs.summary) as temporary:
        temporary.write_text(json.dumps(result.summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def counted(values: Iterable[str], order: Sequence[str]) -> dict[str, int]:
    """How many of each value, in `order` (values outside it after, as met)."""
    counts: dict[str, int] = dict.fromkeys(order, 0)
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return {k: n for k, n in counts.items() if n or k in order}
