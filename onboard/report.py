"""Writing what the run concluded: a result for every input row, the rows to fix, a summary.

Outputs keep the partner's own columns, headers and order, and add the tool's columns. The
errors file is itself a valid input: the user fixes its cells and runs it again.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from onboard.errors import ConfigError, InputError
from onboard.files import atomic, refuse_link
from onboard.plan import Plan, RowPlan
from onboard.records import FIELDS, Problem, excel_damaged
from onboard.sheet import (
    MAYBE_FORMULA,
    OUTPUT_COLUMNS,
    WORKBOOKS,
    Sheet,
    SheetRow,
    column_uses,
    excel_general,
    protect,
)
from onboard.workbook import write_table

if TYPE_CHECKING:  # validating needs neither the HTTP client nor the journal
    from onboard.pipeline import Ledger

ID_FIELDS = ("user_id", "location_id", "resource_id")
KEY_FIELDS = frozenset({"customer_id", "location_ref", "meter_point_ids", "resource_ref", "resource_meter_point_id",
                        *ID_FIELDS})
"""Columns Excel would damage by reading them as numbers: stored as text in xlsx outputs."""
STATUS_ORDER = ("created", "updated", "exists", "valid", "differs", "failed", "invalid", "not sent", "skipped")
CHECKS = {
    "totals_or_headings": "a totals row or heading, refused",
    "shared_meter_points": "a meter point id on two sites, refused",
    "similar_site_refs": "site refs differing only in case or spaces, warned",
    "repeated_devices": "identical device rows without a serial, warned",
    "swapped_coordinates": "latitude and longitude look swapped, warned",
    "template_example": "the template's example row, warned",
    "unnamed_devices": "a site the API holds with devices of a type the sheet does not name, warned",
}
"""What each of the plan's cross-row checks counts, in words."""
TO_FIX = ("failed", "invalid", "differs")
"""Statuses of the rows the user must fix (a `differs` row: the sheet, or the API with `--update`):
the errors file holds exactly these."""
FOLLOW_UPS = ("plan", "eligibility", "move", "cleanup", "cleanup-dry-run")
"""Commands that follow a run: each writes `<stem>.<command>.<ext>` (the input's rows and its own
columns) and `<stem>.<command>.json`; a dry run of `cleanup` never overwrites the record of a real one."""
JOURNALLED = ("move", "cleanup")
READ_ONLY = ("plan", "eligibility", "cleanup-dry-run")
"""Follow-ups that keep no journal: no other input's journal is in their way."""
"""Of those, the ones that write to the API, and so keep a journal of their own."""


NO_CELLS: Mapping[int, str] = MappingProxyType({})


@dataclass(slots=True)
class RowResult:
    number: int
    """The row as this file numbers it."""
    status: str
    user_id: str | None = None
    location_id: str | None = None
    resource_id: str | None = None
    error: str = ""
    warnings: str = ""
    reasons: Sequence[str] = ()
    """Each reason the row did not land, for counting the most frequent ones."""
    cell_problems: Mapping[int, str] = field(default_factory=lambda: NO_CELLS)
    """Column index -> reason, for marking the cells a person must fix."""
    origin: int | None = None
    """The row of the original sheet, when this file is one of the tool's outputs run again."""

    @property
    def landed(self) -> bool:
        return self.status in ("created", "updated", "exists", "valid")

    @property
    def to_fix(self) -> bool:
        return self.status in TO_FIX

    @property
    def row(self) -> int:
        """The row number the outputs carry: the original sheet's, through every fix-and-rerun round."""
        return self.origin if self.origin is not None else self.number

    @property
    def named(self) -> str:
        """How a message names the row."""
        if self.origin is None or self.origin == self.number:
            return f"row {self.number}"
        return f"row {self.number} (row {self.origin} of the original sheet)"


def _describe(sheet: Sheet, problems: list[Problem]) -> tuple[str, dict[int, str]]:
    parts, cells = [], {}
    for problem in problems:
        column = sheet.column(problem.field)
        name = column.name if column else problem.field
        parts.append(f"{name}: {problem.message}" if problem.field else problem.message)
        if column is not None:
            cells[column.index] = (cells.get(column.index, "") + "\n" + problem.message).strip()
    return "; ".join(dict.fromkeys(parts)), cells


