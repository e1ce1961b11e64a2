"""Reading the partner's sheet: one small reader per file format, one header matcher for all.

Every cell arrives as text, with its row number as the file itself numbers it (Excel's row, or
the CSV line), and with a note of the cells Excel stored as numbers, because an 18-digit meter
point id stored as a number has already lost digits and must never be taken at face value.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from onboard.errors import InputError
from onboard.mapping import Mapping
from onboard.sheet._base import WORKBOOKS, Reader, cell_text, excel_general
from onboard.sheet._calamine import XlsxReader
from onboard.sheet._csv import MAYBE_FORMULA, CsvReader, CsvStyle, protect, unprotect
from onboard.sheet._frame import FrameReader
from onboard.sheet._limits import Limits
from onboard.sheet.columns import (
    FIELDS,
    OUTPUT_COLUMNS,
    OWN_COLUMNS,
    Column,
    check_columns,
    column_uses,
    known_field,
    match_columns,
    normalise,
)

__all__ = ["FIELDS", "MAYBE_FORMULA", "OUTPUT_COLUMNS", "OWN_COLUMNS", "WORKBOOKS", "Column", "CsvReader", "CsvStyle",
           "Limits", "Reader", "Sheet", "SheetRow", "XlsxReader", "cell_text", "check_columns", "column_uses",
           "excel_general", "known_field", "match_columns", "normalise", "open_reader", "protect", "read", "unprotect"]

HEADER_SEARCH_ROWS = 30
KEEP_ROWS = 250_000
"""Rows of a workbook kept after the first pass; past this its rows are converted anew on each pass
(its reader keeps the parsed sheet), so a million-row workbook is not held twice."""


@dataclass(slots=True)
class SheetRow:
    number: int
    cells: list[str]
    values: list[object]
    hidden: bool = False
    """Hidden in the workbook (filtered out, or hidden by hand): imported all the same, but a person
    looking at the sheet does not see it."""


class Rows:
    """The data rows below the header, in order; iterable again and again. A CSV is read anew on
    each pass, so a million rows never sit in memory at once; a workbook's rows (up to KEEP_ROWS) are
    kept after the first pass, since converting them again costs seconds.

    The first pass also learns how wide the data is: a row may run past the header, and the sheet
    grows unnamed columns for it once that pass ends (`Sheet.widen`)."""

    def __init__(self, reader: Reader, header_number: int, keep: bool) -> None:
        self._reader = reader
        self._header = header_number
        self._kept: list[SheetRow] | None = [] if keep else None
        self._text = isinstance(reader, CsvReader)
        """The reader gives text only (a CSV): a row's cells are its values, one list for both."""
        self._complete = False
        self.sheet: Sheet | None = None

    def __iter__(self) -> Iterator[SheetRow]:
        if self._complete and self._kept is not None:
            yield from self._kept
            return
        width = len(self.sheet.columns) if self.sheet else 0
        widest = width
        hidden, header, text = self._reader.hidden_rows, self._header, self._text
        kept: list[SheetRow] | None = [] if self._kept is not None else None
        for number, values in self._reader.records():
            if number <= header:
                continue
            filled = _width(values)
            if filled == width == len(values):  # the common row: as wide as the header
                pass
            elif not filled:
                continue
            else:
                if filled < len(values):
                    values = values[:filled]  # a stray blank cell far right widens no row
                if filled > widest:
                    widest = filled
                if filled < width:
                    values += [""] * (width - filled)
            cells = values if text else [v if v.__class__ is str else cell_text(v) for v in values]
            row = SheetRow(number, cells, values, number in hidden)
            if kept is not None:
                kept.append(row)
                if len(kept) > KEEP_ROWS:  # a big workbook: read its rows anew each pass instead
                    kept = None
                    self._kept = None
            yield row
        if self.sheet is not None and widest > width:
            self.sheet.widen(widest)
            for row in kept or ():
                row.values += [""] * (widest - len(row.values))
                if row.cells is not row.values:
                    row.cells += [""] * (widest - len(row.cells))
        if kept is not None:
            self._kept = kept
            self._reader = None  # its parsed sheet is no longer needed: the rows are kept
        self._complete = True


@dataclass
class Sheet:
    path: Path
    format: str
    columns: list[Column]
    rows: Rows
    header_row: int
    sheet_name: str | None = None
    csv_style: CsvStyle | None = None
    notes: list[str] = field(default_factory=list)
    hidden_columns: frozenset[int] = frozenset()
    """Indexes of the columns hidden in the workbook; the xlsx outputs hide them too."""
    sha256: str | None = None
    """The content's SHA-256 when it is no file (a DataFrame); a file's is read from the file."""

    def column(self, field_name: str) -> Column | None:
        return next((c for c in self.columns if c.field == field_name), None)

    def widen(self, width: int) -> None:
        """Unnamed columns for data that runs past the header; rows are padded to the new width."""
        self.columns += match_columns([""] * (width - len(self.columns)))
        self.columns[:] = [replace(c, index=i) for i, c in enumerate(self.columns)]


