"""The wire under the client: aiohttp's pool beneath `httpx.AsyncClient` for a real API.

What matters most is what a failure says about a write. Only a connection that was never made
means "not sent"; an answer lost after the request went out (the server hung up, reset the
connection, or answered something that is not HTTP) means "may have happened", so the run looks
the entity up and counts it as created by this run, never as one that existed. These tests drive
that over real sockets: the emulator served with `--lost-rate`, and small hostile servers written
here that hang up after reading the request.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from helpers import HEADERS, MPIDS, SAMPLES, free_port, read_csv, run, state_counts, summary_of, write_csv
from onboard import contract, records
from onboard import plan as planning
from onboard import sheet as sheets
from onboard.transport import AiohttpTransport

API = "/energy-coordination/v1"
FAST = {"ONBOARD_RETRY_BASE": "0.01", "ONBOARD_RETRY_CAP": "0.05", "ONBOARD_RETRY_ATTEMPTS": "12"}
SURELY_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv("SPARK_CLIENT_ID", "partner")
    monkeypatch.setenv("SPARK_CLIENT_SECRET", "s3cret")
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def served(tmp_path) -> Iterator[Callable[..., tuple[subprocess.Popen, str]]]:
    """`onboard emulator` in its own process, with the knobs given."""
    procs = []

    def start(*knobs: str) -> tuple[subprocess.Popen, str]:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "onboard", "emulator", "--port", str(port), "--state",
                                 str(tmp_path / "served.sqlite"), *knobs],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        assert "emulator at" in proc.stdout.readline(), proc.stderr.read()
        return proc, f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)
    return proc.stdout.read()


def _target(base: str) -> list[str]:
    return ["--base-url", base + API, "--token-url", base + "/connect/token", "--no-progress"]


# lost answers, served over HTTP


def test_lost_answers_over_http_are_looked_up_and_count_as_created(capsys, tmp_path, served, credentials):
    proc, base = served("--lost-rate", "0.3", "--seed", "3")
    code, out, err = run(capsys, "run", SAMPLES / "customers.csv", "--out", tmp_path / "out", *_target(base))
    stopped = _stop(proc)
    assert code == 0, err
    lost = int(re.search(r"(\d+) lost", stopped)[1])
    assert lost > 10, stopped
    assert {r["status"] for r in read_csv(tmp_path / "out" / "customers.results.csv")} == {"created"}
    summary = summary_of(tmp_path / "out", "customers")
    for kind, counts in summary["entities"].items():
        assert counts["exists"] == 0 and counts["failed"] == 0, (kind, counts)
    # the writes whose answers were lost were answered "exists" when sent again, and still count as created
    assert summary["statuses"].get("400", 0) + summary["statuses"].get("409", 0) > 0
    plan = planning.build(records.check(sheets.read(SAMPLES / "customers.csv")))
    assert state_counts(tmp_path / "served.sqlite") == {"users": len(plan.users), "locations": len(plan.locations),
                                                        "resources": len(plan.resources)}


# a hostile server that hangs up after reading the request


class HangUp(socketserver.ThreadingTCPServer):
    """Acts like the API for one customer, except that it reads the first `POST /users/batch` and then
    hangs up (`close`) or resets the connection (`reset`) without answering: the user is created all
    the same. Sent again, the batch is refused as the user exists."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, how: str) -> None:
        self.how = how
        self.seen: list[str] = []
        self.users: set[str] = set()
        super().__init__(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def _handler(self) -> type[socketserver.StreamRequestHandler]:
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while True:
                    line = self.rfile.readline().decode("latin-1")
                    if not line.strip():
                        return
                    method, path, _ = line.split(" ", 2)
                    length = 0
                    while (header := self.rfile.readline().decode("latin-1")).strip():
                        if header.lower().startswith("content-length:"):
                            length = int(header.split(":", 1)[1])
                    body = self.rfile.read(length)
                    route = f"{method} {urlsplit(path).path.removeprefix(API)}"
                    server.seen.append(route)
                    if route == "POST /users/batch" and server.seen.count(route) == 1:
                        server.users.update(u["userId"] for u in json.loads(body)["users"])
                        if server.how == "reset":  # RST instead of FIN
                            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        return
                    self.wfile.write(server.answer(route, body))

        return Handler

    def answer(self, route: str, body: bytes) -> bytes:
        def reply(status: int, content: object) -> bytes:
            data = json.dumps(content).encode()
            return (f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
                    .encode() + data)

        match route.split("/"):
            case ["POST ", "connect", "token"]:
                return reply(200, {"access_token": "t0k3n", "token_type": "Bearer", "expires_in": 3600})
            case ["GET ", "users"]:
                return reply(200, {"pagination": {"currentPage": 1, "pageSize": 1000, "totalRecords": 0}, "users": []})
            case ["POST ", "users", "batch"]:
                taken = [u["userId"] for u in json.loads(body)["users"] if u["userId"] in self.users]
                return reply(400, f"User '{taken[0]}' already exists") if taken else reply(201, json.loads(body))
            case ["GET ", "users", user] if user in self.users:
                return reply(200, {"userId": user})
        return reply(404, "not found")

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def hang_up() -> Iterator[Callable[[str], HangUp]]:
    servers: list[HangUp] = []

    def start(how: str) -> HangUp:
        servers.append(HangUp(how))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_server_hanging_up_after_reading_a_write_is_a_lost_answer_not_a_refusal(capsys, tmp_path, hang_up,
                                                                                    credentials, how):
    """Taken for "not sent", the second attempt's "already exists" would make the user one that
    existed before the run; it is one this run created."""
    server = hang_up(how)
    source = write_csv(tmp_path / "in.csv", [["c1", "", "", "", "", "", "", ""]], HEADERS)
    code, out, err = run(capsys, "run", source, *_target(server.url))
    assert code == 0, err
    assert summary_of(tmp_path, "in")["entities"]["users"] == {"created": 1, "exists": 0, "failed": 0}
    (user,) = server.users
    assert f"GET /users/{user}" in server.seen[server.seen.index("POST /users/batch"):]  # looked up


# what each failure says about a request, at the transport


class Misbehaving(socketserver.ThreadingTCPServer):
    """Reads one request, then does `what`."""

    daemon_threads = True

    def __init__(self, what: str) -> None:
        def handle(handler: socketserver.StreamRequestHandler) -> None:
            while handler.rfile.readline().strip():
                pass
            if what == "reset":
                handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif what == "not http":
                handler.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            elif what == "cut short":
                handler.wfile.write(b"HTTP/1.1 201 Created\r\ncontent-length: 100\r\n\r\n{\"userId\":")

        super().__init__(("127.0.0.1", 0), type("Handler", (socketserver.StreamRequestHandler,), {"handle": handle}))
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()


@pytest.mark.anyio
@pytest.mark.parametrize(("what", "error"), [
    ("close", httpx.RemoteProtocolError),
    ("reset", httpx.TransportError),
    ("not http", httpx.RemoteProtocolError),
    ("cut short", httpx.RemoteProtocolError),
])
async def test_an_answer_lost_after_the_request_went_out_is_never_a_connect_error(what, error):
    server = Misbehaving(what)
    try:
        async with httpx.AsyncClient(transport=AiohttpTransport(4)) as client:
            with pytest.raises(error) as caught:
                await client.post(f"http://127.0.0.1:{server.server_address[1]}{API}/users", json={"userId": "u"})
        assert not isinstance(caught.value, SURELY_NOT_SENT)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.anyio
async def test_a_connection_never_made_is_a_connect_error():
    async with httpx.AsyncClient(transport=AiohttpTransport(4)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(f"http://127.0.0.1:{free_port()}{API}/users", json={"userId": "u"})


class Tls(socketserver.ThreadingTCPServer):
    """Answers every request with 200 over TLS, with a certificate for 127.0.0.1 that only
    `cert` vouches for."""

    daemon_threads = True

    def __init__(self, folder: Path) -> None:
        self.cert, key = folder / "cert.pem", folder / "key.pem"
        made = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                               "-nodes", "-keyout", str(key), "-out", str(self.cert), "-days", "1", "-subj",
                               "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True)
        assert made.returncode == 0, made.stderr
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)

        def handle(handler: socketserver.StreamRequestHandler) -> None:
            while handler.rfile.readline().strip():
                pass
            handler.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}")

        super().__init__(("127.0.0.1", 0), type("Handler", (socketserver.StreamRequestHandler,), {"handle": handle}))
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server_address[1]}/"
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()