def origins(sheet: Sheet) -> dict[int, int]:
    """Row number here -> row number of the original sheet, from the `row` column the tool wrote."""
    column = next((c for c in sheet.columns if c.own == "row"), None)
    if column is None:
        return {}
    found = {}
    for row in sheet.rows:
        text = row.cells[column.index].strip()
        if text.isdigit():
            found[row.number] = int(text)
    return found


def validation_result(sheet: Sheet, row_plan: RowPlan) -> RowResult:
    """A row's result when nothing is sent (validate, dry run): `valid`, `invalid` or `skipped`, made
    from its plan alone, and cheaply enough to be made again on each pass over the rows."""
    status, reasons, warnings = validation_outline(row_plan)
    if status == "skipped":
        return RowResult(row_plan.number, "skipped", origin=row_plan.origin)
    error, cells = _describe(sheet, row_plan.problems) if status == "invalid" else ("", NO_CELLS)
    return RowResult(row_plan.number, status, row_plan.user_id, row_plan.location_id, row_plan.resource_id, error,
                     warnings, reasons, cells, row_plan.origin)


Outline = tuple[str, Sequence[str], str]
"""A row's status, reasons and warnings: all the summary reads of its result."""


def validation_outline(row_plan: RowPlan) -> Outline:
    """`validation_result`'s status, reasons and warnings, without the result: what the summary
    reads of a million rows."""
    if row_plan.skipped:
        return "skipped", (), ""
    warnings = "; ".join([w.message for w in row_plan.warnings]) if row_plan.warnings else ""
    if row_plan.valid:
        return "valid", (), warnings
    return "invalid", [p.message for p in row_plan.problems], warnings


def row_results(sheet: Sheet, plan: Plan, ledger: Ledger | None, enrolled: bool = False) -> list[RowResult]:
    """One result per input row. Without a ledger (validate, dry run) valid rows are `valid`; with
    `enrolled`, a row's user's enrollment counts toward its status like its user, site and device."""
    results = []
    for row_plan in plan.rows:
        if ledger is None or row_plan.skipped or not row_plan.valid:
            results.append(validation_result(sheet, row_plan))
            continue
        warnings = [w.message for w in row_plan.warnings]
        ids = dict(user_id=row_plan.user_id, location_id=row_plan.location_id, resource_id=row_plan.resource_id,
                   origin=row_plan.origin)
        status, error = _row_status(row_plan, ledger, enrolled)
        cells = NO_CELLS
        if status in ("invalid", "failed", "differs"):
            error, cells = _in_columns(sheet, error)
        for kind, entity_id in row_plan.entities():
            outcome = ledger.get(kind, entity_id)
            if outcome is not None:
                warnings.extend(outcome.warnings)
        results.append(RowResult(row_plan.number, status, **ids, error=error, cell_problems=cells,
                                 warnings="; ".join(dict.fromkeys(warnings)),
                                 reasons=(error,) if error and status in TO_FIX else ()))
    return results


def _in_columns(sheet: Sheet, reason: str) -> tuple[str, Mapping[int, str]]:
    """A refusal the run found that starts with its fields (`meter_point_ids: ...`, `latitude,
    longitude: ...`; a `differs` reason has a part per field, `; ` between them): the sheet's own
    headers in their place, as the sheet's own refusals have them, and those cells marked."""
    parts = reason.split("; ")
    if not all(": " in part for part in parts):
        parts = [reason]
    said, cells = [], {}
    for part in parts:
        names, _, rest = part.partition(": ")
        columns = [sheet.column(name) if name in FIELDS else None for name in names.split(", ")]
        if not rest or None in columns:
            said.append(part)
            continue
        said.append(f"{', '.join(c.name for c in columns)}: {rest}")
        cells.update({c.index: rest for c in columns})
    return "; ".join(said), cells or NO_CELLS


