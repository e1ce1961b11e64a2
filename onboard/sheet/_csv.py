"""CSV as Nordic Excel and billing systems write it: any common encoding and delimiter."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from onboard.errors import InputError

CSV_DELIMITERS = (",", ";", "\t")


@dataclass(frozen=True)
class CsvStyle:
    """How the input CSV was written, so the outputs are written the same way."""

    encoding: str
    delimiter: str


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


