"""An emulator of the Energy Coordination API, as its OpenAPI document and Volue's guide describe it.

Routes, request schemas and error body shapes all come from the spec (`onboard.contract`); the
handlers below only add what the spec leaves to the service: who owns what, and what is refused.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from onboard import contract
from onboard.emulator.faults import AnswerLost, EmulatorSettings, Faults
from onboard.emulator.store import Enrollment, Location, Resource, Store

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
BATCH_OPERATIONS = frozenset({"PostUsers", "PostLocations"})
MAX_NESTING = 32  # the spec's deepest request body nests 4 levels

log = logging.getLogger("onboard.emulator")


class Refused(Exception):
    """A request the service turns down; rendered in the shape the spec gives that status."""

    def __init__(self, status: int, message: str = "", field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass
class Tokens:
    ttl: float
    client_id: str | None = None
    client_secret: str | None = None
    clock: Callable[[], float] = time.monotonic
    issued: dict[str, float] = field(default_factory=dict)

    def issue(self, client_id: str, client_secret: str) -> str:
        if not client_id or not client_secret:
            raise Refused(400, "invalid_client")
        if self.client_id is not None and (client_id, client_secret) != (self.client_id, self.client_secret):
            raise Refused(400, "invalid_client")
        token = secrets.token_urlsafe(24)
        self.issued[token] = self.clock() + self.ttl
        return token

    def valid(self, token: str) -> bool:
        expires = self.issued.get(token)
        if expires is None:
            return False
        if self.clock() >= expires:
            del self.issued[token]
            return False
        return True

    def revoke(self, token: str) -> None:
        self.issued.pop(token, None)


@dataclass
class Call:
    params: dict[str, str]
    body: Any
    query: dict[str, list[str]]


# answers in the spec's response shapes


def _user(user_id: str) -> dict:
    return {"userId": user_id}


def _location(loc: Location) -> dict:
    answer: dict[str, Any] = {
        "locationId": loc.location_id,
        "locationType": loc.location_type,
        "meterPointId": loc.meter_point_ids[0] if loc.meter_point_ids else None,
        "meterPointIds": loc.meter_point_ids,
        "userId": loc.user_id,
    }
    if loc.latitude is not None:
        answer["coordinates"] = {"latitude": loc.latitude, "longitude": loc.longitude}
    return answer


def _enrollment(user_id: str, enrollment: Enrollment | None) -> dict:
    if enrollment is None:
        return {"userId": user_id, "isEnrolled": False, "enrollmentId": None, "enrollmentDate": None}
    return {"userId": user_id, "isEnrolled": True, "enrollmentId": enrollment.enrollment_id,
            "enrollmentDate": enrollment.enrolled_at}


def _page(query: dict[str, list[str]]) -> tuple[int, int]:
    """The page asked for and its size, clamped as the service documents ("Maximum pageSize is 1000")."""
    page = max(1, _int_query(query, "page", 1))
    size = _int_query(query, "pageSize", DEFAULT_PAGE_SIZE)
    return page, DEFAULT_PAGE_SIZE if size < 1 else min(size, MAX_PAGE_SIZE)


def _pagination(page: int, size: int, total: int) -> dict:
    pages = math.ceil(total / size)
    return {
        "totalRecords": total,
        "pageSize": size,
        "currentPage": page,
        "totalPages": pages,
        "nextPage": page + 1 if page < pages else None,
        "previousPage": page - 1 if page > 1 else None,
    }


def _resource(res: Resource) -> dict:
    return {
        "resourceId": res.resource_id,
        "resourceType": res.resource_type,
        "userId": res.user_id,
        "locationId": res.location_id,
        "meterPointId": res.meter_point_id,
    }


# what no request may carry, whatever its operation


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, counted as it streams in and refused once past `limit`, so that a client posting
    gigabytes costs the emulator `limit` bytes of memory, never the whole body."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(413, f"the request body is larger than {limit} bytes")
    return bytes(body)


def _check_text(value: str, where: str) -> None:
    """Refuse a string that is not Unicode text: a lone surrogate, as JSON's `\\ud800` escape or the
    bytes UTF-8 forbids decode to. No store, log or UTF-8 answer can hold one."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused(400, f"{where} is not valid text: it holds a lone surrogate or bytes that are not UTF-8",
                      where) from None


