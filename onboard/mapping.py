"""What the partner's words mean: which column holds which field, which to ignore, what a value says.

Two sources, the user's first: a mapping (`--map`, `--map-value`, `--mapping FILE`) and the
built-in vocabulary (`data/vocabulary.toml`: English and Nordic names for columns and values).
Both are matched the same way, ignoring case, spaces and punctuation, so `Målepunkt-ID` and
`målepunkt id` are one name.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterable
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from onboard.contract import LocationType, ResourceType
from onboard.errors import ConfigError, UsageError

FIELD_NAMES = ("customer_id", "user_id", "location_ref", "location_id", "location_type", "meter_point_ids",
               "latitude", "longitude", "resource_ref", "resource_id", "resource_type", "resource_meter_point_id")
ID_FIELDS = ("user_id", "location_id", "resource_id")
CHOICES: dict[str, tuple[str, ...]] = {
    "location_type": tuple(m.value for m in LocationType),
    "resource_type": tuple(m.value for m in ResourceType),
}
"""Fields whose values are one of the API's enums."""


def normalise(text: str) -> str:
    """A name as matching sees it: case, spaces, punctuation and `_` do not count."""
    return re.sub(r"[\W_]+", "", text.casefold())


@dataclass(frozen=True)
class Vocabulary:
    """Names for columns and values, each normalised name pointing at one field or value."""

    columns: dict[str, str]
    values: dict[str, dict[str, str]]

    def column(self, header: str) -> str | None:
        key = normalise(header)
        if not key:
            return None
        return self.columns.get(key) or (self.columns.get(key[:-1]) if key.endswith("s") else None)

    def value(self, field_name: str, text: str) -> str | None:
        return self.values.get(field_name, {}).get(normalise(text))


@functools.cache
def vocabulary() -> Vocabulary:
    """The built-in vocabulary, with every field's own name and every enum value as names too."""
    data = tomllib.loads(resources.files("onboard").joinpath("data", "vocabulary.toml").read_text("utf-8"))
    columns: dict[str, str] = {}
    for name in FIELD_NAMES:
        if name not in ID_FIELDS:
            columns[normalise(name)] = name
    for name, languages in data["columns"].items():
        for alias in (a for names in languages.values() for a in names):
            key = normalise(alias)
            columns.setdefault(key, name)
            columns.setdefault(key + "s", name)
    values: dict[str, dict[str, str]] = {}
    for name, choices in CHOICES.items():
        table = values.setdefault(name, {})
        for choice in choices:
            table[normalise(choice)] = choice
        for choice, languages in data["values"].get(name, {}).items():
            for alias in (a for names in languages.values() for a in names):
                table.setdefault(normalise(alias), choice)
    return Vocabulary(columns, values)


def spark_id_field(header: str) -> str | None:
    """The Spark ID a header clearly means: the tool's own output column names (`user_id`), or a
    header that starts with Spark (`Spark user ID`, `spark_locationId`)."""
    text = header.strip().casefold()
    if text in ID_FIELDS:
        return text
    key = normalise(header)
    if key.startswith("spark"):
        rest = key.removeprefix("spark")
        for name in ID_FIELDS:
            if rest == normalise(name):
                return name
    return None


