"""Hostile and broken input files, run through the real command line in a child process: each is
refused with exit 2 and a message saying what to do, in bounded time and with bounded memory (the
child's peak RSS, from wait4). The files are generated here, never committed."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import MPIDS, meter_point_id, write_csv
from onboard.sheet import CsvReader, Limits, XlsxReader
from onboard.sheet._limits import EXCEL_CELL_CHARACTERS

MAX_RSS_MB = 400
TIMEOUT = 120

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>')
ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?><Relationships '
    'xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="xl/workbook.xml"/></Relationships>')
WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>'
    '<sheet name="Customers" sheetId="1" r:id="rId7"/></sheets></workbook>')
WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?><Relationships '
    'xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId7" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
    'Target="worksheets/sheet1.xml"/></Relationships>')
SHEET_HEAD = ('<?xml version="1.0" encoding="UTF-8"?>'
              '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>')
SHEET_TAIL = "</sheetData></worksheet>"


def text_cell(ref: str, text: str) -> str:
    return f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>'


def customer_rows(count: int = 2) -> str:
    rows = [f'<row r="1">{text_cell("A1", "customer_id")}{text_cell("B1", "meter_point_ids")}</row>']
    rows += [f'<row r="{n}">{text_cell(f"A{n}", f"C{n}")}{text_cell(f"B{n}", MPIDS[0])}</row>'
             for n in range(2, count + 2)]
    return "".join(rows)


def write_xlsx(path: Path, sheet: Iterable[bytes], zip64: bool = False) -> Path:
    """A minimal workbook whose sheet XML is streamed from `sheet` (so a 2 GiB one is never in memory)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as package:
        for name, text in (("[Content_Types].xml", CONTENT_TYPES), ("_rels/.rels", ROOT_RELS),
                           ("xl/workbook.xml", WORKBOOK), ("xl/_rels/workbook.xml.rels", WORKBOOK_RELS)):
            package.writestr(name, text)
        with package.open("xl/worksheets/sheet1.xml", "w", force_zip64=zip64) as part:
            for chunk in sheet:
                part.write(chunk)
    return path


def sheet_with(*middle: str | Iterable[bytes]) -> Iterable[bytes]:
    yield SHEET_HEAD.encode()
    for piece in middle:
        if isinstance(piece, str):
            yield piece.encode()
        else:
            yield from piece
    yield SHEET_TAIL.encode()


def stray_cell(ref: str) -> Callable[[Path], Path]:
    row = ref.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return lambda p: write_xlsx(p, sheet_with(customer_rows(), f'<row r="{row}">{text_cell(ref, "x")}</row>'))


def repeated(piece: str, times: int) -> Iterable[bytes]:
    block = piece.encode() * 100_000
    for _ in range(times // 100_000):
        yield block
    yield piece.encode() * (times % 100_000)


def cell_over_and_over(times: int) -> Callable[[Path], Path]:
    """The cell A3 written `times` times: a tiny extent, and as many cells as calamine will list."""
    return lambda p: write_xlsx(p, sheet_with(customer_rows(), '<row r="3">', repeated('<c r="A3"><v>1</v></c>', times),
                                              "</row>"))


def filled_columns(rows: int, columns: str) -> Callable[[Path], Path]:
    """A header and `rows` rows with a number in each of `columns` (letters), nothing between them."""
    def body() -> Iterable[bytes]:
        yield (f'<row r="1">{text_cell("A1", "customer_id")}{text_cell("B1", "meter_point_ids")}</row>').encode()
        for start in range(2, rows + 2, 10_000):
            yield "".join(f'<row r="{r}">' + "".join(f'<c r="{c}{r}"><v>{r}</v></c>' for c in columns) + "</row>"
                          for r in range(start, min(start + 10_000, rows + 2))).encode()
    return lambda p: write_xlsx(p, sheet_with(body()))


def blank_runs(total: int, run: int, zip64: bool = False) -> Callable[[Path], Path]:
    return lambda p: write_xlsx(p, sheet_with(customer_rows(), whitespace(total, run)), zip64=zip64)


def lying(path: Path) -> Path:
    blank_runs(64 * MIB, MIB)(path)
    lie_about_size(path, "xl/worksheets/sheet1.xml", 4096)
    return path


def lines(header: str, *rows: str) -> Callable[[Path], Path]:
    return lambda p: csv_lines(p, [header, *rows])


def whitespace(total: int, run: int) -> Iterable[bytes]:
    """`total` bytes of blanks, in runs of `run` between empty comments (`run` = total: one run)."""
    block = b" " * min(run, 16 * 2**20)
    left = total
    while left > 0:
        in_run = min(run, left)
        while in_run > 0:
            piece = block[:in_run]
            yield piece
            in_run -= len(piece)
            left -= len(piece)
        if left > 0:
            yield b"<!---->"


def lie_about_size(path: Path, member: str, declared: int) -> None:
    """Rewrite the uncompressed size `member` declares (local header and central directory)."""
    with zipfile.ZipFile(path) as package:
        info = package.getinfo(member)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, info.header_offset + 22, declared)
    central = next(i for i in _find_all(data, b"PK\x01\x02")
                   if data[i + 46:i + 46 + len(member)] == member.encode())
    struct.pack_into("<I", data, central + 24, declared)
    path.write_bytes(bytes(data))


