"""The Energy Coordination API's OpenAPI document, loaded as data.

Volue publishes the contract; we ship a copy inside the package and take paths, enums and
request schemas from it, in the client and in the emulator alike, so nothing here can drift
from what the vendor says by being retyped.
"""

from __future__ import annotations

import enum
import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:  # the validators are imported where first used: most commands never check a body
    from openapi_schema_validator import OAS30WriteValidator
    from referencing import Registry


SPEC_NAME = "ec-sandbox-swagger.json"
_SPEC_URI = "urn:onboard:ec-sandbox-swagger"


@functools.cache
def document() -> dict[str, Any]:
    return json.loads(resources.files("onboard").joinpath("data").joinpath(SPEC_NAME).read_text("utf-8"))


def spec_path() -> str:
    return str(resources.files("onboard").joinpath("data").joinpath(SPEC_NAME))


def base_path() -> str:
    """The path prefix every operation lives under (`/energy-coordination/v1`)."""
    return document()["servers"][0]["url"].rstrip("/")


def schema(name: str) -> dict[str, Any]:
    return document()["components"]["schemas"][name]


def enum_values(name: str) -> tuple[str, ...]:
    return tuple(schema(name)["enum"])


LocationType = enum.StrEnum("LocationType", [(v, v) for v in enum_values("LocationType")])
ResourceType = enum.StrEnum("ResourceType", [(v, v) for v in enum_values("ResourceType")])


def path_segment(value: str) -> str:
    """Percent-encode a client-chosen ID so it stays exactly one path segment."""
    return quote(value, safe="")


@dataclass(frozen=True)
class Operation:
    id: str
    method: str
    template: str
    request_schema: str | None
    responses: dict[int, tuple[str, ...]]
    query: tuple[str, ...] = ()

    def media_types(self, status: int) -> tuple[str, ...]:
        """What the spec documents as the body of `status`; empty when it documents none."""
        return self.responses.get(status, ())

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.template.strip("/").split("/"))

    def path(self, **params: str) -> str:
        """The operation's path with every parameter encoded as one segment."""
        parts = []
        for segment in self.segments:
            if segment.startswith("{"):
                parts.append(path_segment(params[segment[1:-1]]))
            else:
                parts.append(segment)
        return "/" + "/".join(parts)

    @property
    def literal_rank(self) -> int:
        """Fewer parameters first: `/users/batch` must win over `/users/{userId}`."""
        return sum(s.startswith("{") for s in self.segments)

    def match(self, segments: list[str]) -> dict[str, str] | None:
        """Path parameters when `segments` (already decoded) fit this operation's template."""
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for want, got in zip(self.segments, segments, strict=True):
            if want.startswith("{"):
                params[want[1:-1]] = got
            elif want != got:
                return None
        return params


@functools.cache
def operations() -> dict[str, Operation]:
    found: dict[str, Operation] = {}
    for template, item in document()["paths"].items():
        for method, op in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            ref = (
                op.get("requestBody", {})
                .get("content", {})
                .get("application/json", {})
                .get("schema", {})
                .get("$ref")
            )
            found[op["operationId"]] = Operation(
                id=op["operationId"],
                method=method.upper(),
                template=template,
                request_schema=ref.rsplit("/", 1)[-1] if ref else None,
                responses={
                    int(status): tuple(media for media, body in answer.get("content", {}).items() if body)
                    for status, answer in op.get("responses", {}).items()
                },
                query=tuple(p["name"] for p in op.get("parameters", []) if p.get("in") == "query"),
            )
    return found


def operation(operation_id: str) -> Operation:
    return operations()[operation_id]


@functools.cache
def _registry() -> Registry:
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    return Registry().with_resource(_SPEC_URI, Resource.from_contents(document(), default_specification=DRAFT4))


@functools.cache
def request_validator(schema_name: str) -> OAS30WriteValidator:
    from openapi_schema_validator import OAS30WriteValidator

    return OAS30WriteValidator({"$ref": f"{_SPEC_URI}#/components/schemas/{schema_name}"}, registry=_registry())


