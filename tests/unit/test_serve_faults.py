"""The ingress's model calls without a Ray cluster: two deadlines (none takes it, a dead replica), grouped requests."""

from __future__ import annotations

import asyncio
import os
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("ray.serve")

from tumorbench.serving.app import Ingress  # noqa: E402
from tumorbench.serving.calls import ModelCaller, ModelCallError  # noqa: E402
from tumorbench.serving.protocol import ApiError  # noqa: E402


class _Response:
    """A ``DeploymentResponse`` double: ``take_s`` until a replica takes it (None: never), then ``answer``."""

    def __init__(self, take_s: float | None, answer) -> None:
        self.take_s, self.answer, self.cancelled = take_s, answer, False

    async def _fetch_future_result_async(self) -> None:
        await asyncio.sleep(3600 if self.take_s is None else self.take_s)

    def __await__(self):
        return self._result().__await__()

    async def _result(self):
        if isinstance(self.answer, BaseException):
            raise self.answer
        if self.answer is None:
            await asyncio.sleep(3600)
        return self.answer

    def cancel(self) -> None:
        self.cancelled = True


def _call(response: _Response) -> tuple[object, float]:
    """One request through the ingress's model call (``_call_model`` and its :class:`ModelCaller`)."""
    cls = Ingress.func_or_class  # its instances' async __del__ (Serve's ASGI wrapper) wants a replica: none made
    handle = SimpleNamespace(predict_many=SimpleNamespace(remote=lambda jobs: response))
    ingress = SimpleNamespace(retry_after="1", callers={"m": ModelCaller(handle, "m", 0.2, 0.6)})
    ingress._busy = lambda detail: cls._busy(ingress, detail)
    start = time.perf_counter()
    try:
        outcome = asyncio.run(cls._call_model(ingress, "m", object(), "rle"))
    except ApiError as exc:
        outcome = exc
    return outcome, time.perf_counter() - start


def _answer(*replies: dict, size: int = 16, replica: str = "r0") -> dict:
    return {"max_batch_size": size, "replica": replica, "replies": list(replies)}


@pytest.mark.parametrize(
    ("take_s", "answer", "words", "seconds", "cancelled"),
    [
        (None, _answer({"result": 1}), "took the request within 0.2 s", 0.2, True),  # no replica free, or restarting
        (
            0.0,
            RuntimeError("UNAVAILABLE: replica gone"),
            "is unavailable (RuntimeError)",
            0.0,
            False,
        ),  # died mid-request (gRPC)
        (0.0, None, "did not answer within 0.6 s", 0.6, True),  # taken, then too slow
    ],
)
def test_model_call_faults_are_quick_503s_with_retry_after(take_s, answer, words, seconds, cancelled):
    response = _Response(take_s, answer)
    outcome, took = _call(response)
    assert isinstance(outcome, ApiError), outcome
    assert outcome.status == 503 and outcome.headers == {"Retry-After": "1"} and words in outcome.detail
    assert seconds <= took < seconds + 0.3
    assert response.cancelled == cancelled


def test_a_slow_take_within_the_queue_timeout_is_answered():
    outcome, took = _call(_Response(0.1, _answer({"result": 7})))
    assert outcome == {"result": 7} and 0.1 <= took < 0.4


class _Model:
    """A model deployment double: each call takes ``call_s``; replies ``(item, call number)``; batch size ``size``;
    ``replicas``: calls go to the replica with the fewest outstanding (as Serve's router picks), which answers."""

    def __init__(self, call_s: float, size: int = 16, replicas: int = 1) -> None:
        self.call_s, self.size, self.calls, self.outstanding, self.most_outstanding = call_s, size, [], 0, 0
        self.busy = [0] * replicas  # calls outstanding per replica
        self.sent: list[float] = []  # time.perf_counter() of each call
        self.predict_many = SimpleNamespace(remote=self._remote)

    def _remote(self, jobs: list) -> _Response:
        self.calls.append([prepared for prepared, _ in jobs])
        self.sent.append(time.perf_counter())
        number = len(self.calls)

        replica = self.busy.index(min(self.busy))
        self.busy[replica] += 1

        async def answer() -> dict:
            self.outstanding += 1
            self.most_outstanding = max(self.most_outstanding, self.outstanding)
            await asyncio.sleep(self.call_s)
            self.outstanding -= 1
            self.busy[replica] -= 1
            return _answer(*({"item": p, "call": number} for p, _ in jobs), size=self.size, replica=f"r{replica}")

        response = _Response(0.0, None)
        response._result = answer
        return response


