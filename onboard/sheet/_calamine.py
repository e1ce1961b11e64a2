"""Workbooks (.xlsx, .xls, .ods) through python-calamine, each cell with the type Excel gave it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from python_calamine import CalamineError, CalamineWorkbook, PasswordError

from onboard.errors import InputError


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


