"""One model package as a Serve deployment: batched forward passes, readiness, validated live settings.

Isolation: a package that cannot be loaded leaves its replica running but not ready (the
other models keep serving and ``/readyz`` names it); an input whose forward pass fails
fails alone, not the requests batched with it; a bad ``user_config`` is rejected and the
previous settings keep serving (Serve would stop a replica whose ``reconfigure`` raised).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve

logger = logging.getLogger("ray.serve")
FAILED_BATCHES_UNHEALTHY = 5  # consecutive batches failing whole: check_health asks Serve for a new replica


class ModelSettings(BaseModel):
    """A model deployment's ``user_config``: changed live through ``reconfigure``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_batch_size: int = Field(16, ge=1, le=512)
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=10.0)
    threshold: float = Field(0.5, gt=0.0, lt=1.0)


def peak_rss_mb() -> float:
    try:  # VmHWM: this process's peak resident set
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def warm_up_image(manifest: Any) -> Any:
    """A small random input the package's preprocessing accepts (2D image or volume, its channels)."""
    import numpy as np

    from tumorbench.data.io import ImageData

    rng = np.random.default_rng(0)
    channels = manifest.in_channels
    if manifest.data_dims == 2:
        array = rng.uniform(0, 255, (channels, 48, 48)).astype(np.float32)
        return ImageData(array, np.eye(4), (1.0, 1.0), {"format": "image2d", "path": "warm-up"})
    shape = (24, 24, 12) if channels == 1 else (24, 24, 12, channels)
    array = rng.uniform(0, 255, shape).astype(np.float32)
    return ImageData(array, np.eye(4), (1.0, 1.0, 1.0), {"format": "nifti", "path": "warm-up"})


class _Failed:
    """One batch member's failure, answered to that request only."""

    def __init__(self, exc: BaseException) -> None:
        self.reason = type(exc).__name__


def replica_id() -> str:
    """This Serve replica's id; "" outside a replica (a model built by a test)."""
    from ray.serve.exceptions import RayServeException

    try:
        return serve.get_replica_context().replica_id.unique_id
    except RayServeException:
        return ""


