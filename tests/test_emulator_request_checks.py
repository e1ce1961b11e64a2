"""The emulator's compiled request check (jsonschema-rs) refuses exactly what jsonschema refuses.

Bodies are generated from the spec's own request schemas: mostly of the right shape, with fields
dropped, unknown fields added, values of the wrong type, enum values and near-misses, nulls where
the schema allows them and where it does not, NaN, infinities and huge numbers, so that both sides
of every keyword are exercised.
"""

from __future__ import annotations

import math
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS30WriteValidator

from onboard import contract

REQUEST_SCHEMAS = sorted({op.request_schema for op in contract.operations().values() if op.request_schema})
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.sampled_from(["Vehicle", "vehicle", "Unknown", "Residential ", "", "59.9", "707057500012345671"]),
)
ANY_JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def _resolved(schema: dict) -> dict:
    while "$ref" in schema:
        schema = {**contract.schema(schema["$ref"].rsplit("/", 1)[-1]), **{k: v for k, v in schema.items()
                                                                           if k != "$ref"}}
    return schema


TYPED = {"string": st.text(max_size=6), "number": st.floats(allow_nan=False, allow_infinity=False) | st.integers(),
         "integer": st.integers(), "boolean": st.booleans()}


def fitting(schema: dict, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of `schema`'s shape: its required fields, some optional ones, values of its types."""
    schema = _resolved(schema)
    parts = schema.get("allOf", []) + schema.get("oneOf", []) + schema.get("anyOf", [])
    if depth > 6:
        found = ANY_JSON
    elif parts:
        found = st.one_of([fitting(part, depth + 1) for part in parts])
    elif "enum" in schema:
        found = st.sampled_from(schema["enum"])
    elif schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        required = {name for name in schema.get("required", ()) if not properties.get(name, {}).get("readOnly")}
        found = st.fixed_dictionaries(
            {name: fitting(sub, depth + 1) for name, sub in properties.items() if name in required},
            optional={name: fitting(sub, depth + 1) for name, sub in properties.items() if name not in required})
    elif schema.get("type") == "array":
        found = st.lists(fitting(schema.get("items", {}), depth + 1), max_size=3)
    else:
        found = TYPED.get(schema.get("type"), ANY_JSON)
    return st.none() | found if schema.get("nullable") else found


def mutated(data: st.DataObject, value: Any) -> Any:
    """`value` with one change somewhere inside: a field dropped, added or renamed, or a value
    replaced by null or by anything JSON can hold."""
    children = list(value.items()) if isinstance(value, dict) else list(enumerate(value)) \
        if isinstance(value, list) else []
    how = data.draw(st.sampled_from(["descend"] * 3 * bool(children) + ["replace", "null"]
                                    + ["drop", "rename"] * bool(children) + ["add"] * isinstance(value, dict)))
    if how == "replace":
        return data.draw(ANY_JSON)
    if how == "null":
        return None
    key = data.draw(st.sampled_from([k for k, _ in children])) if children else None
    if how == "add":
        return {**value, data.draw(st.text(max_size=8)): data.draw(ANY_JSON)}
    if how == "drop":
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k != key}
        return value[:key] + value[key + 1:]
    if how == "rename" and isinstance(value, dict):
        return {(k.upper() if k == key else k): v for k, v in value.items()}
    changed = mutated(data, value[key]) if how == "descend" else data.draw(ANY_JSON)
    return {**value, key: changed} if isinstance(value, dict) else [*value[:key], changed, *value[key + 1:]]


def bodies(data: st.DataObject, schema: dict) -> Any:
    """A body of the schema's shape, half the time changed in one place."""
    body = data.draw(fitting(schema))
    return mutated(data, body) if data.draw(st.booleans()) else body


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere: JSON has neither, Python's json module reads both."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _same_verdicts(name: str, data: st.DataObject) -> None:
    body = bodies(data, contract.schema(name))
    valid = contract.request_validator(name).is_valid(body)
    assert (contract.request_problems(name, body) == []) == valid
    fits = contract._request_fits(name)
    if fits is not None and _finite(body):
        assert fits.is_valid(body) == valid, body


@pytest.mark.parametrize("name", REQUEST_SCHEMAS)
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_the_compiled_check_refuses_exactly_what_jsonschema_refuses(name, data):
    _same_verdicts(name, data)


@pytest.mark.slow
@pytest.mark.parametrize("name", REQUEST_SCHEMAS)
@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_the_compiled_check_refuses_exactly_what_jsonschema_refuses_thoroughly(name, data):
    _same_verdicts(name, data)


def test_every_request_the_emulator_serves_has_a_compiled_check():
    from onboard.emulator.app import IMPLEMENTED

    served = {contract.operation(name).request_schema for name in IMPLEMENTED} - {None}
    assert served and all(contract._request_fits(name) is not None for name in served)


