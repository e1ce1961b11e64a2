"""Reading the partner's sheet: one small reader per file format, one header matcher for all.

Every cell arrives as text, with its row number as the file itself numbers it (Excel's row, or
the CSV line), and with a note of the cells Excel stored as numbers, because an 18-digit meter
point id stored as a number has already lost digits and must never be taken at face value.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from python_calamine import CalamineError, CalamineWorkbook, PasswordError

from onboard.errors import InputError

# The sheet's own columns, with the names partners use for them. Matching ignores case, spaces,
# punctuation and a plural "s"; anything else is mapped with --map or --mapping.
FIELDS: dict[str, tuple[str, ...]] = {
    "customer_id": ("customer", "customer number", "customer no", "customer nr", "customer key",
                    "customer ref", "customer reference", "client id", "account number", "account id"),
    "user_id": ("spark user id",),
    "location_ref": ("location", "location reference", "location key", "site", "site id", "site ref",
                     "installation", "installation id"),
    "location_id": ("spark location id",),
    "location_type": ("site type", "building type"),
    "meter_point_ids": ("meter point id", "metering point id", "metering point", "meter point", "mpid",
                        "gsrn", "ean", "meter id"),
    "latitude": ("lat",),
    "longitude": ("lng", "lon", "long"),
    "resource_ref": ("resource", "device", "device id", "device ref", "serial", "serial number",
                     "serial no", "vin", "asset id"),
    "resource_id": ("spark resource id",),
    "resource_type": ("device type", "type", "asset type"),
    "resource_meter_point_id": ("device meter point id", "resource mpid", "device mpid"),
}

# Columns the tool writes; recognised by their exact name when an output comes back as input.
OUTPUT_COLUMNS = ("row", "status", "user_id", "location_id", "resource_id", "error", "warnings")
OWN_COLUMNS = frozenset({"row", "status", "error", "warnings"})

WORKBOOKS = (".xlsx", ".xlsm", ".xls", ".ods")
"""Read by python-calamine; their outputs are written as .xlsx."""
HEADER_SEARCH_ROWS = 30
CSV_DELIMITERS = (",", ";", "\t")


def normalise(header: str) -> str:
    return re.sub(r"[\W_]+", "", header.casefold())


def _lookup() -> dict[str, str]:
    table: dict[str, str] = {}
    for name, aliases in FIELDS.items():
        for alias in (name, *aliases):
            key = normalise(alias)
            table.setdefault(key, name)
            table.setdefault(key + "s", name)
    return table


NAMES = _lookup()


def known_field(header: str) -> str | None:
    key = normalise(header)
    if not key:
        return None
    return NAMES.get(key) or (NAMES.get(key[:-1]) if key.endswith("s") else None)


@dataclass(frozen=True)
class Column:
    index: int
    header: str
    field: str | None = None
    own: str | None = None

    @property
    def name(self) -> str:
        """How messages name the column: the user's own header."""
        return self.header or f"column {self.index + 1}"


@dataclass
class SheetRow:
    number: int
    cells: list[str]
    values: list[object]
    numeric: frozenset[int] = frozenset()


@dataclass(frozen=True)
class CsvStyle:
    """How the input CSV was written, so the outputs are written the same way."""

    encoding: str
    delimiter: str


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


# readers


class Reader(Protocol):
    format: str

    def records(self) -> Iterator[tuple[int, list[object]]]:
        """(row number as the file numbers it, cell values) for every row, blank ones included."""


class CsvReader:
    format = "csv"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path} cannot be read: {exc.strerror}") from None
        self.encoding = _detect_encoding(raw)
        self.text = raw.decode(self.encoding)
        self.delimiter = _detect_delimiter(self.text)

    @property
    def style(self) -> CsvStyle:
        return CsvStyle(self.encoding, self.delimiter)

    def records(self) -> Iterator[tuple[int, list[object]]]:
        reader = csv.reader(io.StringIO(self.text, newline=""), delimiter=self.delimiter)
        line = 0
        try:
            for record in reader:
                yield line + 1, list(record)
                line = reader.line_num
        except csv.Error as exc:
            raise InputError(f"{self.path.name}, line {line + 1}: the CSV cannot be read there ({exc})") from None


