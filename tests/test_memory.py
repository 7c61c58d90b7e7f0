"""``sidecar.memory.MemoryTrim`` through ``Admission``: memory goes back to the OS once the process has been quiet for
a while, never while streams are in flight, and at one stream after another it costs one flag check."""

from __future__ import annotations

import asyncio
import platform

from sidecar.admission import Admission
from sidecar.auth import Caller
from sidecar.memory import MemoryTrim, _malloc_trim

QUIET = 0.05
CALLER = Caller(identity="bearer:a")


def admission_with_counter() -> tuple[Admission, list[int]]:
    trims: list[int] = []
    admission = Admission(8, 8, trim_memory=True)
    assert admission.memory is not None

    def trim(pad: int) -> int:
        trims.append(pad)
        return 1

    admission.memory = MemoryTrim(lambda: admission.in_flight == 0, QUIET, trim)
    return admission, trims


async def test_trims_once_after_the_last_stream_and_a_quiet_while() -> None:
    admission, trims = admission_with_counter()
    slots = [admission.admit(CALLER) for _ in range(3)]
    for slot in slots[:2]:
        slot.release()
    await asyncio.sleep(QUIET * 3)
    assert trims == []  # one stream still in flight: never while busy
    slots[2].release()
    await asyncio.sleep(QUIET / 2)
    assert trims == []  # not at once: only after a quiet while
    await asyncio.sleep(QUIET * 2)
    assert trims == [0]
    await asyncio.sleep(QUIET * 3)
    assert trims == [0]  # once per quiet spell, not every while


async def test_a_stream_in_the_quiet_while_puts_it_off() -> None:
    admission, trims = admission_with_counter()
    admission.admit(CALLER).release()
    await asyncio.sleep(QUIET / 2)
    admission.admit(CALLER).release()  # a short stream: the process was not quiet for the whole while
    await asyncio.sleep(QUIET * 0.7)
    assert trims == []  # the first while ended, but a stream came in it
    await asyncio.sleep(QUIET * 2)
    assert trims == [0]  # a whole quiet while after it


async def test_streams_in_flight_when_the_while_ends_put_it_off_until_they_end() -> None:
    admission, trims = admission_with_counter()
    admission.admit(CALLER).release()
    long = admission.admit(CALLER)
    await asyncio.sleep(QUIET * 3)
    assert trims == []
    long.release()
    await asyncio.sleep(QUIET * 3)
    assert trims == [0]
    assert admission.memory is not None and admission.memory.trims == 1


async def test_one_stream_after_another_arms_one_timer() -> None:
    admission, trims = admission_with_counter()
    memory = admission.memory
    assert memory is not None
    for _ in range(1_000):
        admission.admit(CALLER).release()
    assert memory._timer is not None  # one pending timer, not a thousand
    memory.close()
    assert memory._timer is None
    await asyncio.sleep(QUIET * 2)
    assert trims == []  # closed with the app: nothing fires afterwards


def test_released_outside_the_event_loop_schedules_nothing() -> None:
    admission, trims = admission_with_counter()
    admission.admit(CALLER).release()
    assert admission.memory is not None and admission.memory._timer is None


def test_the_allocator_is_glibcs_here() -> None:
    """This test machine and the Debian image run glibc; elsewhere (musl, macOS) the trim is left out, not faked."""
    if platform.libc_ver()[0] == "glibc":
        trim = _malloc_trim()
        assert trim is not None
        assert trim(0) in (0, 1)  # 1: memory was released, 0: there was none to release
    admission = Admission(8, 8)
    assert admission.memory is None  # off unless asked for


async def test_trims_again_later_while_a_trim_still_releases_memory() -> None:
    """Pooled upstream connections close a while after a burst: what they held is freed then, so a trim that released
    memory is followed by another, until one releases nothing."""
    released = iter([1, 1, 0])
    trims: list[int] = []

    def trim(pad: int) -> int:
        trims.append(pad)
        return next(released, 0)

    admission = Admission(8, 8)
    admission.memory = MemoryTrim(lambda: admission.in_flight == 0, QUIET, trim, again_seconds=QUIET)
    admission.admit(CALLER).release()
    await asyncio.sleep(QUIET * 8)
    assert trims == [0, 0, 0]  # released, released, nothing: then it stops
    assert admission.memory._timer is None
