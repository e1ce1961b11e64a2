"""CSV as Nordic Excel and billing systems write it: any common encoding and delimiter.

The file is streamed, never held whole, and read only within the limits (`_limits`). This module
also holds both halves of the tool's CSV text convention, so they cannot drift: `protect` (how a
text is written so a spreadsheet never runs it as a formula) and `unprotect` (how a field is read,
giving back exactly what `protect` was given).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import NoReturn

from onboard.errors import InputError
from onboard.sheet._limits import EXCEL_CELL_CHARACTERS, MB, Limits, check_regular_file, limits, too_big

CSV_DELIMITERS = (",", ";", "\t")
_DELIMITER_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs"}
SAMPLE_LINES = 50
SAMPLE_LINE_CHARACTERS = 64 * 1024

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?")
_KEEP_AS_TEXT = re.compile(r'="((?:[^"]|"")*)"', re.DOTALL)


def _looks_like_formula(text: str) -> bool:
    """Whether a spreadsheet would run the text as a formula, ignoring leading apostrophes (so that
    `protect` and `unprotect` agree on every text, whatever it starts with); a plain signed number
    is not a formula."""
    bare = text.lstrip("'")
    return bare.startswith(_FORMULA_START) and not _NUMBER.fullmatch(bare.replace(" ", ""))


MAYBE_FORMULA = frozenset("".join(_FORMULA_START) + "'")
"""First characters of a text that may need a look (`_looks_like_formula`); any other is let be
at once, which is nearly every cell of a million-row output."""


def protect(text: str) -> str:
    """A text as the tool writes it to CSV: with a leading `'` where a spreadsheet would run it as a
    formula (CSV/formula injection). `unprotect(protect(t)) == t` for every text."""
    if not text or text[0] not in MAYBE_FORMULA:
        return text
    return "'" + text if _looks_like_formula(text) else text


def unprotect(field: str) -> str:
    """A CSV field as the text it holds: Excel's keep-as-text form `="007"` is `007`, and the `'`
    that `protect` added is removed (one, and only where `protect` would have added it)."""
    if field.startswith('="') and (kept := _KEEP_AS_TEXT.fullmatch(field)):
        return kept.group(1).replace('""', '"')
    if field.startswith("'") and _looks_like_formula(field[1:]):
        return field[1:]
    return field


@dataclass(frozen=True)
class CsvStyle:
    """How the input CSV was written, so the outputs are written the same way."""

    encoding: str
    delimiter: str


class CsvReader:
    format = "csv"
    hidden_rows: frozenset[int] = frozenset()
    hidden_columns: frozenset[int] = frozenset()

    def __init__(self, path: Path, limit: Limits | None = None) -> None:
        self.path = path
        self.limit = limit or limits()
        check_regular_file(path, self.limit)
        try:
            self.encoding = _detect_encoding(path)
            with self._open() as handle:
                self.delimiter = _detect_delimiter(handle)
        except OSError as exc:
            raise InputError(f"{path} cannot be read: {exc.strerror}") from None

    @property
    def style(self) -> CsvStyle:
        return CsvStyle(self.encoding, self.delimiter)

    def _open(self) -> io.TextIOWrapper:
        return self.path.open(encoding=self.encoding, newline="")

    def records(self) -> Iterator[tuple[int, list[object]]]:
        line = 0
        try:
            with self._open() as handle, _field_limit(self.limit.max_csv_field):
                lines = _RecordLines(handle, self.path.name, self.delimiter, self.limit)
                reader = csv.reader(lines, delimiter=self.delimiter)
                for record in reader:
                    if line >= self.limit.max_rows:
                        raise InputError(f"{self.path.name} has more than {self.limit.max_rows:,} lines, "
                                         + too_big("the tool reads", "max_rows"))
                    if len(record) > self.limit.max_columns:
                        self._refuse_width(record, line + 1)
                    yield line + 1, [unprotect(f) if f[:1] in "='" else f for f in record] if lines.marked else record
                    line = reader.line_num
                    lines.held = 0
                    lines.marked = False
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                raise InputError(
                    f"{self.path.name}, line {line + 1}: a field is longer than {self.limit.max_csv_field:,} "
                    f"characters (Excel holds at most {EXCEL_CELL_CHARACTERS:,} in a cell): is a quote (\") "
                    "missing or one too many? " + too_big("Fix the line", "max_csv_field")) from None
            raise InputError(f"{self.path.name}, line {line + 1}: the CSV cannot be read there ({exc})") from None
        except OSError as exc:
            raise InputError(f"{self.path} cannot be read: {exc.strerror}") from None

    def _refuse_width(self, record: list[str], line: int) -> None:
        """Empty fields count as columns too: a few after the last column are what a spreadsheet
        writes, a line of a million is not a sheet (and every one would be a column of the outputs)."""
        last = next((i for i in range(len(record) - 1, -1, -1) if record[i].strip()), -1)
        most = self.limit.max_columns
        if last >= most:
            raise InputError(f"{self.path.name}, line {line}: field {last + 1:,} holds something, beyond the "
                             f"{most:,} columns " + too_big("the tool reads", "max_columns"))
        raise InputError(f"{self.path.name}, line {line} has {len(record):,} fields, more than the {most:,} columns "
                         f"the tool reads, empty ones included; the {len(record) - last - 1:,} after field "
                         f"{last + 1:,} are empty: " + too_big(
                             f"delete the {_DELIMITER_NAMES[self.delimiter]} after the last column (or the empty "
                             "columns right of the data in the sheet it was saved from)", "max_columns"))


class _RecordLines:
    """The file's lines for `csv.reader`, held to `max_csv_line` characters a record before the csv
    module sees them: it builds a whole record before the tool can look at it, and a line of 200
    million empty fields would be a list of 200 million. A quoted cell with line breaks runs a record
    over several lines, so the count (`held`) goes on until the reader has the record and resets it."""

    def __init__(self, handle: io.TextIOWrapper, name: str, delimiter: str, limit: Limits) -> None:
        self._handle = handle
        self._name = name
        self._delimiter = delimiter
        self._limit = limit
        self.number = 0
        self.first = 0
        """The line the record being read starts on."""
        self.held = 0
        self.marked = False
        """Whether a line of the record holds a `=` or `'`: a field can start with one (`unprotect`)
        only then, and nearly no line does, so nearly no record's fields are looked at one by one."""

    def __iter__(self) -> _RecordLines:
        return self

    def __next__(self) -> str:
        most = self._limit.max_csv_line
        text = self._handle.readline(most - self.held + 1)
        if not text:
            raise StopIteration
        self.number += 1
        if not self.held:
            self.first = self.number
        self.held += len(text)
        if self.held > most:
            self._refuse(text)
        if not self.marked and ("=" in text or "'" in text):
            self.marked = True
        return text

    def _refuse(self, text: str) -> NoReturn:
        """Say what the line holds: a delimiter a column, or a quoted cell that never ends."""
        most, columns = self._limit.max_csv_line, self._limit.max_columns
        delimiters = text.count(self._delimiter)
        named = _DELIMITER_NAMES[self._delimiter]
        if self.first < self.number:
            raise InputError(f"{self._name}, lines {self.first} to {self.number}: one record longer than "
                             f"{most:,} characters, a quoted cell running over line breaks: is a quote (\") "
                             "missing or one too many? " + too_big("Fix the line", "max_csv_line"))
        line = f"{self._name}, line {self.number} is longer than {most:,} characters"
        tail = text.rstrip("\r\n")
        trailing = len(tail) - len(tail.rstrip(self._delimiter))
        if trailing >= columns:
            raise InputError(f"{line}, and ends in at least {trailing:,} {named} with nothing between them, empty "
                             f"columns, more than the {columns:,} the tool reads (empty ones count too): " + too_big(
                                 f"delete the {named} after the last column (or the empty columns right of the data "
                                 "in the sheet it was saved from)", "max_columns", "max_csv_line"))
        if delimiters >= columns:
            raise InputError(f"{line}, and holds at least {delimiters:,} {named}, a column each, more than the "
                             f"{columns:,} columns " + too_big("the tool reads", "max_columns", "max_csv_line"))
        cells = most // EXCEL_CELL_CHARACTERS
        raise InputError(f"{line} ({cells:,} cells as full as Excel lets a cell be), "
                         + too_big("more than the tool reads", "max_csv_line"))


