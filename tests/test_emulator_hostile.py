"""The emulator against hostile clients: text no UTF-8 can carry, JSON nested without end, bodies
without end, clients that vanish mid-request, and a `%` in a knob's help."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import API

from helpers import free_port
from onboard import contract
from onboard.emulator import EmulatorSettings
from onboard.emulator.app import IMPLEMENTED

MPID = "707057500012345671"
LONE = "\ud800"  # half of a UTF-16 pair: json.dumps writes it as the escape `\ud800`
NOT_UTF8 = "%ED%A0%80"  # the UTF-8 bytes a surrogate would take, which UTF-8 forbids


@pytest.fixture
def serve(tmp_path):
    """`onboard emulator` in its own process; stderr goes to a file, read after it stops."""
    procs = []

    def start(*flags: str):
        port = free_port()
        err = (tmp_path / f"stderr-{port}.txt").open("w+")
        proc = subprocess.Popen(
            [sys.executable, "-m", "onboard", "emulator", "--port", str(port), "--state",
             str(tmp_path / "served.sqlite"), *flags],
            stdout=subprocess.PIPE, stderr=err, text=True,
        )
        procs.append(proc)
        banner = proc.stdout.readline()
        assert "emulator at" in banner, Path(err.name).read_text()
        return proc, port, Path(err.name)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0


# `onboard emulator --help`


def test_help_lists_every_knob_even_one_with_a_percent_sign():
    done = subprocess.run([sys.executable, "-m", "onboard", "emulator", "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    flat = " ".join(done.stdout.split())  # argparse wraps the help text
    for name, field in EmulatorSettings.model_fields.items():
        if name != "state":
            assert f"--{name.replace('_', '-')}" in flat
            assert " ".join(field.description.split()) in flat
    assert "±50%" in flat


# text no UTF-8 can carry


def _setup(app) -> None:
    app.store.add_users(["u1"])
    from onboard.emulator.store import Location
    app.store.add_locations([Location("l1", "u1", "Unknown", [MPID])])


# one case per string field a request body carries: where the lone surrogate sits
BODIES = [
    ("PostUser", {}, {"userId": LONE}),
    ("PostUsers", {}, {"users": [{"userId": "fine"}, {"userId": LONE}]}),
    ("PostLocation", {"userId": "u1"}, {"locationId": LONE, "meterPointIds": [MPID]}),
    ("PostLocation", {"userId": "u1"}, {"locationId": "l2", "meterPointIds": [LONE]}),
    ("PostLocation", {"userId": "u1"}, {"locationId": "l2", "meterPointId": LONE}),
    ("PostLocations", {}, {"locations": [{"userId": "u1", "locationId": LONE, "meterPointIds": [MPID]}]}),
    ("PostLocations", {}, {"locations": [{"userId": LONE, "locationId": "l2", "meterPointIds": [MPID]}]}),
    ("UpdateLocation", {"userId": "u1", "locationId": "l1"}, {"locationId": "l1", "meterPointIds": [LONE]}),
    ("PatchLocation", {"userId": "u1", "locationId": "l1"}, {"meterPointIds": [MPID, LONE]}),
    ("PostLocationBoundResource", {"userId": "u1", "locationId": "l1"}, {"resourceId": LONE,
                                                                         "resourceType": "Charger"}),
    ("PostLocationBoundResource", {"userId": "u1", "locationId": "l1"}, {"resourceId": "r1",
                                                                         "resourceType": "Charger",
                                                                         "meterPointId": LONE}),
    ("PostVehicle", {"userId": "u1"}, {"resourceId": LONE, "resourceType": "Vehicle"}),
    ("PostUser", {}, {"userId": "fine", LONE: "a field name"}),
]


def _assert_400_in_the_specs_shape(op: contract.Operation, answer: httpx.Response,
                                   reason: str = "not valid text") -> None:
    assert answer.status_code == 400, answer.text
    media = op.media_types(400)
    if "application/problem+json" in media:
        assert answer.headers["content-type"] == "application/problem+json"
        assert reason in answer.json()["detail"]
    elif media:
        assert reason in answer.json()
    else:
        assert answer.content == b""


@pytest.mark.anyio
@pytest.mark.parametrize("escaped", [True, False], ids=["json-escape", "raw-bytes"])
@pytest.mark.parametrize(("operation", "params", "body"), BODIES)
async def test_a_lone_surrogate_in_a_body_is_a_400_and_nothing_is_stored(emulator, operation, params, body,
                                                                         escaped):
    app, api = emulator
    _setup(app)
    op = contract.operation(operation)
    text = json.dumps(body)
    # json.loads reads raw bytes with "surrogatepass", so the three bytes UTF-8 forbids arrive the same way
    content = text.encode() if escaped else json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    before = app.store.counts()
    answer = await api.request(op.method, API + op.path(**params), content=content,
                               headers={"content-type": "application/json"})
    _assert_400_in_the_specs_shape(op, answer)
    assert app.store.counts() == before


def _raw_path(op: contract.Operation, bad: str) -> str:
    """The operation's path with `bad` in parameter `{bad}` and good IDs elsewhere, left as written."""
    good = {"userId": "u1", "locationId": "l1", "resourceId": "r1", "mpid": MPID}
    return "/" + "/".join(NOT_UTF8 if s == "{" + bad + "}" else good.get(s.strip("{}"), s) for s in op.segments)


