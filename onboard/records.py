"""Rows of the partner's sheet validated into what a user, a location and a resource need.

Each row is checked on its own: every problem is reported, with the column it is in and words a
spreadsheet user understands. Rules that span rows (one customer, one site, one device described
twice) belong to `plan`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, ValidationInfo
from pydantic_core import PydanticCustomError

from onboard.contract import LocationType, ResourceType
from onboard.errors import InputError, UsageError
from onboard.mapping import Mapping, normalise, vocabulary
from onboard.sheet import Sheet

MAX_ID_LENGTH = 200
MPID_DIGITS = 18

EXCEL_DAMAGE = ("stored as a number, Excel dropped digits: format the column as Text and type the id again")


class Cell(NamedTuple):
    text: str
    value: object = None

    @property
    def numeric(self) -> bool:
        return isinstance(self.value, (int, float)) and not isinstance(self.value, bool)


class Problem(NamedTuple):
    field: str
    message: str


@dataclass(frozen=True)
class Coordinates:
    latitude: float
    longitude: float


def has_valid_check_digit(digits: str) -> bool:
    """GS1 mod-10 check over an all-digit id (GSRN meter point ids are 18 digits)."""
    if not digits.isascii() or not digits.isdigit() or len(digits) < 2:
        return False
    body, check = digits[:-1], int(digits[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


def _refuse(message: str) -> PydanticCustomError:
    return PydanticCustomError("onboard", "{message}", {"message": message})


def _text(cell: Cell | None) -> str | None:
    if cell is None:
        return None
    text = cell.text.replace("\u00a0", " ").strip()
    return text or None


def _key(cell: Cell | None) -> str | None:
    text = _text(cell)
    if text is not None and cell.numeric and abs(cell.value) >= 1e15:
        raise _refuse(f"{text} was {EXCEL_DAMAGE.replace('the id', 'the value')}")
    return text


def _explicit_id(cell: Cell | None) -> str | None:
    text = _key(cell)
    if text is None:
        return None
    if text in (".", ".."):
        raise _refuse(f"{text!r} cannot be an ID: it would change the meaning of the API's URLs")
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise _refuse("the ID holds a control character (a line break or tab): remove it")
    if len(text) > MAX_ID_LENGTH:
        raise _refuse(f"the ID has {len(text)} characters; at most {MAX_ID_LENGTH} are allowed")
    return text


def meter_point_id(text: str, info: ValidationInfo) -> str:
    """One meter point id: exactly 18 ASCII digits; a failing GS1 check digit is only a warning
    (the vendor's own examples fail it) unless the run is strict."""
    compact = re.sub(r"\s+", "", text)
    if re.search(r"\d[eE][+-]?\d", compact):
        raise _refuse(f"meter point id {text!r} was {EXCEL_DAMAGE}")
    if not (compact.isascii() and compact.isdigit()):
        raise _refuse(f"meter point id {text!r} must hold only the digits 0-9")
    if len(compact) != MPID_DIGITS:
        raise _refuse(f"meter point id {compact} has {len(compact)} digits; it needs exactly {MPID_DIGITS}")
    if not has_valid_check_digit(compact):
        message = f"meter point id {compact} fails the GS1 check digit"
        context = info.context or {}
        if context.get("strict_meter_ids"):
            raise _refuse(message + " (--strict-meter-ids)")
        context.setdefault("warnings", []).append(Problem(info.field_name, message))
    return compact


def _meter_point_ids(cell: Cell | None, info: ValidationInfo) -> tuple[str, ...]:
    text = _text(cell)
    if text is None:
        return ()
    if cell.numeric or re.search(r"\d[.,]?\d*[eE][+-]?\d", text):
        raise _refuse(f"meter point id {text!r} was {EXCEL_DAMAGE}")
    ids: list[str] = []
    for piece in re.split(r"[,;|/\r\n]+", text):
        piece = piece.replace("\u00a0", " ").strip()
        if not piece:
            continue
        parts = piece.split()
        several = len(parts) > 1 and all(len(p) == MPID_DIGITS and p.isdigit() for p in parts)
        for part in parts if several else [piece]:
            mpid = meter_point_id(part, info)
            if mpid not in ids:
                ids.append(mpid)
    return tuple(ids)


def _single_meter_point_id(cell: Cell | None, info: ValidationInfo) -> str | None:
    text = _text(cell)
    if text is None:
        return None
    if cell.numeric:
        raise _refuse(f"meter point id {text!r} was {EXCEL_DAMAGE}")
    return meter_point_id(text, info)


def _degrees(name: str, limit: float):
    def check(cell: Cell | None) -> float | None:
        text = _text(cell)
        if text is None:
            return None
        number = text.replace(" ", "")
        if number.count(",") == 1 and "." not in number:
            number = number.replace(",", ".")
        try:
            value = float(number)
        except ValueError:
            raise _refuse(f"{name} {text!r} is not a number of degrees") from None
        if not math.isfinite(value) or not -limit <= value <= limit:
            raise _refuse(f"{name} {text} is outside -{limit:g}..{limit:g} degrees")
        return value

    return check


def resolve(field_name: str, text: str) -> str | None:
    """The enum value a partner's word means (`hot water tank`, `EV charger`, `Varmepumpe`), if any."""
    return vocabulary().value(field_name, text)


def _choice(enum, name: str):
    def check(cell: Cell | None) -> str | None:
        text = _text(cell)
        if text is None:
            return None
        found = resolve(name, text)
        if found is None:
            raise _refuse(f"{name} {text!r} is not one of {', '.join(m.value for m in enum)}")
        return found

    return check


Key = Annotated[str | None, BeforeValidator(_key)]
ExplicitId = Annotated[str | None, BeforeValidator(_explicit_id)]


class Row(BaseModel):
    """One row's cells, each validated on its own."""

    model_config = ConfigDict(frozen=True)

    customer_id: Key = None
    user_id: ExplicitId = None
    location_ref: Key = None
    location_id: ExplicitId = None
    location_type: Annotated[str | None, BeforeValidator(_choice(LocationType, "location_type"))] = None
    meter_point_ids: Annotated[tuple[str, ...], BeforeValidator(_meter_point_ids)] = ()
    latitude: Annotated[float | None, BeforeValidator(_degrees("latitude", 90))] = None
    longitude: Annotated[float | None, BeforeValidator(_degrees("longitude", 180))] = None
    resource_ref: Key = None
    resource_id: ExplicitId = None
    resource_type: Annotated[str | None, BeforeValidator(_choice(ResourceType, "resource_type"))] = None
    resource_meter_point_id: Annotated[str | None, BeforeValidator(_single_meter_point_id)] = None

    @property
    def coordinates(self) -> Coordinates | None:
        if self.latitude is None or self.longitude is None:
            return None
        return Coordinates(self.latitude, self.longitude)

    @property
    def has_location(self) -> bool:
        return bool(self.location_ref or self.location_id or self.meter_point_ids or self.coordinates)

    @property
    def has_resource(self) -> bool:
        return self.resource_type is not None


@dataclass
class Checked:
    """A row after validation: its record when it passed, else every problem found."""

    number: int
    row: Row | None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    slot: tuple[str, ...] | None = None
    skipped: bool = False
    """Left out by --where: not validated, never sent."""
    unknown: tuple[tuple[str, str], ...] = ()
    """(field, text) of values that are none of the field's choices, for counting them per word."""

    @property
    def valid(self) -> bool:
        return self.row is not None and not self.problems


def _row_rules(filled: dict[str, bool], kind: str | None) -> Iterator[Problem]:
    """Rules across the cells of one row; they look only at which cells are filled, so they are
    reported even when a cell they involve is itself wrong."""
    if not filled["customer_id"] and not filled["user_id"]:
        yield Problem("customer_id", "customer_id is empty: every row needs the customer's key")
    if filled["latitude"] != filled["longitude"]:
        missing = "longitude" if filled["latitude"] else "latitude"
        other = "latitude" if missing == "longitude" else "longitude"
        yield Problem(missing, f"{missing} is empty but {other} is given: fill both or neither")
    described = filled["resource_ref"] or filled["resource_id"] or filled["resource_meter_point_id"]
    if described and not filled["resource_type"]:
        yield Problem("resource_type", "resource_type is empty: say what the device is "
                      f"({', '.join(m.value for m in ResourceType)})")
    at_site = any(filled[f] for f in ("location_ref", "location_id", "meter_point_ids", "latitude", "longitude"))
    if filled["resource_type"] and kind != "Vehicle" and not at_site:
        yield Problem("meter_point_ids", f"a {kind or 'device'} must be at a site: fill meter_point_ids or "
                      "latitude/longitude, or the location_ref of a site described on another row")


def check_cells(number: int, cells: dict[str, Cell], strict_meter_ids: bool = False) -> Checked:
    context: dict[str, Any] = {"strict_meter_ids": strict_meter_ids, "warnings": []}
    problems: list[Problem] = []
    row = None
    try:
        row = Row.model_validate(cells, context=context)
    except ValidationError as exc:
        problems = [Problem(str(e["loc"][0]), e["msg"]) for e in exc.errors()]
    filled = {name: _text(cells.get(name)) is not None for name in Row.model_fields}
    kind_text = _text(cells.get("resource_type"))
    kind = resolve("resource_type", kind_text) if kind_text else None
    problems += _row_rules(filled, kind)
    warnings = list(context["warnings"])
    if row and row.resource_type == "Vehicle" and row.resource_meter_point_id:
        warnings.append(Problem("resource_meter_point_id",
                                "resource_meter_point_id is not sent for a Vehicle: the API registers "
                                "vehicles without one"))
    if row and row.location_type and not row.has_location:
        warnings.append(Problem("location_type", "location_type is ignored: the row describes no site"))
    unknown = tuple((name, text) for name in ("location_type", "resource_type")
                    if (text := _text(cells.get(name))) and resolve(name, text) is None)
    return Checked(number, None if problems else row, problems, warnings, _device_slot(cells, kind), unknown=unknown)


def _device_slot(cells: dict[str, Cell], kind: str | None) -> tuple[str, ...] | None:
    """Customer, site and type of a device row without resource_ref or resource_id, from the cells
    as written, so valid and refused rows count their position alike."""
    text = {name: _text(cells.get(name)) or "" for name in Row.model_fields}
    if text["resource_ref"] or text["resource_id"] or not text["resource_type"]:
        return None
    customer = text["customer_id"] or ("user\x1f" + text["user_id"] if text["user_id"] else "")
    if not customer:
        return None
    site = (text["location_ref"] or text["location_id"] or re.sub(r"\s+", "", text["meter_point_ids"])
            or f"{text['latitude']},{text['longitude']}")
    return customer, site, kind or normalise(text["resource_type"])


# choosing rows: --where


@dataclass(frozen=True)
class Condition:
    """One `--where`: a column's value is (`=`) or is not (`!=`) a text, ignoring case and
    surrounding spaces; an empty text stands for a blank cell."""

    header: str
    value: str
    negate: bool = False

    @classmethod
    def parse(cls, text: str) -> Condition:
        match = re.fullmatch(r"(?P<header>[^=!]*?)\s*(?P<op>!=|=)\s*(?P<value>.*)", text, flags=re.S)
        if match is None or not match["header"].strip():
            raise UsageError(f'--where {text!r}: write it as "Column=value" or "Column!=value"')
        return cls(match["header"].strip(), match["value"].strip(), match["op"] == "!=")

    def column(self, sheet: Sheet) -> int:
        for wanted in (self.header.casefold(), normalise(self.header)):
            for column in sheet.columns:
                if wanted and wanted in (column.header.casefold(), normalise(column.header)):
                    return column.index
        found = ", ".join(repr(c.header) for c in sheet.columns if c.header)
        raise InputError(f"--where {self.header!r}: the sheet has no such column; its columns are {found}")

    def holds(self, text: str) -> bool:
        same = text.replace("\u00a0", " ").strip().casefold() == self.value.casefold()
        return same != self.negate


def selected(sheet: Sheet, conditions: list[Condition]) -> list[bool]:
    """Which rows every condition holds for."""
    at = [(condition, condition.column(sheet)) for condition in conditions]
    return [all(c.holds(row.cells[i]) for c, i in at) for row in sheet.rows]


# the user's words for values


def _mapped(cells: dict[str, Cell], mapping: Mapping | None) -> dict[str, Cell]:
    """Cells with the user's own value mapping applied (`Varmepumpe` -> `HVAC`)."""
    if not mapping or not mapping.values:
        return cells
    for name in mapping.values:
        text = _text(cells.get(name))
        if text is not None and (value := mapping.value(name, text)) is not None:
            cells[name] = Cell(value)
    return cells


def unused_values(sheet: Sheet, mapping: Mapping | None) -> list[tuple[str, str]]:
    """(field, word) of value mappings that match no cell of their field: a typo the user should hear of."""
    if not mapping or not mapping.values:
        return []
    seen: dict[str, set[str]] = {}
    for column in sheet.columns:
        if column.field in mapping.values:
            seen.setdefault(column.field, set()).update(normalise(r.cells[column.index]) for r in sheet.rows)
    return [(name, word) for name, word in mapping.value_keys() if normalise(word) not in seen.get(name, set())]


def check(sheet: Sheet, strict_meter_ids: bool = False, mapping: Mapping | None = None,
          where: list[Condition] | None = None) -> list[Checked]:
    """Every row of the sheet, validated; rows `where` leaves out are only marked skipped."""
    fields = [(c.index, c.field) for c in sheet.columns if c.field]
    chosen = selected(sheet, where) if where else None
    checked = []
    for position, row in enumerate(sheet.rows):
        cells = _mapped({name: Cell(row.cells[i], row.values[i]) for i, name in fields}, mapping)
        if chosen is not None and not chosen[position]:
            kind_text = _text(cells.get("resource_type"))
            kind = resolve("resource_type", kind_text) if kind_text else None
            checked.append(Checked(row.number, None, slot=_device_slot(cells, kind), skipped=True))
            continue
        checked.append(check_cells(row.number, cells, strict_meter_ids))
    return checked
