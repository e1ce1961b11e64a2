"""A misbehaving server: malformed answers, echoed secrets, escape sequences, a trickle of bytes.

Each test serves a small hostile HTTP server on 127.0.0.1 (raw sockets, a thread per connection)
that acts like the API and its token endpoint except where the test says otherwise, and drives
the real command line at it. Whatever the server does: a clear message and exit code, never a
traceback, never a secret in the terminal or in any file.
"""

from __future__ import annotations

import base64
import json
import re
import socketserver
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus, unquote_plus, urlsplit

import pytest

from helpers import HEADERS, MPIDS, read_csv, run, summary_of, write_csv
from onboard import plan as planning
from onboard import records
from onboard import sheet as sheets

API = "/energy-coordination/v1"
SECRET = "s3cr3t/Key+with=odd&more-after-an-ampersand"
PASSWORD = "hunter2-url-pw"
FAST = {"ONBOARD_RETRY_BASE": "0.01", "ONBOARD_RETRY_CAP": "0.05", "ONBOARD_RETRY_ATTEMPTS": "3"}


# the hostile server


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: str
    """As they came, one `name: value` per line."""
    body: bytes

    @property
    def route(self) -> str:
        return f"{self.method} {urlsplit(self.path).path.removeprefix(API)}"


@dataclass(frozen=True)
class Trickle:
    """An answer sent one byte a second."""

    data: bytes


def answer(status: int, body: bytes | str | object = b"", content_type: str = "application/json",
           reason: str = "Whatever", headers: str = "") -> bytes:
    if not isinstance(body, bytes | str):
        body = json.dumps(body)
    data = body.encode() if isinstance(body, str) else body
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {len(data)}\r\n"
            f"connection: close\r\n{headers}\r\n")
    return head.encode("latin-1") + data


HTML = "<!doctype html><html><head><title>Sign in to the proxy</title></head><body>...</body></html>"