PATH_PARAMS = [(name, s.strip("{}")) for name in IMPLEMENTED for s in contract.operation(name).segments
               if s.startswith("{")]


@pytest.mark.anyio
@pytest.mark.parametrize(("operation", "param"), PATH_PARAMS)
async def test_bytes_that_are_not_utf8_in_a_path_are_a_400_not_another_id(emulator, operation, param):
    app, api = emulator
    _setup(app)
    app.store.add_users(["\ufffd\ufffd\ufffd"])  # what a lenient decoder would make of the bad bytes
    op = contract.operation(operation)
    body = {"locationId": "l1", "meterPointIds": [MPID], "resourceId": "r2", "resourceType": "Charger"}
    body = {k: v for k, v in body.items() if op.request_schema is None
            or k in contract.schema(op.request_schema).get("properties", {})}
    answer = await api.request(op.method, API + _raw_path(op, param),
                               json=body if op.request_schema else None)
    _assert_400_in_the_specs_shape(op, answer)


@pytest.mark.anyio
@pytest.mark.parametrize("query", [f"{NOT_UTF8}=1", f"page={NOT_UTF8}"])
async def test_bytes_that_are_not_utf8_in_a_query_are_a_400(api, query):
    answer = await api.get(f"{API}/users?{query}")
    assert answer.status_code == 400 and "not valid text" in answer.json()


# IDs holding control characters: a NUL, a line break, a tab, an escape, DEL, a C1 control

CONTROLS = ["\x00", "\n", "\t", "\x1b", "\x7f", "\x85"]


def _with(value: object, bad: str) -> object:
    """`value` with the lone surrogate of a BODIES case replaced by an ID holding `bad`."""
    if value == LONE:
        return f"a{bad}b"
    if isinstance(value, list):
        return [_with(v, bad) for v in value]
    if isinstance(value, dict):
        return {k: _with(v, bad) for k, v in value.items()}
    return value


ID_BODIES = [case for case in BODIES if LONE not in case[2]] + [  # every ID field, the field names aside
    ("PostLocations", {}, {"locations": [{"userId": "u1", "locationId": "l2", "meterPointIds": [MPID, LONE]}]}),
    ("PostLocations", {}, {"locations": [{"userId": "u1", "locationId": "l2", "meterPointId": LONE}]}),
    ("UpdateLocation", {"userId": "u1", "locationId": "l1"}, {"locationId": "l1", "meterPointId": LONE}),
]


def _id_fields(schema: dict, where: str = "") -> set[str]:
    """Every field of a request schema that holds an ID or IDs, by the spec's naming (`...Id`, `...Ids`),
    as dotted paths with arrays left out: `locations.meterPointIds`."""
    schema = contract.schema(schema["$ref"].rsplit("/", 1)[-1]) if "$ref" in schema else schema
    found = set()
    for name, sub in schema.get("properties", {}).items():
        if name.endswith(("Id", "Ids")):
            found.add(where + name)
        found |= _id_fields(sub.get("items", sub), f"{where}{name}.")
    return found


def _holding_lone(value: object, where: str = "") -> set[str]:
    """The dotted paths of the fields holding LONE, arrays left out."""
    if value == LONE:
        return {where.rstrip(".")}
    if isinstance(value, list):
        return {found for v in value for found in _holding_lone(v, where)}
    if isinstance(value, dict):
        return {found for k, v in value.items() for found in _holding_lone(v, f"{where}{k}.")}
    return set()


def test_the_id_cases_cover_every_id_field_of_every_request_body():
    """But UpdateLocation's body locationId: it must equal the path's, whose test is below."""
    for name in IMPLEMENTED:
        op = contract.operation(name)
        if op.request_schema is None:
            continue
        covered = {field for case in ID_BODIES if case[0] == name for field in _holding_lone(case[2])}
        wanted = _id_fields(contract.schema(op.request_schema)) - {"locationId" if name == "UpdateLocation" else ""}
        assert wanted and wanted <= covered, (name, wanted - covered)


