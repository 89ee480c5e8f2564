"""The model deployment's isolation logic without Ray's cluster: batch-mates, bad user_config, readiness."""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

import pytest

pytest.importorskip("ray.serve")

from tumorbench.serving.model_server import ModelServer, ModelSettings, replica_id  # noqa: E402

POISON = -1.0
BAD_ANSWER = 7.0  # its post-processing raises


class _Predictor:
    """Doubles each input; an input equal to POISON raises, as a forward pass that fails would."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict_batch(self, images):
        self.batches.append(len(images))
        if POISON in images:
            raise RuntimeError("forward failed")
        return [2 * x for x in images]

    def postprocess(self, prepared, probabilities, threshold):
        if prepared.image == BAD_ANSWER:
            raise ValueError("post-processing failed")
        return {"value": probabilities, "threshold": threshold}


def _server() -> object:
    from tumorbench.serving.batcher import Batcher

    server = object.__new__(ModelServer.func_or_class)
    server.name, server.settings, server.config_error, server.error = "m", ModelSettings(), None, None
    server.telemetry = SimpleNamespace(observed=[])
    server.telemetry.observe = lambda *batch: server.telemetry.observed.append(batch)
    server.batcher = Batcher(server._batch, 16, 0.01, observe=server._observe)
    server.batch_sizes, server.requests, server.failed_batches = {}, 0, 0
    server.predictor, server.warm_up_ms, server.replica = _Predictor(), 1.0, replica_id()
    return server


def test_a_failing_input_fails_alone():
    server = _server()

    async def run():
        server.reconfigure({"max_batch_size": 8, "batch_wait_timeout_s": 0.2})
        inputs = [1.0, 2.0, POISON, 3.0]
        return await asyncio.gather(*(server.predict(SimpleNamespace(image=x)) for x in inputs))

    replies = asyncio.run(run())
    assert server.predictor.batches[0] == 4  # one batch of four, then one by one
    assert [r.get("result", {}).get("value") for r in replies] == [2.0, 4.0, None, 6.0]
    assert replies[2] == {"failed": "RuntimeError"} and server.failed_batches == 0
    server.check_health()  # one bad input does not make the replica unhealthy


def test_a_failing_post_processing_fails_alone_in_a_batch_finished_at_once():
    server = _server()

    async def run():
        server.reconfigure({"max_batch_size": 8, "batch_wait_timeout_s": 0.2})
        return await asyncio.gather(*(server.predict(SimpleNamespace(image=x)) for x in (1.0, BAD_ANSWER, 3.0)))

    replies = asyncio.run(run())
    assert server.predictor.batches == [3]  # one forward pass: the batch was not retried one by one
    assert [r.get("result", {}).get("value") for r in replies] == [2.0, None, 6.0]
    assert replies[1] == {"failed": "ValueError"} and server.requests == 2
    assert all(r["postprocess_ms"] >= 0 and r["inference_ms"] > 0 for r in (replies[0], replies[2]))


def test_json_answers_are_made_in_the_replica_without_shipping_the_mask():
    import numpy as np

    from tumorbench.serving.protocol import run_lengths

    server = _server()
    mask = np.zeros((1, 3, 4), np.uint8)
    mask[0, 1, 1:3] = 1
    server.predictor.postprocess = lambda prepared, probs, threshold: SimpleNamespace(
        mask=mask, summary=lambda: {"area": int(probs)}
    )

    async def run():
        return [await server.predict(SimpleNamespace(image=1.5), m) for m in ("rle", "none", None)]

    rle, bare, whole = asyncio.run(run())
    assert rle["summary"] == {"area": 3} and [c.tolist() for c in rle["mask"]["counts"]] == [run_lengths(mask[0])]
    assert "mask" not in bare and "result" not in rle and bare["summary"] == {"area": 3}
    assert whole["result"].mask is mask  # the whole result: a DICOM SEG is made from it


def test_bad_user_config_is_rejected_and_old_settings_keep_serving():
    server = _server()

    async def run():  # in one event loop, as in a replica: the batch queue belongs to it
        server.reconfigure({"threshold": 0.7, "max_batch_size": 4})
        server.reconfigure({"threshold": 1.5, "max_batch_size": 0, "typo": 1})
        return await server.predict(SimpleNamespace(image=5.0))

    reply = asyncio.run(run())
    assert server.settings.threshold == 0.7 and server.settings.max_batch_size == 4
    assert "previous settings kept" in server.config_error and "threshold" in server.config_error
    assert reply["result"] == {"value": 10.0, "threshold": 0.7}
    assert server.ready()["ready"] and server.ready()["config_error"] == server.config_error


def test_unloadable_package_is_not_ready_and_unhealthy_after_repeated_failures():
    server = _server()
    server.predictor, server.error = None, "package cannot be loaded or run (UnpicklingError)"
    assert asyncio.run(server.predict(SimpleNamespace(image=1.0))) == {"unavailable": server.error}
    assert server.ready()["ready"] is False
    server.failed_batches = 5
    with pytest.raises(RuntimeError, match="batches all failed"):
        server.check_health()


def test_upload_folders_of_killed_processes_are_swept(tmp_path):
    from tumorbench.serving.app import UPLOAD_PREFIX, sweep_stale_uploads

    dead = tmp_path / f"{UPLOAD_PREFIX}999999999-abc"  # above pid_max: no such process
    alive = tmp_path / f"{UPLOAD_PREFIX}{os.getpid()}-def"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "upload").write_bytes(b"DOE^JOHN")
    assert sweep_stale_uploads(str(tmp_path)) == 1
    assert not dead.exists() and (alive / "upload").exists()


def test_predict_many_answers_each_request_and_the_batch_size():
    server = _server()

    async def run():
        server.reconfigure({"max_batch_size": 8, "batch_wait_timeout_s": 0.0})
        jobs = [(SimpleNamespace(image=x), None) for x in (1.0, POISON, 3.0)]
        return await server.predict_many(jobs)

    reply = asyncio.run(run())
    assert reply["max_batch_size"] == 8  # the ingress sends at most this many per call
    assert reply["replica"] == ""  # outside a Serve replica; the ingress counts the replicas that answer
    values = [r.get("result", {}).get("value") for r in reply["replies"]]
    assert values == [2.0, None, 6.0] and reply["replies"][1] == {"failed": "RuntimeError"}
    assert server.predictor.batches[0] == 3  # the call's requests were batched together
    assert server.batch_sizes == {3: 1}  # /v1/stats: one batch of 3 (then the one-by-one retry, not a batch)
    assert [size for size, _, _ in server.telemetry.observed] == [3]  # the exported histogram saw the same
