"""Test helpers: sheets on disk, the CLI in-process, and a spec check on the wire."""

from __future__ import annotations

import copy
import csv
import json
import socket
import sqlite3
from pathlib import Path
from urllib.parse import unquote

import httpx
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openpyxl import load_workbook

from onboard import cli, contract
from onboard.emulator.store import Store
from onboard.records import has_valid_check_digit

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data"
HEADERS = ["customer_id", "location_ref", "location_type", "meter_point_ids", "latitude", "longitude",
           "resource_ref", "resource_type"]
MPIDS = ["707057500012345671", "707057500012345688", "707057500012345695", "707057500012345701",
         "707057500012345718", "707057500012345725"]


def meter_point_id(n: int) -> str:
    """The n-th 18-digit meter point id with a valid GS1 check digit: one per site of a larger sheet
    (a meter point belongs to one site)."""
    body = f"70705750{n:09d}"
    return body + next(d for d in "0123456789" if has_valid_check_digit(body + d))


def write_csv(path: Path, rows: list[list[object]], headers: list[str] = HEADERS, delimiter: str = ",",
              encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(headers)
        writer.writerows(rows)
    return path


def read_csv(path: Path, delimiter: str = ",", encoding: str = "utf-8") -> list[dict[str, str]]:
    with path.open(newline="", encoding=encoding) as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def read_xlsx(path: Path, sheet: str | None = None) -> list[dict[str, object]]:
    workbook = load_workbook(path)
    rows = list((workbook[sheet] if sheet else workbook.worksheets[0]).iter_rows(values_only=True))
    return [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def local(state: Path) -> list[str]:
    return ["--env", "local", "--state", str(state), "--no-progress"]


def state_counts(state: Path) -> dict[str, int]:
    store = Store(state)
    try:
        return store.counts()
    finally:
        store.close()


def location_of(state: Path, location_id: str):
    """The emulator's record of a location, read from its state file."""
    store = Store(state)
    try:
        return store.location(location_id)
    finally:
        store.close()


def summary_of(folder: Path, stem: str) -> dict:
    return json.loads((folder / f"{stem}.summary.json").read_text())


# the spec, checked on the wire


class _Request:
    def __init__(self, request: httpx.Request) -> None:
        self.host_url = f"{request.url.scheme}://{request.url.netloc.decode()}"
        self.path = request.url.raw_path.decode().split("?")[0]
        self.method = request.method.lower()
        self.parameters = RequestParameters(query=dict(request.url.params), header=request.headers)
        self.body = request.content or None
        self.content_type = request.headers.get("content-type", "application/octet-stream")


class _Response:
    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.data = response.content
        self.headers = response.headers
        self.content_type = response.headers.get("content-type", "")


def _checkable_document() -> dict:
    """The vendor's document, with its security scheme name lower-cased: openapi-core compares the
    header's scheme lower-cased against the spec's `Bearer` verbatim, so it would refuse every
    request, though scheme names are case-insensitive (RFC 7235)."""
    doc = copy.deepcopy(contract.document())
    for scheme in doc["components"]["securitySchemes"].values():
        scheme["scheme"] = scheme["scheme"].lower()
    return doc


class ContractChecked(httpx.AsyncBaseTransport):
    """Passes traffic through, checking every API request (and, unless faults are on, every answer)
    against the vendor's OpenAPI document with openapi-core, independently of the emulator."""

    def __init__(self, inner: httpx.AsyncBaseTransport, answers: bool = True) -> None:
        self.inner = inner
        self.answers = answers
        self.spec = OpenAPI.from_dict(_checkable_document(), config=Config(
            extra_media_type_deserializers={"application/problem+json": json.loads}))
        self.requests = 0
        self.problems: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        api = request.url.path.startswith(contract.base_path())
        if api:
            await request.aread()
            self.requests += 1
            try:
                self.spec.validate_request(_Request(request))
            except Exception as exc:  # noqa: BLE001 - every violation is collected for the assertion
                self.problems.append(f"{request.method} {unquote(request.url.path)}: {exc!r}")
        response = await self.inner.handle_async_request(request)
        if api and self.answers and response.status_code not in (413, 429, 503):
            await response.aread()
            try:
                self.spec.validate_response(_Request(request), _Response(response))
            except Exception as exc:  # noqa: BLE001
                self.problems.append(f"answer {response.status_code} to {request.method} {request.url.path}: {exc!r}")
        return response


class Recording(httpx.AsyncBaseTransport):
    """Passes requests on, keeping (method, path, JSON body) of each API request."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.sent: list[tuple[str, str, object]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "/energy-coordination/" in request.url.path:
            body = json.loads(await request.aread() or b"null")
            self.sent.append((request.method, request.url.path, body))
        return await self.inner.handle_async_request(request)


class Intercepting(httpx.AsyncBaseTransport):
    """Passes requests on, but for those `answer` answers: with a response, or an error it raises."""

    def __init__(self, inner: httpx.AsyncBaseTransport, answer) -> None:
        self.inner = inner
        self.answer = answer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        said = self.answer(request)
        if isinstance(said, Exception):
            raise said
        return said if said is not None else await self.inner.handle_async_request(request)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def journal_states(path: Path) -> dict[str, str]:
    """Each entity's state in a journal, as another process (a resumed run, `onboard status`) reads it now."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT id, state FROM entities"))
    finally:
        db.close()