def _find_all(data: bytearray, needle: bytes) -> Iterable[int]:
    at = data.find(needle)
    while at >= 0:
        yield at
        at = data.find(needle, at + 1)


MANIFEST = (
    '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
    'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
    '<manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
    '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>')


def write_ods(path: Path, rows: int, columns: int, stray: tuple[int, int] | None = None) -> Path:
    """One header row, then `rows` rows of `columns` cells holding "x", written as repeats as
    LibreOffice writes them; or, with `stray` (row, column), rows of empty cells down to one cell."""
    body = (f'<table:table-row table:number-rows-repeated="{rows}">'
            f'<table:table-cell table:number-columns-repeated="{columns}" office:value-type="string">'
            '<text:p>x</text:p></table:table-cell></table:table-row>')
    if stray:
        body = (f'<table:table-row table:number-rows-repeated="{stray[0] - 2}"><table:table-cell '
                f'table:number-columns-repeated="{stray[1]}"/></table:table-row><table:table-row><table:table-cell '
                f'table:number-columns-repeated="{stray[1] - 1}"/><table:table-cell office:value-type="string">'
                '<text:p>x</text:p></table:table-cell></table:table-row>')
    content = (
        '<?xml version="1.0" encoding="UTF-8"?><office:document-content '
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2"><office:body>'
        '<office:spreadsheet><table:table table:name="S"><table:table-row>'
        '<table:table-cell office:value-type="string"><text:p>customer_id</text:p></table:table-cell>'
        '<table:table-cell office:value-type="string"><text:p>meter_point_ids</text:p></table:table-cell>'
        f'</table:table-row>{body}</table:table></office:spreadsheet>'
        '</office:body></office:document-content>')
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        package.writestr("META-INF/manifest.xml", MANIFEST)
        package.writestr("content.xml", content)
    return path