class _Untranslatable(Exception):
    """A schema using a keyword whose meaning `_as_written` cannot carry over exactly."""


_EXACT = frozenset({
    "type", "nullable", "properties", "additionalProperties", "required", "items", "enum", "allOf", "anyOf", "oneOf",
    "not", "$ref", "format", "readOnly", "writeOnly", "deprecated", "example", "description", "title", "default",
})
"""Keywords `_as_written` renders exactly; a schema with any other (a `pattern`, written for ECMA
regexes, a `discriminator`, `multipleOf` on floats...) keeps to jsonschema alone."""
_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object"})
_COMPONENT = "#/components/schemas/"


def _as_written(schema: Any, named: set[str]) -> Any:
    """A request schema as `request_validator` reads it, in plain JSON Schema draft 4: a readOnly
    field refused wherever it appears and not required, `nullable` as a type that admits null, a
    `$ref`'s siblings kept (draft 4 would ignore them; the OpenAPI validator does not). Adds the
    components it refers to to `named`; raises `_Untranslatable` for what it cannot render exactly."""
    if not isinstance(schema, dict):
        raise _Untranslatable(repr(schema))
    if unknown := set(schema) - _EXACT:
        raise _Untranslatable(", ".join(sorted(unknown)))
    if schema.get("readOnly") is True:
        return {"not": {}}
    plain: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            if not isinstance(value, str) or value not in _TYPES:
                raise _Untranslatable(f"type {value!r}")
            value = [value, "null"] if schema.get("nullable") is True else value
        elif key == "$ref":
            if not isinstance(value, str) or not value.startswith(_COMPONENT):
                raise _Untranslatable(f"$ref {value!r}")
            named.add(value.removeprefix(_COMPONENT))
        elif key == "properties":
            value = {name: _as_written(sub, named) for name, sub in value.items()}
        elif key == "required":
            properties = schema.get("properties", {})
            value = [name for name in value if not (isinstance(properties.get(name), dict)
                                                    and properties[name].get("readOnly") is True)]
            if not value:
                continue
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            value = _as_written(value, named)
        elif key in ("allOf", "anyOf", "oneOf"):
            value = [_as_written(s, named) for s in value]
        elif key not in ("enum", "additionalProperties"):
            continue  # nullable (in `type`), annotations, and format: `request_validator` has no format checker
        plain[key] = value
    if "$ref" in plain and len(plain) > 1:
        return {"allOf": [{"$ref": plain.pop("$ref")}, plain]}
    return plain


@functools.cache
def _request_fits(schema_name: str) -> Any | None:
    """A compiled check (jsonschema-rs) that a request body fits the named schema, accepting no
    body `request_validator` refuses; None where a schema it reaches uses a keyword it cannot
    render exactly, and jsonschema alone decides."""
    import jsonschema_rs

    schemas: dict[str, Any] = {}
    todo = {schema_name}
    try:
        while todo:
            name = todo.pop()
            named: set[str] = set()
            schemas[name] = _as_written(schema(name), named)
            todo |= named - set(schemas)
    except _Untranslatable:
        return None
    return jsonschema_rs.Draft4Validator(
        {"allOf": [{"$ref": f"{_COMPONENT}{schema_name}"}], "components": {"schemas": schemas}},
        validate_formats=False)


def request_problems(schema_name: str, body: Any) -> list[str]:
    """Every way `body` breaks the named request schema, as `field: reason` lines.

    The compiled check answers for the bodies that fit (a few microseconds, where jsonschema takes
    tens per entity); jsonschema decides, and words the reasons, for every other body, so a body
    the two read differently (a NaN, which jsonschema-rs calls no number) gets jsonschema's verdict."""
    fits = _request_fits(schema_name)
    try:
        if fits is not None and fits.is_valid(body):
            return []
    except ValueError:  # a value jsonschema-rs cannot take in: jsonschema decides
        pass
    problems = []
    for error in sorted(request_validator(schema_name).iter_errors(body), key=lambda e: list(e.absolute_path)):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        problems.append(f"{where or 'body'}: {error.message}")
    return problems


# answers, read tolerantly


def _ignored(validator, value, instance, schema):
    return iter(())