def _check_json(value: Any, where: str = "", depth: int = 0) -> None:
    """Refuse what parsed JSON can hold that the API cannot: text that is not Unicode, and nesting
    no request schema has (the schema validator recurses as deep as the body does)."""
    if depth > MAX_NESTING:
        raise Refused(400, f"the request body nests deeper than {MAX_NESTING} levels")
    if isinstance(value, str):
        _check_text(value, where or "body")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, f"a field name in {where or 'body'}")
            _check_json(item, f"{where}.{key}" if where else key, depth + 1)


# rules the schemas leave to the service


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode's control characters (Cc), C0, DEL and C1


def _check_id_text(value: str, name: str, field: str = "") -> None:
    """Refuse an ID holding a control character (a NUL, a line break, a tab, an escape): the
    service's IDs end up in URLs, logs and spreadsheet cells, where such a character breaks or
    hides what follows it. The tool refuses the same IDs in the sheet."""
    if found := _CONTROL.search(value):
        raise Refused(400, f"{name} holds a control character (U+{ord(found[0]):04X}): an ID cannot hold line breaks,"
                           " tabs or other control characters", field or name)


def _id(value: str, name: str) -> str:
    if not value.strip():
        raise Refused(400, f"{name} must not be empty", name)
    _check_id_text(value, name)
    return value


def _location_from(body: dict, location_id: str, user_id: str, where: str = "") -> Location:
    meter_point_ids = list(body.get("meterPointIds") or [])
    if body.get("meterPointId") and body["meterPointId"] not in meter_point_ids:
        meter_point_ids.append(body["meterPointId"])
    for mpid in meter_point_ids:
        if not mpid.strip():
            raise Refused(400, f"{where}meterPointIds must not hold an empty id", "meterPointIds")
        _check_id_text(mpid, f"{where}meterPointIds", "meterPointIds")
    coordinates = body.get("coordinates")
    latitude = longitude = None
    if coordinates is not None:
        latitude, longitude = coordinates.get("latitude"), coordinates.get("longitude")
        if latitude is None or longitude is None:
            raise Refused(400, f"{where}coordinates need both latitude and longitude", "coordinates")
        if not (math.isfinite(latitude) and -90 <= latitude <= 90):
            raise Refused(400, f"{where}coordinates.latitude {latitude} is outside -90..90", "coordinates")
        if not (math.isfinite(longitude) and -180 <= longitude <= 180):
            raise Refused(400, f"{where}coordinates.longitude {longitude} is outside -180..180", "coordinates")
    if not meter_point_ids and coordinates is None:
        raise Refused(400, f"{where}a location needs meterPointIds or coordinates", "meterPointIds")
    return Location(
        location_id=_id(location_id, f"{where}locationId"),
        user_id=user_id,
        location_type=body.get("locationType") or "Unknown",
        meter_point_ids=meter_point_ids,
        latitude=latitude,
        longitude=longitude,
    )


