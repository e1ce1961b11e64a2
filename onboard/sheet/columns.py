"""Which field each of the partner's columns holds, and which columns nobody meant to use.

A column is used for a field only when that is clear: the user's mapping says so, its header is a
known name for the field (`onboard.mapping.vocabulary`), or, for Spark IDs, it is the tool's own
output column or a `Spark ...` header. Any other column is carried through untouched; one that
looks like a misspelt field stops the run until the user maps or ignores it, because a dropped
column of coordinates would otherwise go unnoticed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rapidfuzz.distance import OSA

from onboard.errors import InputError
from onboard.mapping import FIELD_NAMES, ID_FIELDS, Mapping, normalise, spark_id_field, vocabulary

FIELDS = FIELD_NAMES

# Columns the tool writes; recognised by their exact name when an output comes back as input.
OUTPUT_COLUMNS = ("row", "status", "user_id", "location_id", "resource_id", "error", "warnings")
OWN_COLUMNS = frozenset({"row", "status", "error", "warnings"})


@dataclass(frozen=True)
class Column:
    index: int
    header: str
    field: str | None = None
    own: str | None = None
    ignored: bool = False
    """The user's mapping says to leave this column alone."""
    by: str = ""
    """How the field was found: `mapping`, `name` (a known header) or `spark id`."""

    @property
    def name(self) -> str:
        """How messages name the column: the user's own header."""
        return self.header or f"column {self.index + 1}"

    @property
    def use(self) -> str:
        """What the tool does with the column, as the column-mapping print-out says it."""
        if self.field:
            return self.field + (" (mapping)" if self.by == "mapping" else "")
        if self.own:
            return f"the tool's own {self.own} column (replaced)"
        if self.ignored:
            return "ignored (mapping)"
        return "carried"


def known_field(header: str) -> str | None:
    return spark_id_field(header) or _named(header)


_QUALIFIER = re.compile(r"\([^)]*\)|\[[^\]]*\]")


def _named(header: str) -> str | None:
    """The field a header names: as written, else without a qualifier in brackets (`Breddegrad
    (WGS84)`, `Målepunkt ID [GSRN]`), else when every name of an `A/B` header names the same field
    (`Serienummer/VIN`)."""
    words = vocabulary()
    found = words.column(header)
    if found or not header:
        return found
    bare = _QUALIFIER.sub(" ", header).strip()
    if bare != header.strip() and (found := words.column(bare)):
        return found
    if "/" in bare:
        named = {words.column(part) for part in bare.split("/")}
        if len(named) == 1 and None not in named:
            return named.pop()
    return None


def match_columns(headers: list[str], mapping: Mapping | None = None) -> list[Column]:
    """Which field each header holds: the user's mapping first, then the known names."""
    columns = []
    for index, header in enumerate(headers):
        header = header.strip()
        named, mapped = mapping.column(header) if mapping and header else (False, None)
        if named:
            columns.append(Column(index, header, mapped, ignored=mapped is None, by="mapping"))
        elif header in OWN_COLUMNS:
            columns.append(Column(index, header, own=header))
        elif spark := spark_id_field(header):
            columns.append(Column(index, header, spark, by="spark id"))
        else:
            name = _named(header)
            columns.append(Column(index, header, name, by="name" if name else ""))
    return columns


def near_miss(header: str, taken: set[str]) -> str | None:
    """The field a header most likely misspells (`Lattitude`), when that field has no column yet.

    A misspelling is one or two edits (a transposition counts as one) in a name of five or more
    letters; `Customer name` is not a misspelt `customer number`."""
    key = normalise(header)
    if len(key) < 5:
        return None
    allowed = 1 if len(key) < 9 else 2
    best: tuple[int, str] | None = None
    for name, field_name in vocabulary().columns.items():
        if field_name in taken or len(name) < 5:
            continue
        distance = OSA.distance(key, name, score_cutoff=allowed)
        if distance <= allowed and (best is None or distance < best[0]):
            best = (distance, field_name)
    return best[1] if best else None


def looks_like_id(header: str) -> str | None:
    """A CRM column named like a Spark ID (`User ID`) that is not used as one."""
    key = normalise(header)
    return next((name for name in ID_FIELDS if key == normalise(name)), None)


def check_columns(sheet) -> None:
    """One column per field, a customer key, and no column that looks like a field left unused."""
    holder: dict[str, object] = {}
    for column in sheet.columns:
        if column.field is None:
            continue
        if column.field in holder:
            other = holder[column.field]
            raise InputError(
                f"columns {other.name!r} and {column.name!r} both hold {column.field}: keep the one you mean and "
                f'ignore the other (--map "{column.header}=" or --map "{other.header}="), or map it to another '
                f'field (--map "{column.header}=FIELD")'
            )
        holder[column.field] = column
    misses = []
    for column in sheet.columns:
        if column.field or column.own or column.ignored or not normalise(column.header):
            continue
        guess = near_miss(column.header, set(holder))
        if guess:
            misses.append(f"column {column.name!r} looks like {guess} but is not used: map it with "
                          f'--map "{column.header}={guess}", or ignore it with --map "{column.header}="')
    if "customer_id" not in holder and "user_id" not in holder:
        found = ", ".join(repr(c.header) for c in sheet.columns if c.header) or "(none)"
        raise InputError(
            f"{sheet.path.name} has no customer_id column (nor user_id). Headers found in row "
            f"{sheet.header_row} (the first row naming two or more known columns, else the fullest of the first "
            f"rows): {found}. Expected columns: {', '.join(c for c in FIELDS if c not in ID_FIELDS)}. "
            'Map yours with --map "Your Header=customer_id".'
            + ("\n" + "\n".join(misses) if misses else "")
        )
    if misses:
        raise InputError("\n".join(misses))


def column_uses(columns: list[Column]) -> list[tuple[str, str]]:
    """(header, what the tool does with it) for every column, for the print-out and the Summary sheet."""
    uses = []
    for column in columns:
        if not column.header and not column.field:
            continue
        use = column.use
        taken = {c.field for c in columns if c.field}
        if use == "carried" and (guess := near_miss(column.header, taken)):
            use = f"not used: looks like {guess} (map or ignore it)"
        elif use == "carried" and looks_like_id(column.header):
            spark = looks_like_id(column.header)
            use = (f"carried (not taken as the Spark {spark}: name it 'spark {spark.replace('_', ' ')}' or "
                   f'--map "{column.header}={spark}" if it is one)')
        uses.append((column.name, use))
    return uses