@pytest.mark.parametrize(("name", "body"), [
    ("PostUserRequest", {"userId": "u1", "userid": "u1"}),
    ("PostUserRequest", {"userId": None}),
    ("PostLocationRequest", {"locationId": "l1", "locationType": "residential"}),
    ("PostLocationRequest", {"locationId": "l1", "coordinates": {"latitude": 1, "longitude": 2, "altitude": 3}}),
    ("PostLocationRequest", {"locationId": "l1", "coordinates": None}),
    ("PostLocationsBatchRequest", {"locations": [{"locationId": "l1"}]}),
    ("PostVehicleResourceRequest", {"resourceId": "r1", "resourceType": True}),
])
def test_a_refused_body_keeps_jsonschemas_words(name, body):
    problems = contract.request_problems(name, body)
    assert problems
    assert len(problems) == len(list(contract.request_validator(name).iter_errors(body)))


@pytest.mark.parametrize("body", [{"latitude": math.nan, "longitude": 1.0}, {"latitude": math.inf, "longitude": 1.0},
                                  {"latitude": 10**400, "longitude": 1}])
def test_numbers_jsonschema_rs_reads_otherwise_get_jsonschemas_verdict(body):
    """jsonschema-rs calls NaN and the infinities no number; jsonschema accepts them, and so does
    the check (the emulator's own rules then refuse a latitude out of range)."""
    assert contract.request_problems("PostLocationRequest", {"locationId": "l1", "coordinates": body}) == []


# keywords the spec's request schemas do not use today, rendered all the same

SYNTHETIC = {
    "type": "object",
    "required": ["id", "created"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "nullable": True, "enum": ["a", "b"]},
        "created": {"type": "string", "readOnly": True},
        "note": {"type": "string", "writeOnly": True, "format": "int32", "example": {"$ref": "nowhere"}},
        "count": {"type": "integer", "format": "int32"},
        "tags": {"type": "array", "items": {"type": "string"}, "nullable": True},
    },
}


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_read_only_nullable_and_formats_mean_what_the_openapi_validator_makes_of_them(data):
    body = bodies(data, SYNTHETIC)
    fast = jsonschema_rs.Draft4Validator(contract._as_written(SYNTHETIC, set()), validate_formats=False)
    if _finite(body):
        assert fast.is_valid(body) == OAS30WriteValidator(SYNTHETIC).is_valid(body), body


@pytest.mark.parametrize("body", [{"id": "a"}, {"id": None, "count": 2**40}, {"id": "a", "created": "x"},
                                  {"id": "c"}, {"id": "a", "count": 1.0}, {"id": "a", "tags": None}])
def test_the_synthetic_cases_that_matter(body):
    fast = jsonschema_rs.Draft4Validator(contract._as_written(SYNTHETIC, set()), validate_formats=False)
    assert fast.is_valid(body) == OAS30WriteValidator(SYNTHETIC).is_valid(body)


@pytest.mark.parametrize("body", [{}, {"latitude": 1}, {"latitude": 1, "x": 1}, None, "x"])
def test_a_refs_siblings_still_apply(body):
    """Draft 4 ignores what stands beside a `$ref`; the OpenAPI validator does not."""
    beside = {"required": ["latitude"]}
    named: set[str] = set()
    written = contract._as_written({"$ref": "#/components/schemas/Coordinate", **beside}, named)
    assert named == {"Coordinate"}
    fast = jsonschema_rs.Draft4Validator({"allOf": [written], "components": {"schemas": {
        "Coordinate": contract._as_written(contract.schema("Coordinate"), set())}}})
    slow = OAS30WriteValidator({"$ref": f"{contract._SPEC_URI}#/components/schemas/Coordinate", **beside},
                               registry=contract._registry())
    assert fast.is_valid(body) == slow.is_valid(body)
    assert not fast.is_valid({})


def test_a_keyword_it_cannot_render_exactly_leaves_jsonschema_to_decide():
    with pytest.raises(contract._Untranslatable):
        contract._as_written({"type": "string", "pattern": "^\\d+$"}, set())
    assert contract._request_fits("PostReportRequest") is None  # a discriminator
    assert contract.request_problems("PostReportRequest", {"payload": 1}) != []


def test_a_body_jsonschema_rs_cannot_take_in_gets_jsonschemas_verdict():
    """jsonschema-rs raises on a field name that is not Unicode text (the emulator refuses one before
    it checks the schema; `request_problems` must not depend on that)."""
    assert contract.request_problems("PostUserRequest", {"userId": "u1", "\ud800": 1}) == [
        "body: Additional properties are not allowed ('\\ud800' was unexpected)"]