def _row_status(row_plan: RowPlan, ledger: Ledger, enrolled: bool = False) -> tuple[str, str]:
    """A refusal the API gave outweighs a row not reached; only a row with nothing refused and
    something not reached is `not sent` (the next run of the same command sends it). An enrollment
    counts toward a refusal, never toward `created`: that status says the run created some of the
    row's customer, site or device, and `cleanup` deletes by it."""
    entities = row_plan.entities() + ([("enrollment", row_plan.user_id)] if enrolled else [])
    outcomes = [ledger.get(kind, entity_id) for kind, entity_id in entities]
    invalid = [o for o in outcomes if o is not None and o.state == "invalid"]
    if invalid:
        return "invalid", invalid[-1].reason
    refused = [o for o in outcomes if o is not None and o.state == "failed" and o.final]
    if refused:
        return "failed", refused[-1].reason
    unreached = [o for o in outcomes if o is None or o.state == "failed"]
    if unreached:
        deepest = unreached[-1]
        return "not sent", deepest.reason if deepest else "not sent: the run stopped before reaching it"
    differs = [o for o in outcomes if o.state == "differs"]
    if differs:
        return "differs", differs[-1].reason
    if any(o.state == "updated" for o in outcomes):
        return "updated", ""
    if any(o.state == "created" for (kind, _), o in zip(entities, outcomes, strict=True) if kind != "enrollment"):
        return "created", ""
    return "exists", ""


# files


@dataclass(frozen=True)
class Outputs:
    """Where a command's outputs go. `run` writes `<stem>.results`, `<stem>.errors` and
    `<stem>.summary.json`; `validate` and `--dry-run` write `<stem>.validation` and
    `<stem>.validation.json`, so a check never overwrites the record of what a run created."""

    results: Path
    errors: Path | None
    summary: Path

    @classmethod
    def at(cls, folder: Path, stem: str, format: str, kind: str = "run") -> Outputs:
        """The output paths for a sheet named `stem` in `folder`, in `format` (xlsx or csv)."""
        return cls.beside(folder / f"{stem}.{format}", folder, kind)

    @classmethod
    def beside(cls, source: Path, out: Path | None, kind: str = "run") -> Outputs:
        """The output paths for `source` in `out` (default: beside it). Refused before anything is
        sent: an output that would overwrite the input or be written through a link, and a folder
        holding the run of another input with the same file name (its outputs and journal would be
        overwritten)."""
        folder = out or source.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the output folder {folder}: {exc.strerror}") from None
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ConfigError(f"cannot write the outputs to {folder}: choose a folder you can write with --out")
        suffix = ".xlsx" if source.suffix.lower() in (*WORKBOOKS, "") else source.suffix.lower()
        if kind == "validation":
            outputs = cls(folder / f"{source.stem}.validation{suffix}", None, folder / f"{source.stem}.validation.json")
        elif kind in FOLLOW_UPS:
            outputs = cls(folder / f"{source.stem}.{kind}{suffix}", None, folder / f"{source.stem}.{kind}.json")
        else:
            outputs = cls(folder / f"{source.stem}.results{suffix}", folder / f"{source.stem}.errors{suffix}",
                          folder / f"{source.stem}.summary.json")
        if source.resolve() in (p.resolve() for p in (outputs.results, outputs.errors) if p is not None):
            raise InputError(f"{source.name} would be overwritten by an output: rename it or choose --out")
        for path in (outputs.results, outputs.errors, outputs.summary):
            if path is not None:
                refuse_link(path)
        if kind in READ_ONLY:
            return outputs
        from onboard.journal import journal_path, recorded_input

        journal = journal_path(folder, source, kind if kind in JOURNALLED else None)
        other = recorded_input(journal)
        if other is not None and other.resolve() != source.resolve():
            raise ConfigError(f"{folder} holds the outputs and journal of {other}, another input whose outputs "
                              f"would have the same names: choose another --out for {source} (or, if that input is "
                              f"gone, move {journal} away)")
        return outputs


def _layout(sheet: Sheet) -> tuple[list[str], list[int | None], dict[str, int]]:
    """Output headers: the input's columns in their order, the tool's own columns where the input
    already had them (a results file run again), the rest appended."""
    headers, sources, own = [], [], {}
    for column in sheet.columns:
        headers.append(column.header)
        sources.append(column.index)
        name = column.own or (column.field if column.field in ID_FIELDS else None)
        if name and name not in own:
            own[name] = len(headers) - 1
    for name in OUTPUT_COLUMNS:
        if name not in own:
            own[name] = len(headers)
            headers.append(name)
            sources.append(None)
    return headers, sources, own


