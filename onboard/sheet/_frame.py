"""A pandas DataFrame, or rows as dicts, read like a sheet: its column names are the header row.

Cells are taken the way a careful user means them: a missing value (NaN, None, pd.NA) is blank; an
integer is the text of that integer (`4711`, never `4711.0`, and an 18-digit id read as int64 is
exact); a float stays a number, so an 18-digit id that became a float (a column with a gap, read
by `read_csv`) is refused as Excel damage is, its digits never guessed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from onboard.errors import InputError


def _cell(value: Any) -> object:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        return None if math.isnan(number) else number
    if isinstance(value, (str, dt.date, dt.time, dt.timedelta)):
        return value
    try:
        import pandas

        if pandas.isna(value):
            return None
    except (ImportError, TypeError, ValueError):
        pass
    return str(value)


class FrameReader:
    """One DataFrame (or list of dicts) as a reader: row 1 is the header, data from row 2, as the
    frame would be numbered once written to a workbook."""

    format = "frame"
    header_known = True
    hidden_rows: frozenset[int] = frozenset()
    hidden_columns: frozenset[int] = frozenset()

    def __init__(self, source: Any) -> None:
        self.headers, self.rows = _table(source)
        digest = hashlib.sha256()
        for row in (self.headers, *self.rows):
            digest.update(repr(row).encode("utf-8", "backslashreplace"))
        self.sha256 = digest.hexdigest()
        """The frame's content, for the journal: the same frame resumes the same run."""

    def records(self) -> Iterator[tuple[int, list[object]]]:
        yield 1, list(self.headers)
        for number, row in enumerate(self.rows, start=2):
            yield number, list(row)


def _table(source: Any) -> tuple[list[str], list[tuple[object, ...]]]:
    try:
        import pandas
    except ImportError:  # pragma: no cover - pandas is a dependency
        pandas = None
    if pandas is not None and isinstance(source, pandas.DataFrame):
        headers = [str(c) for c in source.columns]
        if len(set(headers)) != len(headers):
            raise InputError(f"the DataFrame has two columns named alike: {headers}")
        rows = [tuple(_cell(v) for v in row) for row in source.itertuples(index=False, name=None)]
        return headers, rows
    if isinstance(source, (str, bytes)) or not isinstance(source, Iterable):
        raise InputError("a source is a path to a sheet, a pandas DataFrame, or an iterable of dicts")
    dicts = list(source)
    headers: dict[str, None] = {}
    for number, row in enumerate(dicts, start=1):
        if not isinstance(row, Mapping):
            raise InputError(f"row {number} of the rows given is a {type(row).__name__}, not a dict of column: value")
        headers.update(dict.fromkeys(str(k) for k in row))
    names = list(headers)
    rows = [tuple(_cell(_get(row, name)) for name in names) for row in dicts]
    return names, rows


def _get(row: Mapping, name: str) -> Any:
    return row[name] if name in row else next((v for k, v in row.items() if str(k) == name), None)
