"""A test server on an event loop of its own thread, so synchronous tests (and tests on another loop) drive it alike:
``with Server(...) as server:``. A subclass binds in ``start`` and closes in ``stop``, both run on that loop; an
exception in ``start`` is raised from ``__enter__``, with the loop and thread already shut down.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Self


class BackgroundServer:
    timeout_s = 10.0
    """How long starting and stopping may take."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=type(self).__name__, daemon=True)

    async def start(self) -> None:
        """Bind (on ``self.loop``); the server answers once this returns."""

    async def stop(self) -> None:
        """Close what ``start`` opened (on ``self.loop``)."""

    def run(self, coroutine: Any) -> Any:
        """Run ``coroutine`` on the server's loop from another thread and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(self.timeout_s)

    def __enter__(self) -> Self:
        self._thread.start()
        try:
            self.run(self.start())
        except BaseException:
            self._shut_down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.stop())
            self.run(self._cancel_the_rest())
        finally:
            self._shut_down()

    async def _cancel_the_rest(self) -> None:
        """What ``asyncio.run`` does at its end: tasks still running (a connection's handler) are cancelled and
        awaited, so none is destroyed pending and no transport is left to the garbage collector."""
        rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        await self.loop.shutdown_asyncgens()

    def _shut_down(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(self.timeout_s)
        self.loop.close()
