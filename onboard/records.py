"""Rows of the partner's sheet validated into what a user, a location and a resource need.

Each row is checked on its own: every problem is reported, with the column it is in and words a
spreadsheet user understands. Rules that span rows (one customer, one site, one device described
twice) belong to `plan`.
"""

from __future__ import annotations

import functools
import math
import operator
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

from pydantic import PlainValidator, TypeAdapter, ValidationError, ValidationInfo
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_core import PydanticCustomError

from onboard.contract import LocationType, ResourceType
from onboard.errors import InputError, UsageError
from onboard.mapping import Mapping, normalise, vocabulary
from onboard.sheet import Sheet

MAX_ID_LENGTH = 200
MPID_DIGITS = 18

TOTAL_WORDS = frozenset({
    "total", "totals", "totalt", "totalsum", "totalsumma", "grandtotal", "subtotal", "subtotals", "sumtotal",
    "sum", "sums", "summa", "summe", "delsum", "delsumma", "deltotal", "mellomsum", "ialt", "samtals",
    "yhteensä", "yht", "välisumma", "kaikkiyhteensä", "antall", "antal", "count", "lukumäärä",
})
"""Words a totals row starts or ends with, in English, Norwegian, Swedish, Danish and Finnish
(`I alt` and `Grand total` are matched as one word)."""


def words(text: str) -> list[str]:
    return re.findall(r"[^\W\d_]+", text.casefold())


def reads_like_total(text: str) -> bool:
    """`Totalt`, `Sum total`, `I alt 2135 rader`: a totals line's first or last word(s)."""
    found = words(text)
    return bool(found) and not TOTAL_WORDS.isdisjoint(
        {found[0], found[-1], "".join(found[:2]), "".join(found[-2:])})


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


class Sighting(NamedTuple):
    """Meter point ids on a row refused for something else, and whose they are."""

    customer: str
    meter_point_ids: tuple[str, ...]


class Refusal(NamedTuple):
    """Why a cell cannot be taken, as a cached parse remembers it."""

    message: str


_PLAIN_ID = re.compile(r"[0-9]{18}")
_SEPARATORS = re.compile(r"[,;|/\r\n]+")
_DAMAGED_ID = re.compile(r"\d[eE][+-]?\d")
_DAMAGED_CELL = re.compile(r"\d[.,]?\d*[eE][+-]?\d")


class Coordinates(NamedTuple):
    """A site's point; a tuple, since planning makes one for every row that has it."""

    latitude: float
    longitude: float


def has_valid_check_digit(digits: str) -> bool:
    """GS1 mod-10 check over an all-digit id (GSRN meter point ids are 18 digits): from the right,
    the digits before the check digit weigh 3, 1, 3, 1, ..."""
    if not digits.isascii() or not digits.isdigit() or len(digits) < 2:
        return False
    code = digits.encode()
    threes, ones = code[-2::-2], code[-3::-2]
    total = 3 * (sum(threes) - 48 * len(threes)) + sum(ones) - 48 * len(ones)  # ASCII "0" is 48
    return (10 - total % 10) % 10 == ord(digits[-1]) - 48


def _refuse(message: str) -> PydanticCustomError:
    return PydanticCustomError("onboard", "{message}", {"message": message})


def _clean(text: str) -> str:
    return text.replace("\u00a0", " ").strip() if text else text


def _text(cell: str | Cell | None) -> str | None:
    """A cell's text, blank as None. Cells arrive cleaned of surrounding and non-breaking spaces, as
    plain text, or as a `Cell` when the file gave them another type (a number Excel may have damaged)."""
    if cell is None:
        return None
    return (cell or None) if cell.__class__ is str else (cell.text or None)


def _numeric(cell: str | Cell | None) -> bool:
    return cell is not None and cell.__class__ is not str and cell.numeric


ROUNDED_FROM = 1e15
"""Excel keeps 15 significant digits of a number: a key stored as one this large has lost some."""
METER_FIELDS = frozenset({"meter_point_ids", "resource_meter_point_id"})
"""Columns where any number is Excel's damage: an 18-digit id never survives as one."""
_KEYS = frozenset({"customer_id", "user_id", "location_ref", "location_id", "resource_ref", "resource_id"})
_SHOWN_AS_NUMBER = re.compile(r"[+-]?\d(?:[.,]\d+)?[eE]\+?(\d{1,3})")
"""A number as Excel shows and saves it once it has too many digits: `7.07058E+17` (`7,07058E+17`)."""


