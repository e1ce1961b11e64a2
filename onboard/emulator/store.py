"""The emulator's state: users, locations, resources and enrollments in one SQLite file.

A file, not memory, so that `onboard run --env local` can be run, fixed and re-run against the
same registered state, exactly as a partner does against the real tenant.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from onboard.errors import ConfigError
from onboard.files import connect_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS locations (
    location_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    location_type TEXT NOT NULL,
    latitude REAL,
    longitude REAL,
    meter_point_ids TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS locations_by_user ON locations(user_id);
CREATE TABLE IF NOT EXISTS resources (
    resource_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    location_id TEXT REFERENCES locations(location_id) ON DELETE CASCADE,
    resource_type TEXT NOT NULL,
    meter_point_id TEXT
);
CREATE INDEX IF NOT EXISTS resources_by_user ON resources(user_id);
CREATE INDEX IF NOT EXISTS resources_by_location ON resources(location_id);
CREATE TABLE IF NOT EXISTS enrollments (
    user_id TEXT PRIMARY KEY REFERENCES users(user_id) ON DELETE CASCADE,
    enrollment_id TEXT NOT NULL,
    enrolled_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS locations_by_position ON locations(latitude, longitude);
"""


@dataclass(frozen=True)
class Location:
    location_id: str
    user_id: str
    location_type: str
    meter_point_ids: list[str] = field(default_factory=list)
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True)
class Resource:
    resource_id: str
    user_id: str
    resource_type: str
    location_id: str | None = None
    meter_point_id: str | None = None


@dataclass(frozen=True)
class Enrollment:
    user_id: str
    enrollment_id: str
    enrolled_at: str  # ISO 8601 with its UTC offset, as the API answers it


