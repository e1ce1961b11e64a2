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
from typing import Any
from urllib.parse import quote

from jsonschema import validators
from openapi_schema_validator import OAS30ReadValidator, OAS30WriteValidator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

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
    return Registry().with_resource(_SPEC_URI, Resource.from_contents(document(), default_specification=DRAFT4))


@functools.cache
def request_validator(schema_name: str) -> OAS30WriteValidator:
    return OAS30WriteValidator({"$ref": f"{_SPEC_URI}#/components/schemas/{schema_name}"}, registry=_registry())


def request_problems(schema_name: str, body: Any) -> list[str]:
    """Every way `body` breaks the named request schema, as `field: reason` lines."""
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
    if validator.is_type(instance, "object"):
        required = set(schema.get("required", ()))
        instance = {k: v for k, v in instance.items() if v is not None or k in required}
    yield from OAS30ReadValidator.VALIDATORS["properties"](validator, properties, instance, schema)


TolerantReader = validators.extend(OAS30ReadValidator, {
    "properties": _present, "additionalProperties": _ignored, "enum": _ignored,
})
"""The answer schemas' types and required fields, which the client relies on; not the rest, so
that a field or an enum value the API adds later does not stop a run."""


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@functools.cache
def answer_validator(operation_id: str, status: int) -> Any | None:
    """A `TolerantReader` of what the contract documents as the JSON body of `status`; None when
    it documents none."""
    op = operation(operation_id)
    content = document()["paths"][op.template][op.method.lower()]["responses"].get(str(status), {}).get("content", {})
    for media, body in content.items():
        if media.endswith("json") and "schema" in body:
            where = _pointer("paths", op.template, op.method.lower(), "responses", str(status), "content", media,
                             "schema")
            return TolerantReader({"$ref": f"{_SPEC_URI}#/{where}"}, registry=_registry())
    return None


def answer_problems(operation_id: str, status: int, body: Any) -> list[str] | None:
    """How `body` misses the shape the contract documents for this answer (`[]`: it fits); None
    when the contract documents no body for it."""
    validator = answer_validator(operation_id, status)
    if validator is None:
        return None
    problems = []
    for error in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        problems.append(f"{where or 'body'}: {error.message}")
    return problems
