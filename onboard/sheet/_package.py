"""What a workbook's zip package holds, found by streaming it before python-calamine opens it.

calamine reads a whole sheet into one dense grid (a cell at XFD1048576 makes it allocate 17 billion
cells and abort), reads each XML text run into memory at once (a deflate bomb of whitespace takes
gigabytes) and says nothing of hidden rows and columns. So each XML part is decompressed here in
chunks, never held whole: its uncompressed bytes are counted against a limit, no run between two
tags may be longer than any spreadsheet program writes, and the chosen sheet is scanned for the
extent of the cells that hold something and for its hidden rows and columns. What is beyond a
limit is refused before calamine touches the file.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath

from lxml import etree

from onboard.errors import InputError
from onboard.sheet._limits import MB, Limits, too_big

CHUNK = MB
MAX_XML_RUN = 4 * MB
"""Bytes between two `<` of an XML part. Excel holds at most 32,767 characters in a cell, so no
spreadsheet program writes a text or tag near this; calamine would hold such a run in memory."""

SPARSE_FACTOR = 10
"""A sheet's extent beyond `max_sparse_cells` may be at most this many cells for each that holds
something: a sheet of 12 columns with two filled in each row is 6."""

MAX_INDEX_PART = 64 * MB
"""workbook.xml and relationship parts are parsed as trees; Excel's are kilobytes."""

_TAG = re.compile(rb"<(?:[\w.-]+:)?(row|c)(?=[\s/>])([^>]*?)(/?)>")
# the fast path: cells and rows as Excel, LibreOffice and openpyxl write them, `r` first
_ROW_AS_EXCEL = re.compile(rb'<row r="(\d{1,7})"([^>]*)')
"""A row's number and the rest of its tag, where a hidden row says so: no second pass to find them."""
_HIDDEN_AS_EXCEL = re.compile(rb'\shidden="(?:1|true)"')
_HOLDING = re.compile(rb'<c r="([^"]*)"[^>/]*>')
_EXCEL_REFS = re.compile(rb"[A-Z]{1,3}\d{1,7}(?: [A-Z]{1,3}\d{1,7})*")
"""The references of the cells that hold something, joined by spaces, as Excel writes them (`AB12`):
checked in one pass over the joined references rather than a second pass over the XML."""
_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DIGITS = b"0123456789"
_COL = re.compile(rb"<(?:[\w.-]+:)?col(?=[\s/>])([^>]*?)/?>")
_REF = re.compile(rb"(?<![\w:])r\s*=\s*[\"']([A-Za-z]*)(\d*)[\"']")
_HIDDEN = re.compile(rb"(?<![\w:])hidden\s*=\s*[\"'](?:1|true)[\"']")
_MIN_MAX = re.compile(rb"(?<![\w:])(min|max)\s*=\s*[\"'](\d{1,7})[\"']")


@lru_cache(maxsize=4096)
def column_number(letters: bytes) -> int:
    number = 0
    for letter in letters.upper():
        number = number * 26 + letter - 64
    return number


def column_letters(number: int) -> str:
    letters = ""
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


@dataclass
class Extent:
    """Rows and columns (1-based) from the first to the last cell that holds something."""

    first_row: int
    last_row: int
    first_column: int
    last_column: int
    lowest: str
    """The cell that sets last_row, and the one that sets last_column: named in messages."""
    rightmost: str

    @property
    def cells(self) -> int:
        return (self.last_row - self.first_row + 1) * (self.last_column - self.first_column + 1)


@dataclass
class SheetFacts:
    """What calamine does not tell: the hidden rows (Excel's numbers) and column ranges (1-based,
    inclusive), and the extent of the cells that hold something."""

    hidden_rows: set[int] = field(default_factory=set)
    hidden_columns: list[tuple[int, int]] = field(default_factory=list)
    extent: Extent | None = None
    written: int = 0
    """Cells that hold something as the XML writes them, a cell written twice counted twice: what
    calamine keeps a list of before it lays them out in the extent."""


def _last_in_row(refs: bytes, digits: bytes) -> bytes:
    """The last of `refs` (joined by spaces) in row `digits`, found from the end without splitting them all."""
    end = len(refs)
    while True:
        at = refs.rfind(digits, 0, end)
        if at < 0:
            return digits
        stop = at + len(digits)
        ref = refs[refs.rfind(b" ", 0, at) + 1:stop]
        if (stop == len(refs) or refs[stop] == 32) and ref.lstrip(_LETTERS) == digits:  # 32: a space
            return ref
        end = stop - 1