class Store:
    """The state, committed write by write: a commit is in the operating system's hands at once, so
    a killed emulator loses nothing it answered for. Nothing is flushed to the disk (`synchronous =
    OFF`): a state that outlives the emulator, not the machine, is all a stand-in for the service
    needs, and a flush (at each checkpoint of the WAL) stalls every request queued behind it."""

    def __init__(self, path: Path | str = ":memory:") -> None:
        self.path = str(path)
        options = {"isolation_level": None, "check_same_thread": False, "timeout": 30}
        try:
            if self.path == ":memory:":
                self._db = sqlite3.connect(self.path, **options)
            else:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._db = connect_sqlite(Path(self.path), **options)
            self._db.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = OFF")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"the emulator's state file {self.path} cannot be used: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, rows: list[tuple]) -> None:
        if len(rows) == 1:  # one statement is a transaction of its own
            self._db.execute(sql, rows[0])
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(sql, rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # users

    def has_user(self, user_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM users WHERE user_id = ?", (user_id,)).fetchone() is not None

    def add_users(self, user_ids: list[str]) -> None:
        self._write("INSERT INTO users(user_id) VALUES (?)", [(u,) for u in user_ids])

    def users(self, offset: int, limit: int) -> tuple[list[str], int]:
        total = self._db.execute("SELECT count(*) FROM users").fetchone()[0]
        rows = self._db.execute("SELECT user_id FROM users ORDER BY rowid LIMIT ? OFFSET ?", (limit, offset))
        return [r[0] for r in rows], total

    def delete_user(self, user_id: str) -> bool:
        return self._db.execute("DELETE FROM users WHERE user_id = ?", (user_id,)).rowcount > 0

    # locations

    def location(self, location_id: str) -> Location | None:
        row = self._db.execute(
            "SELECT location_id, user_id, location_type, meter_point_ids, latitude, longitude"
            " FROM locations WHERE location_id = ?",
            (location_id,),
        ).fetchone()
        return _location(row) if row else None

    def locations_of(self, user_id: str) -> list[Location]:
        rows = self._db.execute(
            "SELECT location_id, user_id, location_type, meter_point_ids, latitude, longitude"
            " FROM locations WHERE user_id = ? ORDER BY rowid",
            (user_id,),
        )
        return [_location(r) for r in rows]

    def add_locations(self, locations: list[Location]) -> None:
        self._write(
            "INSERT INTO locations(location_id, user_id, location_type, meter_point_ids, latitude, longitude)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [_location_row(loc) for loc in locations],
        )

    def replace_location(self, location: Location) -> None:
        self._write(
            "UPDATE locations SET user_id = ?, location_type = ?, meter_point_ids = ?, latitude = ?, longitude = ?"
            " WHERE location_id = ?",
            [(*_location_row(location)[1:], location.location_id)],
        )

    def delete_location(self, location_id: str) -> bool:
        return self._db.execute("DELETE FROM locations WHERE location_id = ?", (location_id,)).rowcount > 0

    def positions_within(self, boxes: list[tuple[float, float, float, float]]) -> list[tuple[str, float, float]]:
        """(user_id, latitude, longitude) of every location inside one of the (west, south, east,
        north) boxes, users in the order they were registered: a cheap first cut, by index, before
        an exact test against a polygon."""
        if not boxes:
            return []
        where = " OR ".join(["(longitude BETWEEN ? AND ? AND latitude BETWEEN ? AND ?)"] * len(boxes))
        rows = self._db.execute(
            "SELECT l.user_id, l.latitude, l.longitude FROM locations AS l JOIN users AS u USING (user_id)"
            f" WHERE {where} ORDER BY u.rowid, l.rowid",
            [bound for west, south, east, north in boxes for bound in (west, east, south, north)],
        )
        return rows.fetchall()

    # resources

    def resource(self, resource_id: str) -> Resource | None:
        row = self._db.execute(
            "SELECT resource_id, user_id, resource_type, location_id, meter_point_id FROM resources"
            " WHERE resource_id = ?",
            (resource_id,),
        ).fetchone()
        return Resource(*row) if row else None

    def resources_of(self, user_id: str) -> list[Resource]:
        rows = self._db.execute(
            "SELECT resource_id, user_id, resource_type, location_id, meter_point_id FROM resources"
            " WHERE user_id = ? ORDER BY rowid",
            (user_id,),
        )
        return [Resource(*r) for r in rows]

    def resources_at(self, location_id: str) -> list[Resource]:
        rows = self._db.execute(
            "SELECT resource_id, user_id, resource_type, location_id, meter_point_id FROM resources"
            " WHERE location_id = ? ORDER BY rowid",
            (location_id,),
        )
        return [Resource(*r) for r in rows]

    def add_resource(self, resource: Resource) -> None:
        self._write(
            "INSERT INTO resources(resource_id, user_id, resource_type, location_id, meter_point_id)"
            " VALUES (?, ?, ?, ?, ?)",
            [(resource.resource_id, resource.user_id, resource.resource_type, resource.location_id,
              resource.meter_point_id)],
        )

    def delete_resource(self, resource_id: str) -> bool:
        return self._db.execute("DELETE FROM resources WHERE resource_id = ?", (resource_id,)).rowcount > 0

    # enrollments in the SPARK program

    def enrollment(self, user_id: str) -> Enrollment | None:
        row = self._db.execute("SELECT user_id, enrollment_id, enrolled_at FROM enrollments WHERE user_id = ?",
                               (user_id,)).fetchone()
        return Enrollment(*row) if row else None

    def enroll(self, enrollment: Enrollment) -> bool:
        """False when the user was enrolled already (that enrollment stays as it was)."""
        return self._db.execute(
            "INSERT INTO enrollments(user_id, enrollment_id, enrolled_at) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id) DO NOTHING",
            (enrollment.user_id, enrollment.enrollment_id, enrollment.enrolled_at),
        ).rowcount > 0

    def unenroll(self, user_id: str) -> bool:
        return self._db.execute("DELETE FROM enrollments WHERE user_id = ?", (user_id,)).rowcount > 0

    def counts(self) -> dict[str, int]:
        return {
            table: self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("users", "locations", "resources")
        }


def _location(row: tuple) -> Location:
    location_id, user_id, location_type, meter_point_ids, latitude, longitude = row
    return Location(location_id, user_id, location_type, json.loads(meter_point_ids), latitude, longitude)


def _location_row(loc: Location) -> tuple:
    return (loc.location_id, loc.user_id, loc.location_type, json.dumps(loc.meter_point_ids),
            loc.latitude, loc.longitude)


def wipe(path: Path | str) -> bool:
    """Delete a state file and its WAL companions; True when there was one."""
    existed = False
    for suffix in ("", "-wal", "-shm"):
        p = Path(f"{path}{suffix}")
        if p.exists():
            p.unlink()
            existed = True
    return existed
