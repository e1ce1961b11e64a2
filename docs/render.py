"""Renders a workbook's first sheet to a cropped PNG for the README (docs/*.png).

Needs LibreOffice (`soffice`), poppler (`pdftoppm`) and Pillow; none of them is a dependency of
onboard. Usage: python docs/render.py BOOK.xlsx OUT.png
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from openpyxl import load_workbook
from PIL import Image, ImageOps


def render(book: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        workbook = load_workbook(book)
        for sheet in workbook.worksheets[1:]:
            workbook.remove(sheet)
        sheet = workbook.worksheets[0]
        sheet.page_setup.paperSize = sheet.PAPERSIZE_A3
        sheet.page_setup.orientation = "landscape"
        sheet.sheet_properties.pageSetUpPr.fitToPage = True
        sheet.page_setup.fitToWidth = 1
        sheet.page_setup.fitToHeight = 0
        workbook.save(work / "print.xlsx")
        subprocess.run(["soffice", "--headless", "--convert-to", "pdf", "--outdir", str(work),
                        str(work / "print.xlsx")], check=True, capture_output=True, timeout=180)
        subprocess.run(["pdftoppm", "-png", "-r", "200", "-f", "1", "-l", "1", str(work / "print.pdf"),
                        str(work / "page")], check=True)
        image = Image.open(next(work.glob("page*.png"))).convert("RGB")
        left, top, right, bottom = ImageOps.invert(image).getbbox()
        cropped = image.crop((left - 10, top - 10, right + 10, bottom + 10))
        cropped.quantize(colors=32).save(out, optimize=True)


if __name__ == "__main__":
    render(Path(sys.argv[1]), Path(sys.argv[2]))
