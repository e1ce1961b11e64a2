"""Writing what the run concluded: a result for every input row, the rows to fix, a summary.

Outputs keep the partner's own columns, headers and order, and add the tool's columns. The
errors file is itself a valid input: the user fixes its cells and runs it again.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onboard.errors import ConfigError, InputError
from onboard.files import atomic
from onboard.pipeline import Ledger
from onboard.plan import Plan, RowPlan
from onboard.records import Problem
from onboard.sheet import OUTPUT_COLUMNS, WORKBOOKS, Sheet, protect
from onboard.workbook import write_table

ID_FIELDS = ("user_id", "location_id", "resource_id")
KEY_FIELDS = frozenset({"customer_id", "location_ref", "meter_point_ids", "resource_ref", "resource_meter_point_id",
                        *ID_FIELDS})
"""Columns Excel would damage by reading them as numbers: stored as text in xlsx outputs."""
STATUS_ORDER = ("created", "exists", "valid", "failed", "invalid")


@dataclass
class RowResult:
    number: int
    status: str
    user_id: str | None = None
    location_id: str | None = None
    resource_id: str | None = None
    error: str = ""
    warnings: str = ""
    reasons: list[str] = field(default_factory=list)
    """Each reason the row did not land, for counting the most frequent ones."""
    cell_problems: dict[int, str] = field(default_factory=dict)
    """Column index -> reason, for marking the cells a person must fix."""

    @property
    def landed(self) -> bool:
        return self.status in ("created", "exists", "valid")


def _describe(sheet: Sheet, problems: list[Problem]) -> tuple[str, dict[int, str]]:
    parts, cells = [], {}
    for problem in problems:
        column = sheet.column(problem.field)
        name = column.name if column else problem.field
        parts.append(f"{name}: {problem.message}" if problem.field else problem.message)
        if column is not None:
            cells[column.index] = (cells.get(column.index, "") + "\n" + problem.message).strip()
    return "; ".join(dict.fromkeys(parts)), cells


def row_results(sheet: Sheet, plan: Plan, ledger: Ledger | None) -> list[RowResult]:
    """One result per input row. Without a ledger (validate, dry run) valid rows are `valid`."""
    results = []
    for row_plan in plan.rows:
        warnings = [w.message for w in row_plan.warnings]
        ids = dict(user_id=row_plan.user_id, location_id=row_plan.location_id, resource_id=row_plan.resource_id)
        if not row_plan.valid:
            error, cells = _describe(sheet, row_plan.problems)
            results.append(RowResult(row_plan.number, "invalid", **ids, error=error, cell_problems=cells,
                                     warnings="; ".join(warnings),
                                     reasons=[p.message for p in row_plan.problems]))
            continue
        if ledger is None:
            results.append(RowResult(row_plan.number, "valid", **ids, warnings="; ".join(warnings)))
            continue
        status, error = _row_status(row_plan, ledger)
        for kind, entity_id in row_plan.entities():
            outcome = ledger.get(kind, entity_id)
            if outcome is not None:
                warnings.extend(outcome.warnings)
        results.append(RowResult(row_plan.number, status, **ids, error=error,
                                 warnings="; ".join(dict.fromkeys(warnings)), reasons=[error] if error else []))
    return results


def _row_status(row_plan: RowPlan, ledger: Ledger) -> tuple[str, str]:
    outcomes = [ledger.get(kind, entity_id) for kind, entity_id in row_plan.entities()]
    failed = [o for o in outcomes if o is None or o.state == "failed"]
    if failed:
        deepest = failed[-1]
        return "failed", deepest.reason if deepest else "not sent"
    if any(o.state == "created" for o in outcomes):
        return "created", ""
    return "exists", ""


# files


@dataclass(frozen=True)
class Outputs:
    results: Path
    errors: Path
    summary: Path

    @classmethod
    def beside(cls, source: Path, out: Path | None) -> Outputs:
        folder = out or source.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the output folder {folder}: {exc.strerror}") from None
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ConfigError(f"cannot write the outputs to {folder}: choose a folder you can write with --out")
        suffix = ".xlsx" if source.suffix.lower() in WORKBOOKS else source.suffix.lower()
        outputs = cls(folder / f"{source.stem}.results{suffix}", folder / f"{source.stem}.errors{suffix}",
                      folder / f"{source.stem}.summary.json")
        if source.resolve() in (outputs.results.resolve(), outputs.errors.resolve()):
            raise InputError(f"{source.name} would be overwritten by an output: rename it or choose --out")
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


def _own_values(result: RowResult) -> dict[str, Any]:
    return {"row": result.number, "status": result.status, "user_id": result.user_id,
            "location_id": result.location_id, "resource_id": result.resource_id,
            "error": result.error, "warnings": result.warnings}


def _table(sheet: Sheet, results: list[RowResult], keep: Callable[[RowResult], bool], typed: bool):
    """Output rows: the tool's values in its columns, the input's cells elsewhere (typed values for
    xlsx, so the partner's numbers and dates stay numbers and dates; text for the tool's fields)."""
    headers, sources, own = _layout(sheet)
    fields = {c.index for c in sheet.columns if c.field}
    by_position = {position: name for name, position in own.items()}
    rows = []
    for sheet_row, result in zip(sheet.rows, results, strict=True):
        if not keep(result):
            continue
        mine = _own_values(result)
        values = []
        for position, source in enumerate(headers):
            name = by_position.get(position)
            if name is not None and (mine[name] is not None or sources[position] is None):
                values.append(mine[name])
            elif sources[position] is not None:
                source = sources[position]
                values.append(sheet_row.values[source] if typed and source not in fields
                              else sheet_row.cells[source])
            else:
                values.append(None)
        rows.append((result, values))
    return headers, own, rows


def _summary_rows(summary: dict) -> list[list[Any]]:
    rows: list[list[Any]] = [["rows", summary["rows"]]]
    rows += [[f"status {k}", v] for k, v in summary["status"].items()]
    for kind, counts in summary["entities"].items():
        rows += [[f"{kind} {k}", v] for k, v in counts.items()]
    for key in ("requests", "retries", "throttled", "token_refreshes", "seconds"):
        if key in summary:
            rows.append([key, summary[key]])
    if summary.get("reasons"):
        rows.append([])
        rows.append(["most frequent reasons", "rows"])
        rows += [[reason, n] for reason, n in summary["reasons"]]
    return rows


def write_xlsx(path: Path, sheet: Sheet, results: list[RowResult], keep, title: str,
               summary: dict | None) -> None:
    headers, own, rows = _table(sheet, results, keep, typed=True)
    text_columns = {c.index for c in sheet.columns if c.field in KEY_FIELDS}
    _, sources, _ = _layout(sheet)
    hidden = frozenset(p for p, source in enumerate(sources) if source in sheet.hidden_columns)
    with atomic(path) as temporary:
        write_table(temporary, title, headers, own, rows, _summary_rows(summary) if summary else None,
                    text_columns, hidden)


def write_csv(path: Path, sheet: Sheet, results: list[RowResult], keep) -> None:
    headers, _, rows = _table(sheet, results, keep, typed=False)
    style = sheet.csv_style
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=style.delimiter if style else ",", lineterminator="\r\n")
    writer.writerow([protect(h) for h in headers])
    for _, values in rows:
        writer.writerow(["" if v is None else protect(str(v)) for v in values])
    encoding = style.encoding if style else "utf-8"
    with atomic(path) as temporary:
        temporary.write_bytes(buffer.getvalue().encode(encoding, errors="replace"))


def _kind_of(reason: str) -> str:
    """A reason without its particular values, so alike reasons are counted together."""
    reason = re.sub(r"'[^']*'", "…", reason)
    reason = re.sub(r"\b[0-9a-f]{8}-[0-9a-f-]{27}\b", "…", reason)
    return re.sub(r"\b\d[\d.,e+]*\b", "…", reason)


def summarise(sheet: Sheet, plan: Plan, results: list[RowResult], ledger: Ledger | None,
              **extra: Any) -> dict[str, Any]:
    statuses = Counter(r.status for r in results)
    entities: dict[str, dict[str, int]] = {}
    for kind, items in (("users", plan.users), ("locations", plan.locations), ("resources", plan.resources)):
        counts = Counter()
        for entity_id in items:
            outcome = ledger.get(kind[:-1], entity_id) if ledger else None
            counts[outcome.state if outcome else "planned"] += 1
        entities[kind] = {state: counts.get(state, 0) for state in
                          (("created", "exists", "failed") if ledger else ("planned",))}
    reasons = Counter(_kind_of(reason) for r in results for reason in r.reasons)
    return {
        "input": str(sheet.path),
        "rows": len(results),
        "status": {s: statuses[s] for s in STATUS_ORDER if statuses[s] or s in ("failed", "invalid")},
        "entities": entities,
        "reasons": reasons.most_common(10),
        **extra,
    }


def write(outputs: Outputs, sheet: Sheet, results: list[RowResult], summary: dict) -> None:
    landed = lambda r: True  # noqa: E731
    refused = lambda r: not r.landed  # noqa: E731
    if sheet.format == "xlsx":
        write_xlsx(outputs.results, sheet, results, landed, "Results", summary)
        write_xlsx(outputs.errors, sheet, results, refused, "Errors", summary)
    else:
        write_csv(outputs.results, sheet, results, landed)
        write_csv(outputs.errors, sheet, results, refused)
    with atomic(outputs.summary) as temporary:
        temporary.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
