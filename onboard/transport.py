"""The wire under `httpx.AsyncClient` for a real API: aiohttp's connection pool.

httpx's own pool (httpcore 1.x) looks at every idle connection on each request (encode/httpcore#1035),
so its CPU per request grows with the pool: at 64 connections it spends milliseconds where aiohttp
spends a tenth of one. The client keeps httpx's API (the `httpx.Auth` token flow, `ASGITransport`
for `--env local`); only the bytes go through aiohttp.

Written here rather than taken from `httpx-aiohttp`, whose error mapping turns a connection lost
after the request was written into `httpx.ConnectTimeout` (read as "never sent") and lets some of
aiohttp's errors through unmapped. Here the httpx error says what matters for a write: only a
connection that was never made is a `ConnectError`/`ConnectTimeout`.
"""

from __future__ import annotations

import ssl
from contextlib import contextmanager

import aiohttp
import httpx
from yarl import URL


@contextmanager
def _as_httpx():
    """aiohttp's errors as httpx's, so the caller tells 'surely not sent' from 'may have been'."""
    try:
        yield
    except aiohttp.ClientConnectorError as exc:  # no connection was made: nothing was sent
        raise httpx.ConnectError(str(exc) or "cannot connect") from exc
    except aiohttp.ConnectionTimeoutError as exc:  # no connection within the time: nothing was sent
        raise httpx.ConnectTimeout(str(exc) or "timed out connecting") from exc
    except aiohttp.SocketTimeoutError as exc:
        raise httpx.ReadTimeout(str(exc) or "timed out reading the answer") from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError("the server disconnected without sending a complete answer") from exc
    except aiohttp.ClientResponseError as exc:  # what came back is not HTTP
        raise httpx.RemoteProtocolError(f"not an HTTP answer ({exc.message})") from exc
    except aiohttp.ClientPayloadError as exc:
        raise httpx.RemoteProtocolError(f"the answer's body was cut short ({exc})") from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:  # lost after connecting: may have been sent
        raise httpx.ReadError(str(exc) or type(exc).__name__) from exc


_HTTPX_SETS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
"""Headers aiohttp would add on its own; httpx has set them already, or left them out on purpose."""


class AiohttpTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over one aiohttp session of at most `connections` connections. Redirects, cookies,
    decompression and auth stay httpx's: aiohttp is told to do none of them."""

    def __init__(self, connections: int) -> None:
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple, aiohttp.ClientTimeout] = {}
        self._tls: ssl.SSLContext | None = None

    def _open(self) -> aiohttp.ClientSession:
        """In the running event loop, at the first request: aiohttp binds its session to the loop."""
        connector = aiohttp.TCPConnector(limit=self._connections)
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(), skip_auto_headers=_HTTPX_SETS)
        return self._session

    def _verified(self) -> ssl.SSLContext:
        """httpx's own TLS settings (certifi's roots, or SSL_CERT_FILE/SSL_CERT_DIR), made at the
        first https request: loading the roots takes tens of milliseconds."""
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return self._tls

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        """httpx's pool and connect timeouts; not its read timeout, which aiohttp would re-arm as a
        timer on every chunk read: each attempt of `Api` is bounded whole, by `ONBOARD_TIMEOUT`."""
        given = request.extensions.get("timeout", {})
        key = (given.get("pool"), given.get("connect"))
        if key not in self._timeouts:
            self._timeouts[key] = aiohttp.ClientTimeout(connect=key[0], sock_connect=key[1])
        return self._timeouts[key]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        content = await request.aread()
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw]
        url = URL(str(request.url), encoded=True)
        if request.url.userinfo:  # httpx has made it an Authorization header where one is due
            url = url.with_user(None)
        with _as_httpx():
            answer = await session.request(
                request.method, url, headers=headers,
                data=content or None, allow_redirects=False, timeout=self._timeout(request),
                ssl=self._verified() if url.scheme == "https" else True,
            )
            try:
                body = await answer.read()  # the API's answers are small JSON: read in one go, here
            finally:
                answer.release()
        extensions = {"http_version": b"HTTP/1.1", "reason_phrase": (answer.reason or "").encode("latin-1", "replace")}
        return httpx.Response(answer.status, headers=answer.raw_headers, content=body, extensions=extensions)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