@pytest.mark.anyio
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
async def test_tls_is_verified_as_httpx_verifies_it(tmp_path, monkeypatch):
    """httpx's roots (certifi, or SSL_CERT_FILE): a certificate they do not vouch for is refused
    before anything is sent."""
    server = Tls(tmp_path)
    try:
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        async with httpx.AsyncClient(transport=AiohttpTransport(2)) as client:
            with pytest.raises(httpx.ConnectError, match="certificate"):
                await client.get(server.url)
        monkeypatch.setenv("SSL_CERT_FILE", str(server.cert))
        async with httpx.AsyncClient(transport=AiohttpTransport(2)) as client:
            assert (await client.get(server.url)).json() == {}
    finally:
        server.shutdown()
        server.server_close()


# a proxy named by the environment


class Proxy(socketserver.ThreadingTCPServer):
    """A forwarding HTTP proxy: takes absolute-form requests and relays them."""

    daemon_threads = True

    def __init__(self) -> None:
        self.relayed: list[str] = []
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while line := self.rfile.readline().decode("latin-1").strip():
                    method, url, _ = line.split(" ", 2)
                    headers = {}
                    while (header := self.rfile.readline().decode("latin-1")).strip():
                        name, value = header.split(":", 1)
                        headers[name.strip()] = value.strip()
                    body = self.rfile.read(int(headers.get("Content-Length") or headers.get("content-length") or 0))
                    proxy.relayed.append(f"{method} {url}")
                    parts = urlsplit(url)
                    upstream = HTTPConnection(parts.hostname, parts.port, timeout=10)
                    upstream.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body, headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    upstream.close()
                    self.wfile.write(f"HTTP/1.1 {answer.status} {answer.reason}\r\ncontent-type: "
                                     f"{answer.getheader('content-type', '')}\r\ncontent-length: {len(data)}\r\n\r\n"
                                     .encode() + data)

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()