def excel_damaged(field_name: str, value: object) -> bool:
    """Whether a cell of `field_name` holds a number the reader refuses as Excel's damage. The outputs
    write such a cell back as that number (or, in CSV, as Excel shows it), so the next run refuses it
    again: written as the rounded digits in text, it would read as a good id."""
    if value.__class__ is str or not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return field_name in METER_FIELDS or (field_name in _KEYS and abs(value) >= ROUNDED_FROM)


def _shown_rounded(text: str) -> bool:
    """A key cell of a CSV that Excel saved holding a long number: its digits are gone for good."""
    if "E" not in text and "e" not in text:
        return False
    shown = _SHOWN_AS_NUMBER.fullmatch(text)
    return shown is not None and 10 ** int(shown[1]) >= ROUNDED_FROM


_NUMBER_START = frozenset("+-0123456789")


def _key(cell: Cell | None) -> str | None:
    if cell.__class__ is str:  # the common cell: text as the file gave it
        if cell and cell[0] in _NUMBER_START and _shown_rounded(cell):
            raise _refuse(f"{cell} was {EXCEL_DAMAGE.replace('the id', 'the value')}")
        return cell or None
    text = _text(cell)
    if text is not None and ((_numeric(cell) and abs(cell.value) >= ROUNDED_FROM) or _shown_rounded(text)):
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


@functools.lru_cache(maxsize=8192)
def _parse_meter_point_id(text: str) -> str | Refusal:
    compact = re.sub(r"\s+", "", text)
    if _DAMAGED_ID.search(compact):
        return Refusal(f"meter point id {text!r} was {EXCEL_DAMAGE}")
    if not (compact.isascii() and compact.isdigit()):
        return Refusal(f"meter point id {text!r} must hold only the digits 0-9")
    if len(compact) != MPID_DIGITS:
        return Refusal(f"meter point id {compact} has {len(compact)} digits; it needs exactly {MPID_DIGITS}")
    return compact


def meter_point_id(text: str, info: ValidationInfo) -> str:
    """One meter point id: exactly 18 ASCII digits; a failing GS1 check digit is only a warning
    (the vendor's own examples fail it) unless the run is strict."""
    parsed = _parse_meter_point_id(text)
    if isinstance(parsed, Refusal):
        raise _refuse(parsed.message)
    return _check_digit(parsed, info)


def _check_digit(parsed: str, info: ValidationInfo) -> str:
    if not has_valid_check_digit(parsed):
        message = f"meter point id {parsed} fails the GS1 check digit"
        context = info.context or {}
        if context.get("strict_meter_ids"):
            raise _refuse(message + " (--strict-meter-ids)")
        context.setdefault("warnings", []).append(Problem(info.field_name, message))
    return parsed


@functools.lru_cache(maxsize=8192)
def _split_meter_point_ids(text: str) -> tuple[str, ...] | Refusal:
    """The ids a cell holds, as written: separated by , ; | / or line breaks, or by spaces when
    every piece is a whole id (a space inside one id is only a typing habit)."""
    if _DAMAGED_CELL.search(text):
        return Refusal(f"meter point id {text!r} was {EXCEL_DAMAGE}")
    pieces: list[str] = []
    for piece in _SEPARATORS.split(text):
        piece = piece.replace("\u00a0", " ").strip()
        if not piece:
            continue
        parts = piece.split()
        several = len(parts) > 1 and all(len(p) == MPID_DIGITS and p.isdigit() for p in parts)
        pieces += parts if several else [piece]
    return tuple(pieces)


def _readable_meter_point_ids(text: str) -> tuple[str, ...]:
    """The well-formed ids of a cell, ignoring the pieces that are not: for rows refused anyway."""
    pieces = _split_meter_point_ids(text)
    if isinstance(pieces, Refusal):
        return ()
    return tuple(dict.fromkeys(p for piece in pieces if isinstance(p := _parse_meter_point_id(piece), str)))


def _meter_point_ids(cell: Cell | None, info: ValidationInfo) -> tuple[str, ...]:
    if cell.__class__ is str and _PLAIN_ID.fullmatch(cell):  # the common case: one clean id, parsed already
        return (_check_digit(cell, info),)
    text = _text(cell)
    if text is None:
        return ()
    pieces = _split_meter_point_ids(text)
    if _numeric(cell) or isinstance(pieces, Refusal):
        raise _refuse(f"meter point id {text!r} was {EXCEL_DAMAGE}")
    ids: list[str] = []
    for piece in pieces:
        mpid = meter_point_id(piece, info)
        if mpid not in ids:
            ids.append(mpid)
    return tuple(ids)