class SheetScan:
    """Streams a worksheet's XML in chunks. Most chunks take the fast path (every cell and row
    carries its `r`, as Excel writes them); cells without `r` take their place from the one before."""

    def __init__(self) -> None:
        self.facts = SheetFacts()
        self.row = 0
        self.column = 0
        self.tail = b""

    def feed(self, chunk: bytes) -> None:
        data = self.tail + chunk
        cut = data.rfind(b"<")
        if cut >= 0 and data.find(b">", cut) < 0:
            data, self.tail = data[:cut], data[cut:]
        else:
            self.tail = b""
        self._scan(data)

    def close(self) -> SheetFacts:
        self._scan(self.tail)
        return self.facts

    def _scan(self, data: bytes) -> None:
        rows = _ROW_AS_EXCEL.findall(data)
        refs = _HOLDING.findall(data)
        joined = b" ".join(refs)
        # the common chunk: every tag starting `<c` is a cell that holds something, `r` first (no
        # `<col`, `<c>` or empty cell); else the exact tests
        plain = data.count(b"<c") == len(refs)
        if not plain and b"<col" in data:
            self._columns(data)
        if ((not plain and (data.count(b"<c ") != data.count(b'<c r="') or b"<c>" in data))
                or data.count(b"<row") != len(rows)
                or (data.find(b":") >= 0 and (b":c " in data or b":row" in data))  # a colon is rare: memchr
                or (refs and not _EXCEL_REFS.fullmatch(joined))):
            self._scan_slowly(data)
            return
        if rows:
            self.row, self.column = int(rows[-1][0]), 0
            if any(b"hidden" in attributes for _, attributes in rows):
                self.facts.hidden_rows.update(int(r) for r, attributes in rows if _HIDDEN_AS_EXCEL.search(attributes))
        if refs:
            self.facts.written += len(refs)
            self._hold_all(joined)
            last = refs[-1]
            if int(last.lstrip(_LETTERS)) == self.row:
                self.column = column_number(last.rstrip(_DIGITS))

    def _hold_all(self, refs: bytes) -> None:
        """`refs`: cell references (b"AB12") joined by spaces; split into letters and digits in C,
        since this runs for every cell of the sheet."""
        rows = {int(n): n for n in set(refs.translate(None, _LETTERS).split())}
        columns = {column_number(c): c for c in set(refs.translate(None, _DIGITS).split())}
        low, high, left, right = min(rows), max(rows), min(columns), max(columns)
        extent = self.facts.extent
        if extent is None:
            extent = self.facts.extent = Extent(low, 0, left, 0, "", "")
        extent.first_row = min(extent.first_row, low)
        extent.first_column = min(extent.first_column, left)
        if high > extent.last_row:
            extent.last_row = high
            extent.lowest = _last_in_row(refs, rows[high]).decode()
        if right > extent.last_column:
            extent.last_column = right
            extent.rightmost = next(r for r in refs.split() if r.rstrip(_DIGITS) == columns[right]).decode()

    def _scan_slowly(self, data: bytes) -> None:
        for name, attributes, empty in _TAG.findall(data):
            ref = _REF.search(attributes)
            if name == b"row":
                self.row = int(ref.group(2)) if ref and ref.group(2) else self.row + 1
                self.column = 0
                if b"hidden" in attributes and _HIDDEN.search(attributes):
                    self.facts.hidden_rows.add(self.row)
                continue
            if ref and ref.group(1):
                self.column = column_number(ref.group(1))
                if ref.group(2):
                    self.row = int(ref.group(2))
            else:
                self.column += 1
            if not empty:
                self.facts.written += 1
                self._hold_all(f"{column_letters(self.column)}{self.row}".encode())

    def _columns(self, data: bytes) -> None:
        for attributes in _COL.findall(data):
            if b"hidden" in attributes and _HIDDEN.search(attributes):
                bounds = dict(_MIN_MAX.findall(attributes))
                if b"min" in bounds:
                    low = int(bounds[b"min"])
                    self.facts.hidden_columns.append((low, int(bounds.get(b"max", low))))


_ODS_TAG = re.compile(rb"<(/?)(?:[\w.-]+:)?(table-row|table-cell|covered-table-cell|table)(?=[\s/>])([^>]*?)(/?)>")
_REPEATED = re.compile(rb"number-(?:rows|columns)-repeated\s*=\s*[\"'](\d{1,10})[\"']")
_VALUE_TYPE = re.compile(rb"value-type\s*=")


