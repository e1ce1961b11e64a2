"""Reading the partner's sheet: one small reader per file format, one header matcher for all.

Every cell arrives as text, with its row number as the file itself numbers it (Excel's row, or
the CSV line), and with a note of the cells Excel stored as numbers, because an 18-digit meter
point id stored as a number has already lost digits and must never be taken at face value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from onboard.errors import InputError
from onboard.mapping import Mapping
from onboard.sheet._base import WORKBOOKS, Reader, cell_text
from onboard.sheet._calamine import XlsxReader
from onboard.sheet._csv import CsvReader, CsvStyle
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

__all__ = ["FIELDS", "OUTPUT_COLUMNS", "OWN_COLUMNS", "WORKBOOKS", "Column", "CsvReader", "CsvStyle",
           "Reader", "Sheet", "SheetRow", "XlsxReader", "cell_text", "check_columns", "column_uses", "known_field",
           "match_columns", "normalise", "open_reader", "read"]

HEADER_SEARCH_ROWS = 30


@dataclass
class SheetRow:
    number: int
    cells: list[str]
    values: list[object]
    numeric: frozenset[int] = frozenset()


@dataclass
class Sheet:
    path: Path
    format: str
    columns: list[Column]
    rows: list[SheetRow]
    header_row: int
    sheet_name: str | None = None
    csv_style: CsvStyle | None = None
    notes: list[str] = field(default_factory=list)

    def column(self, field_name: str) -> Column | None:
        return next((c for c in self.columns if c.field == field_name), None)


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


def read(path: Path, sheet: str | None = None, mapping: Mapping | None = None) -> Sheet:
    reader = open_reader(path, sheet)
    records = reader.records()
    head: list[tuple[int, list[object]]] = []
    for number, values in records:
        head.append((number, values))
        if len(head) >= HEADER_SEARCH_ROWS:
            break
    texts = [(n, [cell_text(v).strip() for v in values]) for n, values in head if _filled(values)]
    if not texts:
        raise InputError(f"{path.name} is empty: there is no header row and no data")
    at = _find_header(texts, mapping)
    if at is None:
        other = _other_sheet(path, reader, mapping)
        if other is not None:
            raise InputError(f"{path.name}: sheet {reader.sheet_name!r} names none of the known columns in its "
                             f"first {HEADER_SEARCH_ROWS} rows, but sheet {other!r} does: add --sheet {other!r}")
        at = 0
    header_number, headers = texts[at]
    raw = [(n, values) for n, values in _chain(head, records) if n > header_number and _filled(values)]
    width = max([len(headers), *(_width(values) for _, values in raw)])
    columns = match_columns(headers + [""] * (width - len(headers)), mapping)
    rows = []
    for number, values in raw:
        values = list(values[:width]) + [""] * (width - len(values))
        numeric = frozenset(i for i, v in enumerate(values)
                            if isinstance(v, (int, float)) and not isinstance(v, bool))
        rows.append(SheetRow(number, [cell_text(v) for v in values], values, numeric))
    style = reader.style if isinstance(reader, CsvReader) else None
    return Sheet(path, reader.format, columns, rows, header_number,
                 getattr(reader, "sheet_name", None), style)


def _filled(values: list[object]) -> bool:
    return any(cell_text(v).strip() for v in values)


def _width(values: list[object]) -> int:
    """Columns up to the last filled cell, so a stray blank cell far right adds no column."""
    for i in range(len(values) - 1, -1, -1):
        if cell_text(values[i]).strip():
            return i + 1
    return 0


def _chain(head, rest):
    yield from head
    yield from rest