def _single_meter_point_id(cell: Cell | None, info: ValidationInfo) -> str | None:
    text = _text(cell)
    if text is None:
        return None
    if _numeric(cell):
        raise _refuse(f"meter point id {text!r} was {EXCEL_DAMAGE}")
    return meter_point_id(text, info)


def _degrees(name: str, limit: float):
    @functools.lru_cache(maxsize=8192)
    def parse(text: str) -> float | Refusal:
        number = text.replace(" ", "")
        if number.count(",") == 1 and "." not in number:
            number = number.replace(",", ".")
        try:
            value = float(number)
        except ValueError:
            return Refusal(f"{name} {text!r} is not a number of degrees")
        if not math.isfinite(value) or not -limit <= value <= limit:
            return Refusal(f"{name} {text} is outside -{limit:g}..{limit:g} degrees")
        return value

    def check(cell: Cell | None) -> float | None:
        text = _text(cell)
        if text is None:
            return None
        if cell.__class__ is Cell and cell.value.__class__ is float and -limit <= cell.value <= limit:
            return cell.value + 0.0  # a number the workbook stored, as its text reads (-0.0 shows as 0)
        value = parse(text)
        if isinstance(value, Refusal):
            raise _refuse(value.message)
        return value

    return check


@functools.lru_cache(maxsize=4096)
def resolve(field_name: str, text: str) -> str | None:
    """The enum value a partner's word means (`hot water tank`, `EV charger`, `Varmepumpe`), if any."""
    return vocabulary().value(field_name, text)


def _choice(enum, name: str):
    def check(cell: Cell | None) -> str | None:
        text = cell if cell.__class__ is str else _text(cell)
        if not text:
            return None
        found = resolve(name, text)
        if found is None:
            raise _refuse(f"{name} {text!r} is not one of {', '.join(m.value for m in enum)}")
        return found

    return check


Key = Annotated[str | None, PlainValidator(_key)]
ExplicitId = Annotated[str | None, PlainValidator(_explicit_id)]


@pydantic_dataclass(frozen=True, slots=True)
class Row:
    """One row's cells, each validated on its own. A slotted dataclass: a million of them fit in
    a tenth of the memory pydantic models take."""

    customer_id: Key = None
    user_id: ExplicitId = None
    location_ref: Key = None
    location_id: ExplicitId = None
    location_type: Annotated[str | None, PlainValidator(_choice(LocationType, "location_type"))] = None
    meter_point_ids: Annotated[tuple[str, ...], PlainValidator(_meter_point_ids)] = ()
    latitude: Annotated[float | None, PlainValidator(_degrees("latitude", 90))] = None
    longitude: Annotated[float | None, PlainValidator(_degrees("longitude", 180))] = None
    resource_ref: Key = None
    resource_id: ExplicitId = None
    resource_type: Annotated[str | None, PlainValidator(_choice(ResourceType, "resource_type"))] = None
    resource_meter_point_id: Annotated[str | None, PlainValidator(_single_meter_point_id)] = None

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

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}


FIELDS = tuple(Row.__pydantic_fields__)
SITE_AND_DEVICE = ("location_ref", "location_id", "meter_point_ids", "latitude", "longitude", "resource_ref",
                   "resource_id", "resource_type", "resource_meter_point_id")
SHARED_KEYS = frozenset({"location_ref"})
"""Keys that repeat from row to row: the `home` of every customer."""
_ROW = TypeAdapter(Row)
_VALUES = operator.attrgetter(*FIELDS)
"""A row's values in the order of FIELDS, taken in one call."""
_VALIDATE = _ROW.validator.validate_python
"""The adapter's own core validator, called once per row without the adapter's Python wrapper."""


@dataclass(slots=True)
class Checked:
    """A row after validation: its record when it passed, else every problem found."""

    number: int
    row: Row | None
    problems: list[Problem] | tuple[()] = ()
    warnings: list[Problem] | tuple[()] = ()
    slot: tuple[str, ...] | None = None
    skipped: bool = False
    """Left out by --where: not validated, never sent."""
    unknown: tuple[tuple[str, str], ...] = ()
    """(field, text) of values that are none of the field's choices, for counting them per word."""
    hidden: bool = False
    """Hidden in the workbook."""
    total_cell: str | None = None
    """A cell outside the fields that reads like a totals line, on a row without site or device."""
    lone: bool = False
    """A row without site or device whose only filled cell is one cell: what a section heading
    merged across the row leaves (`Region Nord`), never a customer's whole record."""
    meters: Sighting | None = None
    """The customer and meter point ids a refused row names, as far as they can be read."""
    origin: int | None = None
    """The row of the original sheet, when this sheet is one of the tool's outputs run again."""

    @property
    def valid(self) -> bool:
        return self.row is not None and not self.problems


