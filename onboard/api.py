"""Calling the Energy Coordination API: where a planned entity becomes a request.

One `httpx.AsyncClient` serves every environment: the real API over the network (aiohttp's
connection pool underneath, `onboard.transport`), or the emulator in-process over
`httpx.ASGITransport`, so local rehearsals exercise the very code path a production run takes.
Around each call: OAuth (an `httpx.Auth`), retries with backoff and full jitter (tenacity), and a
concurrency limit that halves on 429 and grows back slowly.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import math
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, quote_plus, unquote, urlsplit

import httpx
from pydantic import BaseModel, Field, SecretStr, ValidationError

from onboard import __version__, contract
from onboard.errors import ApiMalformed, ApiUnavailable, AuthError, printable
from onboard.settings import Target, Tuning, masked

if TYPE_CHECKING:
    from tenacity import AsyncRetrying, RetryCallState

    from onboard.plan import Location, Resource, User

T = TypeVar("T")

# request bodies: the only place a planned entity takes the API's shape


def user_body(user: User) -> dict[str, Any]:
    return {"userId": user.id}


def location_body(location: Location) -> dict[str, Any]:
    body: dict[str, Any] = {"userId": location.user_id, "locationId": location.id}
    if location.location_type:
        body["locationType"] = location.location_type
    if location.meter_point_ids:
        body["meterPointIds"] = list(location.meter_point_ids)
    if location.coordinates:
        body["coordinates"] = {"latitude": location.coordinates.latitude,
                               "longitude": location.coordinates.longitude}
    return body


def patch_body(location: Location, changes: Iterable[str]) -> dict[str, Any]:
    """A PATCH of only the fields that differ (`changes`, the spec's names): the rest stays as held."""
    body = location_body(location)
    return {name: body[name] for name in changes}


def coordinates_body(latitude: float, longitude: float) -> dict[str, Any]:
    """A PATCH that moves a location and changes nothing else (the guide's "Move Locations")."""
    return {"coordinates": {"latitude": latitude, "longitude": longitude}}


def without_coordinates_body(held: dict[str, Any]) -> dict[str, Any]:
    """A PUT of a location as the API holds it (`held`, a GET's answer) but for its coordinates: the
    spec's PATCH cannot remove them (its `coordinates` is not nullable, and an absent field is left
    as it was), a PUT replaces the location with what its body holds."""
    body: dict[str, Any] = {"locationId": held["locationId"]}
    if held.get("locationType"):
        body["locationType"] = held["locationType"]
    if held.get("meterPointIds"):
        body["meterPointIds"] = list(held["meterPointIds"])
    return body


def resource_body(resource: Resource) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceId": resource.id, "resourceType": resource.resource_type}
    if resource.meter_point_id and not resource.is_vehicle:
        body["meterPointId"] = resource.meter_point_id
    return body


# answers


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    """A success's JSON, of the shape the contract documents; None for any other answer."""
    message: str
    ambiguous: bool = False
    """An earlier attempt of this write got no answer: it may have happened."""
    malformed: bool = False
    """A write answered with a success status but a body its contract does not document: whether
    it happened is unknown, so it is not counted as done."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and not self.malformed

    def says_exists(self, entity_id: str) -> bool:
        """The API's way of saying an ID is taken: 409, or a 400 that names the ID."""
        if self.status == 409:
            return True
        return self.status == 400 and entity_id in self.message and "exist" in self.message.lower()


class Redactor:
    """What a run must never show or store: the client secret, every token issued to it, and the
    passwords in its URLs. Words from a server pass through `words` where they enter our messages,
    so a server that echoes a request puts none of these in the terminal, the outputs or the
    journal, and no escape sequence either."""

    SHORTEST = 4
    """Shorter values are not searched for as such (that would blank ordinary words); `SHAPES`
    still catches them where they sit in a header, a form or a URL."""

    SHAPES = (
        (re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+"), r"\1***"),
        (re.compile(r"(?i)(client_secret[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;}]+"), r"\1***"),
        (re.compile(r"(://[^\s/@:]*:)[^\s/@]*@"), r"\1***@"),
    )

    def __init__(self, *secrets: str) -> None:
        self._known: set[str] = set()
        self._pattern: re.Pattern | None = None
        for secret in secrets:
            self.learn(secret)

    @classmethod
    def for_target(cls, target: Target) -> Redactor:
        redactor = cls(*target.secrets)
        for url in (target.base_url, target.token_url):
            parts = urlsplit(url)
            if parts.password:  # as httpx sends it: Basic credentials
                pair = f"{unquote(parts.username or '')}:{unquote(parts.password)}"
                redactor.learn(base64.b64encode(pair.encode()).decode())
        return redactor

    def learn(self, secret: str) -> None:
        """Redact `secret` from now on, as written and as a form, a URL or JSON would carry it."""
        forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
        self._known |= {f for f in forms if len(f) >= self.SHORTEST}
        longest_first = sorted(self._known, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, longest_first))) if longest_first else None

    def redact(self, text: str) -> str:
        """Known values first: a shape ends at the first `&` or quote, which a secret may hold."""
        text = self._pattern.sub("***", text) if self._pattern else text
        for shape, replacement in self.SHAPES:
            text = shape.sub(replacement, text)
        return text

    def words(self, text: str, limit: int = 500) -> str:
        """Outside text as our messages may carry it: one printable line, redacted, not too long.
        Escapes go first, so a secret they split is whole again when it is looked for."""
        return self.redact(printable(text))[:limit]