class XlsxReader:
    format = "xlsx"

    def __init__(self, path: Path, sheet: str | None = None) -> None:
        try:
            workbook = CalamineWorkbook.from_path(str(path))
        except PasswordError:
            raise InputError(f"{path.name} is protected by a password: save a copy without one") from None
        except (CalamineError, OSError, ValueError) as exc:
            raise InputError(f"{path.name} is not a workbook Excel can open ({exc})") from None
        names = workbook.sheet_names
        if sheet is not None and sheet not in names:
            raise InputError(f"{path.name} has no sheet named {sheet!r}; its sheets are: {', '.join(names)}")
        self.path = path
        self.sheet_name = sheet or names[0]
        self.workbook = workbook

    def records(self) -> Iterator[tuple[int, list[object]]]:
        try:
            sheet = self.workbook.get_sheet_by_name(self.sheet_name)
            values = sheet.to_python()
        except (CalamineError, ValueError) as exc:
            raise InputError(f"{self.path.name}: sheet {self.sheet_name!r} cannot be read ({exc})") from None
        first = sheet.start[0] if sheet.start else 0
        for offset, row in enumerate(values):
            yield first + offset + 1, row


def _detect_encoding(raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if raw.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    for encoding in ("utf-8", "cp1252"):
        try:
            raw.decode(encoding)
            return encoding
        except UnicodeDecodeError:
            continue
    return "latin-1"


def _detect_delimiter(text: str) -> str:
    """The delimiter that splits the first lines most consistently into more than one field."""
    sample = [line for line in text.splitlines()[:50] if line.strip()]
    best, best_score = ",", (0, 0)
    for delimiter in CSV_DELIMITERS:
        counts = Counter(len(r) for r in csv.reader(sample, delimiter=delimiter))
        width, lines = counts.most_common(1)[0] if counts else (1, 0)
        score = (lines, width) if width > 1 else (0, 0)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def cell_text(value: object) -> str:
    """A cell as the text Excel shows, never through a float's rounding of a whole number."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        if value.is_integer() and math.isfinite(value):
            return format(Decimal(f"{value:.15g}"), "f")  # as Excel shows it: 15 digits, then zeros
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ") if value.time() != dt.time() else value.date().isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    return str(value)


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


# headers


def match_columns(headers: list[str], mapping: Mapping[str, str] | None = None) -> list[Column]:
    """Which field each header holds: the user's --map first, then the known names."""
    mapping = {normalise(k): v for k, v in (mapping or {}).items()}
    columns = []
    for index, header in enumerate(headers):
        header = header.strip()
        own = header if header in OUTPUT_COLUMNS else None
        field_name = mapping.get(normalise(header)) if header else None
        if field_name is None and own not in OWN_COLUMNS:
            field_name = known_field(header)
        columns.append(Column(index, header, field_name, own if own in OWN_COLUMNS else None))
    return columns


def _find_header(rows: list[tuple[int, list[str]]], mapping: Mapping[str, str] | None) -> int:
    """Index of the header: the first row naming two or more known columns (title rows may sit above)."""
    for i, (_, cells) in enumerate(rows[:HEADER_SEARCH_ROWS]):
        if sum(c.field is not None for c in match_columns(cells, mapping)) >= 2:
            return i
    return 0


def read(path: Path, sheet: str | None = None, mapping: Mapping[str, str] | None = None) -> Sheet:
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


def check_columns(sheet: Sheet) -> None:
    """The sheet's columns make sense: one column per field, a customer key, hints for near misses."""
    from rapidfuzz import fuzz, process

    holder: dict[str, Column] = {}
    for column in sheet.columns:
        if column.field is None:
            continue
        if column.field in holder:
            raise InputError(f"columns {holder[column.field].name!r} and {column.name!r} both hold "
                             f"{column.field}: remove one, or map the other to another field with --map")
        holder[column.field] = column
    for column in sheet.columns:
        if column.field or column.own or not normalise(column.header):
            continue
        guess = process.extractOne(normalise(column.header), NAMES.keys(), scorer=fuzz.ratio, score_cutoff=80)
        if guess and NAMES[guess[0]] not in holder:
            field_name = NAMES[guess[0]]
            sheet.notes.append(f"column {column.name!r} is carried through unused: did you mean {field_name}? "
                               f'(--map "{column.header}={field_name}")')
    if "customer_id" not in holder and "user_id" not in holder:
        found = ", ".join(repr(c.header) for c in sheet.columns if c.header) or "(none)"
        raise InputError(
            f"{sheet.path.name} has no customer_id column (nor user_id). Headers found in row "
            f"{sheet.header_row}: {found}. Expected columns: {', '.join(FIELDS)}. "
            'Map yours with --map "Your Header=customer_id".'
        )