@serve.deployment
class ModelServer:
    """One model package: batched forward passes and post-processing (:class:`Batcher`), a batch at a time."""

    def __init__(self, package: str, name: str, limits: dict[str, int], torch_threads: int | None = None) -> None:
        import ray
        import torch

        from tumorbench.inference import Predictor
        from tumorbench.serving.batcher import Batcher
        from tumorbench.serving.fastpath import BatchPath, supported
        from tumorbench.serving.telemetry import BatchTelemetry
        from tumorbench.uploads import UploadLimits, quiet_pydicom

        quiet_pydicom()
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.name, self.settings, self.config_error = name, ModelSettings(), None
        self.telemetry, self.batch_sizes = BatchTelemetry(name), {}  # batch size -> batches run
        self.batcher = Batcher(
            self._batch, self.settings.max_batch_size, self.settings.batch_wait_timeout_s, observe=self._observe
        )
        self.requests = self.failed_batches = 0
        self.replica = replica_id()
        self.predictor, self.error, self.warm_up_ms, self.batch_path = None, None, None, None
        device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        try:
            self.predictor = Predictor.from_package(package, device=device, limits=UploadLimits(**limits))
            from tumorbench.explain.serving import ServedExplanations

            self.explanations = ServedExplanations(self.predictor)
            start = time.perf_counter()
            self.predictor.predict_image(warm_up_image(self.predictor.manifest))  # first call pays the set-up
            if supported(self.predictor.preprocessor.config, self.predictor.manifest.data_dims):
                self.batch_path = BatchPath(self.predictor)  # for RawInput requests (the ingress's fast path)
            self.warm_up_ms = 1000 * (time.perf_counter() - start)
        except Exception as exc:  # stay up, not ready: the other models keep serving
            self.predictor, self.error = None, f"package cannot be loaded or run ({type(exc).__name__})"
            logger.error("model %s: %s: %s", name, self.error, exc)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        try:
            settings = ModelSettings(**(user_config or {}))
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) + f" ({e['msg']})" for e in exc.errors())
            self.config_error = f"user_config rejected, previous settings kept: {fields}"
            logger.error("model %s: %s", self.name, self.config_error)
            return
        self.batcher.configure(settings.max_batch_size, settings.batch_wait_timeout_s)
        self.settings, self.config_error = settings, None
        logger.info("model %s reconfigured: %s", self.name, settings.model_dump())

    def check_health(self) -> None:
        if self.failed_batches >= FAILED_BATCHES_UNHEALTHY:
            raise RuntimeError(f"model {self.name}: the last {self.failed_batches} batches all failed")

    def ready(self) -> dict[str, Any]:
        """Readiness: loaded and warmed up; the rejected ``user_config``, if any."""
        return {
            "ready": self.predictor is not None,
            "error": self.error,
            "config_error": self.config_error,
            "warm_up_ms": None if self.warm_up_ms is None else round(self.warm_up_ms, 1),
        }

    def _observe(self, size: int, waited_s: float, queued: int) -> None:
        """Each batch as it starts: counted for ``/v1/stats`` and exported (``ray_tumorbench_batch_*``)."""
        self.batch_sizes[size] = self.batch_sizes.get(size, 0) + 1
        self.telemetry.observe(size, waited_s, queued)

    async def _batch(self, items: list[Any]) -> list[Any]:
        """Forward pass and post-processing of a whole batch in one worker thread (one hop per batch)."""
        try:
            out = await asyncio.to_thread(self._run, items)
            self.failed_batches = 0
            return out
        except Exception:
            if len(items) == 1:
                self.failed_batches += 1
                raise
        return await asyncio.to_thread(self._one_by_one, items)  # find the input that fails

    def _run(self, jobs: list[Any]) -> list[Any]:
        """``(answer, post-processing ms)`` per job; a failing post-processing fails alone."""
        return [self._finish(job, probs) for job, probs in zip(jobs, self._forward([job[0] for job in jobs]))]

    def _finish(self, job: tuple[Any, str | None], probabilities: Any) -> Any:
        from tumorbench.serving.fastpath import RawInput
        from tumorbench.serving.protocol import mask_payload

        (item, mask), start = job, time.perf_counter()
        try:
            if isinstance(item, RawInput):
                result = self.batch_path.finish(item, probabilities, self.settings.threshold)
            else:
                result = self.predictor.postprocess(item, probabilities, self.settings.threshold)
            if mask is not None:  # the JSON answer's part, made here: the mask array never travels
                encoded = {"mask": mask_payload(result, mask)} if mask != "none" else {}
                result = {"summary": result.summary(), **encoded}
            else:
                result = {"result": result}
        except Exception as exc:
            logger.warning("model %s: post-processing failed (%s)", self.name, type(exc).__name__)
            return _Failed(exc)
        return result, 1000 * (time.perf_counter() - start)

    def _forward(self, items: list[Any]) -> list[Any]:
        """Probabilities of a batch: preprocessed inputs (per-request path) and :class:`RawInput` (batched)."""
        from tumorbench.serving.fastpath import RawInput

        raw = [i for i, item in enumerate(items) if isinstance(item, RawInput)]
        if raw and self.batch_path is None:
            raise ValueError(f"model {self.name} has no batched preprocessing for raw inputs")
        rest = sorted(set(range(len(items))) - set(raw))
        out: list[Any] = [None] * len(items)
        if raw:
            for i, probs in zip(raw, self.batch_path.run([items[i] for i in raw])):
                out[i] = probs
        if rest:
            for i, probs in zip(rest, self.predictor.predict_batch([items[i].image for i in rest])):
                out[i] = probs
        return out

    def _one_by_one(self, items: list[Any]) -> list[Any]:
        out: list[Any] = []
        for item in items:
            try:
                out.append(self._run([item])[0])
            except Exception as exc:
                out.append(_Failed(exc))
        self.failed_batches = self.failed_batches + 1 if all(isinstance(o, _Failed) for o in out) else 0
        return out

    async def predict(self, prepared: Any, mask: str | None = None) -> dict[str, Any]:
        """Forward (batched with concurrent requests) and post-processing of one prepared input.

        ``prepared``: a :class:`~tumorbench.inference.Prepared` (preprocessed by the ingress), or a
        :class:`~tumorbench.serving.fastpath.RawInput` (preprocessed here, with its whole batch).
        ``mask``: None answers the whole result (``result``: e.g. for a DICOM SEG); an encoding
        (``png``, ``rle``; ``none``: left out) answers the JSON's ``summary`` and ``mask``.

        ``{"unavailable": why}`` when the package is not loaded, ``{"failed": why}`` when this
        input's forward pass or post-processing raised (its batch-mates are answered).
        ``inference_ms`` includes the wait for the batch; ``postprocess_ms`` is this input's own.
        """
        if self.predictor is None:
            return {"unavailable": self.error}
        start = time.perf_counter()
        try:
            answer = await self.batcher.submit((prepared, mask))
        except Exception as exc:
            return {"failed": type(exc).__name__}
        if isinstance(answer, _Failed):
            return {"failed": answer.reason}
        parts, postprocess_ms = answer
        self.requests += 1
        return {
            **parts,
            "inference_ms": 1000 * (time.perf_counter() - start) - postprocess_ms,
            "postprocess_ms": postprocess_ms,
        }

    async def predict_many(self, jobs: list[tuple[Any, str | None]]) -> dict[str, Any]:
        """:meth:`predict` of each ``(prepared, mask)`` of one call (an ingress's grouped requests,
        :mod:`tumorbench.serving.calls`): each joins the batches as a lone request would.

        ``replies`` in order, this replica's ``max_batch_size`` (the most the ingress sends in one call) and
        its id (the ingress counts the replicas that answer).
        """
        replies = await asyncio.gather(*(self.predict(prepared, mask) for prepared, mask in jobs))
        return {"max_batch_size": self.settings.max_batch_size, "replica": self.replica, "replies": list(replies)}

    async def explain(self, prepared: Any, method: str) -> dict[str, Any]:
        """The response's ``explanation`` (never raises: a failure says it is unavailable and why)."""
        if self.predictor is None:
            return {"method": method, "available": False, "reason": self.error}
        return await asyncio.to_thread(self.explanations.explain, prepared, method)

    def stats(self) -> dict[str, Any]:
        device = str(self.predictor.device) if self.predictor is not None else None
        return {
            "pid": os.getpid(),
            "peak_rss_mb": peak_rss_mb(),
            "requests": self.requests,
            "batch_sizes": dict(sorted(self.batch_sizes.items())),
            "device": device,
            **self.settings.model_dump(),
            **self.ready(),
        }