def test_a_proxy_named_by_the_environment_is_used(capsys, tmp_path, served, credentials, monkeypatch):
    """aiohttp would look the proxy variables up on every request; such a run keeps httpx's own pool,
    which follows them."""
    _, base = served()
    proxy = Proxy()
    try:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        source = write_csv(tmp_path / "in.csv", [["c1", "home", "", MPIDS[0], "", "", "SN1", "Charger"]], HEADERS)
        code, out, err = run(capsys, "run", source, *_target(base))
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert code == 0, err
    assert f"POST {base}/connect/token" in proxy.relayed
    assert f"POST {base}{API}/users/batch" in proxy.relayed


# the answer check: compiled, and exactly as strict as the contract's tolerant reader


def _variants(body: object) -> Iterator[object]:
    """`body`, and every body one change away: a field removed, or a value replaced by another type."""
    yield body
    for path in _paths(body):
        for value in (None, 1, 1.5, "x", True, [], {}, ["x"], {"a": 1}, "DROP"):
            yield _changed(body, path, value)


def _paths(value: object, path: tuple = ()) -> Iterator[tuple]:
    if path:
        yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        yield from _paths(inner, (*path, key))


def _changed(body: object, path: tuple, value: object) -> object:
    copy = json.loads(json.dumps(body))
    holder = copy
    for key in path[:-1]:
        holder = holder[key]
    if value == "DROP":
        del holder[path[-1]]
    else:
        holder[path[-1]] = value
    return copy


