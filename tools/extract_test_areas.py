"""Copy the sandbox test areas from Volue's guide into `onboard/data/test-areas.toml`.

The guide (section 3, "(Sandbox only) Register a Location in the testing area") prints each area
as a heading `Area N (place)`, a JSON centre point and a `POLYGON ((lon lat, ...))` in PostGIS
syntax. This copies those texts verbatim, so the polygons are the vendor's, never retyped:

    python tools/extract_test_areas.py /work/shared/seed/adding-resources.md
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "onboard" / "data" / "test-areas.toml"
HEADING = re.compile(r"^Area (\d+) \(.+\)$")


def areas_in(guide: str) -> list[dict]:
    areas: list[dict] = []
    lines = guide.splitlines()
    for i, line in enumerate(lines):
        if heading := HEADING.match(line.strip()):
            areas.append({"number": int(heading[1]), "name": line.strip()})
        elif areas and line.strip() == "{" and "centre" not in areas[-1]:
            end = lines.index("}", i)
            areas[-1]["centre"] = "\n".join(lines[i:end + 1])
        elif areas and line.startswith("POLYGON (("):
            areas[-1]["polygon"] = line.strip()
    return areas


def toml(areas: list[dict]) -> str:
    out = ["# Volue's sandbox test areas, copied verbatim from the guide (adding-resources.md, section 3)",
           "# by tools/extract_test_areas.py. Do not edit by hand: re-run the script.", ""]
    for area in areas:
        for text in (area["name"], area["polygon"]):
            if '"' in text or "\\" in text:
                raise ValueError(f"unexpected quote or backslash in {text[:40]!r}")
        centre = json.loads(area["centre"])  # checks it parses; the numbers are kept as the guide prints them
        numbers = {key: re.search(rf'"{key}":\s*([-0-9.eE]+)', area["centre"])[1] for key in centre}
        out += ["[[area]]", f"number = {area['number']}", f'name = "{area["name"]}"',
                f"latitude = {numbers['latitude']}", f"longitude = {numbers['longitude']}",
                f'polygon = "{area["polygon"]}"', ""]
    return "\n".join(out)


if __name__ == "__main__":
    found = areas_in(Path(sys.argv[1]).read_text(encoding="utf-8"))
    if [a["number"] for a in found] != [1, 2] or not all({"centre", "polygon"} <= a.keys() for a in found):
        sys.exit(f"expected areas 1 and 2, each with a centre and a polygon; found {found!r:.200}")
    OUT.write_text(toml(found), encoding="utf-8")
    print(f"wrote {OUT}")
