"""Calling the Energy Coordination API: where a planned entity becomes a request.

One `httpx.AsyncClient` serves every environment: the real API over the network, or the emulator
in-process over `httpx.ASGITransport`, so local rehearsals exercise the very code path a
production run takes. Around each call: OAuth (an `httpx.Auth`), retries with backoff and full
jitter (tenacity), and a concurrency limit that halves on 429 and grows back slowly.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_random_exponential

from onboard import __version__, contract
from onboard.errors import ApiUnavailable, AuthError
from onboard.plan import Location, Resource, User
from onboard.settings import Target, Tuning

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
    message: str
    ambiguous: bool = False
    """An earlier attempt of this write got no answer: it may have happened."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def says_exists(self, entity_id: str) -> bool:
        """The API's way of saying an ID is taken: 409, or a 400 that names the ID."""
        if self.status == 409:
            return True
        return self.status == 400 and entity_id in self.message and "exist" in self.message.lower()


def _message(response: httpx.Response) -> str:
    if not response.content:
        return f"{response.status_code} {response.reason_phrase}"
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, str):
        return body
    if isinstance(body, dict):
        errors = body.get("errors") or {}
        details = "; ".join(m for messages in errors.values() for m in messages)
        return body.get("detail") or details or body.get("title") or json.dumps(body)[:500]
    return json.dumps(body)[:500]


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

    def __init__(self, why: str, retry_after: float | None = None) -> None:
        super().__init__(why)
        self.retry_after = retry_after


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


class ClientCredentials(httpx.Auth):
    """OAuth2 client credentials: fetch a token, keep it, renew it before it expires, and on a 401
    (a token revoked early) fetch a new one once and repeat the request."""

    requires_response_body = True

    def __init__(self, token_url: str, client_id: str, client_secret: SecretStr,
                 clock: Callable[[], float] = time.monotonic, stats: Stats | None = None) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self._clock = clock
        self._stats = stats or Stats()
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"ClientCredentials(token_url={self.token_url!r}, client_id={self.client_id!r})"

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
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code != 200 or not isinstance(answer, dict) or "access_token" not in answer:
            error = answer.get("error") if isinstance(answer, dict) else None
            raise AuthError(
                f"the token endpoint {self.token_url} refused the client credentials "
                f"({error or response.status_code}): check SPARK_CLIENT_ID and SPARK_CLIENT_SECRET"
            )
        lifetime = float(answer.get("expires_in") or 3600)
        self._token = answer["access_token"]
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
        self.clock = clock
        self._last_cut = -math.inf
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> float:
        async with self._changed:
            await self._changed.wait_for(lambda: self.inflight < max(1, int(self.limit)))
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


class Api:
    def __init__(self, client: httpx.AsyncClient, auth: ClientCredentials, throttle: Throttle,
                 tuning: Tuning, stats: Stats) -> None:
        self.client = client
        self.auth = auth
        self.throttle = throttle
        self.tuning = tuning
        self.stats = stats

    def _retrying(self) -> AsyncRetrying:
        jitter = wait_random_exponential(multiplier=self.tuning.retry_base, max=self.tuning.retry_cap)

        def wait(state) -> float:
            exc = state.outcome.exception()
            if isinstance(exc, Transient) and exc.retry_after is not None:
                return min(exc.retry_after, self.tuning.retry_cap)
            return jitter(state)

        def count(state) -> None:
            self.stats.retries += 1

        return AsyncRetrying(
            stop=stop_after_attempt(self.tuning.retry_attempts) | stop_after_delay(self.tuning.retry_deadline),
            wait=wait,
            retry=retry_if_exception_type(Transient),
            before_sleep=count,
            reraise=True,
        )

    async def sign_in(self) -> None:
        try:
            async for attempt in self._retrying():
                with attempt:
                    try:
                        await self.auth.sign_in(self.client)
                    except httpx.TransportError as exc:
                        raise Transient(_describe(exc)) from exc
        except Transient as exc:
            raise ApiUnavailable(f"the token endpoint {self.auth.token_url} did not answer: {exc}") from None

    async def call(self, operation_id: str, *, json: Any = None, params: dict | None = None,
                   **path: str) -> Answer:
        op = contract.operation(operation_id)
        url = op.path(**path)
        writes = op.method != "GET"
        ambiguous = False
        refused_token = False
        tries = 0
        response: httpx.Response | None = None
        try:
            async for attempt in self._retrying():
                with attempt:
                    tries += 1
                    refused_token = False
                    async with self.throttle as started:
                        self.stats.requests += 1
                        try:
                            response = await self.client.request(op.method, url, json=json, params=params)
                        except httpx.TransportError as exc:
                            ambiguous |= writes and not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout,
                                                                          httpx.PoolTimeout))
                            raise Transient(_describe(exc)) from exc
                    self.stats.by_status[response.status_code] += 1
                    if response.status_code == 429:
                        self.stats.throttled += 1
                        self.throttle.throttled(started)
                        raise Transient("429 Too Many Requests", retry_after(response))
                    if response.status_code >= 500:
                        ambiguous |= writes
                        raise Transient(f"{response.status_code} {response.reason_phrase}", retry_after(response))
                    refused_token = response.status_code == 401
                    if refused_token:
                        raise Transient("401 Unauthorized, even with a fresh token")
                    self.throttle.succeeded()
        except Transient as exc:
            if refused_token:
                raise AuthError("the API keeps refusing freshly issued tokens (401): check the client's access "
                                "in the Spark Portal") from None
            raise ApiUnavailable(
                f"the API did not answer {op.method} {op.template} after {tries} attempts "
                f"({exc}); what is done is kept: run the same command again to resume"
            ) from None
        assert response is not None
        if response.status_code == 403:
            raise AuthError(f"the API refused {op.method} {op.template} (403 Forbidden): the client has no "
                            "access to it")
        body = None
        if response.content and response.headers.get("content-type", "").split(";")[0].endswith("json"):
            body = response.json()
        message = "" if response.is_success else _message(response)
        return Answer(response.status_code, body, message, ambiguous)

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


def _describe(exc: httpx.TransportError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@asynccontextmanager
async def connect(target: Target, concurrency: int = 16, tuning: Tuning | None = None,
                  transport: httpx.AsyncBaseTransport | None = None, emulator_knobs=None,
                  stats: Stats | None = None) -> AsyncIterator[Api]:
    """An `Api` for the target; `--env local` puts the emulator behind the same client in-process."""
    if transport is None and target.local:
        from onboard.emulator import EmulatorSettings, create_app

        transport = httpx.ASGITransport(app=create_app(emulator_knobs or EmulatorSettings()))
    stats = stats or Stats()
    auth = ClientCredentials(target.token_url, target.client_id, target.client_secret, stats=stats)
    tuning = tuning or Tuning()
    async with httpx.AsyncClient(
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
