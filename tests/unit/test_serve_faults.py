"""The ingress's two deadlines on a model call, without Ray's cluster: a call no replica takes, a dead replica."""

from __future__ import annotations

import asyncio
import os
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("ray.serve")

from tumorbench.serving.app import Ingress  # noqa: E402
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
    cls = Ingress.func_or_class  # its instances' async __del__ (Serve's ASGI wrapper) wants a replica: none made
    ingress = SimpleNamespace(queue_timeout_s=0.2, model_timeout_s=0.6, retry_after="1")
    ingress.handles = {"m": SimpleNamespace(predict=SimpleNamespace(remote=lambda prepared, mask: response))}
    ingress._busy = lambda detail: cls._busy(ingress, detail)
    start = time.perf_counter()
    try:
        outcome = asyncio.run(cls._call_model(ingress, "m", object(), "rle"))
    except ApiError as exc:
        outcome = exc
    return outcome, time.perf_counter() - start


@pytest.mark.parametrize(
    ("take_s", "answer", "words", "seconds", "cancelled"),
    [
        (None, {"result": 1}, "took the request within 0.2 s", 0.2, True),  # no replica free, or one restarting
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
    outcome, took = _call(_Response(0.1, {"result": 7}))
    assert outcome == {"result": 7} and 0.1 <= took < 0.4


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
