"""Workbooks (.xlsx, .xls, .ods) through python-calamine, each cell with the type Excel gave it.

Before calamine opens a zip workbook (.xlsx, .xlsm, .ods), `_package.inspect` streams it against the
limits and finds what calamine does not say (hidden rows and columns). Rows are taken one at a
time (`iter_rows`), and every row of a vertically merged range carries the merged value.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from python_calamine import CalamineError, CalamineSheet, CalamineWorkbook, PasswordError

from onboard.errors import InputError
from onboard.sheet._base import cell_text
from onboard.sheet._limits import Limits, check_regular_file, limits
from onboard.sheet._package import SheetFacts, inspect

ZIP_WORKBOOKS = (".xlsx", ".xlsm", ".ods")
"""Inspected before calamine opens them. An .xls (BIFF) is bounded by its format instead:
65,536 rows x 256 columns at most."""


class XlsxReader:
    format = "xlsx"

    def __init__(self, path: Path, sheet: str | None = None, limit: Limits | None = None) -> None:
        self.limit = limit or limits()
        check_regular_file(path, self.limit)
        facts = inspect(path, sheet, self.limit) if path.suffix.lower() in ZIP_WORKBOOKS else SheetFacts()
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
        self.facts = facts
        self.hidden_rows = frozenset(facts.hidden_rows)
        self.hidden_columns: frozenset[int] = frozenset()
        """Indexes into each row's values; known once `records()` has begun."""
        self._sheet: CalamineSheet | None = None

    def records(self) -> Iterator[tuple[int, list[object]]]:
        try:
            if self._sheet is None:  # parsed once: the header search and the full pass share it
                self._sheet = self.workbook.get_sheet_by_name(self.sheet_name)
            sheet = self._sheet
            first_column = sheet.start[1] if sheet.start else 0
            self.hidden_columns = frozenset(
                column - 1 - first_column for low, high in self.facts.hidden_columns
                for column in range(low, min(high, self.limit.max_columns + first_column) + 1)
                if column - 1 >= first_column)
            # iter_rows numbers rows from the sheet's first row (A1), columns from its first filled one
            yield from enumerate(_merged_down(sheet, first_column), 1)
        except (CalamineError, ValueError) as exc:
            raise InputError(f"{self.path.name}: sheet {self.sheet_name!r} cannot be read ({exc})") from None


def _merged_down(sheet: CalamineSheet, first_column: int) -> Iterator[list[object]]:
    """Rows where each row of a vertically merged range holds the range's value in its first column,
    as a person sees it (a customer merged over its three device rows is the customer of each).
    A row blank but for the merged range stays blank."""
    merges = sorted((top, left - first_column, bottom)
                    for (top, left), (bottom, _) in sheet.merged_cell_ranges or () if bottom > top)
    if not merges:  # the common case: the rows as they are, with no generator of ours in between
        return sheet.iter_rows()
    return _filled_down(sheet, merges)


def _filled_down(sheet: CalamineSheet, merges: list[tuple[int, int, int]]) -> Iterator[list[object]]:
    waiting, active = 0, []
    for index, row in enumerate(sheet.iter_rows()):
        while waiting < len(merges) and merges[waiting][0] == index:
            top, column, bottom = merges[waiting]
            if 0 <= column < len(row) and cell_text(row[column]).strip():
                active.append((column, bottom, row[column]))
            waiting += 1
        while waiting < len(merges) and merges[waiting][0] < index:
            waiting += 1  # a merge above the first row calamine gives
        if active:
            active = [merge for merge in active if merge[1] >= index]
            if any(cell_text(v).strip() for v in row):
                for column, _, value in active:
                    if not cell_text(row[column]).strip():
                        row[column] = value
        yield row
