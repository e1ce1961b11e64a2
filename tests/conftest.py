from __future__ import annotations

import httpx
import pytest

from onboard.emulator import EmulatorSettings, create_app

API = "/energy-coordination/v1"


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Clock:
    """A clock the test moves by hand, for token lifetimes and rate windows."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def token_for(client: httpx.AsyncClient, client_id: str = "partner", secret: str = "s3cret") -> str:
    answer = await client.post("/connect/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                       "client_secret": secret})
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


@pytest.fixture
async def make_emulator(tmp_path):
    """Build an emulator (knobs as keyword arguments) and a signed-in client over the ASGI transport."""
    clients = []

    async def make(clock=None, **knobs):
        knobs.setdefault("state", tmp_path / "emulator.sqlite")
        app = create_app(EmulatorSettings(**knobs), clock=clock or Clock())
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emulator.local")
        clients.append(client)
        client.headers["Authorization"] = f"Bearer {await token_for(client)}"
        return app, client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def emulator(make_emulator):
    return await make_emulator()


@pytest.fixture
def api(emulator):
    return emulator[1]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No developer's credentials, .env or emulator state leaks into a test."""
    import os

    for name in list(os.environ):
        if name.startswith(("SPARK_", "ONBOARD_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.chdir(tmp_path)