def _is_html(response: httpx.Response) -> bool:
    return "html" in response.headers.get("content-type", "") or response.content.lstrip()[:1] == b"<"


def _shallow(value: Any, depth: int = 64) -> bool:
    """JSON nested no deeper than `depth`: what reads it next (our messages, the schema check)
    recurses, and a hostile body could exhaust that."""
    level = [value]
    for _ in range(depth):
        level = [v for x in level for v in (x.values() if isinstance(x, dict) else x if isinstance(x, list) else ())]
        if not level:
            return True
    return False


def _body(response: httpx.Response) -> tuple[Any, str]:
    """The JSON body (None when empty), or else what the body is instead of JSON."""
    if not response.content:
        return None, ""
    try:
        body = response.json()
    except RecursionError:
        return None, "JSON nested too deep"
    except ValueError:
        return None, "an HTML page" if _is_html(response) else "text that is not JSON"
    return (body, "") if _shallow(body) else (None, "JSON nested too deep")


def _without_nulls(value: Any) -> Any:
    """A read's body as the pipeline takes it: a null stands for an absent optional field, as the
    tolerant schema check let it (required fields cannot be null there)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _texts(value: Any) -> list[str]:
    """Every text in an error body's `errors`, whatever its shape (a map of lists, a list, ...)."""
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return [] if value is None else [str(value)]


def _server_words(response: httpx.Response) -> str:
    """What a refusal says, from whichever shape it has: a JSON string, problem details, an OAuth
    error, anything else as it came."""
    if not response.content:
        return f"{response.status_code} {response.reason_phrase}"
    body, not_json = _body(response)
    if not_json and _is_html(response):
        title = re.search(rb"<title[^>]*>([^<]*)", response.content, re.IGNORECASE)
        return "an HTML page" + (f" titled '{title[1].decode(errors='replace').strip()}'" if title else "")
    if not_json:
        return response.text
    if isinstance(body, str):
        return body
    if isinstance(body, dict):
        oauth = " ".join(str(body[k]) for k in ("error", "error_description") if body.get(k))
        for said in (body.get("detail"), "; ".join(_texts(body.get("errors"))), body.get("title"), oauth):
            if said:
                return str(said)
    return json.dumps(body, ensure_ascii=False)


def _message(response: httpx.Response, redactor: Redactor) -> str:
    return redactor.words(_server_words(response))


@dataclass
class Stats:
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    token_fetches: int = 0
    lowest_concurrency: int | None = None
    by_status: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "throttled": self.throttled,
            "token_refreshes": max(0, self.token_fetches - 1),
            "lowest_concurrency": self.lowest_concurrency,
            "statuses": {str(k): v for k, v in sorted(self.by_status.items())},
        }


class Transient(Exception):
    """A failure worth another attempt: no connection, a timeout, 5xx, 429."""

    def __init__(self, why: str, retry_after: float | None = None, maybe_sent: bool = False) -> None:
        super().__init__(why)
        self.retry_after = retry_after
        self.maybe_sent = maybe_sent
        """The request may have reached the server: for a write, an ambiguous outcome."""


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# auth


class TokenAnswer(BaseModel):
    """What a token endpoint must answer for the client to go on; the rest it may add is ignored."""

    access_token: str = Field(min_length=1, pattern=r"^[\x21-\x7e]+$")
    """Visible ASCII only: the token travels in a header."""
    expires_in: float = Field(3600.0, gt=0, allow_inf_nan=False)