Pairs = Iterable[tuple[SheetRow, RowResult]]
"""Each input row with its result, in the sheet's order."""


def own_values(result: RowResult) -> tuple[Any, ...]:
    """The tool's values of a row, in the order of `OUTPUT_COLUMNS`."""
    return (result.row, result.status, result.user_id, result.location_id, result.resource_id, result.error,
            result.warnings)


def _table(sheet: Sheet, pairs: Pairs, keep: Callable[[RowResult], bool],
           typed: bool) -> Iterator[tuple[Mapping[int, str], list[Any]]]:
    """Output rows, one at a time: the tool's values in its columns, the input's cells elsewhere
    (typed values for xlsx, so the partner's numbers and dates stay numbers and dates; text for the
    tool's fields). A value of the tool's that is None leaves the input's cell, where it has one (an
    ID of a results file run again). Nothing is kept: `sheet.rows` may be a file read again for each
    output, so this runs once per row of every output, and is kept lean: a row starts as its text,
    and only the columns that are no field take the typed value. Each row comes with its cells to
    mark, as the xlsx writer takes them."""
    headers, sources, own = _layout(sheet)
    inputs = len(sheet.columns)
    as_text, keys = _field_columns(sheet, typed)
    carried_at = [i for i in range(inputs) if i not in set(as_text)] if typed else []
    placed = [(own[name], sources[own[name]] is not None) for name in OUTPUT_COLUMNS]
    appended = [position for position, _ in placed] == list(range(inputs, len(headers)))
    """The tool's columns all follow the input's, in their order (an input that is no output run again)."""
    blank = [None] * (len(headers) - inputs)
    for sheet_row, result in pairs:
        if not keep(result):
            continue
        cells, carried = sheet_row.cells, sheet_row.values
        if len(cells) < inputs or len(carried) < inputs:  # a row shorter than the header: nothing shifts left
            cells, carried = cells + [""] * (inputs - len(cells)), carried + [""] * (inputs - len(carried))
        values = cells[:inputs]
        for index in carried_at:
            values[index] = carried[index]
        for index, name in keys:
            value = carried[index]
            if value.__class__ is not str and excel_damaged(name, value):
                values[index] = value if typed else excel_general(value)
        if appended:
            values += own_values(result)
            if not result.error:  # blank either way; None costs the xlsx writer nothing, "" as much as a text
                values[-2] = None
            if not result.warnings:
                values[-1] = None
        else:
            values += blank
            for (position, overlays), value in zip(placed, own_values(result), strict=True):
                if value is not None or not overlays:
                    values[position] = value
        yield result.cell_problems, values


def _field_columns(sheet: Sheet, typed: bool) -> tuple[list[int], list[tuple[int, str]]]:
    """The columns of the tool's fields, written as their text in a typed output; and (index, field)
    of those `_keep_damage` looks at: the key columns Excel can damage (`excel_damaged`), in a CSV
    output only where the sheet can hold numbers at all (a CSV read holds only text)."""
    as_text = [c.index for c in sheet.columns if c.field] if typed else []
    if not typed and sheet.format == "csv":
        return as_text, []
    return as_text, [(c.index, c.field) for c in sheet.columns if c.field in KEY_FIELDS]


def _keep_damage(values: list[Any], typed_values: list[object], keys: list[tuple[int, str]], typed: bool) -> None:
    """A number Excel damaged stays damaged: in xlsx it is that number, in CSV the text Excel shows
    for it (`7.07058E+17`), so the run of this output refuses it again. Its rounded digits as text
    would be taken for a good id."""
    for index, name in keys:
        value = typed_values[index] if index < len(typed_values) else ""
        if value.__class__ is not str and excel_damaged(name, value):
            values[index] = value if typed else excel_general(value)