class Handlers:
    """One method per implemented operation, named by its operationId."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _require_user(self, user_id: str, status: int = 404) -> None:
        if not self.store.has_user(user_id):
            raise Refused(status, f"User '{user_id}' not found", "userId")

    def _owned_location(self, user_id: str, location_id: str) -> Location:
        loc = self.store.location(location_id)
        if loc is None or loc.user_id != user_id:
            raise Refused(404, f"Location '{location_id}' not found for user '{user_id}'")
        return loc

    # users

    def PostUser(self, call: Call):
        user_id = _id(call.body["userId"], "userId")
        if self.store.has_user(user_id):
            raise Refused(400, f"User '{user_id}' already exists", "userId")
        self.store.add_users([user_id])
        return 201, _user(user_id)

    def PostUsers(self, call: Call):
        users = [u["userId"] for u in call.body["users"]]
        seen: set[str] = set()
        for i, user_id in enumerate(users):
            _id(user_id, f"users[{i}].userId")
            if user_id in seen:
                raise Refused(400, f"users[{i}]: user '{user_id}' appears twice in the batch", "users")
            if self.store.has_user(user_id):
                raise Refused(400, f"users[{i}]: user '{user_id}' already exists", "users")
            seen.add(user_id)
        self.store.add_users(users)
        return 201, {"users": [_user(u) for u in users]}

    def GetUsers(self, call: Call):
        page, size = _page(call.query)
        users, total = self.store.users((page - 1) * size, size)
        return 200, {"pagination": _pagination(page, size, total), "users": [_user(u) for u in users]}

    def GetUserById(self, call: Call):
        self._require_user(call.params["userId"])
        return 200, _user(call.params["userId"])

    def DeleteUserById(self, call: Call):
        if not self.store.delete_user(call.params["userId"]):
            raise Refused(404)
        return 204, None

    # locations

    def GetLocationsByUserId(self, call: Call):
        self._require_user(call.params["userId"], status=400)
        return 200, [_location(loc) for loc in self.store.locations_of(call.params["userId"])]

    def PostLocation(self, call: Call):
        user_id = call.params["userId"]
        location = _location_from(call.body, call.body["locationId"], user_id)
        self._require_user(user_id)
        if self.store.location(location.location_id) is not None:
            raise Refused(409, f"Location '{location.location_id}' already exists")
        self.store.add_locations([location])
        return 201, _location(location)

    def PostLocations(self, call: Call):
        locations = []
        seen: set[str] = set()
        for i, item in enumerate(call.body["locations"]):
            where = f"locations[{i}]: "
            location = _location_from(item, item["locationId"], _id(item["userId"], f"{where}userId"), where)
            if not self.store.has_user(location.user_id):
                raise Refused(400, f"{where}user '{location.user_id}' not found", "locations")
            if location.location_id in seen:
                raise Refused(400, f"{where}location '{location.location_id}' appears twice in the batch")
            if self.store.location(location.location_id) is not None:
                raise Refused(400, f"{where}location '{location.location_id}' already exists", "locations")
            seen.add(location.location_id)
            locations.append(location)
        self.store.add_locations(locations)
        return 201, {"locations": [_location(loc) for loc in locations]}

    def GetLocationByLocationId(self, call: Call):
        return 200, _location(self._owned_location(call.params["userId"], call.params["locationId"]))

    def UpdateLocation(self, call: Call):
        user_id, location_id = call.params["userId"], call.params["locationId"]
        if call.body["locationId"] != location_id:
            raise Refused(400, f"locationId '{call.body['locationId']}' in the body differs from the path")
        self._owned_location(user_id, location_id)
        location = _location_from(call.body, location_id, user_id)
        self.store.replace_location(location)
        return 200, _location(location)

    def PatchLocation(self, call: Call):
        current = self._owned_location(call.params["userId"], call.params["locationId"])
        merged = {
            "locationType": call.body.get("locationType") or current.location_type,
            "meterPointIds": current.meter_point_ids if call.body.get("meterPointIds") is None
            else call.body["meterPointIds"],
            "coordinates": call.body.get("coordinates") or (
                {"latitude": current.latitude, "longitude": current.longitude}
                if current.latitude is not None else None
            ),
        }
        location = _location_from(merged, current.location_id, current.user_id)
        self.store.replace_location(location)
        return 200, _location(location)

    def DeleteLocation(self, call: Call):
        self._owned_location(call.params["userId"], call.params["locationId"])
        self.store.delete_location(call.params["locationId"])
        return 204, None

    # resources

    def GetLocationBoundResources(self, call: Call):
        self._owned_location(call.params["userId"], call.params["locationId"])
        return 200, [_resource(r) for r in self.store.resources_at(call.params["locationId"])]

    def PostLocationBoundResource(self, call: Call):
        user_id, location_id = call.params["userId"], call.params["locationId"]
        resource_id = _id(call.body["resourceId"], "resourceId")
        if call.body["resourceType"] == "Vehicle":
            raise Refused(400, "a Vehicle belongs to its user: register it with POST /users/{userId}/vehicles")
        if call.body.get("meterPointId") is not None:
            _check_id_text(call.body["meterPointId"], "meterPointId")
        self._owned_location(user_id, location_id)
        if self.store.resource(resource_id) is not None:
            raise Refused(400, f"Resource '{resource_id}' already exists", "resourceId")
        resource = Resource(resource_id, user_id, call.body["resourceType"], location_id,
                            call.body.get("meterPointId"))
        self.store.add_resource(resource)
        return 201, _resource(resource)

    def PostVehicle(self, call: Call):
        user_id = call.params["userId"]
        resource_id = _id(call.body["resourceId"], "resourceId")
        if call.body["resourceType"] != "Vehicle":
            raise Refused(400, f"only Vehicle resources are registered here, not {call.body['resourceType']}",
                          "resourceType")
        self._require_user(user_id, status=400)
        if self.store.resource(resource_id) is not None:
            raise Refused(400, f"Resource '{resource_id}' already exists", "resourceId")
        resource = Resource(resource_id, user_id, "Vehicle")
        self.store.add_resource(resource)
        return 201, _resource(resource)

    def GetResourcesForUser(self, call: Call):
        self._require_user(call.params["userId"])
        return 200, {"resources": [_resource(r) for r in self.store.resources_of(call.params["userId"])]}

    def GetResourceById(self, call: Call):
        resource = self.store.resource(call.params["resourceId"])
        if resource is None:
            raise Refused(404, f"Resource '{call.params['resourceId']}' not found")
        return 200, _resource(resource)

    def DeleteResourceById(self, call: Call):
        if not self.store.delete_resource(call.params["resourceId"]):
            raise Refused(404)
        return 204, None

    # the SPARK program: eligibility and enrollment

    def _is_eligible(self, user_id: str) -> bool:
        """The guide's sandbox rule: a user is eligible while one of its locations lies in a test area."""
        from onboard import areas  # shapely and numpy: imported by the first request that needs them

        return any(loc.latitude is not None and areas.which_area(loc.latitude, loc.longitude) is not None
                   for loc in self.store.locations_of(user_id))

    def _eligible_users(self) -> list[str]:
        from onboard import areas

        boxes = [each.polygon.bounds for each in areas.all_areas().values()]
        positions = self.store.positions_within(boxes)
        found = areas.which_areas([p[1] for p in positions], [p[2] for p in positions])
        return list(dict.fromkeys(p[0] for p, area in zip(positions, found, strict=True) if area is not None))

    def GetUserEligibilityByUserId(self, call: Call):
        user_id = call.params["userId"]
        self._require_user(user_id)
        return 200, {"userId": user_id, "isEligible": self._is_eligible(user_id)}

    def GetEligibleUsers(self, call: Call):
        page, size = _page(call.query)
        eligible = self._eligible_users()
        users = eligible[(page - 1) * size:page * size]
        return 200, {"pagination": _pagination(page, size, len(eligible)), "users": [_user(u) for u in users]}

    def GetUserEnrollmentByUserId(self, call: Call):
        user_id = call.params["userId"]
        self._require_user(user_id)
        return 200, _enrollment(user_id, self.store.enrollment(user_id))

    def PostUserEnrollment(self, call: Call):
        """Enrolls an eligible user once: a second enrollment is refused naming it, so that a client
        can tell "enrolled now" (200) from "enrolled already" (400, or GET first)."""
        user_id = call.params["userId"]
        self._require_user(user_id)
        if self.store.enrollment(user_id) is not None:
            raise Refused(400, f"User '{user_id}' is already enrolled", "userId")
        if not self._is_eligible(user_id):
            raise Refused(400, f"User '{user_id}' is not eligible for the SPARK program: none of its locations"
                               " lies in a test area", "userId")
        enrollment = Enrollment(user_id, str(uuid.uuid4()), datetime.now(UTC).isoformat(timespec="seconds"))
        if not self.store.enroll(enrollment):
            raise Refused(400, f"User '{user_id}' is already enrolled", "userId")
        return 200, _enrollment(user_id, enrollment)

    def DeleteUserEnrollment(self, call: Call):
        user_id = call.params["userId"]
        self._require_user(user_id)
        if not self.store.unenroll(user_id):
            raise Refused(400, f"User '{user_id}' is not enrolled", "userId")
        return 204, None

    def GetMpidEligibility(self, call: Call):
        """By the meter point id alone (18 digits, valid GS1 check digit): the spec ties it to no
        user or location, and the guide's test areas make users eligible, not meter points."""
        from onboard.records import has_valid_check_digit

        mpid = call.params["mpid"]
        return 200, {"meterPointId": mpid, "isEligible": len(mpid) == 18 and has_valid_check_digit(mpid)}