class OdsScan:
    """Streams an .ods content.xml, where rows and cells carry repeat counts (`number-rows-repeated`)
    that calamine expands into every cell: the extent counts the repeats of what holds something.
    calamine reads every sheet of an .ods at once, so the extent is the largest over all of them."""

    def __init__(self) -> None:
        self.facts = SheetFacts()
        self.tail = b""
        self.row = 0
        self.column = 0
        self.width = 0
        self.repeat = 1
        self.cell: tuple[int, int] | None = None
        self.filled = 0
        """Cells holding something in the row, repeats counted out."""
        self.written = 0
        """Cells holding something in the table so far; `facts.written` is the most of any table."""

    feed = SheetScan.feed

    def close(self) -> SheetFacts:
        self._scan(self.tail)
        return self.facts

    def _scan(self, data: bytes) -> None:
        for end, name, attributes, empty in _ODS_TAG.findall(data):
            if name == b"table":
                if not end:
                    self.row = self.written = 0
            elif name == b"table-row":
                if not end:
                    self.column = self.width = self.filled = 0
                    self.repeat = _repeats(attributes)
                if end or empty:
                    if self.width:
                        self._hold(self.row + self.repeat, self.width)
                    self.row += self.repeat
                    self.written += self.filled * self.repeat
                    self.facts.written = max(self.facts.written, self.written)
            elif end:
                if self.cell is not None:
                    self.width = max(self.width, self.cell[1])
                    self.filled += self.cell[1] - self.cell[0]
                    self.cell = None
            else:
                repeat = _repeats(attributes)
                start, self.column = self.column, self.column + repeat
                if _VALUE_TYPE.search(attributes):
                    self.width = max(self.width, self.column)
                    self.filled += repeat
                elif not empty:
                    self.cell = (start, self.column)  # holds something if it has content, e.g. <text:p>

    def _hold(self, last_row: int, last_column: int) -> None:
        extent = self.facts.extent
        ref = f"{column_letters(last_column)}{last_row}"
        if extent is None:
            self.facts.extent = Extent(1, last_row, 1, last_column, ref, ref)
            return
        if last_row > extent.last_row:
            extent.last_row, extent.lowest = last_row, ref
        if last_column > extent.last_column:
            extent.last_column, extent.rightmost = last_column, ref


def _repeats(attributes: bytes) -> int:
    found = _REPEATED.search(attributes) if b"repeated" in attributes else None
    return max(1, int(found.group(1))) if found else 1


