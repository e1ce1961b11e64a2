"""How much of a file the tool agrees to read, so a hostile or broken file is refused with a message
instead of taking the machine's memory (a stray cell at XFD1048576, a deflate bomb, /dev/zero).

Every limit is a setting (`ONBOARD_MAX_*`, in the environment or `.env`), raised by whoever has a
real sheet beyond it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from onboard.errors import InputError

MB = 1024 * 1024
EXCEL_ROWS = 1_048_576
EXCEL_CELL_CHARACTERS = 32_767
CSV_LINE_CHARACTERS = 1_048_576
"""A line of 32 cells each as full as Excel lets a cell be: the csv module builds a whole record
before the tool sees it, so this is what bounds its memory (a line of a million empty fields)."""


class Limits(BaseSettings):
    """The largest input the tool reads; each message past one names its setting."""

    model_config = SettingsConfigDict(env_prefix="ONBOARD_", env_file=".env", extra="ignore")

    max_rows: int = Field(EXCEL_ROWS, ge=1, description="rows of a sheet (Excel's own maximum)")
    max_columns: int = Field(1_000, ge=1, description="columns of a sheet")
    max_cells: int = Field(30_000_000, ge=1, description="rows x columns from the first to the last filled cell "
                                                          "of a workbook (what its reader holds in memory)")
    max_sparse_cells: int = Field(4_000_000, ge=1, description="rows x columns from the first to the last filled "
                                  "cell of a sheet, beyond which it must have one filled cell in 10")
    max_file_mb: int = Field(512, ge=1, description="size of the input file, MiB")
    max_uncompressed_mb: int = Field(1024, ge=1, description="XML inside an .xlsx/.ods, uncompressed, MiB")
    max_csv_field: int = Field(131_072, ge=EXCEL_CELL_CHARACTERS, description="characters in one CSV field")
    max_csv_line: int = Field(CSV_LINE_CHARACTERS, ge=EXCEL_CELL_CHARACTERS,
                              description="characters in one CSV record (its line, and the lines a quoted "
                                          "cell with line breaks runs over)")


def limits() -> Limits:
    from onboard.settings import load

    return load(Limits, "ONBOARD_MAX_* settings")


def too_big(what: str, *settings: str) -> str:
    """The end of every limit's message: what to do about it."""
    return f"{what}; if the sheet really is that large, raise " + " and ".join(f"ONBOARD_{s.upper()}" for s in settings)


def check_regular_file(path: Path, limit: Limits) -> None:
    """Only a regular file of bounded size is read: a FIFO would block forever, /dev/zero never ends."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise InputError(f"{path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path} is not a regular file (a pipe, device or socket): save the sheet to a file "
                         "and give that")
    if info.st_size > limit.max_file_mb * MB:
        raise InputError(f"{path.name} is {info.st_size / MB:,.0f} MiB, more than the {limit.max_file_mb:,} MiB "
                         + too_big("the tool reads", "max_file_mb"))
