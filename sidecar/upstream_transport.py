"""The upstream HTTP transport: httpx2's request and response objects on aiohttp's connection pool and C parser.

The adapters speak ``httpx2.AsyncClient`` (the seam tests and the cloud token fetchers use too); only the transport
under it is swapped. httpcore2's pool costs more CPU per stream than the sidecar's own work, and it looks at every
idle connection on every checkout (bench/README.md, "The upstream client is aiohttp"); aiohttp's ``TCPConnector``
keeps keep-alive connections per host in a deque and parses responses in C (llhttp). TCP_NODELAY is aiohttp's
default.

Not ``httpx-aiohttp``: it maps every ``aiohttp.ClientConnectionError`` (a server that closed a pooled connection,
a body cut mid-stream) to ``ConnectTimeout``, which the sidecar would report as a timeout and not retry. Here each
aiohttp failure becomes the httpx2 error that names what happened, so ``errors.map_transport_errors`` keeps one
vocabulary whatever the transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx2
from yarl import URL

_CHUNK = 64 * 1024


@contextmanager
def _mapped_errors(request: httpx2.Request) -> Iterator[None]:
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
    except aiohttp.InvalidURL as exc:
        raise httpx2.UnsupportedProtocol(str(exc), request=request) from exc


class _Body(httpx2.AsyncByteStream):
    """One response's body: aiohttp's buffered chunks as they arrive. Closing it releases the connection to the
    pool when the body was read to its end (aiohttp's rule), and closes it otherwise."""

    __slots__ = ("_response", "_request")

    def __init__(self, response: aiohttp.ClientResponse, request: httpx2.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        with _mapped_errors(self._request):
            while chunk := await content.read(_CHUNK):
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """``httpx2.AsyncBaseTransport`` over one ``aiohttp.ClientSession``, created on first use (it must be made in the
    running loop) and closed by ``aclose``. No cookies are kept (upstream cookies must not travel from one workload's
    request to another's), no redirects are followed, bodies are passed through undecoded (httpx2 decodes them)."""

    def __init__(
        self,
        *,
        proxy: str | None = None,
        max_connections: int = 1000,
        keepalive_seconds: float = 30.0,
    ) -> None:
        self._proxy = proxy
        self._max_connections = max_connections
        self._keepalive = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=self._keepalive)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(),  # no total: a stream may run for as long as the model writes
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),  # httpx2 sends what it means to
        )
        return self._session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        session = self._session or self._open()
        limits = request.extensions.get("timeout", {})
        connect, pool = limits.get("connect"), limits.get("pool")
        timeout = aiohttp.ClientTimeout(
            sock_connect=connect,
            sock_read=limits.get("read"),
            # Waiting for a pooled connection plus opening one: aiohttp bounds the two together.
            connect=None if connect is None or pool is None else connect + pool,
        )
        body = await request.aread()
        with _mapped_errors(request):
            response = await session.request(
                request.method,
                # As httpx2 encoded it: yarl would otherwise normalise it (Bedrock's SigV4 signs the path with its
                # ``%3A``; decoding it breaks the signature).
                URL(str(request.url), encoded=True),
                headers=list(request.headers.multi_items()),
                data=body or None,
                allow_redirects=False,
                timeout=timeout,
                proxy=self._proxy,
            )
        return httpx2.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode("latin-1")},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
