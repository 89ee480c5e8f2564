"""Dynamic batching (tumorbench.serving.batcher): batches taken when the model is free, the wait, failures."""

from __future__ import annotations

import asyncio
import time

import pytest

from tumorbench.serving.batcher import Batcher


class _Model:
    """Squares a batch after ``seconds`` (an await, as a forward pass in a worker thread is); records batch sizes."""

    def __init__(self, seconds: float = 0.0, fail_on: int | None = None) -> None:
        self.seconds, self.fail_on, self.sizes = seconds, fail_on, []

    async def __call__(self, items: list[int]) -> list[int]:
        self.sizes.append(len(items))
        await asyncio.sleep(self.seconds)
        if self.fail_on in items:
            raise RuntimeError("forward failed")
        return [x * x for x in items]


def test_requests_arriving_while_a_batch_runs_form_the_next_batch_whole():
    # 1 request, then 20 more while its batch runs: Serve's @serve.batch would cut them in wait windows
    # (0.01 s each over the 0.2 s run) and queue those small batches; here they wait and go as 8, 8, 4.
    model = _Model(seconds=0.2)
    batcher = Batcher(model, max_batch_size=8, wait_s=0.01)

    async def run():
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)  # the first batch is running
        rest = []
        for x in range(1, 21):
            rest.append(asyncio.ensure_future(batcher.submit(x)))
            await asyncio.sleep(0.005)  # spread over 0.1 s: ten of Serve's 0.01-s windows
        return await asyncio.gather(first, *rest)

    assert asyncio.run(run()) == [x * x for x in range(21)]
    assert model.sizes == [1, 8, 8, 4]


def test_an_idle_batcher_waits_for_batch_mates_at_most_wait_s_from_the_oldest_request():
    model = _Model()
    batcher = Batcher(model, max_batch_size=16, wait_s=0.15)

    async def run():
        await asyncio.gather(batcher.submit(0), batcher.submit(1))  # a batch of 2: requests come together
        start = time.monotonic()
        first = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0.05)
        second = await batcher.submit(3)
        return await first, second, time.monotonic() - start

    a, b, elapsed = asyncio.run(run())
    assert (a, b) == (4, 9) and model.sizes == [2, 2]
    assert 0.14 <= elapsed < 0.5  # the oldest request's wait, not the second one's again


def test_a_lone_clients_requests_do_not_wait_for_batch_mates():
    model = _Model()
    batcher = Batcher(model, max_batch_size=16, wait_s=0.5)

    async def run():
        start = time.monotonic()
        out = [await batcher.submit(x) for x in range(5)]  # one at a time, as one client sends them
        return out, time.monotonic() - start

    out, elapsed = asyncio.run(run())
    assert out == [0, 1, 4, 9, 16] and model.sizes == [1] * 5 and elapsed < 0.4  # 2.5 s if each waited


def test_a_full_queue_does_not_wait():
    model = _Model()
    batcher = Batcher(model, max_batch_size=3, wait_s=5.0)

    async def run():
        start = time.monotonic()
        out = await asyncio.gather(*(batcher.submit(x) for x in (1, 2, 3)))
        return out, time.monotonic() - start

    out, elapsed = asyncio.run(run())
    assert out == [1, 4, 9] and model.sizes == [3] and elapsed < 1.0


def test_a_failing_batch_fails_its_requests_and_the_next_batch_runs():
    model = _Model(seconds=0.05, fail_on=-1)
    batcher = Batcher(model, max_batch_size=2, wait_s=0.0)

    async def run():
        return await asyncio.gather(*(batcher.submit(x) for x in (5, -1, 4)), return_exceptions=True)

    first, second, third = asyncio.run(run())
    assert isinstance(first, RuntimeError) and isinstance(second, RuntimeError) and third == 16
    assert model.sizes == [2, 1]


def test_cancelled_callers_are_not_computed_and_settings_apply_to_the_next_batch():
    model = _Model(seconds=0.1)
    batcher = Batcher(model, max_batch_size=8, wait_s=0.0)

    async def run():
        busy = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.02)
        gone = asyncio.ensure_future(batcher.submit(2))
        kept = [asyncio.ensure_future(batcher.submit(x)) for x in (3, 4, 5)]
        await asyncio.sleep(0.01)
        gone.cancel()
        batcher.configure(max_batch_size=2, wait_s=0.0)
        out = await asyncio.gather(busy, *kept)
        with pytest.raises(asyncio.CancelledError):
            await gone
        return out

    assert asyncio.run(run()) == [1, 9, 16, 25]
    assert model.sizes == [1, 2, 1]  # 2 was dropped; batches of the new size


def test_each_batch_is_observed_with_its_size_wait_and_queue():
    seen = []
    model = _Model(seconds=0.1)
    batcher = Batcher(model, max_batch_size=2, wait_s=0.0, observe=lambda *args: seen.append(args))

    async def run():
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.02)
        return await asyncio.gather(first, *(batcher.submit(x) for x in (2, 3, 4)))

    assert asyncio.run(run()) == [1, 4, 9, 16]
    assert [(size, queued) for size, _, queued in seen] == [(1, 0), (2, 1), (1, 0)]
    assert seen[1][1] >= 0.07  # 2 and 3 waited for the first batch (0.1 s, begun 0.02 s before they came)


def test_a_failing_observer_does_not_fail_the_batch():
    def broken(*_):
        raise RuntimeError("metrics agent gone")

    batcher = Batcher(_Model(), max_batch_size=4, wait_s=0.0, observe=broken)
    assert asyncio.run(asyncio.wait_for(batcher.submit(3), 5)) == 9  # without the guard: never answered


def test_concurrency_lets_that_many_batches_run_at_once_and_no_more():
    running, most = 0, 0

    async def model(items: list[int]) -> list[int]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1
        return [-x for x in items]

    batcher = Batcher(model, max_batch_size=4, wait_s=0.0, concurrency=2)

    async def run():
        calls = []
        for x in range(12):
            calls.append(asyncio.ensure_future(batcher.submit(x)))
            await asyncio.sleep(0.004)
        return await asyncio.gather(*calls)

    assert asyncio.run(run()) == [-x for x in range(12)]
    assert most == 2  # the default (1) runs one batch at a time: the other tests


def test_while_running_the_wait_begins_when_busy_at_batches_run():
    sent: list[float] = []

    async def model(items: list[int]) -> list[int]:
        sent.append(time.monotonic())
        await asyncio.sleep(0.1)
        return items

    batcher = Batcher(model, max_batch_size=4, wait_s=0.03, concurrency=8, wait_while_running=True)
    batcher.configure(4, 0.03, busy_at=2)  # two replicas: one batch out is not busy yet

    async def run():
        calls = []
        for x in range(3):
            calls.append(asyncio.ensure_future(batcher.submit(x)))
            await asyncio.sleep(0.005)
        return await asyncio.gather(*calls)

    assert asyncio.run(run()) == [0, 1, 2]
    assert sent[1] - sent[0] < 0.015  # the second went at once, beside the first
    assert sent[2] - sent[1] >= 0.025  # two out: the third waited its 0.03 s for batch-mates