def csv_lines(path: Path, lines: Iterable[str]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        for line in lines:
            handle.write(line)
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def symlink(path: Path, target: str) -> Path:
    path.symlink_to(target)
    return path


def one_line(start: str, repeat: str, times: int) -> Callable[[Path], Path]:
    """`start`, then `repeat` `times` times, written in pieces (a 300 MB line is never in memory)."""
    def make(path: Path) -> Path:
        piece = repeat * 1_000_000
        with path.open("w", encoding="utf-8", newline="") as handle:
            handle.write(start)
            for _ in range(times // 1_000_000):
                handle.write(piece)
            handle.write(repeat * (times % 1_000_000) + "\n")
        return path
    return make


@dataclass(frozen=True)
class Hostile:
    name: str
    make: Callable[[Path], Path]
    words: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    slow: bool = False
    """Hundreds of MB to write: run by `make test-slow` only."""


GIB = 2**30
MIB = 2**20
HOSTILE = [
    Hostile("far-corner.xlsx", stray_cell("XFD1048576"),
            ("cell XFD1048576 holds something in column 16,384", "ONBOARD_MAX_COLUMNS")),
    Hostile("stray-xfd3000.xlsx", stray_cell("XFD3000"),
            ("cell XFD3000 holds something", "beyond the 1,000 columns", "ONBOARD_MAX_COLUMNS")),
    Hostile("stray-at-all29000.xlsx", stray_cell("ALL29000"),
            ("its cells reach from row 1 to 29,000 (cell ALL29000)", "29,000,000 cells, and only 7 of them hold",
             "more than the 4,000,000 cells (or 10 for each that holds something)", "delete stray cells",
             "ONBOARD_MAX_SPARSE_CELLS")),
    Hostile("mostly-empty.xlsx", filled_columns(20_000, "AZ"),
            ("from column A to Z (cell Z2), 520,026 cells, and only 40,002 of them hold something",
             "more than the 100,000 cells (or 10 for each", "ONBOARD_MAX_SPARSE_CELLS"),
            (("ONBOARD_MAX_SPARSE_CELLS", "100000"),)),
    Hostile("cell-over-and-over.xlsx", cell_over_and_over(5_000_000),
            ("is not a workbook a spreadsheet program wrote: its sheet writes the same cells over and over",
             "in the 6 from A1 to B3")),
    Hostile("cell-over-and-over-900mib.xlsx", cell_over_and_over(43_000_000),
            ("its sheet writes the same cells over and over",), slow=True),
    Hostile("stray-within-rows-and-columns.xlsx", stray_cell("ALL900000"),
            ("cell ALL900000", "900,000,000 cells", "delete stray cells", "ONBOARD_MAX_CELLS")),
    Hostile("more-rows-than-allowed.xlsx", lambda p: write_xlsx(p, sheet_with(customer_rows(20))),
            ("cell B21 holds something in row 21, beyond the 10 rows", "ONBOARD_MAX_ROWS"),
            (("ONBOARD_MAX_ROWS", "10"),)),
    Hostile("deflate-bomb-2gib.xlsx", blank_runs(2 * GIB, 2 * GIB, zip64=True),
            ("unpacks to 2,048 MiB of XML", "ONBOARD_MAX_UNCOMPRESSED_MB")),
    Hostile("whitespace-run.xlsx", blank_runs(8 * MIB, 8 * MIB),
            ("xl/worksheets/sheet1.xml holds more than 4 MiB without a tag",)),
    Hostile("spread-whitespace-over-limit.xlsx", blank_runs(80 * MIB, MIB),
            ("unpacks to 80 MiB", "ONBOARD_MAX_UNCOMPRESSED_MB"), (("ONBOARD_MAX_UNCOMPRESSED_MB", "64"),)),
    Hostile("lies-about-its-size.xlsx", lying,
            ("is damaged: its part xl/worksheets/sheet1.xml cannot be unpacked",)),
    Hostile("repeated-cells.ods", lambda p: write_ods(p, 100_000, 1_000), ("100,001,000 cells", "ONBOARD_MAX_CELLS")),
    Hostile("stray.ods", lambda p: write_ods(p, 0, 0, stray=(3_000, 1_000)),
            ("its cells reach from row 1 to 3,000 (cell ALL3000)", "3,000,000 cells, and only 3 of them hold",
             "ONBOARD_MAX_SPARSE_CELLS"), (("ONBOARD_MAX_SPARSE_CELLS", "1000000"),)),
    Hostile("long-field.csv", lines("customer_id,meter_point_ids,notes\n", f'1,{MPIDS[0]},"{"x" * 200_000}"\n'),
            ("line 2: a field is longer than 131,072 characters", "quote", "ONBOARD_MAX_CSV_FIELD")),
    Hostile("unbalanced-quote.csv", lines("customer_id,meter_point_ids,notes\n", f'1,{MPIDS[0]},"oops\n',
                                          *(f"{n},x,y\n" for n in range(30_000))),
            ("line 2: a field is longer than", "quote")),
    Hostile("fifo.csv", fifo, ("is not a regular file",)),
    Hostile("zero.csv", lambda p: symlink(p, "/dev/zero"), ("is not a regular file",)),
    Hostile("big.csv", lines("customer_id,meter_point_ids\n", *(f"{n},{MPIDS[0]}\n" for n in range(80_000))),
            ("more than the 1 MiB", "ONBOARD_MAX_FILE_MB"), (("ONBOARD_MAX_FILE_MB", "1"),)),
    Hostile("many-lines.csv", lines("customer_id,meter_point_ids\n", *(f"{n},{MPIDS[0]}\n" for n in range(50))),
            ("more than 10 lines", "ONBOARD_MAX_ROWS"), (("ONBOARD_MAX_ROWS", "10"),)),
    Hostile("wide.csv", lines("customer_id,meter_point_ids\n", f"1,{MPIDS[0]}" + "," * 3000 + "x\n"),
            ("line 2: field 3,002 holds something, beyond the 1,000 columns", "ONBOARD_MAX_COLUMNS")),
    Hostile("empty-header-fields.csv", one_line("customer_id", ",", 1_000_000),
            ("line 1 has 1,000,001 fields, more than the 1,000 columns", "empty ones included",
             "delete the commas after the last column", "ONBOARD_MAX_COLUMNS")),
    Hostile("empty-fields-after-data.csv", lines("customer_id;meter_point_ids\n", f"1;{MPIDS[0]}" + ";" * 1500 + "\n"),
            ("line 2 has 1,502 fields", "the 1,500 after field 2 are empty", "semicolons", "ONBOARD_MAX_COLUMNS")),
    Hostile("header-of-commas-2mb.csv", one_line("customer_id", ",", 2_000_000),
            ("line 1 is longer than 1,048,576 characters, and ends in at least 1,048,566 commas",
             "empty columns", "ONBOARD_MAX_COLUMNS and ONBOARD_MAX_CSV_LINE")),
    Hostile("header-of-commas-200mb.csv", one_line("customer_id", ",", 200_000_000),
            ("line 1 is longer than 1,048,576 characters", "ONBOARD_MAX_COLUMNS and ONBOARD_MAX_CSV_LINE"),
            slow=True),
    Hostile("filled-fields-4mb.csv", one_line("customer_id,meter_point_ids\n", "x,", 2_000_000),
            ("line 2 is longer than 1,048,576 characters, and holds at least 524,288 commas, a column each",
             "ONBOARD_MAX_COLUMNS and ONBOARD_MAX_CSV_LINE")),
    Hostile("filled-fields-300mb.csv", one_line("customer_id,meter_point_ids\n", "x,", 150_000_000),
            ("line 2 is longer than 1,048,576 characters", "ONBOARD_MAX_CSV_LINE"), slow=True),
    Hostile("long-line.csv", one_line(f"customer_id,meter_point_ids,notes\n1,{MPIDS[0]},", "x", 2_000_000),
            ("line 2 is longer than 1,048,576 characters (32 cells as full as Excel lets a cell be)",
             "ONBOARD_MAX_CSV_LINE")),
    Hostile("fields-over-line-breaks.csv", one_line("customer_id,notes\n1,\"", '",\"\n', 400_000),
            ("lines 2 to 262145: one record longer than 1,048,576 characters", "quote", "ONBOARD_MAX_CSV_LINE")),
    Hostile("bad-setting.csv", lines("customer_id\n", "1\n"), ("ONBOARD_MAX_* settings", "max_rows"),
            (("ONBOARD_MAX_ROWS", "lots"),)),
]


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str
    max_rss_mb: float
    seconds: float


MEASURE = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:], stdin=subprocess.DEVNULL)
with open(sys.argv[1], "w") as report:
    report.write(f"{code} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
"""
"""Runs the command as the child of a small fresh interpreter: Linux counts a process's peak RSS
from the memory it was forked with, so a child forked from pytest itself would report pytest's."""


def onboard(folder: Path, *args: str, env: dict[str, str] | None = None) -> Outcome:
    """`python -m onboard ARGS` in a child process, with its exit code and its own peak RSS."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("ONBOARD_", "SPARK_"))}
    environment.update(env or {})
    started = time.monotonic()
    measured = folder / "measured.txt"
    with (folder / "out.txt").open("w") as out, (folder / "err.txt").open("w") as err:
        launcher = subprocess.Popen([sys.executable, "-c", MEASURE, str(measured), sys.executable, "-m", "onboard",
                                     *args], stdout=out, stderr=err, cwd=folder, env=environment,
                                    start_new_session=True)
        try:
            launcher.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
            pytest.fail(f"onboard {' '.join(args)} still running after {TIMEOUT} s")
    code, max_rss_kb = map(int, measured.read_text().split())
    return Outcome(code, (folder / "out.txt").read_text(), (folder / "err.txt").read_text(), max_rss_kb / 1024,
                   time.monotonic() - started)


@pytest.fixture(scope="module")
def hostile_file(tmp_path_factory) -> Iterator[Callable[[Hostile], Path]]:
    """Each case's file, made when a test first needs it (so the fast suite never writes the slow
    cases' hundreds of MB), and removed after the module."""
    folder = tmp_path_factory.mktemp("hostile")
    made: dict[str, Path] = {}

    def make(case: Hostile) -> Path:
        if case.name not in made:
            made[case.name] = case.make(folder / case.name)
        return made[case.name]

    yield make
    for path in made.values():
        path.unlink()


@pytest.mark.parametrize("command", ["validate", pytest.param("run", marks=pytest.mark.slow)])
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else [])
                                  for c in HOSTILE])
