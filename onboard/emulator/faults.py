"""The emulator's bad days: latency, outages, lost answers, throttling, oversize batches.

Faults sit in front of the API as one ASGI middleware, so the handlers stay a faithful model of
the service and every fault looks to the client exactly as it would from a real one.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import random
import time
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onboard import contract


def default_state_path() -> Path:
    root = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return root / "onboard" / "emulator.sqlite"


class EmulatorSettings(BaseSettings):
    """Knobs of `onboard emulator`; the same names as `ONBOARD_EMULATOR_*` for `--env local`."""

    model_config = SettingsConfigDict(env_prefix="ONBOARD_EMULATOR_", env_file=".env", extra="ignore")

    latency_ms: float = Field(0.0, ge=0, description="mean latency per request (token endpoint too), jittered "
                              "±50%: from a request's arrival to its answer, the emulator's own work included")
    fail_rate: float = Field(0.0, ge=0, le=1, description="share of API requests answered 503 before any write")
    lost_rate: float = Field(
        0.0, ge=0, le=1, description="share of writes that happen, then lose their answer (connection dropped)"
    )
    revoke_rate: float = Field(0.0, ge=0, le=1, description="share of API requests whose token is revoked early (401)")
    rate: float | None = Field(None, gt=0, description="API requests per second before 429 with Retry-After")
    max_inflight: int | None = Field(None, ge=1, description="concurrent API requests before 429 with Retry-After")
    max_batch: int | None = Field(None, ge=1, description="largest batch accepted; larger ones get 413")
    max_body_bytes: int = Field(4 * 2**20, ge=1, description="largest request body accepted, in bytes, on every "
                                "endpoint (the token endpoint too); larger ones get 413")
    token_ttl: float = Field(3600.0, gt=0, description="seconds a token lives")
    seed: int | None = Field(None, description="seed for reproducible faults")
    client_id: str | None = Field(None, description="the only client id accepted (default: any non-empty pair)")
    client_secret: SecretStr | None = Field(None, description="the only client secret accepted")
    state: Path = Field(default_factory=default_state_path, description="SQLite file holding the emulator's state")


class AnswerLost(Exception):
    """What every `connection_dropped()` error is, known without importing httpx."""


@functools.cache
def connection_dropped() -> type[AnswerLost]:
    """The error of an emulator that did the write, then hung up before answering.

    In-process the client sees this as the transport error it is (an httpx one); under uvicorn the
    started response is abandoned and the socket closed, which the client sees as the same error.
    Made when first needed: httpx takes a tenth of a second to import, which the served emulator
    otherwise never needs."""
    import httpx

    class ConnectionDropped(AnswerLost, httpx.RemoteProtocolError):
        pass

    return ConnectionDropped


class TokenBucket:
    def __init__(self, rate: float, clock=time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.clock = clock
        self.stamp = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait(self) -> int:
        """Whole seconds until a request would pass, as Retry-After carries them."""
        return max(1, math.ceil((1 - self.tokens) / self.rate))


class Faults:
    def __init__(self, app: ASGIApp, knobs: EmulatorSettings, clock=time.monotonic) -> None:
        self.app = app
        self.knobs = knobs
        self.rng = random.Random(knobs.seed)
        self.bucket = TokenBucket(knobs.rate, clock) if knobs.rate else None
        self.inflight = 0
        self.prefix = contract.base_path() + "/"
        self.counts = {"throttled": 0, "failed": 0, "lost": 0}
        self.held = Held()
        self._token_held = Held()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        knobs = self.knobs
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            if knobs.latency_ms and scope["type"] == "http":  # the token endpoint is slow too, never faulty
                send = _answering_at(self._latency(), receive, send, self._token_held)
            await self.app(scope, receive, send)
            return
        if knobs.max_inflight is not None and self.inflight >= knobs.max_inflight:
            await self._refuse(send, 429, retry_after=1)
            return
        if self.bucket is not None and not self.bucket.take():
            await self._refuse(send, 429, retry_after=self.bucket.wait())
            return
        self.inflight += 1
        try:
            if knobs.latency_ms:
                send = _answering_at(self._latency(), receive, send, self.held)
            if knobs.fail_rate and self.rng.random() < knobs.fail_rate:
                self.counts["failed"] += 1
                await self._refuse(send, 503)
                return
            if scope["method"] != "GET" and knobs.lost_rate and self.rng.random() < knobs.lost_rate:
                await self._lose_answer(scope, receive, send)
                return
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1

    def _latency(self) -> float:
        return self.knobs.latency_ms / 1000 * self.rng.uniform(0.5, 1.5)

    async def _lose_answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer: list[Message] = []

        async def keep(message: Message) -> None:
            answer.append(message)

        await self.app(scope, receive, keep)
        if 200 <= answer[0]["status"] < 300:
            self.counts["lost"] += 1
            await send(answer[0])
            raise connection_dropped()("the emulator dropped the connection after the write (--lost-rate)")
        for message in answer:
            await send(message)

    async def _refuse(self, send: Send, status: int, retry_after: int | None = None) -> None:
        if status == 429:
            self.counts["throttled"] += 1
        headers = [(b"content-length", b"0")]
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


class Held:
    """How long API answers were held, from arrival to leaving: the latency the client met. The
    event loop wakes a timer up to a millisecond late (epoll counts whole milliseconds), which would
    make every answer slower than the latency asked for; `early` is that lateness, learnt as answers
    leave, and taken off each wait, so that the mean is the one asked for."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.early = 0.0

    def left(self, late: float) -> None:
        """An answer that waited for its time left `late` seconds after it."""
        self.early = min(0.005, max(0.0, self.early + 0.05 * late))

    def mean_ms(self) -> float | None:
        return 1000 * self.seconds / self.count if self.count else None


def _answering_at(latency: float, receive: Receive, send: Send, held: Held) -> Send:
    """`send`, holding the answer's first message until `latency` seconds after now, the request's
    arrival: the latency is the time to its answer, the handler's own work included, as a real API's
    is; added after the work, it would make every request slower than the mean asked for. A client
    that hangs up meanwhile is told apart (`ClientDisconnect`), as while a request is read."""
    arrived = asyncio.get_running_loop().time()
    when = arrived + latency

    async def holding(message: Message) -> None:
        if message["type"] == "http.response.start":
            loop = asyncio.get_running_loop()
            wake = when - held.early
            waits = wake > loop.time()
            await _until(wake, receive)
            now = loop.time()
            if waits:
                held.left(now - when)
            held.count += 1
            held.seconds += now - arrived
        await send(message)

    return holding


async def _until(when: float, receive: Receive) -> None:
    try:
        async with asyncio.timeout_at(when):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return
    raise ClientDisconnect()