def open_reader(path: Path, sheet: str | None = None) -> Reader:
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a sheet")
    if suffix in WORKBOOKS:
        return XlsxReader(path, sheet)
    if suffix in (".csv", ".txt", ".tsv"):
        if sheet is not None:
            raise InputError("--sheet applies to Excel workbooks; a CSV file has one sheet")
        return CsvReader(path)
    raise InputError(f"{path.name}: onboard reads Excel workbooks (.xlsx, .xls, .ods) and .csv files "
                     "(save the sheet as one of them)")


def _known(cells: list[str], mapping: Mapping | None) -> int:
    return sum(c.field is not None or c.ignored for c in match_columns(cells, mapping))


def _find_header(rows: list[tuple[int, list[str]]], mapping: Mapping | None) -> int | None:
    """Index of the header: the first row naming two or more known or mapped columns (title rows may
    sit above), else the first naming one; None when no row names any."""
    counts = [_known(cells, mapping) for _, cells in rows[:HEADER_SEARCH_ROWS]]
    at = next((i for i, n in enumerate(counts) if n >= 2), None)
    return at if at is not None else next((i for i, n in enumerate(counts) if n >= 1), None)


def _other_sheet(path: Path, reader: Reader, mapping: Mapping | None) -> str | None:
    """Another sheet of the workbook whose first rows name known columns, when this one's do not."""
    if not isinstance(reader, XlsxReader):
        return None
    for name in reader.workbook.sheet_names:
        if name == reader.sheet_name:
            continue
        try:
            other = XlsxReader(path, name)
            head = [record[1] for _, record in zip(range(HEADER_SEARCH_ROWS), other.records(), strict=False)]
        except InputError:
            continue
        if any(_known([cell_text(v).strip() for v in values], mapping) >= 2 for values in head):
            return name
    return None


def read(path: Path | Any, sheet: str | None = None, mapping: Mapping | None = None, name: str | None = None) -> Sheet:
    """The sheet at `path` (a .xlsx, .xls, .ods or .csv file), or a pandas DataFrame or iterable of
    dicts given instead of a path (then `name` names it in messages and outputs)."""
    if isinstance(path, (str, os.PathLike)):
        path = Path(path)
        reader = open_reader(path, sheet)
    else:
        if sheet is not None:
            raise InputError("sheet names a workbook's sheet; a DataFrame has none")
        reader = FrameReader(path)
        path = Path(name or "dataframe")
    records = reader.records()
    head: list[tuple[int, list[object]]] = []
    for number, values in records:
        head.append((number, values))
        if len(head) >= HEADER_SEARCH_ROWS:
            break
    records.close()
    texts = [(n, [cell_text(v).strip() for v in values]) for n, values in head if _filled(values)]
    if not texts:
        raise InputError(f"{path.name} is empty: there is no header row and no data")
    at = 0 if getattr(reader, "header_known", False) else _find_header(texts, mapping)
    if at is None:
        other = _other_sheet(path, reader, mapping)
        if other is not None:
            raise InputError(f"{path.name}: sheet {reader.sheet_name!r} names none of the known columns in its "
                             f"first {HEADER_SEARCH_ROWS} rows, but sheet {other!r} does: add --sheet {other!r}")
        at = max(range(len(texts)), key=lambda i: sum(1 for c in texts[i][1] if c))  # the fullest row
    header_number, headers = texts[at]
    rows = Rows(reader, header_number, keep=not isinstance(reader, CsvReader))
    style = reader.style if isinstance(reader, CsvReader) else None
    sheet = Sheet(path, reader.format, match_columns(headers, mapping), rows, header_number,
                  getattr(reader, "sheet_name", None), style, sha256=getattr(reader, "sha256", None))
    rows.sheet = sheet
    if not isinstance(reader, CsvReader):
        for _ in rows:  # a workbook is read once, now; its hidden columns are known after that
            pass
        sheet.hidden_columns = frozenset(i for i in reader.hidden_columns if i < len(sheet.columns))
    return sheet


def _filled(values: list[object]) -> bool:
    return any(cell_text(v).strip() for v in values)


def _width(values: list[object]) -> int:
    """Columns up to the last filled cell, so a stray blank cell far right adds no column."""
    for i in range(len(values) - 1, -1, -1):
        value = values[i]
        if value.strip() if value.__class__ is str else value is not None and cell_text(value).strip():
            return i + 1
    return 0


def _chain(head, rest):
    yield from head
    yield from rest


