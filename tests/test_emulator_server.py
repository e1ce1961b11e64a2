"""`onboard emulator` as a real process on a real socket."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from helpers import free_port

API = "/energy-coordination/v1"


@pytest.fixture
def serve(tmp_path):
    procs = []

    def start(*flags: str):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "onboard", "emulator", "--port", str(port), "--state",
             str(tmp_path / "served.sqlite"), *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        procs.append(proc)
        banner = proc.stdout.readline()
        assert "emulator at" in banner, proc.stderr.read()
        return proc, f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _signed_in(base: str):
    with httpx.Client(base_url=base) as client:
        token = client.post("/connect/token", data={"grant_type": "client_credentials", "client_id": "a",
                                                    "client_secret": "b"}).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def test_serves_the_api_and_stops_on_ctrl_c(serve):
    proc, base = serve()
    with _signed_in(base) as api:
        assert api.post(f"{API}/users", json={"userId": "u1"}).status_code == 201
        assert api.get(f"{API}/users/u1").json() == {"userId": "u1"}
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert "emulator stopped: answered 2 API requests; faults injected: 0 throttled, 0 failed, 0 lost" in \
        proc.stdout.read()


def test_a_lost_answer_over_a_real_socket_leaves_the_write(serve):
    proc, base = serve("--lost-rate", "1")
    with _signed_in(base) as api:
        with pytest.raises(httpx.RemoteProtocolError):
            api.post(f"{API}/users", json={"userId": "u1"})
        assert api.get(f"{API}/users/u1").status_code == 200
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)
    assert "1 lost" in proc.stdout.read() and "Traceback" not in proc.stderr.read()


def test_configured_client_only(serve):
    _, base = serve("--client-id", "partner", "--client-secret", "s3cret")
    with httpx.Client(base_url=base) as c:
        assert c.post("/connect/token", data={"grant_type": "client_credentials", "client_id": "partner",
                                              "client_secret": "nope"}).status_code == 400
        assert c.post("/connect/token", data={"grant_type": "client_credentials", "client_id": "partner",
                                              "client_secret": "s3cret"}).status_code == 200


def test_reset_wipes_the_state(serve, tmp_path):
    proc, base = serve()
    with _signed_in(base) as api:
        api.post(f"{API}/users", json={"userId": "u1"})
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)
    state = tmp_path / "served.sqlite"
    assert state.exists()
    done = subprocess.run([sys.executable, "-m", "onboard", "emulator", "--reset", "--state", str(state)],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "wiped" in done.stdout and not state.exists()


def test_bad_knob_is_a_clear_message_not_a_traceback():
    done = subprocess.run([sys.executable, "-m", "onboard", "emulator", "--fail-rate", "2"],
                          capture_output=True, text=True, env={**os.environ})
    assert done.returncode == 2
    assert "--fail-rate" in done.stderr and "Traceback" not in done.stderr


def test_onboard_run_against_the_served_emulator_over_http(serve, tmp_path):
    _, base = serve("--client-id", "partner", "--client-secret", "s3cret")
    sample = Path(__file__).resolve().parents[1] / "sample_data" / "customers.csv"
    done = subprocess.run(
        [sys.executable, "-m", "onboard", "run", str(sample), "--out", str(tmp_path / "out"),
         "--base-url", f"{base}{API}", "--token-url", f"{base}/connect/token"],
        capture_output=True, text=True,
        env={**os.environ, "SPARK_CLIENT_ID": "partner", "SPARK_CLIENT_SECRET": "s3cret"},
    )
    assert done.returncode == 0, done.stderr
    assert "125 rows: 125 created" in done.stdout


def test_a_busy_port_is_a_clear_message(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "onboard", "emulator", "--port", str(port), "--state",
                               str(tmp_path / "s.sqlite")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "choose another --port" in done.stderr and "Traceback" not in done.stderr


def test_the_served_emulator_parses_http_with_httptools():
    """uvicorn's default (`http="auto"`) takes httptools when it is installed, as the package
    declares it: a fifth less emulator CPU per request than h11 under the benchmark's load."""
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from onboard.emulator import EmulatorSettings, Store, create_app

    config = uvicorn.Config(create_app(EmulatorSettings(), Store()), lifespan="off")
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol


def test_a_killed_emulator_keeps_every_write_it_answered_for(serve, tmp_path):
    """The state is not flushed to the disk (`synchronous = OFF`), yet every commit is in the
    operating system's hands before the answer leaves: SIGKILL loses nothing."""
    from onboard.emulator import Store

    proc, base = serve()
    with _signed_in(base) as api:
        assert api.post(f"{API}/users/batch", json={"users": [{"userId": f"u{i}"} for i in range(50)]}
                        ).status_code == 201
        assert api.post(f"{API}/users/u1/locations", json={"locationId": "l1", "meterPointIds": ["1"]}
                        ).status_code == 201
        assert api.post(f"{API}/users/u1/locations/l1/resources", json={"resourceId": "r1",
                                                                         "resourceType": "Charger"}).status_code == 201
    proc.kill()
    proc.wait(timeout=10)
    store = Store(tmp_path / "served.sqlite")
    assert store.counts() == {"users": 50, "locations": 1, "resources": 1}
    store.close()


def test_serving_imports_neither_httpx_nor_shapely():
    """Start-up is CPU the benchmark counts against the emulator: httpx (for an in-process lost
    answer) and shapely with numpy (for the test areas) are imported when first needed."""
    code = ("import sys, uvicorn, onboard.cli; from onboard.emulator.app import create_app;"
            "print(sorted({'httpx', 'shapely', 'numpy'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
