"""The sidecar's one upstream HTTP client: aiohttp's connection pool and C parser, shared by every model call.

``Upstream.post`` opens the streamed POST of every model call (``providers.base.open_stream``) straight on aiohttp:
that is the hot path, and httpx2's request and response models on top of aiohttp cost about as much CPU as aiohttp
itself (bench/README.md, "The upstream client is aiohttp"). ``Upstream.http`` is an ``httpx2.AsyncClient`` over the
same pool for the cold calls that want its conveniences (cloud token exchanges, ``count_tokens``), through
``AiohttpTransport``. aiohttp keeps keep-alive connections per host in a deque (httpcore2 looked at every idle
connection on every checkout) and sets TCP_NODELAY.

aiohttp's failures are raised as the httpx2 exceptions that name what happened, so ``errors.map_transport_errors``
keeps one vocabulary for both paths. Not ``httpx-aiohttp`` for the transport: it maps every
``aiohttp.ClientConnectionError`` (a server that closed a pooled connection, a body cut mid-stream) to
``ConnectTimeout``, which the sidecar would report as a timeout and not retry.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType

import aiohttp
import certifi
import httpx2
from yarl import URL

from . import __version__

_CHUNK = 64 * 1024


@contextmanager
def mapped_errors(request: httpx2.Request | None = None) -> Iterator[None]:
    """aiohttp's exceptions as httpx2's, most specific first (the order of the ``except`` clauses matters: aiohttp's
    timeouts and connector errors subclass its connection errors)."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx2.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
    except aiohttp.ServerTimeoutError as exc:  # SocketTimeoutError: no byte for ``sock_read`` seconds
        raise httpx2.ReadTimeout(str(exc) or "read timed out", request=request) from exc
    except aiohttp.ClientHttpProxyError as exc:
        raise httpx2.ProxyError(f"proxy answered {exc.status}", request=request) from exc
    except aiohttp.ClientProxyConnectionError as exc:
        raise httpx2.ProxyError(str(exc), request=request) from exc
    except aiohttp.ClientConnectorError as exc:  # DNS, refused, TLS handshake: nothing was sent
        raise httpx2.ConnectError(str(exc), request=request) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
        # Closed before or during the response, a malformed body (bad chunking, cut short), an unparseable head.
        raise httpx2.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc
    except (aiohttp.ClientOSError, aiohttp.ClientConnectionError) as exc:
        raise httpx2.ReadError(str(exc) or type(exc).__name__, request=request) from exc
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:  # a base URL that is not http(s)://
        raise httpx2.UnsupportedProtocol(str(exc), request=request) from exc


async def _read(response: aiohttp.ClientResponse, request: httpx2.Request | None) -> AsyncIterator[bytes]:
    content = response.content
    with mapped_errors(request):
        while chunk := await content.read(_CHUNK):
            yield chunk


class UpstreamResponse:
    """A streamed upstream response. ``chunks()`` is the body's one iterator, however many readers take it: a reader
    that stops at the terminal event and the drain that reads on to the end (so the connection is pooled) continue
    the same one. ``aclose`` releases the connection to the pool when the body was read to its end (aiohttp's rule)
    and closes it otherwise."""

    __slots__ = ("_response", "_chunks", "status_code", "headers")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._chunks: AsyncIterator[bytes] | None = None
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers  # case-insensitive
        """The response headers; names are case-insensitive."""

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def is_closed(self) -> bool:
        return self._response.closed

    def read_buffered(self, limit: int) -> bool:
        """Read (and drop) what of the body has already arrived, at most ``limit`` bytes, without waiting; ``True``
        when that was the end of the body (aiohttp then returns the connection to the pool). Only between reads of
        ``chunks()``: never while a reader waits on it."""
        content = self._response.content
        size = 0
        while size <= limit and (data := content.read_nowait()):
            size += len(data)
        return content.at_eof()

    def chunks(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            self._chunks = _read(self._response, None)
        return self._chunks

    async def aclose(self) -> None:
        self._response.release()


class _Body(httpx2.AsyncByteStream):
    """An ``AiohttpTransport`` response's body for httpx2."""

    __slots__ = ("_response", "_request")

    def __init__(self, response: aiohttp.ClientResponse, request: httpx2.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in _read(self._response, self._request):
            yield chunk

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """``httpx2.AsyncBaseTransport`` over an ``aiohttp.ClientSession`` (``Upstream.http``). Bodies are passed through
    undecoded: httpx2 asked for its encodings and decodes them itself."""

    def __init__(self, session: aiohttp.ClientSession, proxy: str | None = None) -> None:
        self._session = session
        self._proxy = proxy

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        limits = request.extensions.get("timeout", {})
        body = await request.aread()
        with mapped_errors(request):
            response = await self._session.request(
                request.method,
                wire_url(str(request.url)),
                headers=list(request.headers.multi_items()),
                data=body or None,
                allow_redirects=False,
                timeout=client_timeout(limits.get("connect"), limits.get("read"), limits.get("pool")),
                proxy=self._proxy,
            )
        return httpx2.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode("latin-1")},
        )