@pytest.mark.anyio
@pytest.mark.parametrize("bad", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
@pytest.mark.parametrize(("operation", "params", "body"), ID_BODIES)
async def test_an_id_holding_a_control_character_is_a_400_and_nothing_is_stored(emulator, operation, params, body,
                                                                                bad):
    app, api = emulator
    _setup(app)
    op = contract.operation(operation)
    before = app.store.counts(), app.store.location("l1")
    answer = await api.request(op.method, API + op.path(**params), json=_with(body, bad))
    _assert_400_in_the_specs_shape(op, answer, "control character")
    assert (app.store.counts(), app.store.location("l1")) == before


@pytest.mark.anyio
@pytest.mark.parametrize("bad", ["\x00", "\n", "\x9f"], ids=["NUL", "LF", "U+009F"])
@pytest.mark.parametrize(("operation", "param"), PATH_PARAMS)
async def test_a_path_id_holding_a_control_character_is_a_400_where_the_spec_has_one(emulator, operation, param, bad):
    """Where the operation documents a 400; where it does not, the answer it documents for an ID
    nobody holds (nobody can: every body holding one is refused)."""
    app, api = emulator
    _setup(app)  # u1, l1: were the character dropped, these would answer
    op = contract.operation(operation)
    good = {"userId": "u1", "locationId": "l1", "resourceId": "r1", "mpid": MPID}
    path = op.path(**{name: f"{good[name]}{bad}" if name == param else good[name] for name in good
                      if "{" + name + "}" in op.template})
    body = {"locationId": "l1", "meterPointIds": [MPID], "resourceId": "r2", "resourceType": "Charger"}
    body = {k: v for k, v in body.items() if op.request_schema is None
            or k in contract.schema(op.request_schema).get("properties", {})}
    before = app.store.counts()
    answer = await api.request(op.method, API + path, json=body if op.request_schema else None)
    if 400 in op.responses:
        _assert_400_in_the_specs_shape(op, answer, "control character")
    elif 404 in op.responses:
        assert answer.status_code == 404
    else:
        assert answer.status_code == 200 and answer.json()["isEligible"] is False
    assert app.store.counts() == before


@pytest.mark.anyio
async def test_the_reported_nul_in_a_user_id_is_refused_and_odd_but_printable_ids_are_not(api):
    refused = await api.post(f"{API}/users", content=b'{"userId":"a\\u0000b"}',
                             headers={"content-type": "application/json"})
    assert refused.status_code == 400
    assert refused.json() == ("userId holds a control character (U+0000): an ID cannot hold line breaks, tabs or"
                              " other control characters")
    for odd in ("a b", "ø/æ", "kunde\u00a01", "\u200bzero-width", "a\u2028b", "🔌"):
        assert (await api.post(f"{API}/users", json={"userId": odd})).status_code == 201, odd


# JSON nested without end


@pytest.mark.anyio
@pytest.mark.parametrize("depth", [50_000, 900, 40])
@pytest.mark.parametrize("shape", ["list", "object"])
async def test_deeply_nested_json_is_a_400(emulator, depth, shape):
    app, api = emulator
    if shape == "list":
        content = b"[" * depth + b"]" * depth
    else:
        content = b'{"userId": ' + b'{"a": ' * depth + b"1" + b"}" * (depth + 1)
    answer = await api.post(f"{API}/users", content=content, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "nests deeper than" in answer.json()
    assert app.store.counts()["users"] == 0


@pytest.mark.anyio
async def test_the_specs_own_nesting_still_passes(api):
    await api.post(f"{API}/users", json={"userId": "u1"})
    body = {"locations": [{"userId": "u1", "locationId": "l1", "coordinates": {"latitude": 59.9, "longitude": 10.7}}]}
    assert (await api.post(f"{API}/users/locations/batch", json=body)).status_code == 201


# bodies without end


async def _streamed(size: int, chunk: int = 2**16):
    """A body sent chunked, with no Content-Length: only counting while receiving can stop it."""
    for _ in range(size // chunk):
        yield b"x" * chunk


@pytest.mark.anyio
async def test_a_body_over_the_limit_is_a_413_declared_or_streamed(make_emulator):
    app, api = await make_emulator(max_body_bytes=2**20)
    token = {"grant_type": "client_credentials", "client_id": "partner", "client_secret": "s3cret"}
    big = json.dumps({"users": [{"userId": f"user-{i:08}"} for i in range(60_000)]}).encode()
    assert len(big) > 2**20
    for path in (f"{API}/users/batch", "/connect/token", f"{API}/users/u1", "/nowhere"):
        assert (await api.post(path, content=big)).status_code == 413, path
    for path in (f"{API}/users/batch", "/connect/token"):  # elsewhere a body is never read, so never held
        assert (await api.post(path, content=_streamed(2 * 2**20))).status_code == 413, path
    assert app.store.counts()["users"] == 0
    assert (await api.post("/connect/token", data=token)).status_code == 200
    assert (await api.post(f"{API}/users/batch", content=big[:2**20 - 1000].rsplit(b",", 1)[0] + b"]}",
                           headers={"content-type": "application/json"})).status_code == 201


def test_the_body_limit_is_a_knob_flag_and_variable(monkeypatch):
    assert EmulatorSettings().max_body_bytes == 4 * 2**20
    monkeypatch.setenv("ONBOARD_EMULATOR_MAX_BODY_BYTES", "12345")
    assert EmulatorSettings().max_body_bytes == 12345


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
@pytest.mark.parametrize("declared", [False, True], ids=["streamed", "content-length"])
def test_an_unauthenticated_50_mb_token_request_leaves_memory_bounded(serve, declared):
    proc, port, _ = serve()
    size = 50 * 2**20
    content = b"x" * size if declared else (b"x" * 2**20 for _ in range(50))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        client.get("/nowhere")
        baseline = _rss_kib(proc.pid)
        peak, posting = baseline, threading.Event()

        def sample():
            nonlocal peak
            while not posting.wait(0.005):
                peak = max(peak, _rss_kib(proc.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            answer = client.post("/connect/token", content=content)
        finally:
            posting.set()
            sampler.join()
        peak = max(peak, _rss_kib(proc.pid))
    assert answer.status_code == 413
    assert peak - baseline < 20 * 1024, f"RSS grew {(peak - baseline) // 1024} MiB for a 50 MiB body"


# clients that vanish


CLIENT = textwrap.dedent("""
    import socket, sys, time
    port, token, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    held = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        if i % 2:
            body = b"grant_type=client_credentials&client_id=a&client_secret=b"
            head = b"POST /connect/token HTTP/1.1\\r\\ncontent-type: application/x-www-form-urlencoded\\r\\n"
        else:
            body = b'{"userId": "u%d"}' % i
            head = (b"POST /energy-coordination/v1/users HTTP/1.1\\r\\ncontent-type: application/json\\r\\n"
                    b"authorization: Bearer " + token.encode() + b"\\r\\n")
        s.sendall(head + b"host: emulator\\r\\ncontent-length: %d\\r\\n\\r\\n" % len(body) + body)
        held.append(s)
    print("in flight", flush=True)
    time.sleep(60)
""")


def _lines_once_quiet(stderr: Path, want: int, within: float = 15) -> list[str]:
    deadline = time.monotonic() + within
    while len(stderr.read_text().splitlines()) < want and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    return stderr.read_text().splitlines()


@pytest.mark.slow
def test_a_killed_client_leaves_one_line_per_request_in_flight_and_no_traceback(serve):
    proc, port, stderr = serve("--latency-ms", "2000")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        token = c.post("/connect/token", data={"grant_type": "client_credentials", "client_id": "a",
                                               "client_secret": "b"}).json()["access_token"]
    count = 12
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(port), token, str(count)], stdout=subprocess.PIPE,
                              text=True)
    assert client.stdout.readline() == "in flight\n"
    client.kill()  # every request is still in the emulator's added latency (1 s at the least)
    client.wait()
    lines = _lines_once_quiet(stderr, count)
    _stop(proc)
    assert "Traceback" not in stderr.read_text()
    assert len(lines) == count, lines
    for line in lines:
        assert "hung up before" in line and len(line) < 150, line
    assert sum("/connect/token" in line for line in lines) == count // 2


def test_the_emulator_keeps_serving_after_clients_vanish_mid_body(serve):
    proc, port, stderr = serve("--latency-ms", "200")
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST /connect/token HTTP/1.1\r\nhost: e\r\ncontent-length: 5000\r\n\r\nhalf")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        assert c.post("/connect/token", data={"grant_type": "client_credentials", "client_id": "a",
                                              "client_secret": "b"}).status_code == 200
    lines = _lines_once_quiet(stderr, 3)
    _stop(proc)
    assert "Traceback" not in stderr.read_text()
    assert len(lines) == 3 and all("hung up before POST /connect/token" in line for line in lines), lines


@pytest.mark.anyio
async def test_raw_bytes_that_are_not_utf8_in_a_query_are_a_400_not_a_crash(emulator):
    """A query string as the server hands it over, not percent-encoded (a client cannot send this
    through httpx, which encodes it)."""
    app, api = emulator
    path = f"{API}/users"
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"page=\xed\xa0\x80", "root_path": "",
             "headers": [(b"host", b"emulator"), (b"authorization", api.headers["Authorization"].encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 400 and b"not valid text" in sent[1]["body"]
