"""Excel outputs a person can act on: frozen header, filters, widths, the cells to fix marked
with their reason, and ID columns stored as text so Excel cannot turn them into numbers.

Tables are written by rust_xlsxwriter (through the `rvgsrust-xlsxwriter` bindings) in its
constant-memory mode: each row goes to disk as it is written, so a table of any length costs the
same memory, and 100k rows take 3 s of CPU where openpyxl took 42 s (README, "Which writer").
The library writes every text as a text cell (never a formula, whatever it starts with, so it needs
no `'` and reads back as it was), and the characters XML cannot hold in Excel's own escape,
`_xHHHH_` (with the `_` of a text that already looks like one escaped as `_x005F_`), which Excel
and the tool's reader turn back into the text."""

from __future__ import annotations

import datetime as dt
import itertools
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rvgsrust_xlsxwriter import ConditionalFormatFormula, Format, Note, Workbook, Worksheet

from onboard.contract import LocationType, ResourceType
from onboard.sheet._package import column_letters

HEADER_FILL = "#DDEBF7"
PROBLEM_FILL = "#FFC7CE"
STATUS_FILLS = {"created": "#E2EFDA", "updated": "#E2EFDA", "exists": "#EDEDED", "valid": "#E2EFDA",
                "failed": "#FFC7CE", "invalid": "#FFEB9C", "differs": "#FCE4D6"}
TEXT = "@"
WIDTH_SAMPLE = 500
MAX_WIDTH = 60
MAX_NOTES = 5_000
"""Beyond this many marked cells in one workbook, cells are still filled but carry no note: each
note costs the writer about 12 KB until the file is closed, Excel slows down opening thousands of
them, and the reason is in the row's `error` cell anyway."""
EXCEL_CELL_CHARACTERS = 32_767
CLOCK_FORMATS = {dt.time: "hh:mm:ss", dt.timedelta: "[h]:mm:ss"}
"""Number formats for the carried cells the library would otherwise write as text (dates and
date-times it formats itself, as `yyyy-mm-dd` and `yyyy-mm-dd hh:mm:ss`)."""
_CLOCKS = frozenset(CLOCK_FORMATS)

Line = tuple[dict[int, str], list[Any]]
"""One row of a table: the cells to mark (position -> reason), and the values."""


@dataclass(frozen=True)
class _Formats:
    header: Format
    text: Format
    problem: Format
    problem_text: Format
    clock: dict[type, Format]

    @classmethod
    def create(cls) -> _Formats:
        return cls(header=Format().set_bold().set_background_color(HEADER_FILL),
                   text=Format().set_num_format(TEXT),
                   problem=Format().set_background_color(PROBLEM_FILL),
                   problem_text=Format().set_background_color(PROBLEM_FILL).set_num_format(TEXT),
                   clock={kind: Format().set_num_format(code) for kind, code in CLOCK_FORMATS.items()})


def _fit(value: Any) -> Any:
    """A text cut to what an Excel cell holds (Excel itself would cut it when opening the file)."""
    if isinstance(value, str) and len(value) > EXCEL_CELL_CHARACTERS:
        return value[:EXCEL_CELL_CHARACTERS - 1] + "…"
    return value


def _width(values: Iterable[Any]) -> float:
    longest = max((len(str(v)) for v in values if v is not None), default=0)
    return min(MAX_WIDTH, max(8, longest + 2))


def _clock_number(value: dt.time | dt.timedelta) -> float:
    """A time of day or a duration as Excel stores it: in days."""
    if isinstance(value, dt.timedelta):
        return value.total_seconds() / 86_400
    return (value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6) / 86_400