def _summary_rows(summary: dict) -> list[list[Any]]:
    rows: list[list[Any]] = [[key, summary[key]] for key in ("tool", "input", "input_sha256", "sheet", "header_row",
                                                            "environment", "base_url", "started", "finished")
                             if summary.get(key) is not None]
    rows.append(["rows", summary["rows"]])
    rows += [[f"status {k}", v] for k, v in summary["status"].items()]
    for kind, counts in summary["entities"].items():
        rows += [[f"{kind} {k}", v] for k, v in counts.items()]
    for key in ("requests", "retries", "throttled", "token_refreshes", "seconds"):
        if key in summary:
            rows.append([key, summary[key]])
    for key, n in summary.get("notices", {}).items():
        rows.append([key, n])
    for key, n in summary.get("checks", {}).items():
        rows.append([f"rows flagged: {CHECKS.get(key, key)}", n])
    if summary.get("reasons"):
        rows.append([])
        rows.append(["most frequent reasons (an example of each)", "rows"])
        rows += [[reason, n] for reason, n in summary["reasons"]]
    for name, words in summary.get("unrecognised_values", {}).items():
        rows.append([])
        rows.append([f"{name} values not recognised (map them with --map-value)", "rows"])
        rows += [[word, n] for word, n in words.items()]
    if summary.get("columns"):
        rows.append([])
        rows.append(["column", "use"])
        rows += [[c["header"], c["use"]] for c in summary["columns"]]
    if summary.get("earlier"):
        rows.append([])
        rows.append(["as the original run wrote it", ""])
        rows += summary["earlier"]
    return rows


def write_xlsx(path: Path, sheet: Sheet, pairs: Pairs, keep: Callable[[RowResult], bool], title: str,
               summary: dict | Callable[[], dict] | None) -> None:
    """`pairs` are read once, as they are written; `summary` may be a function, asked once every row
    is written (so it may count them)."""
    headers, sources, own = _layout(sheet)
    lines = _table(sheet, pairs, keep, typed=True)
    text_columns = {position for position, source in enumerate(sources)
                    if source is not None and sheet.columns[source].field in KEY_FIELDS}
    hidden = frozenset(p for p, source in enumerate(sources) if source in sheet.hidden_columns)
    summary_lines = None if summary is None else lambda: _summary_rows(summary() if callable(summary) else summary)
    with atomic(path) as temporary:
        write_table(temporary, title, headers, own, lines, summary_lines, text_columns, hidden)


def write_csv(path: Path, sheet: Sheet, pairs: Pairs, keep: Callable[[RowResult], bool]) -> None:
    """Streamed to the file row by row, with the input's delimiter and encoding."""
    headers = _layout(sheet)[0]
    style = sheet.csv_style
    encoding = style.encoding if style else "utf-8"
    with atomic(path) as temporary, temporary.open("w", encoding=encoding, errors="replace", newline="") as out:
        writer = csv.writer(out, delimiter=style.delimiter if style else ",", lineterminator="\r\n")
        writer.writerow([protect(h) for h in headers])
        writer.writerows(csv_line(values) for _, values in _table(sheet, pairs, keep, typed=False))


def csv_line(values: Sequence[Any]) -> list[str]:
    """A CSV output's line: each value as `protect` writes its text, None as blank. Nearly every cell
    is text that cannot start a formula, let through without a call: a million rows' cells each."""
    return [v if v.__class__ is str and (not v or v[0] not in MAYBE_FORMULA) else _csv_cell(v) for v in values]


def _csv_cell(value: Any) -> str:
    return "" if value is None else protect(str(value))


# the input's rows with another command's columns


Annotated = Iterable[tuple[SheetRow, Mapping[int, str], Sequence[Any]]]
"""Each input row, in order, with the cells to mark (index among the added columns -> reason) and
the values of the added columns."""


def _annotated_layout(sheet: Sheet, names: Sequence[str]) -> tuple[list[str], list[int | None], list[int]]:
    """The input's headers, then the added columns; one the input has already (an output of the same
    command read again) is replaced where it stands, never repeated."""
    headers: list[str] = [column.header for column in sheet.columns]
    sources: list[int | None] = [column.index for column in sheet.columns]
    held = {}
    for column in sheet.columns:
        held.setdefault(column.header.strip().lower(), column.index)
    places = []
    for name in names:
        at = held.get(name.lower())
        if at is None:
            at = len(headers)
            headers.append(name)
            sources.append(None)
        places.append(at)
    return headers, sources, places


