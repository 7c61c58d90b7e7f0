"""Connection pooling: one ``httpx.AsyncClient`` per (event loop, base URL), and the sync twin's private loop.

An ``httpx.AsyncClient``'s sockets belong to the event loop that opened them, so the pool is kept per loop
(``asyncio.run`` twice, or a test suite with a loop per test, each get their own clients). Each loop's clients are
closed when that loop shuts down its async generators (``asyncio.run`` and ``asyncio.Runner`` do): a small
sentinel async generator, parked at its ``yield``, closes them in its ``finally``. So an agent making thousands of
calls on one loop keeps a handful of kept-alive sockets, and nothing is left open when its loop ends.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import threading
import weakref
from collections.abc import AsyncGenerator

import httpx

# Our own deadlines (first-event / idle) govern reads; httpx only bounds connecting and writing. Keep-alive expiry is
# shorter than uvicorn's default 5 s server-side keep-alive, so the client drops an idle socket before the server
# closes it under a request in flight.
HTTP_TIMEOUT = httpx.Timeout(connect=30.0, read=None, write=60.0, pool=None)
HTTP_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=100, keepalive_expiry=4.0)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying context for the process: building one (loading the CA bundle) costs ~0.1 s."""
    return httpx.create_ssl_context(trust_env=False)


def new_client(base_url: str) -> httpx.AsyncClient:
    # Plain-http gateways (the usual sidecar) never need the CA bundle. trust_env=False: a sidecar is reached
    # directly; an HTTP(S)_PROXY meant for egress must not capture it.
    verify: ssl.SSLContext | bool = _ssl_context() if base_url[:6].lower() == "https:" else False
    return httpx.AsyncClient(timeout=HTTP_TIMEOUT, limits=HTTP_LIMITS, verify=verify, trust_env=False)


class _LoopPool:
    __slots__ = ("__weakref__", "clients", "closed", "keeper")

    def __init__(self) -> None:
        self.clients: dict[str, httpx.AsyncClient] = {}
        self.closed = False
        self.keeper: AsyncGenerator[None, None] | None = None


async def _keeper(pool: _LoopPool) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        pool.closed = True
        clients = list(pool.clients.values())
        pool.clients.clear()
        for client in clients:
            await client.aclose()


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()


async def pooled_client(base_url: str) -> httpx.AsyncClient:
    """The shared client for ``base_url`` on the running loop (created on first use)."""
    loop = asyncio.get_running_loop()
    with _pools_lock:
        pool = _pools.get(loop)
        if pool is None or pool.closed:
            pool = _LoopPool()
            _pools[loop] = pool
            fresh = True
        else:
            fresh = False
        client = pool.clients.get(base_url)
        if client is None:
            client = pool.clients[base_url] = new_client(base_url)
    if fresh:
        keeper = _keeper(pool)
        pool.keeper = keeper  # kept alive until the loop's shutdown_asyncgens() closes it
        await keeper.asend(None)
    return client


async def aclose_pooled_clients() -> None:
    """Close the running loop's pooled clients now (the next call opens new ones)."""
    loop = asyncio.get_running_loop()
    with _pools_lock:
        pool = _pools.pop(loop, None)
    if pool is not None and pool.keeper is not None:
        await pool.keeper.aclose()


# ----- the sync twin's private loop -----------------------------------------------------------------------------

_bg_loop: asyncio.AbstractEventLoop | None = None
_bg_pid = 0
_bg_lock = threading.Lock()


def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    loop.run_forever()


def background_loop() -> asyncio.AbstractEventLoop:
    """A process-wide event loop running in a daemon thread, started on first use (again in a forked child,
    which inherits the loop object but not its thread)."""
    global _bg_loop, _bg_pid
    with _bg_lock:
        if _bg_loop is None or _bg_loop.is_closed() or _bg_pid != os.getpid():
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(target=_run_loop, args=(loop, ready), name="pi-sidecar-client", daemon=True)
            thread.start()
            ready.wait()
            _bg_loop, _bg_pid = loop, os.getpid()
        return _bg_loop