def _token(response: httpx.Response, redactor: Redactor) -> TokenAnswer:
    """The token in a 200 answer; a ValueError saying what is wrong with the answer (never showing
    the token itself) when it holds none."""
    body, not_json = _body(response)
    if not_json or not isinstance(body, dict):
        raise ValueError(not_json or ("an empty body" if body is None else "JSON that is not an object"))
    try:
        return TokenAnswer.model_validate(body)
    except ValidationError as exc:
        flaws = []
        for error in exc.errors():
            name = ".".join(map(str, error["loc"]))
            got = "" if name == "access_token" else f" (got {redactor.words(repr(error.get('input')), 80)})"
            flaws.append(f"{name}: {error['msg']}{got}")
        raise ValueError("; ".join(flaws)) from None


class ClientCredentials(httpx.Auth):
    """OAuth2 client credentials: fetch a token, keep it, renew it before it expires, and on a 401
    (a token revoked early) fetch a new one once and repeat the request."""

    requires_response_body = True

    def __init__(self, token_url: str, client_id: str, client_secret: SecretStr,
                 clock: Callable[[], float] = time.monotonic, stats: Stats | None = None,
                 redactor: Redactor | None = None) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self._clock = clock
        self._stats = stats or Stats()
        self.redactor = redactor or Redactor(client_secret.get_secret_value())
        self.shown_url = masked(token_url)
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"ClientCredentials(token_url={self.shown_url!r}, client_id={self.client_id!r})"

    def _fresh(self) -> bool:
        return self._token is not None and self._clock() < self._renew_at

    def _token_request(self) -> httpx.Request:
        return httpx.Request("POST", self.token_url, headers={"accept": "application/json"}, data={
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._secret.get_secret_value(),
        })

    def _keep(self, response: httpx.Response) -> None:
        if response.status_code == 429 or response.status_code >= 500:
            raise Transient(f"the token endpoint answered {response.status_code}", retry_after(response))
        if response.status_code != 200:
            raise AuthError(
                f"the token endpoint {self.shown_url} refused the client credentials "
                f"({_message(response, self.redactor)}): check SPARK_CLIENT_ID and SPARK_CLIENT_SECRET"
            )
        try:
            answer = _token(response, self.redactor)
        except ValueError as flaw:
            raise AuthError(
                f"the token endpoint {self.shown_url} answered 200 but not with a usable token ({flaw}): "
                "check --token-url, it must be the OAuth2 client-credentials token endpoint"
            ) from None
        self.redactor.learn(answer.access_token)
        self._token = answer.access_token
        lifetime = answer.expires_in
        self._renew_at = self._clock() + lifetime - min(60.0, lifetime / 10)
        self._stats.token_fetches += 1

    def _authorize(self, request: httpx.Request) -> str | None:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return self._token

    def auth_flow(self, request: httpx.Request):
        if not self._fresh():
            self._keep((yield self._token_request()))
        used = self._authorize(request)
        response = yield request
        if response.status_code == 401:
            self._stats.by_status[401] += 1
            self._stats.requests += 1
            if self._token == used:
                self._keep((yield self._token_request()))
            self._authorize(request)
            yield request

    async def async_auth_flow(self, request: httpx.Request):
        """`auth_flow`, driven so that one request at a time decides on a token and fetches it,
        however many are in flight; the lock is let go while the request itself is out."""
        self._lock = self._lock or asyncio.Lock()
        flow = self.auth_flow(request)
        await self._lock.acquire()
        try:
            outgoing = next(flow)
            while True:
                if outgoing is request:
                    self._lock.release()
                    try:
                        response = yield outgoing
                    finally:
                        await self._lock.acquire()
                else:
                    response = yield outgoing
                    await response.aread()
                outgoing = flow.send(response)
        except StopIteration:
            return
        finally:
            self._lock.release()

    async def sign_in(self, client: httpx.AsyncClient) -> None:
        """Fetch the first token now, so refused credentials stop the run before anything is sent."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if not self._fresh():
                self._keep(await client.send(self._token_request(), auth=None))


# concurrency


class Throttle:
    """Requests in flight, below a ceiling: halved on 429 (once per round of requests), grown back
    by about one per round of successes, so a throttled run keeps working instead of waiting."""

    def __init__(self, ceiling: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.lowest = ceiling
        self.inflight = 0
        self.waiting = 0
        """Requests waiting for a slot (retries, after a 429 lowered the limit)."""
        self.clock = clock
        self._last_cut = -math.inf
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> float:
        async with self._changed:
            self.waiting += 1
            try:
                await self._changed.wait_for(lambda: self.inflight < max(1, int(self.limit)))
            finally:
                self.waiting -= 1
            self.inflight += 1
        return self.clock()

    async def __aexit__(self, *exc: object) -> None:
        async with self._changed:
            self.inflight -= 1
            self._changed.notify_all()

    def throttled(self, started: float) -> None:
        if started >= self._last_cut:
            self.limit = max(1.0, self.limit / 2)
            self.lowest = min(self.lowest, int(self.limit))
            self._last_cut = self.clock()

    def succeeded(self) -> None:
        self.limit = min(float(self.ceiling), self.limit + 1 / self.limit)


# the client


class Deadline:
    """`ONBOARD_RETRY_DEADLINE` for one request, counted from its first attempt's start (not from a
    wait for a free slot under the throttle): it cuts an attempt short, and it is a tenacity stop
    condition that ends the retrying before a backoff would outlast it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.begun: float | None = None

    def left(self) -> float:
        if self.begun is None:
            self.begun = time.monotonic()
        return self.seconds - (time.monotonic() - self.begun)

    def __call__(self, state: RetryCallState) -> bool:
        return self.left() <= (state.upcoming_sleep or 0.0)


