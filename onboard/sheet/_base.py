"""What every reader gives: rows of cell values, numbered as the file numbers them."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Protocol

WORKBOOKS = (".xlsx", ".xlsm", ".xls", ".ods")
"""Read by python-calamine; their outputs are written as .xlsx."""


class Reader(Protocol):
    format: str
    hidden_rows: frozenset[int]
    """Row numbers (as the file numbers them) hidden in the workbook."""
    hidden_columns: frozenset[int]
    """Indexes into each record's values of the columns hidden in the workbook."""

    def records(self) -> Iterator[tuple[int, list[object]]]:
        """(row number as the file numbers it, cell values) for every row, blank ones included."""


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


GENERAL_WIDTH = 11
"""Characters Excel's General format shows a number in; past them it turns to scientific notation."""


def excel_general(number: float | int) -> str:
    """A number as Excel's General format shows it, and as Excel saves it to CSV: `7.07058E+17` for a
    long id it stored as a number. A rounded id written as its text would read as a good one."""
    text = cell_text(float(number)) if isinstance(number, float) else str(number)
    if len(text) <= GENERAL_WIDTH:
        return text
    for places in range(5, -1, -1):
        mantissa, exponent = f"{number:.{places}E}".split("E")
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        shown = f"{mantissa}E{exponent}"
        if len(shown) <= GENERAL_WIDTH:
            return shown
    return shown


