"""Which field each of the partner's columns holds: known names, aliases, the user's mapping."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from onboard.errors import InputError

# The sheet's own columns, with the names partners use for them. Matching ignores case, spaces,
# punctuation and a plural "s"; anything else is mapped with --map or --mapping.
FIELDS: dict[str, tuple[str, ...]] = {
    "customer_id": ("customer", "customer number", "customer no", "customer nr", "customer key",
                    "customer ref", "customer reference", "client id", "account number", "account id"),
    "user_id": ("spark user id",),
    "location_ref": ("location", "location reference", "location key", "site", "site id", "site ref",
                     "installation", "installation id"),
    "location_id": ("spark location id",),
    "location_type": ("site type", "building type"),
    "meter_point_ids": ("meter point id", "metering point id", "metering point", "meter point", "mpid",
                        "gsrn", "ean", "meter id"),
    "latitude": ("lat",),
    "longitude": ("lng", "lon", "long"),
    "resource_ref": ("resource", "device", "device id", "device ref", "serial", "serial number",
                     "serial no", "vin", "asset id"),
    "resource_id": ("spark resource id",),
    "resource_type": ("device type", "type", "asset type"),
    "resource_meter_point_id": ("device meter point id", "resource mpid", "device mpid"),
}

# Columns the tool writes; recognised by their exact name when an output comes back as input.
OUTPUT_COLUMNS = ("row", "status", "user_id", "location_id", "resource_id", "error", "warnings")
OWN_COLUMNS = frozenset({"row", "status", "error", "warnings"})



def normalise(header: str) -> str:
    return re.sub(r"[\W_]+", "", header.casefold())


def _lookup() -> dict[str, str]:
    table: dict[str, str] = {}
    for name, aliases in FIELDS.items():
        for alias in (name, *aliases):
            key = normalise(alias)
            table.setdefault(key, name)
            table.setdefault(key + "s", name)
    return table


NAMES = _lookup()


def known_field(header: str) -> str | None:
    key = normalise(header)
    if not key:
        return None
    return NAMES.get(key) or (NAMES.get(key[:-1]) if key.endswith("s") else None)


@dataclass(frozen=True)
class Column:
    index: int
    header: str
    field: str | None = None
    own: str | None = None

    @property
    def name(self) -> str:
        """How messages name the column: the user's own header."""
        return self.header or f"column {self.index + 1}"


def match_columns(headers: list[str], mapping: Mapping[str, str] | None = None) -> list[Column]:
    """Which field each header holds: the user's --map first, then the known names."""
    mapping = {normalise(k): v for k, v in (mapping or {}).items()}
    columns = []
    for index, header in enumerate(headers):
        header = header.strip()
        own = header if header in OUTPUT_COLUMNS else None
        field_name = mapping.get(normalise(header)) if header else None
        if field_name is None and own not in OWN_COLUMNS:
            field_name = known_field(header)
        columns.append(Column(index, header, field_name, own if own in OWN_COLUMNS else None))
    return columns


def check_columns(sheet) -> None:
    """The sheet's columns make sense: one column per field, a customer key, hints for near misses."""
    from rapidfuzz import fuzz, process

    holder: dict[str, Column] = {}
    for column in sheet.columns:
        if column.field is None:
            continue
        if column.field in holder:
            raise InputError(f"columns {holder[column.field].name!r} and {column.name!r} both hold "
                             f"{column.field}: remove one, or map the other to another field with --map")
        holder[column.field] = column
    for column in sheet.columns:
        if column.field or column.own or not normalise(column.header):
            continue
        guess = process.extractOne(normalise(column.header), NAMES.keys(), scorer=fuzz.ratio, score_cutoff=80)
        if guess and NAMES[guess[0]] not in holder:
            field_name = NAMES[guess[0]]
            sheet.notes.append(f"column {column.name!r} is carried through unused: did you mean {field_name}? "
                               f'(--map "{column.header}={field_name}")')
    if "customer_id" not in holder and "user_id" not in holder:
        found = ", ".join(repr(c.header) for c in sheet.columns if c.header) or "(none)"
        raise InputError(
            f"{sheet.path.name} has no customer_id column (nor user_id). Headers found in row "
            f"{sheet.header_row}: {found}. Expected columns: {', '.join(FIELDS)}. "
            'Map yours with --map "Your Header=customer_id".'
        )
