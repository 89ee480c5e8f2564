"""An ingress replica's predict calls to one model deployment, several requests per Serve call.

A Serve handle call costs more CPU than this project's 2D forward pass per image: 2.3 ms (1.2 in the
caller, 1.1 in the replica; Ray 2.60 in throughput mode, 2 cores, 32 calls in flight, a 196 kB array
each) against ~3.7 ms of U-Net per image, and 0.17 ms per request when 16 travel in one call.
So a request that arrives while calls to its model are outstanding (the model is busy) waits for
others, and they go in one call when they make the model's ``max_batch_size`` (learned from its answers:
a model reconfigured to a batch size of 1 gets one request per call) or after a quarter of the model's
last round trip (at most :data:`GROUP_WAIT_S`): groups leave several times per model batch, so the
model finds its next requests already queued when it finishes one. A request that finds no call
outstanding goes at once: a lone client never waits. Calls are not limited in number (the ingress
bounds its requests); the model replica's own batcher forms each batch from every request queued
there, whichever call or ingress replica brought it.

A model of several replicas is busy only when every one of them is: a request goes at once while fewer
calls are outstanding than replicas answered in the last :data:`REPLICA_MEMORY_S` (each answer names its
replica), so an idle replica is not kept waiting behind a busy one. Counting the replicas that answer,
not a configured number, follows autoscaling and ``deployments:`` overrides; a failed call (a replica died)
starts the count again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from tumorbench.serving.batcher import Batcher

logger = logging.getLogger("ray.serve")
UNBOUNDED = 1 << 30  # calls outstanding: the ingress's admission (max_concurrent_requests) bounds them
DEFAULT_GROUP = 16  # requests per call until the model's first answer says its max_batch_size
# The longest wait in the ingress for companions while the model is busy; a quarter of the last round trip
# below that. bench/serve_load.py, 32 clients: a fixed 10-ms wait made calls of 5 requests, 30 ms of 9-11.
GROUP_WAIT_S, ROUND_TRIP_SHARE = 0.05, 0.25
REPLICA_MEMORY_S = 30.0  # a replica that has not answered for this long (scaled down, replaced) is not counted


class ModelCallError(Exception):
    """The model deployment did not answer a call (full, too slow, restarting or gone): a 503 with its reason."""


async def awaited(response: Any) -> Any:
    return await response


class ModelCaller:
    """``predict(prepared, mask)`` for one model deployment, grouping concurrent requests into calls.

    Two deadlines per call: ``queue_timeout_s`` for a replica to take it (short: no replica free, or the
    only one restarting after a crash, answers 503 at once rather than after the restart), then
    ``model_timeout_s`` for its answer (long enough for the slowest legitimate input).
    ``grouped=False``: one call per request (the request path before grouping, for comparison).
    """

    def __init__(
        self,
        handle: Any,
        name: str,
        queue_timeout_s: float,
        model_timeout_s: float,
        *,
        grouped: bool = True,
    ) -> None:
        self.handle, self.name, self.grouped = handle, name, grouped
        self.queue_timeout_s, self.model_timeout_s = queue_timeout_s, model_timeout_s
        size = DEFAULT_GROUP if grouped else 1  # ungrouped: a call per request, at once
        self.calls, self.requests = 0, 0  # sent so far: requests / calls is the mean group
        self.replicas: dict[str, float] = {}  # replica id -> time.monotonic() of its last answer
        self.batcher = Batcher(
            self._call, size, GROUP_WAIT_S, observe=self._count, concurrency=UNBOUNDED, wait_while_running=True
        )

    def _count(self, size: int, waited_s: float, queued: int) -> None:
        self.calls, self.requests = self.calls + 1, self.requests + size

    def stats(self) -> dict[str, int]:
        return {"calls": self.calls, "requests": self.requests}

    async def predict(self, prepared: Any, mask: str | None) -> dict[str, Any]:
        """The model's reply to one request (``ModelServer.predict``'s dict).

        Raises:
            ModelCallError: the call that carried it was not answered.
        """
        return await self.batcher.submit((prepared, mask))

    async def _call(self, jobs: list[tuple[Any, str | None]]) -> list[dict[str, Any]]:
        from ray.serve.exceptions import BackPressureError

        from tumorbench.raycompat import serve_assigned

        sent = time.perf_counter()
        response = self.handle.predict_many.remote(jobs)
        stage = "take"
        try:
            await asyncio.wait_for(serve_assigned(response), self.queue_timeout_s)
            stage = "answer"
            reply = await asyncio.wait_for(awaited(response), self.model_timeout_s)
        except TimeoutError:
            response.cancel()
            if stage == "take":
                raise ModelCallError(
                    f"no replica of model {self.name} took the request within {self.queue_timeout_s:g} s"
                ) from None
            raise ModelCallError(f"model {self.name} did not answer within {self.model_timeout_s:g} s") from None
        except BackPressureError:
            raise ModelCallError(f"model {self.name} has too many queued requests") from None
        except Exception as exc:  # predict_many never raises: the call failed (replica died or restarts, transport)
            logger.warning("model %s unavailable (%s: %s)", self.name, type(exc).__name__, str(exc)[:200])
            self._forget_replicas()
            raise ModelCallError(f"model {self.name} is unavailable ({type(exc).__name__})") from None
        if self.grouped:  # the model's batch size now (a live reconfigure included), its pace and replicas
            wait_s = min(GROUP_WAIT_S, ROUND_TRIP_SHARE * (time.perf_counter() - sent))
            self.batcher.configure(int(reply["max_batch_size"]), wait_s, self._replicas_seen(reply.get("replica")))
        return reply["replies"]

    def _forget_replicas(self) -> None:
        """A replica died: count again from the next answers, rather than a dead one for :data:`REPLICA_MEMORY_S`
        (requests would go at once beside a busy survivor, ungrouped, meanwhile)."""
        self.replicas.clear()
        self.batcher.configure(self.batcher.max_batch_size, self.batcher.wait_s, busy_at=1)

    def _replicas_seen(self, replica: str | None) -> int:
        """Replicas of the model that answered in the last :data:`REPLICA_MEMORY_S`, ``replica`` just now."""
        now, replica = time.monotonic(), replica or ""
        self.replicas[replica] = now
        self.replicas = {key: at for key, at in self.replicas.items() if key == replica or now - at < REPLICA_MEMORY_S}
        return len(self.replicas)