def _int_query(query: dict[str, list[str]], name: str, default: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        value = int(values[-1])
    except ValueError:
        raise Refused(400, f"{name} must be a whole number") from None
    if not -(2**31) <= value < 2**31:
        raise Refused(400, f"{name} is out of range")
    return value


IMPLEMENTED = tuple(name for name in vars(Handlers) if name[0].isupper())


def _render(op: contract.Operation, refused: Refused) -> Response:
    media = op.media_types(refused.status)
    if "application/problem+json" in media:
        problem = {
            "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
            "title": "One or more validation errors occurred.",
            "status": refused.status,
            "detail": refused.message,
            "errors": {refused.field or "body": [refused.message]},
        }
        return JSONResponse(problem, refused.status, media_type="application/problem+json")
    if "application/json" in media:
        return JSONResponse(refused.message, refused.status)
    return Response(status_code=refused.status)


class Emulator:
    """The emulator as one ASGI app: token endpoint, the spec, and the API behind its faults.

    Routing is our own, by the spec's path templates over the raw path, so that an ID holding
    `/`, `%` or a line break still lands in its own path parameter.
    """

    def __init__(self, knobs: EmulatorSettings | None = None, store: Store | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.knobs = knobs = knobs or EmulatorSettings()
        self.store = store or Store(knobs.state)
        self.tokens = Tokens(
            ttl=knobs.token_ttl,
            client_id=knobs.client_id,
            client_secret=knobs.client_secret.get_secret_value() if knobs.client_secret else None,
            clock=clock,
        )
        self.handlers = Handlers(self.store)
        self.rng = random.Random(knobs.seed)
        self.prefix = contract.base_path()
        self.routes: dict[int, list[tuple[int, contract.Operation]]] = {}  # by the number of segments
        for op in sorted((contract.operation(name) for name in IMPLEMENTED), key=lambda op: op.literal_rank):
            self.routes.setdefault(len(op.segments), []).append((op.literal_rank, op))
        self.stats: Counter[tuple[str, int]] = Counter()
        self.faults = Faults(self._serve, knobs, clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.faults(scope, receive, send)
        except ClientDisconnect:  # nobody is left to answer: not a crash, so one line, not a traceback
            host, port = scope.get("client") or ("unknown client", 0)
            path = (scope.get("raw_path") or scope["path"].encode()).decode("ascii", "backslashreplace")
            log.warning("onboard emulator: client %s:%s hung up before %s %s was answered",
                        host, port, scope["method"], path)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # nothing to start or stop, but servers may ask
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        request = Request(scope, receive)
        path = scope["path"]
        declared = request.headers.get("content-length", "")
        if declared.isdecimal() and int(declared) > self.knobs.max_body_bytes:
            response = Response(status_code=413)
        elif path == "/connect/token" and request.method == "POST":
            response = await self._token(request)
        elif path == f"{self.prefix}/swagger.json" and request.method == "GET":
            response = JSONResponse(contract.document())
        elif path.startswith(self.prefix + "/"):
            response = await self._api(request)
        else:
            response = Response(status_code=404)
        await response(scope, receive, send)

    async def _token(self, request: Request) -> Response:
        try:
            body = await _read_body(request, self.knobs.max_body_bytes)
        except Refused as refused:
            return Response(status_code=refused.status)
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        try:
            issued = self.tokens.issue(form.get("client_id", ""), form.get("client_secret", ""))
        except Refused as refused:
            return JSONResponse({"error": refused.message}, refused.status)
        return JSONResponse({"access_token": issued, "expires_in": max(1, int(self.tokens.ttl)),
                             "token_type": "Bearer"})

    def route(self, raw_path: bytes, method: str) -> tuple[contract.Operation | None, dict[str, str], list[str]]:
        """The operation for a raw path with its decoded parameters, else the methods the path has.

        Bytes that are not UTF-8 decode to lone surrogates, not to U+FFFD: a lenient decode would
        turn a bad ID into another, existing one; this way `_answer` can refuse it."""
        segments = [unquote(s, errors="surrogateescape")
                    for s in raw_path.decode("latin-1")[len(self.prefix):].strip("/").split("/")]
        allowed: list[str] = []
        rank = None
        for literal_rank, op in self.routes.get(len(segments), ()):
            params = op.match(segments)
            if params is None or (rank is not None and literal_rank > rank):
                continue
            rank = literal_rank
            if op.method == method:
                return op, params, allowed
            allowed.append(op.method)
        return None, {}, allowed

    async def _api(self, request: Request) -> Response:
        op, params, allowed = self.route(request.scope.get("raw_path") or request.scope["path"].encode(),
                                         request.method)
        if op is None:
            if allowed:
                return Response(status_code=405, headers={"allow": ", ".join(sorted(set(allowed)))})
            return Response(status_code=404)
        response = await self._answer(op, params, request)
        self.stats[op.id, response.status_code] += 1
        return response

    async def _answer(self, op: contract.Operation, params: dict[str, str], request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.tokens.valid(token):
            return Response(status_code=401, headers={"www-authenticate": "Bearer"})
        if self.knobs.revoke_rate and self.rng.random() < self.knobs.revoke_rate:
            self.tokens.revoke(token)
            return Response(status_code=401, headers={"www-authenticate": 'Bearer error="invalid_token"'})
        try:
            for name, value in params.items():
                _check_text(value, name)
                if 400 in op.responses:  # elsewhere (two lookups, a meter point's eligibility) the answer for
                    _check_id_text(value, name)  # an ID nobody can hold: 404, or not eligible
            query = parse_qs(request.scope["query_string"].decode("utf-8", "surrogateescape"), keep_blank_values=True,
                             errors="surrogateescape")
            for name, values in query.items():
                _check_text(name, "a query parameter name")
                for value in values:
                    _check_text(value, "query parameter " + name)
            unknown = sorted(set(query) - set(op.query))
            if unknown and op.media_types(400):
                raise Refused(400, f"unknown query parameter {unknown[0]!r}")
            body = await self._body(op, request)
            status, answer = getattr(self.handlers, op.id)(Call(params, body, query))
        except Refused as refused:
            return _render(op, refused)
        if answer is None:
            return Response(status_code=status)
        return JSONResponse(answer, status)

    async def _body(self, op: contract.Operation, request: Request) -> Any:
        if op.request_schema is None:
            return None
        raw = await _read_body(request, self.knobs.max_body_bytes)
        try:
            body = json.loads(raw)
        except RecursionError:  # json's parser gives up a thousand levels deep
            raise Refused(400, f"the request body nests deeper than {MAX_NESTING} levels") from None
        except ValueError:
            raise Refused(400, "the request body is not valid JSON") from None
        _check_json(body)
        problems = contract.request_problems(op.request_schema, body)
        if problems:
            raise Refused(400, "; ".join(dict.fromkeys(problems)), problems[0].split(":", 1)[0])
        limit = self.knobs.max_batch
        if op.id in BATCH_OPERATIONS and limit is not None and len(next(iter(body.values()))) > limit:
            raise Refused(413)
        return body


def create_app(knobs: EmulatorSettings | None = None, store: Store | None = None,
               clock: Callable[[], float] = time.monotonic) -> Emulator:
    return Emulator(knobs, store, clock)


class QuietDrops(logging.Filter):
    """Uvicorn logs every dropped connection as a crash; a deliberate drop is not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], AnswerLost))
