"""The tumorbench Ray Serve application: a FastAPI ingress and one batched deployment per model package.

``serve run serve/config.yaml`` or ``tumorbench serve --models DIR`` start it (import path
``tumorbench.serving.app:build_app``; workers import it from the installed tumorbench).
The ingress checks the API key and body size, parses the upload, decodes and validates it
(format, declared size, dimensions, channels, finite values) and runs the package's own
preprocessing (rebuilt from ``model.json``) and sends the requests that queue while a model is
busy in one call (:mod:`tumorbench.serving.calls`); the model deployment batches forward passes
(:mod:`tumorbench.serving.batcher`) and maps answers back to the input's geometry.
Batch size, batch wait and threshold are ``user_config``: ``reconfigure`` applies them live.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route methods' annotations
# at runtime, and Serve's class-based views hide this module's globals from string annotations.

import asyncio
import hmac
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from ray import serve

from tumorbench.explain.serving import explain_problem
from tumorbench.serving.calls import ModelCaller, ModelCallError, awaited
from tumorbench.serving.http import UPLOAD_PREFIX, Options, api, request_id, sweep_stale_uploads
from tumorbench.serving.model_server import ModelServer, peak_rss_mb
from tumorbench.serving.packages import resolve_packages
from tumorbench.serving.protocol import (
    UPLOAD_OPENAPI,
    ApiError,
    FastJSONResponse,
    RequestOptions,
    discard_body,
    exposure_problem,
    model_card,
    receive_upload,
)
from tumorbench.serving.settings import API_KEY_ENV, AppArgs
from tumorbench.serving.telemetry import Telemetry
from tumorbench.tasks import get_task

__all__ = [
    "UPLOAD_PREFIX",
    "Ingress",
    "api",
    "build_app",
    "peak_rss_mb",
    "sweep_stale_uploads",
]
logger = logging.getLogger("ray.serve")


@serve.deployment
@serve.ingress(api)
class Ingress:
    """HTTP front: authentication, limits, decoding, validation, preprocessing, routing, JSON."""

    def __init__(self, settings: dict[str, Any], packages: dict[str, str], handles: dict[str, Any]) -> None:
        from tumorbench.inference import Preprocessor
        from tumorbench.serving.fastpath import supported
        from tumorbench.uploads import UploadLimits

        self.limits = UploadLimits(**{k: settings[k] for k in ("max_pixels", "max_voxels", "max_unpacked_bytes")})
        self.max_body = int(settings["max_upload_mb"] * 1024**2) + 64 * 1024  # multipart headers on top
        self.api_key = settings["api_key"] or os.environ.get(API_KEY_ENV) or None
        allowed = tuple(h.strip("[]").lower() for h in settings["allowed_hosts"])
        problem = exposure_problem(allowed, self.api_key, settings["insecure"])
        if problem:  # the key may be set only in the cluster's environment: checked again where it is read
            raise ValueError(problem)
        self.allowed_hosts, self.telemetry = allowed, Telemetry()
        self.preprocessors, self.cards, self.batched = {}, {}, set()
        for name, path in packages.items():
            try:
                self.preprocessors[name] = Preprocessor.from_package(path, self.limits)
            except Exception as exc:  # its model deployment is not ready either: /readyz names it
                logger.error("model %s: manifest unusable, not served (%s: %s)", name, type(exc).__name__, exc)
                continue
            self.cards[name] = model_card(name, Path(path), self.preprocessors[name].manifest)
            if settings["fast_path"] and supported(self.preprocessors[name].config, self.cards[name]["inputs"]["dims"]):
                self.batched.add(name)  # preprocessing runs batched in the model deployment
        self.handles = handles
        self.callers = {
            name: ModelCaller(
                handle,
                name,
                float(settings["queue_timeout_s"]),
                float(settings["model_timeout_s"]),
                grouped=bool(settings["group_model_calls"]),
            )
            for name, handle in handles.items()
        }
        self.max_concurrent, self.inflight = int(settings["max_concurrent_requests"]), 0
        self.retry_after = str(settings["retry_after_s"])
        if removed := sweep_stale_uploads():
            logger.info("removed %d upload folder(s) left by killed processes", removed)
        # Named by pid, so a killed process's folder is swept at the next start (sweep_stale_uploads).
        self.upload_dir = Path(tempfile.mkdtemp(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-"))

    def __del__(self) -> None:  # Serve calls it when it stops the replica
        import shutil

        shutil.rmtree(getattr(self, "upload_dir", ""), ignore_errors=True)

    @api.get("/healthz")
    def healthz(self) -> dict[str, Any]:
        """Liveness: the ingress answers."""
        return {"status": "ok", "models": len(self.cards)}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Readiness per model (loaded and warmed up); 503 naming the models that are not."""

        async def one(name: str, handle: Any) -> dict[str, Any]:
            try:
                return await asyncio.wait_for(awaited(handle.ready.remote()), 5.0)
            except Exception as exc:  # a replica still starting, restarting or gone
                return {"ready": False, "error": f"no answer ({type(exc).__name__})"}

        states = await asyncio.gather(*(one(name, handle) for name, handle in self.handles.items()))
        models = dict(zip(self.handles, states))
        not_ready = sorted(name for name, state in models.items() if not state.get("ready"))
        body = {"ready": not not_ready, "not_ready": not_ready, "models": models}
        return JSONResponse(body, status_code=200 if not not_ready else 503)

    @api.get("/v1/models")
    def list_models(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        return {"models": list(self.cards.values())}

    @api.get("/v1/stats", include_in_schema=False)
    async def stats(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        models = {name: await handle.stats.remote() for name, handle in self.handles.items()}
        ingress = {
            "pid": os.getpid(),
            "peak_rss_mb": peak_rss_mb(),
            "batched_models": sorted(self.batched),
            "model_calls": {name: caller.stats() for name, caller in self.callers.items()},
        }
        return {"ingress": ingress, "models": models}

    @api.post("/v1/classify", openapi_extra=UPLOAD_OPENAPI)
    async def classify(self, request: Request, options: Options) -> Any:
        """Class probabilities and label of one uploaded image."""
        return await self._predict(request, "classification", options)

    @api.post("/v1/segment", openapi_extra=UPLOAD_OPENAPI)
    async def segment(self, request: Request, options: Options) -> Any:
        """Tumor mask (base64 PNG for 2D, NIfTI for 3D) with area / volume, lesions and boxes; or a DICOM SEG."""
        return await self._predict(request, "segmentation", options)

    def _authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("x-api-key") or ""
        bearer = request.headers.get("authorization", "")
        if not given and bearer.lower().startswith("bearer "):
            given = bearer[7:].strip()
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise ApiError(401, "missing or wrong API key (send it as X-API-Key)")

    def _candidates(self, task: str, model: str | None) -> list[str]:
        if model is not None:
            if model not in self.cards:
                raise ApiError(404, f"unknown model {model!r}; served: {', '.join(self.cards)}")
            if self.cards[model]["task"] != task:
                raise ApiError(
                    400,
                    f"model {model!r} is a {self.cards[model]['task']} model; use {self.cards[model]['endpoint']}",
                    "wrong_task",
                )
            return [model]
        names = [name for name, card in self.cards.items() if card["task"] == task]
        if not names:
            raise ApiError(404, f"no {task} model is served")
        return names

    def _prepare(self, path: Path, names: list[str], batched: bool) -> tuple[str, Any, float]:
        """Decode once, then preprocess for the first candidate model the input fits (in a worker thread).

        ``batched``: models with batched preprocessing get a :class:`RawInput` (laid out, not resized).
        """
        from tumorbench.serving.fastpath import MAX_VALUES, raw_input
        from tumorbench.uploads import UploadError, read_upload, typed_upload

        start, typed = time.perf_counter(), path
        try:
            typed = typed_upload(path)
            image = read_upload(typed, self.limits, label="upload", dtype=None)  # 8-bit pixels stay uint8
            errors = []
            for name in names:
                pre = self.preprocessors[name]
                try:
                    small = image.array.size <= MAX_VALUES  # a big upload is shrunk here rather than shipped
                    fast = batched and small and name in self.batched
                    prepared = raw_input(pre, image) if fast else pre.prepare_image(image)
                    return name, prepared, 1000 * (time.perf_counter() - start)
                except UploadError as exc:
                    errors.append(f"{name}: {exc.problem}" if len(names) > 1 else exc.problem)
            raise ApiError(422, "upload " + "; ".join(errors))
        except UploadError as exc:
            raise ApiError(exc.status, str(exc)) from exc
        except ApiError:
            raise
        except Exception as exc:  # a decoded image the preprocessing cannot take is still the input's fault
            logger.warning("request preprocessing failed (%s)", type(exc).__name__)
            raise ApiError(422, f"upload cannot be preprocessed ({type(exc).__name__})") from exc
        finally:  # here: a request cancelled meanwhile has already run its own clean-up
            typed.unlink(missing_ok=True)

    def _seg_sources(self, path: Path) -> list[Any]:
        from tumorbench.dicomseg import upload_sources
        from tumorbench.uploads import UploadError

        try:
            return upload_sources(path.read_bytes(), self.limits)
        except UploadError as exc:
            raise ApiError(exc.status, str(exc)) from exc

    def _busy(self, detail: str) -> ApiError:
        return ApiError(503, detail, "overloaded", headers={"Retry-After": self.retry_after})

    async def _call_model(self, name: str, prepared: Any, mask: str | None) -> dict[str, Any]:
        """The model deployment's answer (:class:`ModelCaller`: requests grouped into calls, two deadlines
        each), or 503 + Retry-After when it is full, slow, restarting or not ready."""
        try:
            reply = await self.callers[name].predict(prepared, mask)
        except ModelCallError as exc:
            raise self._busy(str(exc)) from None
        if "unavailable" in reply:
            raise ApiError(
                503,
                f"model {name} is not ready: {reply['unavailable']}",
                "model_unavailable",
                headers={"Retry-After": self.retry_after},
            )
        if "failed" in reply:
            raise ApiError(
                500,
                f"inference failed for this input ({reply['failed']}); other requests are unaffected",
                "inference_failed",
            )
        return reply

    async def _predict(self, request: Request, task: str, options: RequestOptions) -> Response:
        self._authorize(request)
        names = self._candidates(task, options.model)
        if options.output != "json" and not get_task(task).with_mask:
            raise ApiError(400, f"output={options.output} is for /v1/segment only")
        if self.inflight >= self.max_concurrent:  # shed now: queueing only delays the same answer
            await discard_body(request, self.max_body)  # network time only: a closed socket loses the answer
            raise self._busy(f"server busy: {self.inflight} requests in progress")
        self.inflight += 1
        try:
            return await self._predict_admitted(request, task, names, options)
        finally:
            self.inflight -= 1

    async def _predict_admitted(
        self, request: Request, task: str, names: list[str], options: RequestOptions
    ) -> Response:
        start = time.perf_counter()
        path = self.upload_dir / uuid.uuid4().hex  # the replica's folder: one file (name) per request
        try:
            size = await receive_upload(request, self.max_body, path)
            sources = await asyncio.to_thread(self._seg_sources, path) if options.output == "dicom-seg" else None
            # The batched path answers plain JSON; DICOM SEG and explanations need the MONAI chain's record.
            batched = options.output == "json" and options.explain is None
            name, prepared, prepare_ms = await asyncio.to_thread(self._prepare, path, names, batched)
        finally:  # the upload under its first name; _prepare removes it under its typed one
            path.unlink(missing_ok=True)
        problem = explain_problem(options.explain, self.preprocessors[name].manifest)
        if problem is not None:  # before the prediction: a request that cannot be answered in full is refused
            raise ApiError(*problem)
        # JSON answers come back ready (summary, encoded mask): the mask array stays in the model replica
        mask = None if sources is not None else (options.mask if get_task(task).with_mask else "none")
        reply, card = await self._call_model(name, prepared, mask), self.cards[name]
        if sources is not None:  # the mask as a DICOM Segmentation of the uploaded series (tumorbench.dicomseg)
            from tumorbench.dicomseg import MEDIA_TYPE, result_to_dicom_seg

            blob = await asyncio.to_thread(
                result_to_dicom_seg, reply["result"], sources, self.preprocessors[name].manifest, card["version"]
            )
            logger.info("request %s dicom-seg model=%s bytes=%d", request_id(request), name, len(blob))
            return Response(blob, media_type=MEDIA_TYPE)
        payload = {
            "request_id": request_id(request),
            "model": name,
            "version": card["version"],
            **reply["summary"],
            "input": {"format": prepared.input_format, "bytes": size},
        }
        if "mask" in reply:
            payload["mask"] = reply["mask"]
        if options.explain is not None:
            payload["explanation"] = await self.handles[name].explain.remote(prepared, options.explain)
        total_ms = 1000 * (time.perf_counter() - start)
        self.telemetry.observe(
            name, decode=prepare_ms, inference=reply["inference_ms"], postprocess=reply["postprocess_ms"]
        )
        payload["inference_ms"] = round(reply["inference_ms"], 3)
        payload["timing_ms"] = {
            "decode_and_preprocess": round(prepare_ms, 3),
            "inference": round(reply["inference_ms"], 3),
            "postprocess": round(reply["postprocess_ms"], 3),
            "total": round(total_ms, 3),
        }
        logger.info(
            "request %s %s model=%s format=%s bytes=%d total_ms=%.1f",
            request_id(request),
            task,
            name,
            prepared.input_format,
            size,
            total_ms,
        )
        return FastJSONResponse(payload)  # Serve's proxy adds the x-request-id header


def _cluster_has_gpus() -> bool:
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    import torch

    return torch.cuda.is_available()


def build_app(args: dict[str, Any] | AppArgs) -> serve.Application:
    """The Serve application: one ``ModelServer`` deployment per package and the ``Ingress``."""
    settings = args if isinstance(args, AppArgs) else AppArgs(**args)
    packages = resolve_packages(settings.models)
    gpus = settings.gpu_per_replica if settings.gpu_per_replica > 0 and _cluster_has_gpus() else 0
    limits = {
        "max_pixels": settings.max_pixels,
        "max_voxels": settings.max_voxels,
        "max_unpacked_bytes": int(settings.max_unpacked_mb * 1024**2),
    }
    scaling = (
        {"autoscaling_config": settings.autoscaling}
        if settings.autoscaling
        else {"num_replicas": settings.num_replicas}
    )
    handles = {
        name: ModelServer.options(
            name=f"model_{name}",
            user_config=settings.model_settings(),
            max_ongoing_requests=settings.model_ongoing_requests(),
            max_queued_requests=settings.max_queued_requests,
            ray_actor_options={"num_cpus": settings.cpus_per_replica, "num_gpus": gpus},
            # the ingress logs each request once, with its id and timings: no access line per internal call
            logging_config={"enable_access_log": False},
            **scaling,
        ).bind(str(path), name, limits, settings.torch_threads)
        for name, path in packages.items()
    }
    # The ingress gets only its own settings: a user_config override in a config's `deployments`
    # (batch size, wait, threshold) then reconfigures the model replicas in place.
    front = {
        **limits,
        **settings.model_dump(
            include={
                "max_upload_mb",
                "api_key",
                "max_concurrent_requests",
                "model_timeout_s",
                "queue_timeout_s",
                "retry_after_s",
                "allowed_hosts",
                "insecure",
                "fast_path",
                "group_model_calls",
            }
        ),
    }
    # A few more than the ingress admits itself, so the surplus gets its quick 503 rather than Serve's queue.
    ingress = Ingress.options(
        num_replicas=settings.ingress_replicas,
        max_ongoing_requests=settings.max_concurrent_requests + 8,
        max_queued_requests=settings.max_queued_requests,
        ray_actor_options={"num_cpus": settings.ingress_cpus},
    )
    return ingress.bind(front, {name: str(path) for name, path in packages.items()}, handles)