NULL_ISLAND = ("latitude and longitude are both 0: that is where an export puts a site it has no coordinates "
               "for (in the Gulf of Guinea); leave both empty, or give the site's own")


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
    at_site = (filled["location_ref"] or filled["location_id"] or filled["meter_point_ids"] or filled["latitude"]
               or filled["longitude"])
    if filled["resource_type"] and kind != "Vehicle" and not at_site:
        yield Problem("meter_point_ids", f"a {kind or 'device'} must be at a site: fill meter_point_ids or "
                      "latitude/longitude, or the location_ref of a site described on another row")


_BLANK = frozenset({None, ()})
"""A field's value when its cell is empty (a number is filled, even 0.0)."""


@functools.lru_cache(maxsize=4096)
def _rules_of_filled(blank: tuple[bool, ...], kind: str | None) -> tuple[Problem, ...]:
    """`_row_rules` of a valid row, by which of its fields are blank (in the order of FIELDS): a
    sheet's rows share a few such shapes, so the rules run once per shape, not once per row."""
    return tuple(_row_rules({name: not empty for name, empty in zip(FIELDS, blank, strict=True)}, kind))


def check_cells(number: int, cells: dict[str, Cell], strict_meter_ids: bool = False) -> Checked:
    """One row, its cells cleaned of surrounding and non-breaking spaces (as `check` gives them)."""
    context: dict[str, Any] = {"strict_meter_ids": strict_meter_ids, "warnings": []}
    problems: list[Problem] = []
    row = None
    try:
        row = _VALIDATE(cells, context=context)
    except ValidationError as exc:
        problems = [Problem(str(e["loc"][0]), e["msg"]) for e in exc.errors()]
    if row is not None:  # every filled cell gave a value: the row's own values say what is filled
        kind = row.resource_type
        problems += _rules_of_filled(tuple(map(_BLANK.__contains__, _VALUES(row))), kind)
        if row.latitude == 0 and row.longitude == 0:
            problems.append(Problem("latitude", NULL_ISLAND))
        slot = None
        if kind and not row.resource_ref and not row.resource_id:
            slot = _device_slot({name: _text(cells.get(name)) for name in FIELDS}, kind)
        unknown: tuple[tuple[str, str], ...] = ()
    else:
        text = {name: _text(cells.get(name)) for name in FIELDS}
        kind = resolve("resource_type", text["resource_type"]) if text["resource_type"] else None
        problems += _row_rules({name: value is not None for name, value in text.items()}, kind)
        slot = _device_slot(text, kind)
        unknown = tuple((name, text[name]) for name in ("location_type", "resource_type")
                        if text[name] and resolve(name, text[name]) is None)
    warnings = context["warnings"]
    if row and row.resource_type == "Vehicle" and row.resource_meter_point_id:
        warnings.append(Problem("resource_meter_point_id",
                                "resource_meter_point_id is not sent for a Vehicle: the API registers "
                                "vehicles without one"))
    if row and row.location_type and not row.has_location:
        warnings.append(Problem("location_type", "location_type is ignored: the row describes no site"))
    return Checked(number, None if problems else row, problems or (), warnings or (), slot, unknown=unknown)


def _device_slot(text: dict[str, str | None], kind: str | None) -> tuple[str, ...] | None:
    """Customer, site and type of a device row without resource_ref or resource_id, from the cells
    as written, so valid and refused rows count their position alike."""
    if text["resource_ref"] or text["resource_id"] or not text["resource_type"]:
        return None
    customer = text["customer_id"] or ("user\x1f" + text["user_id"] if text["user_id"] else "")
    if not customer:
        return None
    site = (text["location_ref"] or text["location_id"] or re.sub(r"\s+", "", text["meter_point_ids"] or "")
            or f"{text['latitude'] or ''},{text['longitude'] or ''}")
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


def _chosen(sheet: Sheet, conditions: list[Condition]) -> Callable[[list[str]], bool] | None:
    """Whether a row's cells meet every condition; None when there are none."""
    if not conditions:
        return None
    at = [(condition, condition.column(sheet)) for condition in conditions]
    return lambda cells: all(c.holds(cells[i]) for c, i in at)


