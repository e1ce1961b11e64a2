"""Volue's sandbox test areas, and a point inside one for every location that should sit there.

The sandbox makes a user eligible for the SPARK program when one of its locations lies inside one
of two polygons that the vendor guide prints (section 3, "Register a Location in the testing
area"). The polygons ship as package data (`data/test-areas.toml`), copied verbatim from the guide
by `tools/extract_test_areas.py`, and are parsed here with shapely: never retyped.

Coordinates follow the guide's PostGIS text: x is longitude, y is latitude. The functions take and
give (latitude, longitude), the order of the API's `coordinates`.
"""

from __future__ import annotations

import functools
import hashlib
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry.base import BaseGeometry

MARGIN_METRES = 10.0
"""How far a placed point keeps from its area's edge. The service may test containment a little
differently from shapely (PostGIS geography draws edges as great circles, which at 80°N and these
edge lengths stray about 3 cm from our straight lines); 10 m is far beyond that and still leaves
about 90% of each area (140 000 m² of 160 000 in area 1)."""

DECIMALS = 7
"""Placed coordinates are rounded to this many decimals (about 1 cm of latitude, 2 mm of longitude
at 79°N), and distinct after rounding: what a client sends as JSON is what was checked."""

METRES_PER_DEGREE = 111_320.0
"""Of latitude, and of longitude at the equator (a sphere of the WGS 84 equatorial radius): close
enough to turn a margin in metres into degrees over areas a few hundred metres wide."""

MAX_DRAWS = 1000
"""Draws per key before `place` gives up: about half of each bounding box lies inside its area, so
a key still unplaced after 1000 draws means the area is full at the precision asked for."""


@dataclass(frozen=True)
class TestArea:
    """One of the guide's test areas: its polygon and the centre point the guide gives."""

    __test__ = False  # a domain class, not a pytest test class

    number: int
    name: str
    polygon: BaseGeometry
    centre: tuple[float, float]  # (latitude, longitude)

    def contains(self, latitude: float, longitude: float) -> bool:
        return bool(shapely.contains_xy(self.polygon, longitude, latitude))

    @functools.cached_property
    def inner(self) -> BaseGeometry:
        """The polygon shrunk by MARGIN_METRES, buffered in a local metric frame (a degree of
        longitude is only about 20 km this far north, a degree of latitude 111 km)."""
        x_metres = METRES_PER_DEGREE * math.cos(math.radians(self.centre[0]))
        in_metres = affinity.scale(self.polygon, x_metres, METRES_PER_DEGREE, origin=(0, 0))
        inner = affinity.scale(in_metres.buffer(-MARGIN_METRES), 1 / x_metres, 1 / METRES_PER_DEGREE, origin=(0, 0))
        shapely.prepare(inner)
        return inner


@functools.cache
def all_areas() -> dict[int, TestArea]:
    """The guide's areas by number, parsed once."""
    text = resources.files("onboard").joinpath("data", "test-areas.toml").read_text("utf-8")
    found = {}
    for entry in tomllib.loads(text)["area"]:
        polygon = shapely.from_wkt(entry["polygon"])
        shapely.prepare(polygon)
        found[entry["number"]] = TestArea(entry["number"], entry["name"], polygon,
                                          (entry["latitude"], entry["longitude"]))
    return found


def area(number: int) -> TestArea:
    try:
        return all_areas()[number]
    except KeyError:
        raise ValueError(f"there is no test area {number}; the guide has areas {sorted(all_areas())}") from None


def which_area(latitude: float, longitude: float) -> int | None:
    """The number of the test area holding the point, else None (a point on an edge is outside)."""
    return next((n for n, each in all_areas().items() if each.contains(latitude, longitude)), None)


def which_areas(latitudes: Sequence[float], longitudes: Sequence[float]) -> list[int | None]:
    """`which_area` for many points at once, vectorised: the emulator asks it of every location."""
    found = np.zeros(len(latitudes), dtype=np.int64)
    lat, lon = np.asarray(latitudes, dtype=float), np.asarray(longitudes, dtype=float)
    for number, each in all_areas().items():
        found[(found == 0) & shapely.contains_xy(each.polygon, lon, lat)] = number
    return [int(n) or None for n in found]


def place(number: int, keys: Sequence[str], decimals: int = DECIMALS) -> list[tuple[float, float]]:
    """A (latitude, longitude) inside test area `number` for each key, at least MARGIN_METRES from
    its edge, rounded to `decimals`, distinct for distinct keys (a repeated key gets its one point).

    A key's point comes from a hash of the key alone (blake2b, so the same on every run and
    machine): each key draws candidates in the area's bounding box until one falls inside. When
    two keys draw the same spot, the key that sorts first keeps it and the other draws on, so the
    points depend on the set of keys, never on their order.
    """
    where = area(number)
    spots: dict[str, tuple[float, float]] = {}
    taken: set[tuple[float, float]] = set()
    pending = sorted(set(keys))
    attempt = 0
    while pending:
        if attempt == MAX_DRAWS:
            raise ValueError(f"{where.name} has no room for {len(spots) + len(pending)} distinct points"
                             f" at {decimals} decimals")
        latitudes, longitudes = _candidates(where, pending, attempt, decimals)
        inside = shapely.contains_xy(where.inner, longitudes, latitudes)
        still = []
        for key, lat, lon, ok in zip(pending, latitudes.tolist(), longitudes.tolist(), inside.tolist(), strict=True):
            if ok and (lat, lon) not in taken:
                taken.add((lat, lon))
                spots[key] = (lat, lon)
            else:
                still.append(key)
        pending, attempt = still, attempt + 1
    return [spots[key] for key in keys]


def _candidates(where: TestArea, keys: list[str], attempt: int, decimals: int) -> tuple[np.ndarray, np.ndarray]:
    """Each key's `attempt`-th draw, uniform over the polygon's bounding box (the box of the
    guide's own polygon, not of the buffered one, so a point does not hang on GEOS's buffering)."""
    salt = f"{where.number}:{attempt}:".encode()
    digests = b"".join(hashlib.blake2b(salt + key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                       for key in keys)
    fractions = np.frombuffer(digests, dtype="<u8").reshape(-1, 2) / 2.0**64
    west, south, east, north = where.polygon.bounds
    latitudes = np.round(south + fractions[:, 0] * (north - south), decimals)
    longitudes = np.round(west + fractions[:, 1] * (east - west), decimals)
    return latitudes, longitudes