class Threads(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False  # a trickle may still be writing to a client that gave up


class Hostile:
    """Answers like the API and its token endpoint, except where `override` returns something."""

    def __init__(self, override: Callable[[Request, Hostile], bytes | Trickle | None]) -> None:
        self.override = override
        self.tokens: list[str] = []
        self.seen: list[Request] = []
        hostile = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline().decode("latin-1")
                if not line.strip():
                    return
                method, path, _ = line.split(" ", 2)
                headers = []
                while (header := self.rfile.readline().decode("latin-1")).strip():
                    headers.append(header.strip())
                length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length")), 0)
                request = Request(method, path, "\n".join(headers), self.rfile.read(length))
                hostile.seen.append(request)
                reply = hostile.override(request, hostile) or hostile.regular(request)
                try:
                    if isinstance(reply, Trickle):
                        for i in range(len(reply.data)):
                            self.wfile.write(reply.data[i:i + 1])
                            self.wfile.flush()
                            time.sleep(1)
                    else:
                        self.wfile.write(reply)
                except OSError:
                    pass  # the client gave up

        self.server = Threads(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def token(self, expires_in: float = 3600) -> bytes:
        self.tokens.append(f"tok-{uuid.uuid4().hex}")
        return answer(200, {"access_token": self.tokens[-1], "token_type": "Bearer", "expires_in": expires_in})

    def regular(self, request: Request) -> bytes:
        """A well-behaved API that holds nothing and takes every write."""
        if request.path == "/connect/token":
            return self.token()
        body = json.loads(request.body) if request.body else {}
        parts = urlsplit(request.path).path.removeprefix(API).strip("/").split("/")
        match request.method, parts:
            case "GET", ["users"]:
                return answer(200, {"pagination": {"currentPage": 1, "pageSize": 1000, "totalRecords": 0},
                                    "users": []})
            case "POST", ["users", "batch"]:
                return answer(201, body)
            case "POST", ["users", "locations", "batch"]:
                return answer(201, body)
            case "POST", ["users", user, "locations", location, "resources"]:
                return answer(201, {**body, "userId": user, "locationId": location})
            case "POST", ["users", user, "vehicles"]:
                return answer(201, {**body, "userId": user})
        return answer(404)


@pytest.fixture
def serve(monkeypatch) -> Iterator[Callable[..., Hostile]]:
    servers: list[Hostile] = []
    monkeypatch.setenv("SPARK_CLIENT_ID", "partner")
    monkeypatch.setenv("SPARK_CLIENT_SECRET", SECRET)
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)

    def start(override: Callable[[Request, Hostile], bytes | Trickle | None] = lambda r, h: None) -> Hostile:
        servers.append(Hostile(override))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def sheet(tmp_path: Path, customers: int = 1) -> Path:
    rows = [[f"c{i}", "home", "", MPIDS[i], "", "", f"SN{i}", "Charger"] for i in range(customers)]
    return write_csv(tmp_path / "in.csv", rows, HEADERS)


def onboard(capsys, server: Hostile, source: Path, *more: str, userinfo: str = "") -> tuple[int, str, str]:
    base = server.url.replace("://", f"://{userinfo}")
    code, out, err = run(capsys, "run", source, "--base-url", base + API, "--token-url", base + "/connect/token",
                         "--no-progress", *more)
    assert "Traceback" not in err
    return code, out, err


# item 8: malformed answers


def cases(table: list[tuple]) -> list:
    """A table's rows as pytest cases, each named by its first column."""
    return [pytest.param(*row[1:], id=row[0]) for row in table]


def route(wanted: str, reply: bytes | Trickle) -> Callable[[Request, Hostile], bytes | Trickle | None]:
    return lambda request, server: reply if request.route == wanted else None


TOKEN_NONSENSE = [
    ("expires_in is not a number", answer(200, {"access_token": "t-1", "expires_in": "soon"}),
     "expires_in: Input should be a valid number"),
    ("an empty object", answer(200, {}), "access_token: Field required"),
    ("an HTML page", answer(200, HTML, "text/html"), "not with a usable token (an HTML page)"),
    ("invalid JSON", answer(200, '{"access_token": "t-1",'), "not with a usable token (text that is not JSON)"),
    ("a JSON list", answer(200, [{"access_token": "t-1"}]), "(JSON that is not an object)"),
    ("a token that cannot be a header", answer(200, {"access_token": "tøken\n"}), "access_token: String should"),
    ("a refusal whose error is not text", answer(400, {"error": {"code": [7]}}),
     "refused the client credentials ({'code': [7]})"),
]


@pytest.mark.parametrize(("reply", "words"), cases(TOKEN_NONSENSE))
def test_a_token_endpoint_answering_nonsense_is_exit_2_with_a_message(capsys, tmp_path, serve, reply, words):
    server = serve(route("POST /connect/token", reply))
    code, out, err = onboard(capsys, server, sheet(tmp_path))
    assert code == 2, err
    assert f"the token endpoint {server.url}/connect/token" in err and words in err
    assert not [r for r in server.seen if r.path.startswith(API)]  # nothing sent


def listed(user: str) -> Callable[[Request, Hostile], bytes | None]:
    """GET /users lists the sheet's user, so discovery goes on to read its locations and devices."""
    def reply(request: Request, server: Hostile) -> bytes | None:
        if request.route == "GET /users":
            return answer(200, {"pagination": {"currentPage": 1, "pageSize": 1000, "totalRecords": 1},
                                "users": [{"userId": user}]})
        return None
    return reply


READ_NONSENSE = [
    ("users page is an empty object", "GET /users", answer(200, {}),
     "GET /users with JSON of another shape (body: 'pagination' is a required property)"),
    ("users page is a list", "GET /users", answer(200, []), "GET /users with JSON of another shape (body: [] is not"),
    ("users page is an HTML page", "GET /users", answer(200, HTML, "text/html"), "GET /users with an HTML page"),
    ("users page is empty", "GET /users", answer(200, b""), "GET /users with an empty body"),
    ("users page nested too deep", "GET /users", answer(200, "[" * 900 + "]" * 900),
     "GET /users with JSON nested too deep"),
    ("users page has a user without an id", "GET /users",
     answer(200, {"pagination": {"currentPage": 1, "pageSize": 1000, "totalRecords": 1}, "users": [{}]}),
     "users[0]: 'userId' is a required property"),
    ("a user's locations are an object", "GET /users/{u}/locations", answer(200, {}),
     "GET /users/{userId}/locations with JSON of another shape (body: {} is not of type 'array')"),
    ("a user's devices are a list", "GET /users/{u}/resources", answer(200, []),
     "GET /users/{userId}/resources with JSON of another shape (body: [] is not of type 'object')"),
]


@pytest.mark.parametrize(("where", "reply", "words"), cases(READ_NONSENSE))
def test_an_api_answering_reads_with_nonsense_stops_the_run_with_exit_1(capsys, tmp_path, serve, where,
                                                                          reply, words):
    source = sheet(tmp_path)
    (user,) = planning.build(records.check(sheets.read(source))).users
    discovery = listed(user)

    def override(request: Request, server: Hostile) -> bytes | None:
        if request.route == where.replace("{u}", user):
            return reply
        return discovery(request, server)

    code, out, err = onboard(capsys, serve(override), source)
    assert code == 1, err
    assert words in err and "check --base-url" in err
    assert {r["status"] for r in read_csv(tmp_path / "in.results.csv")} == {"not sent"}


def test_nulls_in_a_read_stand_for_absent_fields(capsys, tmp_path, serve):
    """The vendor's own examples answer `"coordinates": null`; nulls deeper in are read the same way."""
    source = write_csv(tmp_path / "in.csv", [["c0", "home", "", MPIDS[0], "59.9", "10.7", "", ""]], HEADERS)
    plan = planning.build(records.check(sheets.read(source)))
    (user,), (location,) = plan.users, plan.locations
    discovery = listed(user)

    def override(request: Request, server: Hostile) -> bytes | None:
        if request.route == f"GET /users/{user}/locations":
            return answer(200, [{"locationId": location, "userId": None, "locationType": None, "meterPointIds": None,
                                 "coordinates": {"latitude": None, "longitude": None}}])
        return discovery(request, server)

    code, out, err = onboard(capsys, serve(override), source)
    assert code == 1, err
    (row,) = read_csv(tmp_path / "in.results.csv")
    assert row["status"] == "differs"
    assert row["error"].startswith(f"meter_point_ids: the API holds (none), the sheet says {MPIDS[0]}; "
                                   "latitude, longitude: the API holds (none), the sheet says 59.9, 10.7")


def test_a_refused_page_is_not_read_as_a_page(capsys, tmp_path, serve):
    source = sheet(tmp_path)

    def override(request: Request, server: Hostile) -> bytes | None:
        if request.route == "GET /users":
            if "page=1&" in request.path:
                return answer(200, {"pagination": {"currentPage": 1, "pageSize": 1, "totalRecords": 2}, "users": []})
            return answer(400, ["page", 2, "is", "gone"])
        return None

    code, out, err = onboard(capsys, serve(override), source)
    assert code == 0, err
    assert {r["status"] for r in read_csv(tmp_path / "in.results.csv")} == {"created"}


REFUSALS = [
    ("errors as a list", {"errors": ["userId is odd", "and so on"]},
     "refused by the API (400): userId is odd; and so on"),
    ("errors holding other values", {"errors": {"users[0]": ["is taken", 5, None]}, "title": {"x": 1}},
     "refused by the API (400): is taken; 5"),
    ("broken JSON", '{"errors": ', 'refused by the API (400): {"errors":'),
    ("JSON too deep to parse", "[" * 100_000 + "]" * 100_000, "refused by the API (400): [[[["),
    ("JSON deep enough to exhaust the reader", {"errors": [json.loads("[" * 900 + "]" * 900)]},
     'refused by the API (400): {"errors": [[[['),
]


@pytest.mark.parametrize(("body", "words"), cases(REFUSALS))
def test_a_refusal_of_any_shape_is_a_failed_row_with_the_reason(capsys, tmp_path, serve, body, words):
    server = serve(route("POST /users/batch", answer(400, body)))
    code, out, err = onboard(capsys, server, sheet(tmp_path, customers=2))
    assert code == 1, err
    errors = read_csv(tmp_path / "in.errors.csv")
    assert len(errors) == 2 and all(words in e["error"] for e in errors), errors
    assert "row 2 (failed): " in err and words in err


MALFORMED_SUCCESSES = [
    ("broken JSON", answer(201, '{"users": ['), "the API answered 201 with text that is not JSON, not what its "
     "contract documents, so whether this was registered is unknown: the next run looks it up"),
    ("an HTML page", answer(201, HTML, "text/html"), "the API answered 201 with an HTML page, not what"),
    ("an empty object", answer(201, {}),
     "the API answered 201 with JSON of another shape (body: 'users' is a required property)"),
]


@pytest.mark.parametrize(("reply", "words"), cases(MALFORMED_SUCCESSES))
def test_a_write_whose_success_is_malformed_is_a_failed_row_not_a_created_one(capsys, tmp_path, serve, reply,
                                                                               words):
    server = serve(route("POST /users/batch", reply))
    code, out, err = onboard(capsys, server, sheet(tmp_path, customers=2))
    assert code == 1, err
    errors = read_csv(tmp_path / "in.errors.csv")
    assert len(errors) == 2 and all(words in e["error"] for e in errors), errors
    assert "row 2 (failed): " in err and words in err
    assert len([r for r in server.seen if r.route == "POST /users/batch"]) == 1  # the batch is not bisected


TRANSPORT_NONSENSE = [
    ("not HTTP at all", b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "RemoteProtocolError"),
    ("a body that is not the gzip it claims",
     answer(200, b"not gzip at all", headers="content-encoding: gzip\r\n"), "DecodingError"),
]


@pytest.mark.parametrize(("reply", "words"), cases(TRANSPORT_NONSENSE))
def test_an_answer_that_is_not_http_is_retried_then_exit_1(capsys, tmp_path, serve, reply, words):
    server = serve(route("GET /users", reply))
    code, out, err = onboard(capsys, server, sheet(tmp_path))
    assert code == 1, err
    assert "the API did not answer GET /users after 3 attempts" in err and words in err


# item 10: no secret, token or URL password anywhere


def echoed(request: Request) -> str:
    """What a careless server repeats in a refusal: the form with the client secret, the headers
    with the bearer token or the Basic credentials from the URL, and each of them bare."""
    form = request.body.decode()
    bare = [h.split()[-1] for h in request.headers.splitlines() if h.lower().startswith("authorization")]
    return (f"you sent {request.method} {request.path} with {request.headers} and {form}, that is "
            f"{unquote_plus(form)}; the credentials {' '.join(bare)} are no good")


def everything_written(out: str, err: str, folder: Path, pattern: str = "*") -> bytes:
    return out.encode() + err.encode() + b"".join(p.read_bytes() for p in folder.rglob(pattern) if p.is_file())


def leaks(written: bytes, server: Hostile) -> list[str]:
    """Any 8 characters in a row of a secret, as written or as a form or Basic credentials carry it."""
    basic = base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    secrets = [SECRET, quote_plus(SECRET), PASSWORD, basic, *server.tokens]
    return [s[i:i + 8] for s in secrets for i in range(len(s) - 7) if s[i:i + 8].encode() in written]


def test_a_token_endpoint_echoing_the_request_shows_no_secret(capsys, tmp_path, serve):
    server = serve(lambda request, server: answer(401, {"error": "invalid_client",
                                                        "error_description": echoed(request)}))
    code, out, err = onboard(capsys, server, sheet(tmp_path), "--out", tmp_path / "out",
                             userinfo=f"user:{PASSWORD}@")
    assert code == 2
    assert "refused the client credentials (invalid_client you sent POST /connect/token" in err
    assert "client_secret=***" in err and "Basic ***" in err
    assert f"the token endpoint {server.url.replace('://', '://user:***@')}/connect/token" in err
    assert quote_plus(SECRET) in server.seen[0].body.decode()  # it was echoed, and redacted
    assert leaks(everything_written(out, err, tmp_path), server) == []


def test_an_api_echoing_headers_puts_no_token_or_password_in_any_output(capsys, tmp_path, serve):
    """Two customers' sites are refused with an echo of the request; the third's device meets 503s
    whose reason phrase echoes the token, so the run stops and keeps its journal."""
    source = sheet(tmp_path, customers=3)
    last = list(planning.build(records.check(sheets.read(source))).users)[-1]

    def override(request: Request, server: Hostile) -> bytes | None:
        if request.path == "/connect/token":
            return server.token(expires_in=0.01)  # a new token for every request
        if request.route == "POST /users/locations/batch" and last not in request.body.decode():
            return answer(400, json.dumps(echoed(request)))
        if request.route.endswith("/resources"):
            authorization = next(h for h in request.headers.splitlines() if h.lower().startswith("authorization"))
            return answer(503, echoed(request), reason=f"Unavailable for {authorization}")
        return None

    server = serve(override)
    code, out, err = onboard(capsys, server, source, "--out", tmp_path / "out", "--batch-size", "1",
                             userinfo=f"user:{PASSWORD}@")
    assert code == 1, err
    assert len(server.tokens) > 1  # every one of them is kept out
    assert "refused by the API (400): you sent POST" in err and "Authorization: Bearer ***" in err
    assert "did not answer POST /users/{userId}/locations/{locationId}/resources after 3 attempts (503 " \
           "Unavailable for Authorization: Bearer ***)" in err
    summary = summary_of(tmp_path / "out", "in")
    assert summary["base_url"] == f"{server.url.replace('://', '://user:***@')}{API}"
    journal = b"".join(p.read_bytes() for p in (tmp_path / "out").glob("in.journal.sqlite*"))
    assert b"you sent POST" in journal  # the echo reached the journal, redacted
    assert leaks(everything_written(out, err, tmp_path), server) == []


# item 13: escape sequences


ESCAPES = "\x1b[31mred\x1b[0m \x1b]0;pwned title\x07 bell\x07 line\r\nbreak \x9b2Jgone \x1b]8;;http://x\x1b\\link"


def test_escape_sequences_from_the_server_reach_neither_terminal_nor_files(capsys, tmp_path, serve):
    server = serve(route("POST /users/batch", answer(400, {"errors": {"userId": [ESCAPES]}})))
    code, out, err = onboard(capsys, server, sheet(tmp_path))
    assert code == 1
    written = everything_written(out, err, tmp_path, "in.*[nv]").decode().replace("\r\n", "\n")  # csv, json
    assert "red  bell line  break gone link" in err and "red  bell line  break gone link" in written
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", written)
    assert "pwned" not in written and "\\u00" not in written  # nor escaped in JSON


def test_escape_sequences_in_a_token_refusal_or_any_message_are_not_printed(capsys, tmp_path, serve):
    server = serve(route("POST /connect/token", answer(400, {"error": ESCAPES})))
    code, out, err = onboard(capsys, server, sheet(tmp_path))
    assert code == 2 and "(red  bell line  break gone link)" in err
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", err)
    code, out, err = run(capsys, "validate", tmp_path / "\x1b]0;pwned\x07\x1b[31mred.csv")  # any message
    assert code == 2 and "red.csv does not exist" in err
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", err)


# item 15: a server that trickles


@pytest.mark.parametrize("where", ["POST /connect/token", "GET /users", "POST /users/batch"])
def test_a_server_trickling_one_byte_a_second_is_given_up_on_in_bounded_time(capsys, tmp_path, serve,
                                                                            monkeypatch, where):
    monkeypatch.setenv("ONBOARD_TIMEOUT", "1")
    monkeypatch.setenv("ONBOARD_RETRY_DEADLINE", "3")
    monkeypatch.setenv("ONBOARD_RETRY_ATTEMPTS", "8")
    server = serve(route(where, Trickle(answer(200, {"padding": "x" * 200}))))
    began = time.monotonic()
    code, out, err = onboard(capsys, server, sheet(tmp_path))
    took = time.monotonic() - began
    assert code == 1, err
    assert took < 15
    assert "no complete answer within" in err
    if where == "POST /connect/token":
        assert f"the token endpoint {server.url}/connect/token did not answer" in err
    else:
        assert f"the API did not answer {where}" in err and "run the same command again to resume" in err
    if where == "POST /users/batch":  # it may have happened: the journal has the next run look it up first
        with sqlite3.connect(tmp_path / "in.journal.sqlite") as journal:
            assert journal.execute("SELECT kind, state FROM entities").fetchall() == [("user", "sent")]


def test_a_write_cut_short_counts_as_a_lost_answer(capsys, tmp_path, serve, monkeypatch):
    """The first batch is taken but its answer trickles; the retry hears the user exists: a lost
    answer, so the user counts as created by this run, not as one that existed."""
    monkeypatch.setenv("ONBOARD_TIMEOUT", "1")
    source = sheet(tmp_path)
    (user,) = planning.build(records.check(sheets.read(source))).users

    def override(request: Request, server: Hostile) -> bytes | Trickle | None:
        if request.route == "POST /users/batch":
            tries = len([r for r in server.seen if r.route == request.route])
            return Trickle(answer(201, request.body)) if tries == 1 else answer(400, f'"user {user} already exists"')
        if request.route == f"GET /users/{user}":
            return answer(200, {"userId": user})
        return None

    code, out, err = onboard(capsys, serve(override), source)
    assert code == 0, err
    assert summary_of(tmp_path, "in")["entities"]["users"] == {"created": 1, "exists": 0, "failed": 0}


# item 7: a .env that is not UTF-8


def test_a_dotenv_that_is_not_utf8_is_a_message(capsys, tmp_path, monkeypatch):
    (tmp_path / ".env").write_bytes(b"SPARK_CLIENT_ID=\xff\n")
    code, out, err = run(capsys, "run", sheet(tmp_path), "--no-progress")
    assert code == 2 and "Traceback" not in err
    assert f"cannot read {tmp_path / '.env'}: it is not UTF-8 text (byte 0xff at offset 16)" in err


@pytest.mark.parametrize("url", [f"http://user:{PASSWORD}@[::1", "http://host:99999/", f"ftp://user:{PASSWORD}@host/"])
def test_a_url_that_cannot_be_used_is_a_message_without_its_password(capsys, tmp_path, monkeypatch, url):
    monkeypatch.setenv("SPARK_CLIENT_ID", "partner")
    monkeypatch.setenv("SPARK_CLIENT_SECRET", SECRET)
    code, out, err = run(capsys, "run", sheet(tmp_path), "--base-url", url)
    assert code == 2 and "--base-url" in err and "Traceback" not in err
    assert PASSWORD not in out + err
