"""The sandbox test areas are the guide's own polygons, and placed points sit well inside them."""

from __future__ import annotations

import json
import math
import re
import time
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely import affinity

from onboard import areas

GUIDE_PLACES = [Path(__file__).resolve().parents[2] / "shared" / "seed" / "adding-resources.md",
                Path("/work/shared/seed/adding-resources.md")]
GUIDE_CENTRES = {1: (79.51913682860402, 15.97611317258921), 2: (78.21661621129984, 15.63509153386616)}
OSLO = (59.9139, 10.7522)


def _guide() -> str:
    for place in GUIDE_PLACES:
        if place.exists():
            return place.read_text(encoding="utf-8")
    pytest.skip("the vendor guide (shared/seed/adding-resources.md) is not beside this checkout")


def _package_data() -> list[dict]:
    return tomllib.loads(resources.files("onboard").joinpath("data", "test-areas.toml").read_text("utf-8"))["area"]


def _in_metres(geometry, latitude: float):
    """The geometry in a local metric frame, for distances this test measures itself."""
    return affinity.scale(geometry, areas.METRES_PER_DEGREE * math.cos(math.radians(latitude)),
                          areas.METRES_PER_DEGREE, origin=(0, 0))


def test_package_data_holds_the_guides_own_text():
    guide = _guide()
    names = re.findall(r"^Area \d+ \(.+\)$", guide, re.M)
    polygons = re.findall(r"^POLYGON \(\(.+\)\)$", guide, re.M)
    centres = [json.loads(block) for block in re.findall(r'^\{\n"latitude".*?\n\}$', guide, re.M | re.S)]
    shipped = _package_data()
    assert names == ["Area 1 (Svalbard)", "Area 2 (Longyearbyen, Svalbard)"]
    assert [a["name"] for a in shipped] == names
    assert [a["polygon"] for a in shipped] == polygons
    assert [{"latitude": a["latitude"], "longitude": a["longitude"]} for a in shipped] == centres
    for number, wkt in enumerate(polygons, start=1):
        assert areas.area(number).polygon.equals_exact(shapely.from_wkt(wkt), 0)


def test_areas_parse_as_the_guide_names_and_centres_them():
    assert {n: a.name for n, a in areas.all_areas().items()} == {1: "Area 1 (Svalbard)",
                                                                 2: "Area 2 (Longyearbyen, Svalbard)"}
    for number, area in areas.all_areas().items():
        assert area.polygon.geom_type == "Polygon" and area.polygon.is_valid
        assert area.centre == GUIDE_CENTRES[number]
        assert area.contains(*area.centre) and areas.which_area(*area.centre) == number
    assert areas.which_area(*OSLO) is None
    with pytest.raises(ValueError, match="no test area 3"):
        areas.area(3)


def test_polygons_are_longitude_then_latitude():
    """PostGIS text puts x (longitude) first: swapped, the areas would lie off Somalia at 15°N."""
    west, south, east, north = areas.area(1).polygon.bounds
    assert 15.9 < west < east < 16.0 and 79.5 < south < north < 79.53
    assert not areas.area(1).contains(15.97611317258921, 79.51913682860402)


def test_which_areas_agrees_with_which_area_point_by_point():
    rng = np.random.default_rng(7)
    points = []
    for area in areas.all_areas().values():
        west, south, east, north = area.polygon.bounds
        points += zip(rng.uniform(south - 0.001, north + 0.001, 500), rng.uniform(west - 0.001, east + 0.001, 500),
                      strict=True)
    points.append(OSLO)
    found = areas.which_areas([p[0] for p in points], [p[1] for p in points])
    assert found == [areas.which_area(*p) for p in points]
    assert {1, 2, None} <= set(found)


@pytest.mark.parametrize("number", [1, 2])
def test_placed_points_are_inside_away_from_the_edge_and_distinct(number):
    keys = [f"customer-{i}/home" for i in range(20_000)]
    points = areas.place(number, keys)
    assert len(points) == len(keys) and len(set(points)) == len(keys)
    area = areas.area(number)
    lat, lon = np.array(points).T
    assert shapely.contains_xy(area.polygon, lon, lat).all()
    edge = _in_metres(area.polygon.exterior, area.centre[0])
    nearest = shapely.distance(edge, shapely.points(_in_metres_xy(lon, lat, area.centre[0]))).min()
    assert nearest >= areas.MARGIN_METRES * 0.999
    assert all(round(a, areas.DECIMALS) == a and round(b, areas.DECIMALS) == b for a, b in points)
    assert all(areas.which_area(a, b) == number for a, b in points[:200])


def _in_metres_xy(lon: np.ndarray, lat: np.ndarray, latitude: float) -> np.ndarray:
    x = lon * areas.METRES_PER_DEGREE * math.cos(math.radians(latitude))
    return np.column_stack([x, lat * areas.METRES_PER_DEGREE])


def test_points_use_the_whole_area_not_a_corner():
    """Spread, not clustered: each quarter of the bounding box that the area fills gets points."""
    area = areas.area(2)
    lat, lon = np.array(areas.place(2, [str(i) for i in range(4000)])).T
    west, south, east, north = area.polygon.bounds
    quarters = {(bool(a > (south + north) / 2), bool(b > (west + east) / 2)) for a, b in zip(lat, lon, strict=True)}
    assert len(quarters) == 4


def test_placing_is_deterministic_and_ignores_key_order():
    keys = [f"site-{i}" for i in range(3000)]
    first = dict(zip(keys, areas.place(1, keys), strict=True))
    again = dict(zip(keys[::-1], areas.place(1, keys[::-1]), strict=True))
    assert first == again
    alone = areas.place(1, ["site-17"])
    assert alone == [first["site-17"]]
    assert areas.place(1, ["a", "b", "a"])[0] == areas.place(1, ["a", "b", "a"])[2]


def test_a_key_lands_on_the_same_point_on_every_run_and_machine():
    """Fixed values: a hash seeded per process, or a changed draw, would move every location."""
    assert areas.place(1, ["site-1"]) == [(79.5204264, 15.9841108)]
    assert areas.place(2, ["site-1"]) == [(78.2174906, 15.6328711)]
    assert areas.place(1, ["4711/home"]) != areas.place(2, ["4711/home"])


def test_colliding_draws_are_resolved_the_same_whatever_the_order():
    """At 4 decimals the area has a few thousand spots, so 2000 keys collide hundreds of times."""
    keys = [f"k{i}" for i in range(2000)]
    points = areas.place(1, keys, decimals=4)
    assert len(set(points)) == len(keys)
    assert dict(zip(keys, points, strict=True)) == dict(zip(keys[::-1], areas.place(1, keys[::-1], decimals=4),
                                                              strict=True))


def test_a_full_area_is_refused_not_looped_on():
    with pytest.raises(ValueError, match="no room for 500 distinct points at 3 decimals"):
        areas.place(1, [str(i) for i in range(500)], decimals=3)


def test_a_hundred_thousand_points_take_well_under_a_few_seconds():
    keys = [f"{i:08d}" for i in range(100_000)]
    started = time.perf_counter()
    points = areas.place(2, keys)
    took = time.perf_counter() - started
    assert len(set(points)) == len(keys)
    assert took < 5, f"placing 100 000 keys took {took:.1f} s"