@dataclass
class Mapping:
    """The user's own words: header -> field (None: ignore the column), and per field, value -> value.

    Keys are kept as the user wrote them, so one that matches nothing can be reported in their words.
    """

    columns: dict[str, str | None] = field(default_factory=dict)
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    _words: dict[str, dict[str, str]] = field(default_factory=dict, init=False, repr=False, compare=False)
    """Per field, each value mapping's word as matching sees it -> the word as written."""

    def __post_init__(self) -> None:
        for field_name, table in self.values.items():
            self._words[field_name] = {normalise(word): word for word in table}

    def column(self, header: str) -> tuple[bool, str | None]:
        """(the mapping names this header, the field it maps to or None for ignored)."""
        key = normalise(header)
        for given, name in self.columns.items():
            if normalise(given) == key:
                return True, name
        return False, None

    def value(self, field_name: str, text: str) -> str | None:
        word = self.word(field_name, text)
        return None if word is None else self.values[field_name][word]

    def word(self, field_name: str, text: str) -> str | None:
        """The mapping's own key that `text` matches, as the user wrote it."""
        return self._words.get(field_name, {}).get(normalise(text))

    def value_keys(self) -> Iterable[tuple[str, str]]:
        for field_name, table in self.values.items():
            for given in table:
                yield field_name, given

    def merged(self, other: Mapping) -> Mapping:
        """This mapping with `other`'s entries on top."""
        values = {f: dict(t) for f, t in self.values.items()}
        for field_name, table in other.values.items():
            values.setdefault(field_name, {}).update(table)
        return Mapping({**self.columns, **other.columns}, values)

    # building one

    @classmethod
    def of(cls, data: AnyMapping[str, Any], where: str) -> Mapping:
        """From a mapping file's content: `[columns]` (header = field, "" to ignore), `ignore = [...]`,
        `[values.<field>]` (word = value). A file holding only `header = field` lines is `[columns]`."""
        known = {"columns", "ignore", "values"}
        if not any(k in data for k in known):
            data = {"columns": data}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown section {unknown[0]!r}; a mapping file has [columns], "
                              "ignore = [...] and [values.<field>]")
        mapping = cls()
        columns = data.get("columns") or {}
        if not isinstance(columns, dict):
            raise ConfigError(f"{where}: [columns] must map each source header to a field, "
                              'e.g. "Kundenummer" = "customer_id"')
        columns, ignore = dict(columns), data.get("ignore") or []
        if isinstance(columns.get("ignore"), list):  # `ignore = [...]` written below [columns] in TOML
            ignore = [*ignore, *columns.pop("ignore")] if isinstance(ignore, list) else ignore
        for header, name in columns.items():
            mapping.add_column(str(header), name, where)
        if isinstance(ignore, str) or not isinstance(ignore, list):
            raise ConfigError(f'{where}: ignore must be a list of headers, e.g. ignore = ["Type", "Notes"]')
        for header in ignore:
            mapping.add_column(str(header), "", where)
        values = data.get("values") or {}
        if not isinstance(values, dict):
            raise ConfigError(f'{where}: [values.<field>] tables map a word to a value, e.g. "Varmepumpe" = "HVAC"')
        for name, table in values.items():
            if not isinstance(table, dict):
                raise ConfigError(f'{where}: [values.{name}] must map words to values, e.g. "Varmepumpe" = "HVAC"')
            for word, value in table.items():
                mapping.add_value(str(name), str(word), value, where)
        return mapping

    def add_column(self, header: str, name: Any, where: str) -> None:
        if not isinstance(name, str):
            raise ConfigError(f"{where}: map {header!r} to a field name (text), not {name!r}")
        name = name.strip()
        if name and name not in FIELD_NAMES:
            raise ConfigError(f"{where}: mapping {header!r} to {name!r}: there is no such field; the fields are "
                              f"{', '.join(FIELD_NAMES)} (or nothing, to ignore the column)")
        if not header.strip():
            raise ConfigError(f"{where}: a mapping needs a header to map, got an empty one")
        self.columns[header.strip()] = name or None

    def add_value(self, name: str, word: str, value: Any, where: str) -> None:
        if name not in FIELD_NAMES:
            raise ConfigError(f"{where}: [values.{name}]: there is no field {name!r}; the fields are "
                              f"{', '.join(FIELD_NAMES)}")
        if not isinstance(value, str) or not word.strip():
            raise ConfigError(f"{where}: [values.{name}] maps a word to a value (text): {word!r} = {value!r}")
        if name in CHOICES:
            chosen = next((c for c in CHOICES[name] if normalise(c) == normalise(value)), None)
            if chosen is None:
                raise ConfigError(f"{where}: {name} {word!r} = {value!r}: {value!r} is not one of "
                                  f"{', '.join(CHOICES[name])}")
            value = chosen
        self.values.setdefault(name, {})[word.strip()] = value.strip()
        self._words.setdefault(name, {})[normalise(word)] = word.strip()


def load(file: Path | str | None = None, maps: Iterable[str] = (), map_values: Iterable[str] = ()) -> Mapping:
    """The user's mapping: the file (TOML or YAML) first, then each `--map` and `--map-value` on top."""
    mapping = Mapping()
    if file is not None:
        mapping = read_file(Path(file))
    for item in maps:
        header, equals, name = item.rpartition("=")
        if not equals or not header.strip():
            raise UsageError(f'--map {item!r}: write it as "Source Header=field", or "Source Header=" to ignore '
                             "the column")
        mapping.add_column(header, name, f"--map {item!r}")
    for item in map_values:
        name, colon, rest = item.partition(":")
        word, equals, value = rest.rpartition("=")
        if not colon or not equals or not word.strip():
            raise UsageError(f'--map-value {item!r}: write it as "field:their word=value", e.g. '
                             '"resource_type:Varmepumpe=HVAC"')
        mapping.add_value(name.strip(), word, value, f"--map-value {item!r}")
    return mapping


def read_file(path: Path) -> Mapping:
    where = f"--mapping {path}"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text: save it as UTF-8") from None
    toml = path.suffix.lower() == ".toml"
    try:
        loaded = tomllib.loads(text) if toml else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{where} is not valid {'TOML' if toml else 'YAML'}: {exc}") from None
    if loaded is None:
        return Mapping()
    if not isinstance(loaded, dict):
        raise ConfigError(f'{where} must map each source header to a field name, e.g. "Kundenummer" = "customer_id"')
    return Mapping.of(loaded, where)