def test_a_hostile_file_is_refused_with_a_message_in_bounded_memory(hostile_file, tmp_path, case, command):
    args = ["validate", str(hostile_file(case)), "--out", str(tmp_path)]
    if command == "run":
        args = ["run", str(hostile_file(case)), "--out", str(tmp_path), "--env", "local",
                "--state", str(tmp_path / "emulator.sqlite"), "--no-progress"]
    outcome = onboard(tmp_path, *args, env=dict(case.env))
    assert outcome.code == 2, (outcome.code, outcome.err[-2000:])
    assert "Traceback" not in outcome.err
    for words in case.words:
        assert words in outcome.err, outcome.err
    assert outcome.max_rss_mb < MAX_RSS_MB, f"peak RSS {outcome.max_rss_mb:.0f} MB"
    assert not list(tmp_path.glob("*.results.*")), "a refused file writes no results"
    print(f"{case.name} {command}: exit {outcome.code}, peak RSS {outcome.max_rss_mb:.0f} MB, "
          f"{outcome.seconds:.1f} s")


def test_a_stray_cell_within_the_limits_is_read_without_a_dense_grid(tmp_path):
    """A cell far down (row 200,000, column H) is within every limit: the sheet is read, its row is
    a row like any other (here refused: it has no customer), and no other row is widened by it."""
    path = stray_cell("H200000")(tmp_path / "stray.xlsx")
    outcome = onboard(tmp_path, "validate", str(path))
    assert outcome.code == 1, outcome.err
    assert "row 200000 (invalid)" in outcome.err
    assert outcome.max_rss_mb < MAX_RSS_MB, f"peak RSS {outcome.max_rss_mb:.0f} MB"


