"""Which library writes the large workbook: each candidate writes the validation workbook of the same
sheet (the rows `onboard validate` writes: 18 columns, the invalid rows' cells marked), each in a
process of its own, timed and measured for the memory it adds while writing.

    .venv/bin/python benchmarks/writers.py [ROWS]      # default 100,000 rows

Candidates not installed are skipped (`pip install xlsxwriter pyexcelerate rustpy-xlsxwriter`).
What each keeps is printed beside its figures; only `onboard` (rust_xlsxwriter through
rvgsrust-xlsxwriter) keeps everything at this speed. Memory is read from /proc (Linux).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from onboard import plan as planning
from onboard import records, report, workbook
from onboard import sheet as sheets

HEADERS = ["customer_id", "customer_name", "location_ref", "location_type", "meter_point_ids", "latitude",
           "longitude", "resource_type", "resource_ref", "address", "notes"]
PROBLEM = "FFC7CE"
STATUS = {"valid": "E2EFDA", "invalid": "FFEB9C"}
KEEPS = {
    "onboard": "everything: text IDs, status fills (conditional formats), marked fills, notes, hidden columns, Summary",
    "openpyxl": "everything (the writer before)",
    "xlsxwriter": "everything",
    "pyexcelerate": "text IDs, status and marked fills; no notes; whole sheet held in memory",
    "rustpy": "text IDs, status fills as conditional formats; no marked cells, no notes",
}


def make_sheet(rows: int, path: Path) -> Path:
    """A partner's sheet of `rows` devices, one in twenty with a meter point id or a type refused."""
    from openpyxl import Workbook

    rng = random.Random(10)
    book = Workbook(write_only=True)
    page = book.create_sheet("Customers")
    page.append(HEADERS)
    for n in range(rows):
        customer = 100_001 + n // 2
        body = f"70705750{customer:09d}"
        total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
        mpid = body + str((10 - total % 10) % 10)
        kind = rng.choice(["HotWaterTank", "Charger", "HVAC", "SolarInverter"])
        chance = rng.random()
        if chance < 0.025:
            mpid = "12345"
        elif chance < 0.05:
            kind = "Heat pump X"
        page.append([str(customer), f"Kunde {customer}", "home", "Residential", mpid,
                     round(rng.uniform(58, 70), 5), round(rng.uniform(5, 30), 5), kind, f"SN-{n:08d}",
                     f"Storgata {n % 120 + 1}, 0155 Oslo", None])
    book.save(path)
    return path