def _requests(caller: ModelCaller, items: list, gap_s: float = 0.0) -> list:
    async def one(i: int, item) -> dict:
        await asyncio.sleep(i * gap_s)
        return await caller.predict(item, "png")

    async def run() -> list:
        return await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))

    return asyncio.run(run())


def test_requests_that_arrive_while_a_call_is_out_go_together():
    model = _Model(call_s=0.1)

    async def run() -> list:
        caller = ModelCaller(model, "m", 1.0, 5.0)
        first = asyncio.ensure_future(caller.predict(-1, "png"))  # the model is idle: it goes at once, alone
        await asyncio.sleep(0.01)
        burst = [asyncio.ensure_future(caller.predict(i, "png")) for i in range(19)]  # 16 (the batch size) + 3
        await asyncio.sleep(0.005)
        late = [asyncio.ensure_future(caller.predict(i, "png")) for i in (100, 101)]  # within the 3's wait (10 ms)
        replies = await asyncio.gather(first, *burst, *late)
        counted.update(caller.stats())
        return replies

    counted: dict = {}
    replies = asyncio.run(run())
    assert counted == {"calls": len(model.calls), "requests": sum(len(c) for c in model.calls)}  # /v1/stats
    assert [r["item"] for r in replies] == [-1, *range(19), 100, 101]  # each request gets its own reply
    assert [len(c) for c in model.calls] == [1, 16, 5]
    assert model.most_outstanding == 3  # calls are not held back while others are out


def test_while_the_model_is_busy_a_request_waits_a_quarter_of_its_last_round_trip():
    model = _Model(call_s=0.08)

    async def run() -> None:
        caller = ModelCaller(model, "m", 1.0, 5.0)
        await caller.predict(0, "png")  # a round trip of 0.08 s: the wait becomes 0.02 s
        first = asyncio.ensure_future(caller.predict(1, "png"))  # the model is idle: it goes at once
        await asyncio.sleep(0.005)
        await asyncio.gather(first, caller.predict(2, "png"))  # call 2 is out: waits 0.02 s for companions

    asyncio.run(run())
    assert [len(c) for c in model.calls] == [1, 1, 1]
    assert 0.02 <= model.sent[2] - model.sent[1] < 0.04  # 0.005 + 0.02, not the 0.05 s ceiling


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_request_waits_only_while_every_replica_that_answered_is_busy(replicas, monkeypatch):
    model = _Model(call_s=0.08, replicas=replicas)
    caller = ModelCaller(model, "m", 1.0, 5.0)

    async def requests() -> float:
        for first, second in ((0, 1), (2, 3)):  # the first pair makes two calls: both replicas answer (if 2)
            call = asyncio.ensure_future(caller.predict(first, "png"))  # no call out: it goes at once
            await asyncio.sleep(0.005)
            await asyncio.gather(call, caller.predict(second, "png"))  # one call out
        return model.sent[-1] - model.sent[-2]

    async def run() -> tuple[float, list[str]]:
        gap, seen = await requests(), sorted(caller.replicas)
        monkeypatch.setattr("tumorbench.serving.calls.REPLICA_MEMORY_S", 0.0)  # then r1 is forgotten
        model.busy = [0]  # scaled down to r0
        await requests()
        return gap, seen

    gap, seen = asyncio.run(run())
    assert seen == [f"r{i}" for i in range(replicas)]
    if replicas == 1:  # the only replica is busy: request 3 waits a quarter of the round trip (0.02 s)
        assert 0.02 <= gap < 0.04
    else:  # the other replica is idle: request 3 goes at once
        assert gap < 0.015
    assert list(caller.replicas) == ["r0"] and caller.batcher.busy_at == 1