def test_a_csv_line_is_bounded_by_its_fields_not_by_its_delimiters(tmp_path):
    """Commas inside a quoted cell are no columns: a cell listing 1,500 meter point ids, line breaks
    and all, is read; and each record is held to ONBOARD_MAX_CSV_LINE on its own, so a file of many
    long records is read whole."""
    ids = ",\n".join(meter_point_id(n) for n in range(1_500))
    notes = "n" * 30_000
    path = write_csv(tmp_path / "quoted.csv", [["1", ids, notes], ["2", MPIDS[0], notes], ["3", MPIDS[1], notes]],
                     headers=["customer_id", "meter_point_ids", "notes"])
    reader = CsvReader(path, Limits(max_csv_line=EXCEL_CELL_CHARACTERS * 2))
    assert [(number, len(record)) for number, record in reader.records()] == [(1, 3), (2, 3), (1502, 3), (1503, 3)]
    assert next(record for number, record in reader.records() if number == 2)[1] == ids


def test_a_sheet_with_empty_columns_between_its_data_is_read(tmp_path):
    """Two of 12 columns filled in every row: 6 cells of extent for each filled one, within the 10
    a sheet beyond ONBOARD_MAX_SPARSE_CELLS may have (lowered here, so the sheet can stay small)."""
    path = filled_columns(20_000, "AL")(tmp_path / "two-of-twelve.xlsx")
    outcome = onboard(tmp_path, "validate", str(path), env={"ONBOARD_MAX_SPARSE_CELLS": "100000"})
    assert outcome.code == 0 and "20000 rows: 20000 valid" in outcome.out, (outcome.out, outcome.err[-2000:])


@pytest.mark.slow
def test_a_million_rows_of_twelve_columns_pass_the_checks(tmp_path):
    """The largest real sheet the limits are set for, with only its first and last column filled:
    6 cells of extent for each filled one, 12,000,012 in all, within every default."""
    path = filled_columns(1_000_000, "AL")(tmp_path / "million.xlsx")
    facts = XlsxReader(path).facts
    assert (facts.extent.last_row, facts.extent.last_column, facts.written) == (1_000_001, 12, 2_000_002)