def _memory(key: str) -> int:
    return int(re.search(key + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) // 1024


def _widths(headers: list[str], sample: list[workbook.Line]) -> list[float]:
    return [workbook._width([h] + [values[p] for _, values in sample]) for p, h in enumerate(headers)]


def openpyxl_writer(path, title, headers, own, lines, summary, text_columns, hidden):
    """The writer before: openpyxl write-only, a cell object for every formatted cell."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.comments import Comment
    from openpyxl.styles import Font, PatternFill
    from openpyxl.utils import get_column_letter

    lines = list(lines)
    book = Workbook(write_only=True)
    page = book.create_sheet(title)
    page.freeze_panes = "A2"
    for position, width in enumerate(_widths(headers, lines[:500])):
        page.column_dimensions[get_column_letter(position + 1)].width = width
        page.column_dimensions[get_column_letter(position + 1)].hidden = position in hidden
    page.auto_filter.ref = f"A1:{get_column_letter(len(headers))}{len(lines) + 1}"
    keys = {own[n] for n in ("user_id", "location_id", "resource_id")} | text_columns
    header = []
    for text in headers:
        cell = WriteOnlyCell(page, value=text)
        cell.font, cell.fill = Font(bold=True), PatternFill("solid", fgColor="DDEBF7")
        header.append(cell)
    page.append(header)
    fills = {s: PatternFill("solid", fgColor=c) for s, c in STATUS.items()}
    for marked, values in lines:
        line: list[Any] = []
        for position, value in enumerate(values):
            if position not in keys and position != own["status"] and position not in marked:
                line.append(value)
                continue
            cell = WriteOnlyCell(page, value=value)
            cell.data_type = "s" if isinstance(value, str) else cell.data_type
            if position in keys:
                cell.number_format = "@"
            if position == own["status"]:
                cell.fill = fills.get(value, PatternFill())
            if position in marked:
                cell.fill = PatternFill("solid", fgColor=PROBLEM)
                cell.comment = Comment(marked[position], "onboard", width=300, height=120)
            line.append(cell)
        page.append(line)
    book.create_sheet("Summary").append(["rows", len(lines)])
    book.save(path)


def xlsxwriter_writer(path, title, headers, own, lines, summary, text_columns, hidden):
    """xlsxwriter in constant_memory mode: a call per cell, comments kept."""
    import xlsxwriter

    book = xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_numbers": False,
                                           "strings_to_formulas": False, "strings_to_urls": False})
    page = book.add_worksheet(title)
    text = book.add_format({"num_format": "@"})
    marked_format = book.add_format({"bg_color": "#" + PROBLEM})
    fills = {s: book.add_format({"bg_color": "#" + c}) for s, c in STATUS.items()}
    keys = {own[n] for n in ("user_id", "location_id", "resource_id")} | text_columns
    lines = iter(lines)
    sample = [next(lines) for _ in range(500)]
    for position, width in enumerate(_widths(headers, sample)):
        page.set_column(position, position, width, text if position in keys else None, {"hidden": position in hidden})
    page.freeze_panes(1, 0)
    page.write_row(0, 0, headers, book.add_format({"bold": True, "bg_color": "#DDEBF7"}))
    row = 0
    for row, (marked, values) in enumerate([*sample, *lines], start=1):
        for position, value in enumerate(values):
            if value is None or value == "":
                continue
            chosen = (marked_format if position in marked else fills.get(value) if position == own["status"]
                      else text if position in keys else None)
            if isinstance(value, str):
                page.write_string(row, position, value, chosen)
            else:
                page.write(row, position, value, chosen)
            if position in marked:
                page.write_comment(row, position, marked[position], {"author": "onboard"})
    page.autofilter(0, 0, row, len(headers) - 1)
    book.add_worksheet("Summary").write_row(0, 0, ["rows", row])
    book.close()


def pyexcelerate_writer(path, title, headers, own, lines, summary, text_columns, hidden):
    """pyexcelerate: the whole sheet as one list, styles per cell; no comments."""
    from pyexcelerate import Color, Fill, Font, Format, Style, Workbook
    from pyexcelerate.Panes import Panes

    def color(code: str) -> Color:
        return Color(int(code[:2], 16), int(code[2:4], 16), int(code[4:], 16))

    lines = list(lines)
    keys = {own[n] for n in ("user_id", "location_id", "resource_id")} | text_columns
    book = Workbook()
    page = book.new_sheet(title, data=[headers] + [values for _, values in lines])
    page.panes = Panes(0, 1)
    page.auto_filter = True
    for position, width in enumerate(_widths(headers, lines[:500]), start=1):
        page.set_col_style(position, Style(size=0 if position - 1 in hidden else width,
                                           format=Format("@") if position - 1 in keys else None))
    for position in range(1, len(headers) + 1):
        page.set_cell_style(1, position, Style(font=Font(bold=True), fill=Fill(background=color("DDEBF7"))))
    fills = {s: Style(fill=Fill(background=color(c))) for s, c in STATUS.items()}
    marked_style = Style(fill=Fill(background=color(PROBLEM)))
    for row, (marked, values) in enumerate(lines, start=2):
        if values[own["status"]] in fills:
            page.set_cell_style(row, own["status"] + 1, fills[values[own["status"]]])
        for position in marked:
            page.set_cell_style(row, position + 1, marked_style)
    book.new_sheet("Summary", data=[["rows", len(lines)]])
    book.save(str(path))


def rustpy_writer(path, title, headers, own, lines, summary, text_columns, hidden):
    """rustpy-xlsxwriter: rows as dicts by header, formats per column or row only: the status fill as
    a conditional format, the marked cells not marked."""
    import rustpy_xlsxwriter as rustpy

    lines = iter(lines)
    sample = [next(lines) for _ in range(500)]
    keys = {own[n] for n in ("user_id", "location_id", "resource_id")} | text_columns
    rules = [{"type": "text", "criteria": "begins_with", "value": s,
              "format": rustpy.Format().set_background_color("#" + c)} for s, c in STATUS.items()]
    records = (dict(zip(headers, values, strict=True)) for _, values in [*sample, *lines])
    rustpy.write_worksheets(
        [(title, records), ("Summary", [{"what": "rows", "n": 0}])], str(path),
        freeze_panes={title: {"row": 1, "col": 0}}, column_widths={title: _widths(headers, sample)},
        column_formats={title: {headers[p]: rustpy.Format().set_num_format("@") for p in keys}},
        header_format={title: rustpy.Format().set_bold().set_background_color("#DDEBF7")},
        autofilter={title: True}, conditional_formats={title: {headers[own["status"]]: rules}})


WRITERS = {"onboard": workbook.write_table, "openpyxl": openpyxl_writer, "xlsxwriter": xlsxwriter_writer,
           "pyexcelerate": pyexcelerate_writer, "rustpy": rustpy_writer}
MODULES = {"openpyxl": "openpyxl", "xlsxwriter": "xlsxwriter", "pyexcelerate": "pyexcelerate",
           "rustpy": "rustpy_xlsxwriter", "onboard": "rvgsrust_xlsxwriter"}


def measure(name: str, source: Path, out: Path) -> dict[str, float]:
    """In this process: the sheet read, validated and planned as `onboard validate` does, then the
    validation workbook written by `name`, timed."""
    sheet = sheets.read(source)
    plan = planning.build(records.check(sheet))
    results = report.row_results(sheet, plan, None)
    summary = report.summarise(sheet, plan, results, None)
    headers, sources, own = report._layout(sheet)
    text_columns = {p for p, s in enumerate(sources) if s is not None and sheet.columns[s].field in report.KEY_FIELDS}
    lines = report._table(sheet, zip(sheet.rows, results, strict=True), lambda r: True, typed=True)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # the peak resident memory starts again from here
    before = _memory("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    WRITERS[name](out, "Results", headers, own, lines, lambda: report._summary_rows(summary), text_columns,
                  frozenset())
    return {"seconds": round(time.perf_counter() - wall, 2), "cpu_seconds": round(time.process_time() - cpu, 2),
            "added_peak_mb": _memory("VmHWM") - before, "file_mb": round(out.stat().st_size / 2**20, 1)}


def available(name: str) -> bool:
    try:
        __import__(MODULES[name])
    except ImportError:
        return False
    return True


def main() -> None:
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(measure(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))))
        return
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as folder:
        source = make_sheet(rows, Path(folder) / f"customers-{rows}.xlsx")
        print(f"{rows:,} rows x {len(HEADERS) + 7} columns, {dt.date.today()}, one process per writer")
        for name in WRITERS:
            if not available(name):
                print(f"  {name:<13} not installed")
                continue
            answer = subprocess.run([sys.executable, __file__, "--one", name, str(source),
                                     str(Path(folder) / f"{name}.xlsx")], capture_output=True, text=True, check=True)
            figures = json.loads(answer.stdout)
            print(f"  {name:<13} {figures['seconds']:6.2f} s wall, {figures['cpu_seconds']:6.2f} s CPU, "
                  f"+{figures['added_peak_mb']:4d} MB, {figures['file_mb']:5.1f} MB file; keeps {KEEPS[name]}")


if __name__ == "__main__":
    main()