class Api:
    def __init__(self, client: httpx.AsyncClient, auth: ClientCredentials, throttle: Throttle,
                 tuning: Tuning, stats: Stats) -> None:
        self.client = client
        self.auth = auth
        self.throttle = throttle
        self.tuning = tuning
        self.stats = stats
        self.redactor = auth.redactor
        self.base_url = str(client.base_url).rstrip("/")

    def _retrying(self, deadline: Deadline) -> AsyncRetrying:
        from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
        from tenacity.wait import wait_random_exponential

        jitter = wait_random_exponential(multiplier=self.tuning.retry_base, max=self.tuning.retry_cap)

        def wait(state) -> float:
            exc = state.outcome.exception()
            if isinstance(exc, Transient) and exc.retry_after is not None:
                return min(exc.retry_after, self.tuning.retry_cap)
            return jitter(state)

        def count(state) -> None:
            self.stats.retries += 1

        return AsyncRetrying(
            stop=stop_after_attempt(self.tuning.retry_attempts) | deadline,
            wait=wait,
            retry=retry_if_exception_type(Transient),
            before_sleep=count,
            reraise=True,
        )

    async def _attempt(self, deadline: Deadline, send: Callable[[], Awaitable[T]]) -> T:
        """One attempt, its total time (connect, send, headers, body) bounded by `ONBOARD_TIMEOUT`
        and by what is left of the deadline: httpx's timeouts bound each read, so a server
        trickling a byte at a time would hold them forever."""
        left = deadline.left()
        limit = max(0.0, min(self.tuning.timeout, left))
        try:
            async with asyncio.timeout(limit):
                return await send()
        except TimeoutError:
            why = (f"no complete answer within {limit:g} s" if limit < left else
                   f"no complete answer within the {deadline.seconds:g} s retry deadline")
            raise Transient(why, maybe_sent=True) from None
        except httpx.RequestError as exc:  # sent, maybe, unless no connection was made (`onboard.transport`)
            unsent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise Transient(self.redactor.words(why), maybe_sent=not unsent) from exc

    async def _persist(self, deadline: Deadline, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt` until it succeeds or the retrying gives up (re-raising its last `Transient`).
        Most calls succeed at once, so tenacity is set up only after a first failure, which it
        then takes as its own first attempt: the same waits and stops, without its cost per call."""
        try:
            return await attempt()
        except Transient as failure:
            first: Transient | None = failure
        async for retry in self._retrying(deadline):
            with retry:
                if first is not None:
                    failed, first = first, None
                    raise failed
                return await attempt()
        raise AssertionError("tenacity ended without an outcome")  # reraise=True re-raises the last failure

    async def sign_in(self) -> None:
        deadline = Deadline(self.tuning.retry_deadline)
        try:
            await self._persist(deadline, lambda: self._attempt(deadline, lambda: self.auth.sign_in(self.client)))
        except Transient as exc:
            raise ApiUnavailable(f"the token endpoint {self.auth.shown_url} did not answer: {exc}") from None

    async def call(self, operation_id: str, *, json: Any = None, params: dict | None = None,
                   **path: str) -> Answer:
        op = contract.operation(operation_id)
        url = self.base_url + op.path(**path)  # absolute: httpx parses it once instead of merging it
        writes = op.method != "GET"
        deadline = Deadline(self.tuning.retry_deadline)
        ambiguous = False
        refused_token = False
        tries = 0

        async def attempt() -> httpx.Response:
            nonlocal ambiguous, refused_token, tries
            tries += 1
            refused_token = False
            async with self.throttle as started:
                self.stats.requests += 1
                try:
                    response = await self._attempt(
                        deadline, lambda: self.client.request(op.method, url, json=json, params=params))
                except Transient as exc:
                    ambiguous |= writes and exc.maybe_sent
                    raise
            self.stats.by_status[response.status_code] += 1
            if response.status_code == 429:
                self.stats.throttled += 1
                self.throttle.throttled(started)
                raise Transient("429 Too Many Requests", retry_after(response))
            if response.status_code >= 500:
                ambiguous |= writes
                raise Transient(self.redactor.words(f"{response.status_code} {response.reason_phrase}"),
                                retry_after(response))
            refused_token = response.status_code == 401
            if refused_token:
                raise Transient("401 Unauthorized, even with a fresh token")
            self.throttle.succeeded()
            return response

        try:
            response = await self._persist(deadline, attempt)
        except Transient as exc:
            if refused_token:
                raise AuthError("the API keeps refusing freshly issued tokens (401): check the client's access "
                                "in the Spark Portal") from None
            raise ApiUnavailable(
                f"the API did not answer {op.method} {op.template} after {tries} attempts "
                f"({exc}); what is done is kept: run the same command again to resume"
            ) from None
        if response.status_code == 403:
            raise AuthError(f"the API refused {op.method} {op.template} (403 Forbidden): the client has no "
                            "access to it")
        if not response.is_success:
            return Answer(response.status_code, None, _message(response, self.redactor), ambiguous)
        body, flaw = _documented(op, response)
        if flaw and not writes:
            raise ApiMalformed(
                f"the API answered {op.method} {op.template} with {self.redactor.words(flaw)}, not what its contract "
                "documents: check --base-url; what is done is kept: run the same command again to resume"
            )
        if flaw:
            return Answer(response.status_code, None, f"the API answered {response.status_code} with "
                          f"{self.redactor.words(flaw)}, not what its contract documents, so whether this was "
                          "registered is unknown: the next run looks it up", ambiguous, malformed=True)
        return Answer(response.status_code, body, "", ambiguous)

    # what the pipeline asks

    async def create_users(self, users: list[User]) -> Answer:
        return await self.call("PostUsers", json={"users": [user_body(u) for u in users]})

    async def create_locations(self, locations: list[Location]) -> Answer:
        return await self.call("PostLocations", json={"locations": [location_body(loc) for loc in locations]})

    async def create_resource(self, resource: Resource) -> Answer:
        if resource.is_vehicle:
            return await self.call("PostVehicle", json=resource_body(resource), userId=resource.user_id)
        return await self.call("PostLocationBoundResource", json=resource_body(resource),
                               userId=resource.user_id, locationId=resource.location_id)

    async def user(self, user_id: str) -> Answer:
        return await self.call("GetUserById", userId=user_id)

    async def location(self, user_id: str, location_id: str) -> Answer:
        return await self.call("GetLocationByLocationId", userId=user_id, locationId=location_id)

    async def resource(self, resource_id: str) -> Answer:
        return await self.call("GetResourceById", resourceId=resource_id)

    async def users_page(self, page: int, size: int) -> Answer:
        return await self.call("GetUsers", params={"page": page, "pageSize": size})

    async def locations_of(self, user_id: str) -> Answer:
        return await self.call("GetLocationsByUserId", userId=user_id)

    async def resources_of(self, user_id: str) -> Answer:
        return await self.call("GetResourcesForUser", userId=user_id)

    async def resources_at(self, user_id: str, location_id: str) -> Answer:
        return await self.call("GetLocationBoundResources", userId=user_id, locationId=location_id)

    # what the commands after a run ask: moving, the SPARK program, cleaning up

    async def patch_location(self, user_id: str, location_id: str, body: dict[str, Any]) -> Answer:
        """Only the fields in `body` change (`coordinates_body` moves a location)."""
        return await self.call("PatchLocation", json=body, userId=user_id, locationId=location_id)

    async def put_location(self, user_id: str, location_id: str, body: dict[str, Any]) -> Answer:
        return await self.call("UpdateLocation", json=body, userId=user_id, locationId=location_id)

    async def enroll(self, user_id: str) -> Answer:
        return await self.call("PostUserEnrollment", userId=user_id)

    async def enrollment(self, user_id: str) -> Answer:
        return await self.call("GetUserEnrollmentByUserId", userId=user_id)

    async def user_eligibility(self, user_id: str) -> Answer:
        return await self.call("GetUserEligibilityByUserId", userId=user_id)

    async def meter_eligibility(self, meter_point_id: str) -> Answer:
        return await self.call("GetMpidEligibility", mpid=meter_point_id)

    async def delete_user(self, user_id: str) -> Answer:
        return await self.call("DeleteUserById", userId=user_id)

    async def delete_location(self, user_id: str, location_id: str) -> Answer:
        return await self.call("DeleteLocation", userId=user_id, locationId=location_id)

    async def delete_resource(self, resource_id: str) -> Answer:
        return await self.call("DeleteResourceById", resourceId=resource_id)


def _documented(op: contract.Operation, response: httpx.Response) -> tuple[Any, str]:
    """A success answer's body as the pipeline takes it, and what is wrong with it (empty when it
    has the documented shape). A write may answer without a body (the client does not read it); a
    read must answer its documented JSON, since the run decides on it."""
    body, not_json = _body(response)
    if not_json:
        return None, not_json
    reads = op.method == "GET"
    if not response.content:
        return None, "an empty body" if reads else ""
    problems = contract.answer_problems(op.id, response.status_code, body)
    if problems is None:
        return None, f"a {response.status_code} it does not document for this read" if reads else ""
    if problems:
        return None, f"JSON of another shape ({problems[0]})"
    return _without_nulls(body), ""


def _proxied(*urls: str) -> bool:
    """Whether the environment sends any of `urls` through a proxy (`HTTPS_PROXY`, `NO_PROXY`, ...).
    Such a run keeps httpx's own pool, which follows those variables as it always did; aiohttp
    would look them up again on every request."""
    from urllib.request import getproxies, proxy_bypass

    proxies = getproxies()
    for url in urls:
        parts = urlsplit(url)
        if (proxies.get(parts.scheme) or proxies.get("all")) and not proxy_bypass(parts.hostname or ""):
            return True
    return False


class _Cookieless(httpx.Cookies):
    """Cookies never taken from an answer: the API authenticates with a bearer token and sets none,
    and looking for them costs httpx a urllib request built for every answer."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _Client(httpx.AsyncClient):
    """httpx's client with a cookie jar that takes no cookies (`_Cookieless`)."""

    def __init__(self, **options: Any) -> None:
        self._cookieless = _Cookieless()
        super().__init__(**options)

    @property
    def cookies(self) -> httpx.Cookies:
        return self._cookieless

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._cookieless = _Cookieless(cookies)


@asynccontextmanager
async def connect(target: Target, concurrency: int = 16, tuning: Tuning | None = None,
                  transport: httpx.AsyncBaseTransport | None = None, emulator_knobs=None,
                  stats: Stats | None = None) -> AsyncIterator[Api]:
    """An `Api` for the target; `--env local` puts the emulator behind the same client in-process
    (its state file closed at the end, so the file alone holds the state, no WAL beside it)."""
    emulator = None
    if transport is None and target.local:
        from onboard.emulator import EmulatorSettings, create_app

        emulator = create_app(emulator_knobs or EmulatorSettings())
        transport = httpx.ASGITransport(app=emulator)
    elif transport is None and not _proxied(target.base_url, target.token_url):
        from onboard.transport import AiohttpTransport

        transport = AiohttpTransport(concurrency)
    stats = stats or Stats()
    auth = ClientCredentials(target.token_url, target.client_id, target.client_secret, stats=stats,
                             redactor=Redactor.for_target(target))
    tuning = tuning or Tuning()
    async with _Client(
        base_url=target.base_url,
        auth=auth,
        transport=transport,
        timeout=tuning.timeout,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        headers={"user-agent": f"onboard/{__version__}"},
    ) as client:
        throttle = Throttle(concurrency)
        try:
            yield Api(client, auth, throttle, tuning, stats)
        finally:
            stats.lowest_concurrency = throttle.lowest
            if emulator is not None:
                emulator.store.close()