def _present(validator, properties, instance, schema):
    """`properties`, where a null stands for an absent optional field (the vendor's own examples
    answer `"coordinates": null` though the schema does not say nullable)."""
    from openapi_schema_validator import OAS30ReadValidator

    if validator.is_type(instance, "object"):
        required = set(schema.get("required", ()))
        instance = {k: v for k, v in instance.items() if v is not None or k in required}
    yield from OAS30ReadValidator.VALIDATORS["properties"](validator, properties, instance, schema)


@functools.cache
def tolerant_reader() -> type:
    """The answer schemas' types and required fields, which the client relies on; not the rest, so
    that a field or an enum value the API adds later does not stop a run."""
    from jsonschema import validators
    from openapi_schema_validator import OAS30ReadValidator

    return validators.extend(OAS30ReadValidator, {
        "properties": _present, "additionalProperties": _ignored, "enum": _ignored,
    })


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _answer_schema(operation_id: str, status: int) -> tuple[str, dict[str, Any]] | None:
    """Where in the document the JSON body of `status` is described, and the schema; None when the
    contract documents none."""
    op = operation(operation_id)
    content = document()["paths"][op.template][op.method.lower()]["responses"].get(str(status), {}).get("content", {})
    for media, body in content.items():
        if media.endswith("json") and "schema" in body:
            where = _pointer("paths", op.template, op.method.lower(), "responses", str(status), "content", media,
                             "schema")
            return where, body["schema"]
    return None


@functools.cache
def answer_validator(operation_id: str, status: int) -> Any | None:
    """A `tolerant_reader` of what the contract documents as the JSON body of `status`; None when
    it documents none."""
    found = _answer_schema(operation_id, status)
    if found is None:
        return None
    return tolerant_reader()({"$ref": f"{_SPEC_URI}#/{found[0]}"}, registry=_registry())


_SUBSCHEMA = ("items", "not", "additionalItems")
_SUBSCHEMAS = ("allOf", "anyOf", "oneOf")


def _as_read(schema: Any, nullable: bool = False) -> Any:
    """A schema as `tolerant_reader` reads it, in plain JSON Schema draft 4: no
    additionalProperties, no enum, and null allowed where the reader allows it (`nullable`, or an
    optional property). A JSON Schema validator without extension points then accepts the same bodies."""
    if not isinstance(schema, dict):
        return schema
    plain: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("additionalProperties", "enum", "nullable"):
            continue
        if key == "properties":
            required = set(schema.get("required", ()))
            value = {name: _as_read(sub, nullable=name not in required) for name, sub in value.items()}
        elif key in _SUBSCHEMA:
            value = [_as_read(s) for s in value] if isinstance(value, list) else _as_read(value)
        elif key in _SUBSCHEMAS:
            value = [_as_read(s) for s in value]
        plain[key] = value
    if nullable or schema.get("nullable") is True:
        return {"anyOf": [{"type": "null"}, plain]}
    return plain


@functools.cache
def _answer_fits(operation_id: str, status: int) -> Any | None:
    """A compiled check (jsonschema-rs) that a body fits what `answer_validator` checks: some
    microseconds where jsonschema takes a tenth of a millisecond per entity; jsonschema still
    says what is wrong when it does not fit."""
    import jsonschema_rs

    found = _answer_schema(operation_id, status)
    if found is None:
        return None
    schemas = {name: _as_read(s) for name, s in document()["components"]["schemas"].items()}
    return jsonschema_rs.Draft4Validator({"allOf": [_as_read(found[1])], "components": {"schemas": schemas}},
                                         validate_formats=False)


def answer_problems(operation_id: str, status: int, body: Any) -> list[str] | None:
    """How `body` misses the shape the contract documents for this answer (`[]`: it fits); None
    when the contract documents no body for it."""
    fits = _answer_fits(operation_id, status)
    if fits is None:
        return None
    if fits.is_valid(body):
        return []
    problems = []
    for error in sorted(answer_validator(operation_id, status).iter_errors(body), key=lambda e: list(e.absolute_path)):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        problems.append(f"{where or 'body'}: {error.message}")
    return problems
