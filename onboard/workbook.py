"""Excel outputs a person can act on: frozen header, filters, widths, the cells to fix marked
with their reason, and ID columns stored as text so Excel cannot turn them into numbers.

Every text is written as a text cell (never a formula, whatever it starts with, so it needs no
`'` and reads back as it was), and with the characters XML cannot hold written in Excel's own
escape, `_xHHHH_`, which Excel and the tool's reader turn back into the character."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.comments import Comment
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation

from onboard.contract import LocationType, ResourceType

HEADER_FILL = PatternFill("solid", fgColor="DDEBF7")
PROBLEM_FILL = PatternFill("solid", fgColor="FFC7CE")
STATUS_FILLS = {
    "created": PatternFill("solid", fgColor="E2EFDA"),
    "exists": PatternFill("solid", fgColor="EDEDED"),
    "valid": PatternFill("solid", fgColor="E2EFDA"),
    "failed": PatternFill("solid", fgColor="FFC7CE"),
    "invalid": PatternFill("solid", fgColor="FFEB9C"),
}
TEXT = "@"
WIDTH_SAMPLE = 500
MAX_WIDTH = 60
MAX_COMMENTS = 10_000
"""Beyond this many marked cells, cells are still filled but carry no comment: writing a comment
costs openpyxl a drawing shape each, and the reason is in the row's `error` cell anyway."""

_UNWRITABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]|_(?=x[0-9A-Fa-f]{4}_)")


def _escape(match: re.Match[str]) -> str:
    return f"_x{ord(match.group()):04X}_"


def xlsx_text(text: str) -> str:
    """A text as an xlsx cell holds it: control characters (BEL, ESC, ...) as `_x0007_`, and the `_`
    of a text that already looks like such an escape as `_x005F_`, so it reads back unchanged."""
    return _UNWRITABLE.sub(_escape, text)


def _text_cell(sheet, text: str) -> WriteOnlyCell:
    cell = WriteOnlyCell(sheet, value=xlsx_text(text))
    cell.data_type = "s"  # openpyxl would take a text starting with "=" for a formula
    return cell


def _plain(sheet, value: Any) -> Any:
    """A value as openpyxl writes it fastest, or a text cell where a plain str would not do."""
    if not isinstance(value, str):
        return value
    if not value:
        return None
    if value.startswith("=") or _UNWRITABLE.search(value):
        return _text_cell(sheet, value)
    return value


def _width(values: list[Any]) -> float:
    longest = max((len(str(v)) for v in values if v is not None), default=0)
    return min(MAX_WIDTH, max(8, longest + 2))


def write_table(path: Path, title: str, headers: list[str], own: dict[str, int],
                rows: list[tuple[Any, list[Any]]], summary: list[list[Any]] | None,
                text_columns: set[int], hidden_columns: frozenset[int] = frozenset()) -> None:
    """`rows` are (result, values); a result's `cell_problems` name the cells to mark;
    `hidden_columns` (output positions) stay hidden as they were in the input."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title)
    sheet.freeze_panes = "A2"
    sheet.page_setup.orientation = "landscape"
    for position, header in enumerate(headers):
        sample = [header] + [values[position] for _, values in rows[:WIDTH_SAMPLE]]
        dimension = sheet.column_dimensions[get_column_letter(position + 1)]
        dimension.width = _width(sample)
        dimension.hidden = position in hidden_columns
    sheet.auto_filter.ref = f"A1:{get_column_letter(max(1, len(headers)))}{len(rows) + 1}"
    ids = {own[name] for name in ("user_id", "location_id", "resource_id")} | text_columns
    header_cells = []
    for header in headers:
        cell = _text_cell(sheet, header) if header else WriteOnlyCell(sheet, value=None)
        cell.font = Font(bold=True)
        cell.fill = HEADER_FILL
        header_cells.append(cell)
    sheet.append(header_cells)
    status_at = own["status"]
    comments = 0
    for result, values in rows:
        marked = result.cell_problems
        line: list[Any] = []
        for position, value in enumerate(values):
            if position not in ids and position != status_at and position not in marked:
                line.append(_plain(sheet, value))
                continue
            if isinstance(value, str) and value:
                cell = _text_cell(sheet, value)
            else:
                cell = WriteOnlyCell(sheet, value=None if value == "" else value)
            if position in ids:
                cell.number_format = TEXT
            if position == status_at:
                cell.fill = STATUS_FILLS.get(str(value), PatternFill())
            if position in marked:
                cell.fill = PROBLEM_FILL
                if comments < MAX_COMMENTS:
                    cell.comment = Comment(xlsx_text(marked[position]), "onboard", width=300, height=120)
                    comments += 1
            line.append(cell)
        sheet.append(line)
    if summary is not None:
        page = workbook.create_sheet("Summary")
        page.column_dimensions["A"].width = 60
        page.column_dimensions["B"].width = 14
        for line in summary:
            page.append([_plain(page, v) for v in line])
    workbook.save(path)


def write_template_workbook(path: Path, columns: list[str], example: dict[str, str],
                            help_text: dict[str, str]) -> None:
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Customers"
    sheet.freeze_panes = "A2"
    sheet.append(columns)
    sheet.append([example[c] or None for c in columns])
    for position, column in enumerate(columns, start=1):
        letter = get_column_letter(position)
        sheet[f"{letter}1"].font = Font(bold=True)
        sheet[f"{letter}1"].fill = HEADER_FILL
        sheet.column_dimensions[letter].width = max(14, len(column) + 4)
        if column not in ("latitude", "longitude"):
            sheet.column_dimensions[letter].number_format = TEXT
            sheet[f"{letter}2"].number_format = TEXT
    for column, values in (("location_type", LocationType), ("resource_type", ResourceType)):
        letter = get_column_letter(columns.index(column) + 1)
        choice = DataValidation(type="list", formula1='"' + ",".join(v.value for v in values) + '"',
                                allow_blank=True, showErrorMessage=True,
                                errorTitle=f"Not a {column}", error=f"Pick one of the {column} values.")
        choice.add(f"{letter}2:{letter}100000")
        sheet.add_data_validation(choice)
    guide = workbook.create_sheet("Instructions")
    guide.append(["column", "what to put in it", "allowed values"])
    for cell in guide[1]:
        cell.font = Font(bold=True)
    for column in columns:
        allowed = {"location_type": ", ".join(v.value for v in LocationType),
                   "resource_type": ", ".join(v.value for v in ResourceType)}.get(column, "")
        guide.append([column, help_text[column], allowed])
    guide.column_dimensions["A"].width = 26
    guide.column_dimensions["B"].width = 90
    guide.column_dimensions["C"].width = 60
    guide.append([])
    guide.append(["One row per device, or per site or customer that has none. Rows with the same "
                  "customer_id are one customer; rows with the same customer_id and location_ref are one site."])
    workbook.save(path)