def test_a_call_carries_at_most_the_batch_size_the_model_answered_and_waits_its_wait():
    model = _Model(call_s=0.05, size=4)
    caller = ModelCaller(model, "m", 1.0, 5.0)
    _requests(caller, [0])  # the first answer says 4
    model.calls.clear()
    _requests(caller, list(range(10)), gap_s=0.001)
    assert max(len(c) for c in model.calls) == 4 and sum(len(c) for c in model.calls) == 10
    model.size = 1  # reconfigured to batch size 1: after its next answer, one request per call
    _requests(caller, [0])
    model.calls.clear()
    _requests(caller, list(range(5)), gap_s=0.001)
    assert [len(c) for c in model.calls] == [1] * 5


def test_a_lone_request_never_waits_and_ungrouped_calls_go_one_by_one():
    model = _Model(call_s=0.02)
    caller = ModelCaller(model, "m", 1.0, 5.0)
    start = time.perf_counter()
    for i in range(5):  # one client: each request finds the model idle
        assert _requests(caller, [i])[0]["item"] == i
    assert [len(c) for c in model.calls] == [1] * 5 and time.perf_counter() - start < 5 * 0.02 + 0.04
    model = _Model(call_s=0.05)
    replies = _requests(ModelCaller(model, "m", 1.0, 5.0, grouped=False), list(range(12)), gap_s=0.002)
    assert [len(c) for c in model.calls] == [1] * 12 and model.most_outstanding == 12
    assert [r["item"] for r in replies] == list(range(12))


def test_a_failed_call_fails_each_of_its_requests_and_not_the_next_call():
    model, count = _Model(call_s=0.03), iter(range(100))
    remote = model._remote  # the first call fails (its replica died); the others are answered
    model.predict_many = SimpleNamespace(
        remote=lambda jobs: _Response(0.0, RuntimeError("gone")) if next(count) == 0 else remote(jobs)
    )

    async def run() -> list:
        caller = ModelCaller(model, "m", 1.0, 5.0)
        first = await asyncio.gather(*(caller.predict(i, "png") for i in range(3)), return_exceptions=True)
        return [*first, await caller.predict(7, "png")]

    outcomes = asyncio.run(run())  # the three arrive together: one call
    assert all(isinstance(o, ModelCallError) and "unavailable (RuntimeError)" in str(o) for o in outcomes[:3])
    assert outcomes[3] == {"item": 7, "call": 1}


def test_a_dead_replica_is_not_counted_after_its_call_fails():
    model, count = _Model(call_s=0.08, replicas=2), iter(range(100))
    remote = model._remote  # the third call fails (a replica died); the others are answered
    model.predict_many = SimpleNamespace(
        remote=lambda jobs: _Response(0.0, RuntimeError("gone")) if next(count) == 2 else remote(jobs)
    )

    async def run() -> list:
        caller = ModelCaller(model, "m", 1.0, 5.0)
        first = asyncio.ensure_future(caller.predict(0, "png"))  # no call out: at once, to r0
        await asyncio.sleep(0.005)
        await asyncio.gather(first, caller.predict(1, "png"))  # r1 unknown: waits 0.05 s, then goes to r1
        seen = (sorted(caller.replicas), caller.batcher.busy_at)
        failed = await asyncio.gather(caller.predict(2, "png"), return_exceptions=True)
        after = (dict(caller.replicas), caller.batcher.busy_at)
        await caller.predict(3, "png")
        return [seen, failed, after, sorted(caller.replicas)]

    seen, failed, after, again = asyncio.run(run())
    assert seen == (["r0", "r1"], 2) and isinstance(failed[0], ModelCallError)
    assert after == ({}, 1) and again == ["r0"]  # counted again from the next answer


def test_throughput_env_file_matches_what_tumorbench_serve_sets(monkeypatch):
    from pathlib import Path

    from tumorbench.serving.runner import THROUGHPUT_ENV, use_throughput_mode

    path = Path(__file__).resolve().parents[2] / "serve" / "throughput.env"
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert dict(line.split("=", 1) for line in lines) == THROUGHPUT_ENV
    for key in THROUGHPUT_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "30")  # exported by the user: kept
    use_throughput_mode()
    assert os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "30"
    assert os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