def wire_url(url: str) -> URL:
    """``url`` as it goes on the wire: already percent-encoded by its builder (``providers.base.endpoint``, httpx2),
    so yarl must not normalise it: decoding Bedrock's ``%3A`` breaks its SigV4 signature, and resolving an escaped
    ``%2E%2E`` segment would let a request-chosen model id reach another path of the resource."""
    return URL(url, encoded=True)


def client_timeout(connect: float | None, read: float | None, pool: float | None = None) -> aiohttp.ClientTimeout:
    """httpx's timeouts in aiohttp's terms: ``read`` bounds every socket read (the first byte and each one after),
    ``connect`` the TCP/TLS handshake, and waiting for a pooled connection plus opening one is bounded together.
    No total: a stream may run for as long as the model writes."""
    acquire = None if connect is None or pool is None else connect + pool
    return aiohttp.ClientTimeout(sock_connect=connect, sock_read=read, connect=acquire)


class Upstream:
    """One connection pool for every upstream call. ``post`` streams a model call; ``http`` is an httpx2 client on
    the same pool for the rest. No cookies are kept (an upstream's cookie must not travel from one workload's
    request to another's), no redirects are followed, no proxy variable is read (``proxy`` is the configured one).

    The session is made on entering (``async with``, the app's lifespan) or on first use, in the running loop;
    ``aclose`` (or leaving the ``async with``) closes it."""

    def __init__(self, *, proxy: str | None = None, max_connections: int = 1000, keepalive_seconds: float = 30.0):
        self._proxy = proxy
        self._max_connections = max_connections
        self._keepalive = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        self._http: httpx2.AsyncClient | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._session or self._open()

    def _open(self) -> aiohttp.ClientSession:
        session = self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._max_connections,
                keepalive_timeout=self._keepalive,
                # The CA bundle httpx (and so the sidecar before aiohttp) verifies providers against, not the
                # image's: the same trust wherever the sidecar runs.
                ssl=ssl.create_default_context(cafile=certifi.where()),
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # nothing asks for an encoding on the streamed path; httpx2 decodes its own
            trust_env=False,
            timeout=client_timeout(None, None),
            headers={"User-Agent": f"pi-sidecar/{__version__}"},  # unless the model's headers name another
            skip_auto_headers=("Accept-Encoding", "Content-Type"),  # a caller that means one sends it
        )
        return session

    @property
    def http(self) -> httpx2.AsyncClient:
        if self._http is None:
            self._http = httpx2.AsyncClient(
                transport=AiohttpTransport(self.session, self._proxy), trust_env=False, follow_redirects=False
            )
        return self._http

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, limits: aiohttp.ClientTimeout
    ) -> UpstreamResponse:
        """POST ``body`` to ``url`` (already percent-encoded, as ``providers.base.endpoint`` builds it) and return the
        response once its head has arrived, whatever its status; ``limits`` are ``client_timeout``'s."""
        with mapped_errors():
            response = await self.session.request(
                "POST",
                wire_url(url),
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=limits,
                proxy=self._proxy,
            )
        return UpstreamResponse(response)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Upstream:
        if self._session is None:
            self._open()  # now: building its TLS context takes ~30 ms, which the first call should not wait for
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