def _annotated_table(sheet: Sheet, lines: Annotated, width: int, places: list[int],
                     typed: bool) -> Iterator[tuple[dict[int, str], list[Any]]]:
    """As `_table`: the input's cells (typed for xlsx, the tool's fields as text), then the added values."""
    inputs = len(sheet.columns)
    as_text, keys = _field_columns(sheet, typed)
    for sheet_row, marked, added in lines:
        cells, carried = sheet_row.cells, sheet_row.values if typed else sheet_row.cells
        if len(cells) < inputs or len(carried) < inputs:
            cells, carried = cells + [""] * (inputs - len(cells)), carried + [""] * (inputs - len(carried))
        values = carried[:inputs] + [None] * (width - inputs)
        for index in as_text:
            values[index] = cells[index]
        if keys:
            _keep_damage(values, sheet_row.values, keys, typed)
        for at, value in zip(places, added, strict=True):
            values[at] = value
        yield {places[i]: reason for i, reason in marked.items()}, values


def write_annotated(path: Path, sheet: Sheet, names: Sequence[str], lines: Annotated, title: str,
                    summary: Callable[[], list[list[Any]]] | None = None, format: str | None = None) -> None:
    """Every input row with the columns `names` added, in the input's own format (xlsx for a workbook,
    csv with the input's delimiter and encoding): what `eligibility`, `move` and `cleanup` write. In
    xlsx the marked cells are filled and carry their reason as a note, and `summary`'s lines (asked
    for once every row is written) make a Summary sheet. `lines` are read once, as they are written."""
    format = format or ("csv" if sheet.format == "csv" else "xlsx")
    headers, sources, places = _annotated_layout(sheet, names)
    table = _annotated_table(sheet, lines, len(headers), places, typed=format == "xlsx")
    if format == "xlsx":
        text_columns = {position for position, source in enumerate(sources)
                        if source is not None and sheet.columns[source].field in KEY_FIELDS}
        hidden = frozenset(p for p, source in enumerate(sources) if source in sheet.hidden_columns)
        with atomic(path) as temporary:
            write_table(temporary, title, headers, {}, table, summary, text_columns, hidden)
        return
    style = sheet.csv_style
    with atomic(path) as temporary, temporary.open("w", encoding=style.encoding if style else "utf-8",
                                                   errors="replace", newline="") as out:
        writer = csv.writer(out, delimiter=style.delimiter if style else ",", lineterminator="\r\n")
        writer.writerow([protect(h) for h in headers])
        writer.writerows(["" if v is None else protect(str(v)) for v in values] for _, values in table)


def _kind_of(reason: str) -> str:
    """A reason without its particular values, so alike reasons are counted together."""
    reason = re.sub(r"'[^']*'", "'…'", reason)
    reason = re.sub(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "…", reason)
    return re.sub(r"\b\d[\d.,e+]*\b", "…", reason)


