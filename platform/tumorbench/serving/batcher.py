"""Dynamic batching for a model replica: the next batch is taken when the model is free.

Serve's ``@serve.batch`` (Ray 2.60) cuts a batch ``batch_wait_timeout_s`` after its first request
and, since ``max_concurrent_batches`` (ray-project/ray#53096), queues it behind the batch that is
running. Under load the model then runs one batch per wait window: at 32 clients
(``bench/serve_load.py``) batches of 1-3 requests, each having waited ~380 ms as an already-cut batch,
and the forward pass never reached the batch size it was configured for.

Here a batch is taken when the previous one has finished: every request queued by then, up to
``max_batch_size``. The wait for batch-mates runs from the oldest request's arrival (Triton's
"max queue delay"), so it costs nothing under load, where requests have queued while the model ran;
and it is only made when the previous batch held several requests: a lone client's requests (one
radiologist's, the common case) never wait for batch-mates that cannot come (10 of its ~36 ms here).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger("ray.serve")


class Batcher:
    """Run ``run(items) -> results`` (one result per item, in order) on batches of submitted items.

    At most ``concurrency`` batches run at once. The wait for batch-mates (``wait_s`` from the oldest
    request's arrival) is made after a batch of several requests (a model replica, one batch at a time);
    with ``wait_while_running``, when ``busy_at`` batches are running as the next is formed (an ingress's
    calls to a model of ``busy_at`` replicas, as many at once as come: while every replica is busy,
    requests gather into one call).

    A batch that raises fails each of its requests with that exception. A request whose caller was
    cancelled while queued (its client left, its deadline passed) is dropped before its batch runs.
    ``observe(size, waited_s, queued)``, if given, is told of each batch as it starts: its size, how long
    its oldest request waited, and how many requests stay queued behind it.
    """

    def __init__(
        self,
        run: Callable[[list[Any]], Awaitable[list[Any]]],
        max_batch_size: int,
        wait_s: float,
        observe: Callable[[int, float, int], None] | None = None,
        concurrency: int = 1,
        wait_while_running: bool = False,
    ) -> None:
        self.run, self.observe, self.concurrency = run, observe, concurrency
        self.wait_while_running = wait_while_running
        self.max_batch_size, self.wait_s, self.busy_at = max_batch_size, wait_s, 1
        self._queue: deque[tuple[float, Any, asyncio.Future]] = deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._last_size = 0  # of the previous batch: more than 1, and batch-mates are worth a wait

    def configure(self, max_batch_size: int, wait_s: float, busy_at: int = 1) -> None:
        """New settings, from the next batch on."""
        self.max_batch_size, self.wait_s, self.busy_at = max_batch_size, wait_s, busy_at

    async def submit(self, item: Any) -> Any:
        """``item``'s result, computed with whatever batch it joins."""
        loop = asyncio.get_running_loop()
        if self._arrived is None:  # made in the replica's event loop, where every batch runs
            self._arrived = asyncio.Event()
        future = loop.create_future()
        self._queue.append((time.monotonic(), item, future))
        self._arrived.set()
        if self._task is None or self._task.done():  # ends when the queue is empty; started again here
            self._task = loop.create_task(self._serve())
        return await future

    async def _serve(self) -> None:
        while self._queue:
            while len(self._running) >= self.concurrency:
                await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
            batch = await self._take()
            if not batch:  # every queued caller had left
                continue
            self._last_size = len(batch)
            if self.observe is not None:
                try:
                    self.observe(len(batch), time.monotonic() - batch[0][0], len(self._queue))
                except Exception as exc:  # a metric that cannot be recorded must not leave its batch unanswered
                    logger.warning("batch metrics not recorded (%s)", type(exc).__name__)
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)  # held here: the loop keeps only weak references to tasks
            task.add_done_callback(self._running.discard)

    def _running_now(self) -> int:
        return sum(not task.done() for task in self._running)

    async def _run(self, batch: list[tuple[float, Any, asyncio.Future]]) -> None:
        try:
            results = await self.run([item for _, item, _ in batch])
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _take(self) -> list[tuple[float, Any, asyncio.Future]]:
        """The next batch: wait for batch-mates until the oldest request has waited ``wait_s``, then take them."""
        busy = self._last_size > 1 if not self.wait_while_running else self._running_now() >= self.busy_at
        deadline = self._queue[0][0] + (self.wait_s if busy else 0.0)
        while len(self._queue) < self.max_batch_size and (left := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                break
        batch = []
        while self._queue and len(batch) < self.max_batch_size:
            entry = self._queue.popleft()
            if not entry[2].done():  # a cancelled caller's request is not computed
                batch.append(entry)
        return batch