@pytest.mark.anyio
async def test_the_compiled_answer_check_agrees_with_the_tolerant_reader(api):
    """Every answer the client checks, as the emulator gives it and changed in every way one step
    away: the fast check (jsonschema-rs) finds a body fitting exactly when jsonschema does."""
    assert (await api.post(f"{API}/users/batch", json={"users": [{"userId": "u1"}]})).status_code == 201
    location = {"userId": "u1", "locationId": "l1", "meterPointIds": [MPIDS[0]], "locationType": "Residential",
                "coordinates": {"latitude": 59.9, "longitude": 10.7}}
    answers = {
        ("PostUsers", 201): await api.post(f"{API}/users/batch", json={"users": [{"userId": "u2"}]}),
        ("PostLocations", 201): await api.post(f"{API}/users/locations/batch", json={"locations": [location]}),
        ("PostLocationBoundResource", 201): await api.post(f"{API}/users/u1/locations/l1/resources", json={
            "resourceId": "r1", "resourceType": "Charger", "meterPointId": MPIDS[0]}),
        ("PostVehicle", 201): await api.post(f"{API}/users/u1/vehicles", json={"resourceId": "v1",
                                                                               "resourceType": "Vehicle"}),
        ("GetUsers", 200): await api.get(f"{API}/users", params={"page": 1, "pageSize": 10}),
        ("GetUserById", 200): await api.get(f"{API}/users/u1"),
        ("GetLocationsByUserId", 200): await api.get(f"{API}/users/u1/locations"),
        ("GetLocationByLocationId", 200): await api.get(f"{API}/users/u1/locations/l1"),
        ("GetResourcesForUser", 200): await api.get(f"{API}/users/u1/resources"),
        ("GetResourceById", 200): await api.get(f"{API}/resources/r1"),
    }
    checked = 0
    for (operation, status), answer in answers.items():
        assert answer.status_code == status, (operation, answer.text)
        reader = contract.answer_validator(operation, status)
        for body in _variants(answer.json()):
            fits = not any(True for _ in reader.iter_errors(body))
            assert (contract.answer_problems(operation, status, body) == []) == fits, (operation, body)
            checked += 1
    assert checked > 500


# start-up


def _imported_by(code: str) -> set[str]:
    heavy = ("httpx", "aiohttp", "openpyxl", "uvicorn", "starlette.routing", "onboard.emulator.app", "jsonschema",
             "openapi_schema_validator", "tenacity", "click", "rich")
    done = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split()) & set(heavy)


def test_importing_the_command_line_loads_no_client_emulator_or_writer():
    assert _imported_by("import onboard.cli") == set()


def test_help_loads_no_http_client_emulator_app_or_writer():
    loaded = _imported_by("import contextlib, io\nfrom onboard.cli import main\n"
                          "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
                          "    main(['--help'])")
    assert not loaded & {"aiohttp", "openpyxl", "uvicorn", "starlette.routing", "onboard.emulator.app", "jsonschema",
                         "openapi_schema_validator", "tenacity"}


def test_a_run_without_failures_loads_neither_jsonschema_nor_tenacity(tmp_path, served):
    """Answers are checked by the compiled check, jsonschema only says what is wrong; tenacity is
    set up only after a failure."""
    _, base = served()
    source = write_csv(tmp_path / "in.csv", [["c1", "home", "", MPIDS[0], "", "", "SN1", "Charger"]], HEADERS)
    code = ("import os\nfrom onboard.cli import main\n"
            "os.environ.update(SPARK_CLIENT_ID='partner', SPARK_CLIENT_SECRET='s3cret')\n"
            f"assert main(['run', {str(source)!r}, *{_target(base)!r}]) == 0")
    assert not _imported_by(code) & {"jsonschema", "openapi_schema_validator", "tenacity", "click", "rich"}