class _Reasons:
    """The kinds of reason rows gave, counted as the rows pass (`frequent_reasons`)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.example: dict[str, str] = {}
        self.wordings: dict[str, set[str]] = {}

    def add(self, reason: str) -> None:
        kind = _kind_of(reason)
        self.counts[kind] += 1
        self.example.setdefault(kind, reason)
        seen = self.wordings.setdefault(kind, set())
        if len(seen) < 1000:
            seen.add(reason)

    def most_frequent(self, most: int = 10) -> list[tuple[str, int]]:
        shown = []
        for kind, n in self.counts.most_common(most):
            others = len(self.wordings[kind]) - 1
            alike = f" (and {others} other{'s' if others > 1 else ''} like it)" if others else ""
            shown.append((self.example[kind] + alike, n))
        return shown


def frequent_reasons(results: Iterable[RowResult], most: int = 10) -> list[tuple[str, int]]:
    """The most frequent kinds of reason, each shown in full as its first example gave it, and how
    many other wordings of that kind there were (`resource_type 'VVB 200L' is not one of ...` counts
    the rows with any unknown device type)."""
    reasons = _Reasons()
    for result in results:
        for reason in result.reasons:
            reasons.add(reason)
    return reasons.most_frequent(most)


def _outlines(results: Iterable[RowResult]) -> Iterator[Outline]:
    """Each result's outline; results that can give them without making each row's result (a
    validation's, `onboarding.Validation.outlines`) do."""
    outlines = getattr(results, "outlines", None)
    if outlines is not None:
        return outlines()
    return ((r.status, r.reasons, r.warnings) for r in results)


def summarise(sheet: Sheet, plan: Plan, results: list[RowResult], ledger: Ledger | None,
              **extra: Any) -> dict[str, Any]:
    """The summary of a run or validation. The results are read once: a validation makes each row's
    result anew on every pass (`onboarding.Validation`), a million of them a pass."""
    statuses: Counter[str] = Counter()
    reasons = _Reasons()
    unnamed, warning = 0, None
    for status, said, warned in _outlines(results):
        statuses[status] += 1
        for reason in said:
            reasons.add(reason)
        if warned:
            if warning is None:  # validating needs no HTTP client: the pipeline is imported only here
                from onboard.pipeline import UNNAMED_DEVICES as warning
            unnamed += warning in warned
    # rows each cross-row check flagged: the plan's, and the run's own (rows of a site the API holds
    # with devices the sheet does not name, by their warning, which a resumed run has from the journal)
    checks = Counter(plan.counts)
    if warning is not None:
        checks["unnamed_devices"] = unnamed
    entities: dict[str, dict[str, int]] = {}
    kinds = [("users", plan.users), ("locations", plan.locations), ("resources", plan.resources)]
    if ledger is not None and any(kind == "enrollment" for kind, _ in ledger.outcomes):
        kinds.append(("enrollments", [u for u in plan.users if ledger.registered("user", u)]))
    for kind, items in kinds:
        if ledger is None:  # nothing sent: every entity is planned
            entities[kind] = {"planned": len(items)}
            continue
        counts: Counter[str] = Counter()
        for entity_id in items:
            outcome = ledger.get(kind[:-1], entity_id) if ledger else None
            if ledger is None:
                counts["planned"] += 1
            elif outcome is None or (outcome.state == "failed" and not outcome.final):
                counts["not sent"] += 1
            else:
                counts[outcome.state] += 1
        states = ("created", "updated", "exists", "differs", "failed", "invalid", "not sent") if ledger \
            else ("planned",)
        entities[kind] = {state: counts.get(state, 0) for state in states
                          if counts.get(state) or state not in ("invalid", "not sent", "updated", "differs")}
    return {
        "input": str(sheet.path),
        "sheet": sheet.sheet_name,
        "header_row": sheet.header_row,
        "rows": len(results),
        "status": {s: statuses[s] for s in STATUS_ORDER if statuses[s] or s in ("failed", "invalid")},
        "entities": entities,
        "reasons": reasons.most_frequent(),
        "checks": {name: n for name, n in sorted(checks.items()) if n},
        "columns": [{"header": header, "use": use} for header, use in column_uses(sheet.columns)],
        **extra,
    }


def write(outputs: Outputs, sheet: Sheet, results: list[RowResult], summary: dict, format: str | None = None) -> bool:
    """Write the outputs; the errors file only when some row is to fix (a stale one from an earlier
    run is removed, so it never lists rows that have since landed). True when it was written.
    Each file reads the sheet's rows once more, as it writes them. `format` is the sheet's own
    (xlsx for a workbook, csv for a CSV) unless given."""
    format = format or ("csv" if sheet.format == "csv" else "xlsx")
    every = lambda r: True  # noqa: E731
    to_fix = lambda r: r.to_fix  # noqa: E731
    errors = outputs.errors is not None and any(r.to_fix for r in results)
    files = [(outputs.results, every, "Results")] + ([(outputs.errors, to_fix, "Errors")] if errors else [])
    for path, keep, title in files:
        pairs = zip(sheet.rows, results, strict=True)
        if format == "xlsx":
            write_xlsx(path, sheet, pairs, keep, title, summary)
        else:
            write_csv(path, sheet, pairs, keep)
    if outputs.errors is not None and not errors:
        outputs.errors.unlink(missing_ok=True)
    with atomic(outputs.summary) as temporary:
        temporary.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return errors


# one file for the final state of every original row


def original_results(source: Path, outputs: Outputs) -> Path | None:
    """The results file of the sheet an errors file came from (`customers.errors.xlsx` ->
    `customers.results.xlsx` beside the outputs), when there is one to bring up to date."""
    stem = source.stem
    if not stem.endswith(".errors"):
        return None
    while stem.endswith((".errors", ".results")):
        stem = stem.rsplit(".", 1)[0]
    target = outputs.results.with_name(f"{stem}.results{outputs.results.suffix}")
    if not target.is_file() or target.resolve() in (source.resolve(), outputs.results.resolve()):
        return None
    return target


FOLDED = ("created", "updated", "exists", "differs", "failed", "invalid")
"""Statuses that say where a row stands now; `skipped` and `not sent` rows keep what the file said."""


@dataclass(frozen=True)
class Folded:
    updated: int
    """Original rows brought up to date."""
    added: int
    """Rows of this run with no original row of their own (typed in, or copied from another row)."""


def fold_back(target: Path, sheet: Sheet, results: list[RowResult], read: Callable[[Path], Sheet]) -> Folded:
    """Bring the rows of this run (an errors file, run again) into the original results file, matched
    by the original row number: their cells as fixed, their new status and IDs. A row without an
    original number, or a second row with the same one, is the user's own addition: it stays in this
    run's outputs only.

    Only this run's rows are held; the original's are streamed from the old file into the new one,
    and its Summary counts them as they pass."""
    original = read(target)
    at = {row: number for number, row in origins(original).items()}
    if not at:
        return Folded(0, 0)
    fixed: dict[int, tuple[SheetRow, RowResult]] = {}
    added = 0
    for sheet_row, result in zip(sheet.rows, results, strict=True):
        number = at.get(result.origin) if result.origin is not None else None
        if number is None or number in fixed:
            added += result.status in FOLDED
            continue
        if result.status in FOLDED:
            fixed[number] = (sheet_row, result)
    updated = len(fixed)
    headers = {c.header: c.index for c in sheet.columns if c.header and not c.own}
    carried = [(column.index, headers[column.header]) for column in original.columns
               if column.header in headers and not column.own and column.field not in ID_FIELDS]
    statuses: Counter[str] = Counter()

    def pairs() -> Iterator[tuple[SheetRow, RowResult]]:
        for row in original.rows:
            if row.number in fixed:
                source, result = fixed[row.number]
                cells, values = list(row.cells), list(row.values)
                for index, at_source in carried:
                    cells[index], values[index] = source.cells[at_source], source.values[at_source]
                row = replace(row, cells=cells, values=values)
                result = replace(result, number=row.number, origin=result.row, cell_problems={})
            else:
                result = RowResult(row.number, **recorded(original, row))
            statuses[result.status] += 1
            yield row, result

    earlier = _earlier_summary(target) if original.format == "xlsx" else []

    def summary() -> dict[str, Any]:
        return {"rows": statuses.total(), "status": {s: statuses[s] for s in STATUS_ORDER if statuses[s]},
                "entities": {}, "notices": {"last brought up to date by": sheet.path.name}, "earlier": earlier}

    if original.format == "xlsx":
        write_xlsx(target, original, pairs(), lambda r: True, "Results", summary)
    else:
        write_csv(target, original, pairs(), lambda r: True)
    return Folded(updated, added)


def _earlier_summary(path: Path) -> list[list[Any]]:
    """The Summary sheet the original run wrote, but for its row counts (recounted now)."""
    from python_calamine import CalamineError, CalamineWorkbook

    try:
        book = CalamineWorkbook.from_path(str(path))
        lines = book.get_sheet_by_name("Summary").to_python() if "Summary" in book.sheet_names else []
    except (CalamineError, OSError, ValueError):
        return []
    kept = [list(line) for line in lines if not (line and str(line[0]).startswith(("rows", "status ")))]
    return kept


def recorded(sheet: Sheet, row) -> dict[str, Any]:
    """What a results file says of a row, read back from its own columns."""
    found: dict[str, Any] = {"status": ""}
    for column in sheet.columns:
        name = column.own or (column.field if column.field in ID_FIELDS else None)
        if name == "row":
            text = row.cells[column.index].strip()
            found["origin"] = int(text) if text.isdigit() else None
        elif name in ("status", "error", "warnings"):
            found[name] = row.cells[column.index]
        elif name in ID_FIELDS:
            found[name] = row.cells[column.index] or None
    return found