@contextmanager
def _field_limit(characters: int) -> Iterator[None]:
    """The csv module's field limit is process-wide: set for this read, then given back."""
    before = csv.field_size_limit(characters)
    try:
        yield
    finally:
        csv.field_size_limit(before)


def _detect_encoding(path: Path) -> str:
    """UTF-16 or UTF-8 by their BOM; else the first of UTF-8 and cp1252 that decodes the whole file
    (decoded in chunks, never held), else latin-1, which decodes anything."""
    with path.open("rb") as handle:
        start = handle.read(4)
    if start.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if start.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    for encoding in ("utf-8", "cp1252"):
        if _decodes(path, encoding):
            return encoding
    return "latin-1"


def _decodes(path: Path, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(MB):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _detect_delimiter(handle: io.TextIOWrapper) -> str:
    """The delimiter that splits the first lines most consistently into more than one field."""
    lines = (handle.readline(SAMPLE_LINE_CHARACTERS) for _ in range(SAMPLE_LINES * 20))
    sample = list(islice((line for line in lines if line.strip()), SAMPLE_LINES))
    best, best_score = ",", (0, 0)
    with _field_limit(SAMPLE_LINE_CHARACTERS):
        for delimiter in CSV_DELIMITERS:
            try:
                counts = Counter(len(r) for r in csv.reader(sample, delimiter=delimiter))
            except csv.Error:
                continue
            width, lines_alike = counts.most_common(1)[0] if counts else (1, 0)
            score = (lines_alike, width) if width > 1 else (0, 0)
            if score > best_score:
                best, best_score = delimiter, score
    return best