# the user's words for values


def _mapped(cells: dict[str, Cell], mapping: Mapping | None, used: set[tuple[str, str]] | None) -> dict[str, Cell]:
    """Cells with the user's own value mapping applied (`Varmepumpe` -> `HVAC`); the (field, word)
    of each entry that matched goes to `used`."""
    if not mapping or not mapping.values:
        return cells
    for name in mapping.values:
        text = _text(cells.get(name))
        if text is None:
            continue
        word = mapping.word(name, text)
        if word is not None:
            cells[name] = _clean(mapping.values[name][word])
            if used is not None:
                used.add((name, word))
    return cells


def unused_values(mapping: Mapping | None, used: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """(field, word) of value mappings that matched no cell: a typo the user should hear of."""
    return [key for key in mapping.value_keys() if key not in used] if mapping else []


def check(sheet: Sheet, strict_meter_ids: bool = False, mapping: Mapping | None = None,
          where: list[Condition] | None = None, used_values: set[tuple[str, str]] | None = None) -> list[Checked]:
    """Every row of the sheet, validated, in one pass over its rows; rows `where` leaves out are only
    marked skipped. The (field, word) of each value mapping that matched a cell goes to `used_values`."""
    return list(checking(sheet, strict_meter_ids, mapping, where, used_values))


def checking(sheet: Sheet, strict_meter_ids: bool = False, mapping: Mapping | None = None,
             where: list[Condition] | None = None,
             used_values: set[tuple[str, str]] | None = None) -> Iterator[Checked]:
    """`check`, one row at a time: planning takes each row as it comes, so a million `Checked` are
    never held at once (`plan.build` keeps what it needs of each)."""
    fields = [(c.index, c.field) for c in sheet.columns if c.field]
    chosen = _chosen(sheet, where or [])
    origin_at = next((c.index for c in sheet.columns if c.own == "row"), None)
    shared = [(i, name) for i, name in fields if name in SHARED_KEYS]
    field_at = {i for i, _ in fields}
    site_fields = [name for name in SITE_AND_DEVICE if name in {name for _, name in fields}]
    once: dict[str, str] = {}
    repeated = "customer_id" if any(name == "customer_id" for _, name in fields) else None
    above = ""
    mapping_values = bool(mapping and mapping.values)
    for row in sheet.rows:
        values = row.values
        # _clean inlined (a number's repr is clean already); blank cells are left out: the Row's
        # defaults stand for them, and no validator runs for nothing
        cells = {name: cell for i, name in fields
                 if (cell := v.replace("\u00a0", " ").strip() if (v := values[i]).__class__ is str
                     else Cell(row.cells[i] if v.__class__ is float else _clean(row.cells[i]), v)) != ""}
        if mapping_values:
            cells = _mapped(cells, mapping, used_values)
        for _, name in shared:  # one string for `home` on a million rows, not a million
            cell = cells.get(name)
            if cell.__class__ is str:
                cells[name] = once.setdefault(cell, cell)
        if repeated is not None and (cell := cells.get(repeated)).__class__ is str:
            if cell == above:  # a customer's rows, one after another, hold one string of its key, not one each
                cells[repeated] = above
            else:
                above = cell
        if chosen is not None and not chosen(row.cells):
            text = {name: _text(cells.get(name)) for name in FIELDS}
            kind = resolve("resource_type", text["resource_type"]) if text["resource_type"] else None
            result = Checked(row.number, None, slot=_device_slot(text, kind), skipped=True)
        else:
            result = check_cells(row.number, cells, strict_meter_ids)
        result.hidden = row.hidden
        if origin_at is not None and (text := row.cells[origin_at].strip()).isdigit():
            result.origin = int(text)
        if not result.skipped and not any(_text(cells.get(name)) for name in site_fields):
            result.total_cell = next((t for i, t in enumerate(row.cells) if i not in field_at and t.strip()
                                      and reads_like_total(t)), None)
            result.lone = sum(1 for t in row.cells if t.strip()) == 1
        if result.row is None and not result.skipped and (mpids := _text(cells.get("meter_point_ids"))):
            readable = _readable_meter_point_ids(mpids)
            customer = _text(cells.get("customer_id")) or _text(cells.get("user_id")) or ""
            result.meters = Sighting(customer, readable) if readable else None
        yield result