class _Table:
    """One sheet of the table, written row after row."""

    def __init__(self, sheet: Worksheet, formats: _Formats, headers: list[str], own: dict[str, int],
                 text_columns: set[int]) -> None:
        self.sheet, self.formats, self.width = sheet, formats, len(headers)
        self.keys = {own[name] for name in ("user_id", "location_id", "resource_id") if name in own} | text_columns
        self.status_at = own.get("status")
        self._keys = operator.itemgetter(*self.keys, *self.keys) if self.keys else None
        """The key cells of a row in one call (twice over, so even one key gives a tuple)."""
        self.row = 0
        self.notes = 0

    def columns(self, headers: list[str], sample: list[Line], hidden: frozenset[int]) -> None:
        sheet = self.sheet
        for position, header in enumerate(headers):
            sheet.set_column_width(position, _width(itertools.chain([header], (v[position] for _, v in sample))))
            if position in self.keys:
                sheet.set_column_format(position, self.formats.text)
            if position in hidden:
                sheet.set_column_hidden(position)
        sheet.freeze_panes(1, 0)
        sheet.write_row(0, 0, [_fit(h) for h in headers], self.formats.header)

    def write(self, marked: dict[int, str], values: list[Any]) -> None:
        self.row += 1
        row, sheet, formats = self.row, self.sheet, self.formats
        try:
            sheet.write_row(row, 0, values)
        except ValueError:
            sheet.write_row(row, 0, [_fit(v) for v in values])
        if self.keys:
            keys = self._keys(values)
            if None in keys or "" in keys:
                for position in self.keys:
                    if values[position] is None or values[position] == "":
                        sheet.write(row, position, None, formats.text)  # typed into later, it stays text anywhere
        if not _CLOCKS.isdisjoint(map(type, values)):
            for position, value in enumerate(values):
                if type(value) in _CLOCKS:
                    sheet.write(row, position, _clock_number(value), formats.clock[type(value)])
        for position, reason in marked.items():
            sheet.write(row, position, _fit(values[position]),
                        formats.problem_text if position in self.keys else formats.problem)
            if self.notes < MAX_NOTES:
                self.notes += 1
                note = Note(_fit(reason))
                note.set_author("onboard")
                note.set_width(300)
                note.set_height(120)
                sheet.insert_note(row, position, note)

    def close(self) -> None:
        self.sheet.autofilter(0, 0, self.row, max(0, self.width - 1))
        if self.status_at is not None and self.row:
            self._fill_statuses()

    def _fill_statuses(self) -> None:
        """Status cells filled by a conditional format on the column, one rule per colour, rather
        than a format on each cell: a call less per row, and the fill follows the value if a person
        edits it. Added once the last row is known, on that row (constant memory refuses a range
        that starts above the row it is at), and spanning the column through `set_multi_range`."""
        letters = column_letters(self.status_at + 1)
        first = f"${letters}2"
        for colour, statuses in _by_colour(STATUS_FILLS).items():
            rule = ConditionalFormatFormula()
            rule.set_rule("=OR(" + ",".join(f'{first}="{status}"' for status in statuses) + ")")
            rule.set_format(Format().set_background_color(colour))
            rule.set_multi_range(f"{letters}2:{letters}{self.row + 1}")
            self.sheet.add_conditional_format(self.row, self.status_at, self.row, self.status_at, rule)


def _by_colour(fills: dict[str, str]) -> dict[str, list[str]]:
    colours: dict[str, list[str]] = {}
    for status, colour in fills.items():
        colours.setdefault(colour, []).append(status)
    return colours


def write_table(path: Path, title: str, headers: list[str], own: dict[str, int], rows: Iterable[Line],
                summary: Callable[[], list[list[Any]]] | None, text_columns: set[int],
                hidden_columns: frozenset[int] = frozenset()) -> None:
    """Write `rows` as they come, holding only the first few (for the column widths). `own` places
    the tool's columns (`status`, the IDs; a table of another command's columns may have none of
    them); `hidden_columns` (output positions) stay hidden as they were in the input.
    `summary` is asked for its lines once every row is written, so it may count them."""
    workbook = Workbook(str(path))
    formats = _Formats.create()
    table = _Table(workbook.add_worksheet(title, constant_memory=True), formats, headers, own, text_columns)
    page = workbook.add_worksheet("Summary") if summary is not None else None
    table.sheet.set_landscape()
    lines: Iterator[Line] = iter(rows)
    sample = list(itertools.islice(lines, WIDTH_SAMPLE))
    table.columns(headers, sample, hidden_columns)
    write = table.write
    for marked, values in itertools.chain(sample, lines):
        write(marked, values)
    table.close()
    if page is not None and summary is not None:
        page.set_column_width(0, 60)
        page.set_column_width(1, 14)
        for row, line in enumerate(summary()):
            if line:
                page.write_row(row, 0, [_fit(v) for v in line])
    workbook.close()


def write_template_workbook(path: Path, columns: list[str], example: dict[str, str],
                            help_text: dict[str, str]) -> None:
    """The template keeps openpyxl, imported here alone: it needs dropdowns (data validation),
    which the table writer does not, and it is a few rows."""
    from openpyxl import Workbook as Template
    from openpyxl.styles import Font, PatternFill
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    workbook = Template()
    sheet = workbook.active
    sheet.title = "Customers"
    sheet.freeze_panes = "A2"
    sheet.append(columns)
    sheet.append([example[c] or None for c in columns])
    for position, column in enumerate(columns, start=1):
        letter = get_column_letter(position)
        sheet[f"{letter}1"].font = Font(bold=True)
        sheet[f"{letter}1"].fill = PatternFill("solid", fgColor=HEADER_FILL[1:])
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