def inspect(path: Path, sheet: str | None, limit: Limits) -> SheetFacts:
    """Check every XML part of an .xlsx/.xlsm/.ods against the limits and scan the chosen sheet.
    A file that is not a zip is left to calamine, which says what it is (a password, not a workbook)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError):
        return SheetFacts()
    with archive:
        parts = [i for i in archive.infolist() if i.filename.endswith((".xml", ".rels")) and not i.is_dir()]
        budget = limit.max_uncompressed_mb * MB
        declared = sum(i.file_size for i in parts)
        if declared > budget:
            raise InputError(f"{path.name} unpacks to {declared / MB:,.0f} MiB of XML, more than the "
                             f"{limit.max_uncompressed_mb:,} MiB " + too_big("the tool reads", "max_uncompressed_mb"))
        target = _sheet_part(path, archive, sheet)
        worksheets = [target] if target else [i.filename for i in parts if "worksheets/" in i.filename]
        scans: dict[str, SheetScan | OdsScan] = {name: SheetScan() for name in worksheets}
        if path.suffix.lower() == ".ods" and "content.xml" in archive.namelist():
            scans = {"content.xml": OdsScan()}
        for info in parts:
            _stream(path, archive, info, scans.get(info.filename), limit)
    for scan in scans.values():
        facts = scan.close()
        if facts.extent is not None:
            _check_extent(path, facts, limit)
            _check_sparse(path, facts, limit)
    facts = scans[target].facts if target else SheetFacts()
    return facts


def _stream(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, scan: SheetScan | OdsScan | None,
            limit: Limits) -> None:
    """Decompress one part chunk by chunk; zipfile stops at the size the part declares and checks
    its CRC, so a part that lies about its size is refused as damaged, never read past it."""
    run = 0
    try:
        with archive.open(info) as part:
            while chunk := part.read(CHUNK):
                first = chunk.find(b"<")
                if first < 0:
                    run += len(chunk)
                else:
                    run += first
                    if run <= MAX_XML_RUN:
                        run = len(chunk) - chunk.rfind(b"<")
                if run > MAX_XML_RUN:
                    raise InputError(f"{path.name} is not a workbook a spreadsheet program wrote: its part "
                                     f"{info.filename} holds more than {MAX_XML_RUN // MB} MiB without a tag "
                                     "(a deflate bomb?)")
                if scan is not None:
                    scan.feed(chunk)
                    if scan.facts.extent is not None:
                        _check_extent(path, scan.facts, limit)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError) as exc:
        raise InputError(f"{path.name} is damaged: its part {info.filename} cannot be unpacked ({exc})") from None


def _sheet_part(path: Path, archive: zipfile.ZipFile, sheet: str | None) -> str | None:
    """The zip member of the chosen sheet (the first one by default), through workbook.xml and its
    relationships; None for an .ods (every sheet in content.xml) or where it cannot be told, and
    then every worksheet is checked."""
    names = set(archive.namelist())
    if "content.xml" in names and "xl/workbook.xml" not in names:
        return None
    workbook = _target(path, archive, "_rels/.rels", "", lambda t: t.endswith("officeDocument")) or "xl/workbook.xml"
    if workbook not in names:
        return None
    wanted = None
    for element in _elements(path, archive, workbook, "sheet"):
        if sheet is None or element.get("name") == sheet:
            wanted = next((v for k, v in element.attrib.items() if k.endswith("}id")), None)
            break
    if wanted is None:
        return None
    folder = posixpath.dirname(workbook)
    rels = posixpath.join(folder, "_rels", posixpath.basename(workbook) + ".rels")
    part = _target(path, archive, rels, folder, lambda t: True, wanted)
    return part if part in names else None


def _target(path: Path, archive: zipfile.ZipFile, rels: str, folder: str, kind,
            wanted: str | None = None) -> str | None:
    if rels not in archive.namelist():
        return None
    for element in _elements(path, archive, rels, "Relationship"):
        if (wanted is None or element.get("Id") == wanted) and kind(element.get("Type", "")):
            target = element.get("Target", "")
            if target.startswith("/"):
                return target.lstrip("/")
            return str(PurePosixPath(posixpath.normpath(posixpath.join(folder, target))))
    return None


def _elements(path: Path, archive: zipfile.ZipFile, part: str, tag: str):
    """Elements named `tag` (any namespace when `tag` has none), streamed: each is dropped once seen."""
    match = tag if tag.startswith("{") else f"{{*}}{tag}"
    if archive.getinfo(part).file_size > MAX_INDEX_PART:
        raise InputError(f"{path.name} is not a workbook a spreadsheet program wrote: its index {part} is "
                         f"{archive.getinfo(part).file_size / MB:,.0f} MiB")
    try:
        with archive.open(part) as stream:
            for _, element in etree.iterparse(stream, events=("end",), tag=match, resolve_entities=False,
                                              no_network=True, load_dtd=False):
                yield element
                element.clear()
    except etree.XMLSyntaxError:
        return


def _check_extent(path: Path, facts: SheetFacts, limit: Limits) -> None:
    """Checked as the sheet streams in, so what is beyond a limit is refused at the chunk that reaches it."""
    extent = facts.extent
    if extent.last_row > limit.max_rows:
        raise InputError(f"{path.name}: cell {extent.lowest} holds something in row {extent.last_row:,}, beyond "
                         f"the {limit.max_rows:,} rows " + too_big("the tool reads: delete what is there "
                                                                    "(or the rows below your data)", "max_rows"))
    if extent.last_column > limit.max_columns:
        raise InputError(f"{path.name}: cell {extent.rightmost} holds something in column {extent.last_column:,}, "
                         f"beyond the {limit.max_columns:,} columns " + too_big(
                             "the tool reads: delete what is there (or the columns right of your data)",
                             "max_columns"))
    if extent.cells > limit.max_cells:
        raise InputError(
            f"{path.name}: {_reach(extent)}, more than the {limit.max_cells:,} "
            + too_big("the tool reads: delete stray cells far from your data", "max_cells"))
    if facts.written > extent.cells:
        raise InputError(
            f"{path.name} is not a workbook a spreadsheet program wrote: its sheet writes the same cells over and "
            f"over ({facts.written:,} cells as far as it was read, in the {extent.cells:,} from "
            f"{column_letters(extent.first_column)}{extent.first_row} to "
            f"{column_letters(extent.last_column)}{extent.last_row})")


def _check_sparse(path: Path, facts: SheetFacts, limit: Limits) -> None:
    """calamine lays a sheet out as every cell of its extent, so a few cells far apart cost as much as
    a sheet full of data: the extent may be large only where the cells in it hold something."""
    extent = facts.extent
    most = max(SPARSE_FACTOR * facts.written, limit.max_sparse_cells)
    if extent.cells > most:
        raise InputError(
            f"{path.name}: {_reach(extent)}, and only {facts.written:,} of them hold something: more than the "
            f"{limit.max_sparse_cells:,} cells (or {SPARSE_FACTOR} for each that holds something) "
            + too_big("the tool reads of a sheet that empty: delete stray cells far from your data",
                      "max_sparse_cells"))


def _reach(extent: Extent) -> str:
    return (f"its cells reach from row {extent.first_row:,} to {extent.last_row:,} (cell {extent.lowest}) and from "
            f"column {column_letters(extent.first_column)} to {column_letters(extent.last_column)} (cell "
            f"{extent.rightmost}), {extent.cells:,} cells")
