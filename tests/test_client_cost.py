"""What the client leaves out to keep its CPU per request low, and what it must keep doing anyway:
it takes no cookies (the API sets none), and an answer the transport reads in one go is still
decoded by httpx as its headers say. A small server written here answers with both."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from onboard import api, settings


class _Handler(BaseHTTPRequestHandler):
    """Sets a cookie on every answer and says which cookie the request carried, gzipped."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = gzip.compress(json.dumps({"cookie": self.headers.get("cookie")}).encode())
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-encoding", "gzip")
        self.send_header("set-cookie", "session=abc; Path=/")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.anyio
async def test_answers_are_decoded_and_no_cookie_is_kept_or_sent(server, monkeypatch):
    monkeypatch.setenv("SPARK_CLIENT_ID", "partner")
    monkeypatch.setenv("SPARK_CLIENT_SECRET", "s3cret")
    where = settings.target("sandbox", base_url=server + "/api", token_url=server + "/token")
    async with api.connect(where) as client:
        first = await client.client.get(server + "/api/one", auth=None)
        second = await client.client.get(server + "/api/two", auth=None)
        assert first.json() == {"cookie": None}
        assert second.json() == {"cookie": None}
        assert not client.client.cookies
