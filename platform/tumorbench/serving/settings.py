"""The ``args`` of the Serve application (``serve/config.yaml``), validated before anything starts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from tumorbench.serving.model_server import ModelSettings
from tumorbench.serving.protocol import LOOPBACK_HOSTS, exposure_problem

API_KEY_ENV = "TUMORBENCH_API_KEY"


class AppArgs(ModelSettings):
    """Arguments of :func:`build_app` (the ``args`` of a Serve config).

    Attributes:
        models: Package folders (``model.json`` + ``model.pt``), folders of packages, or
            ``NAME=PATH``; a training run's folder (or its ``train/``) serves its best checkpoint;
            ``${VAR:-default}`` reads paths (``:``-separated) from an environment variable.
        api_key: Required in ``X-API-Key`` (or ``Authorization: Bearer``) for ``/v1/*``;
            default ``$TUMORBENCH_API_KEY`` on the ingress, else no key.
        max_upload_mb: Largest request body.
        max_pixels / max_voxels: Largest declared 2D image / volume (values x channels).
        max_unpacked_mb: Largest total unpacked size of a zip upload.
        num_replicas / autoscaling: Replicas per model deployment (a Serve ``autoscaling_config``
            replaces ``num_replicas``).
        cpus_per_replica / gpu_per_replica: Resources per model replica; GPUs only when the
            cluster has them.
        torch_threads: ``torch.set_num_threads`` in each model replica (None: torch's default).
        max_ongoing_requests: Per model replica; at least ``max_batch_size`` (default: twice it, or every request
            the ingress replicas admit if that is more: :meth:`model_ongoing_requests`).
        max_concurrent_requests: Uploads one ingress replica receives, decodes and waits on at once;
            one more is answered 503 with ``Retry-After`` at once, never queued.
        max_queued_requests: Requests Serve queues per deployment (ingress and each model) beyond
            its ongoing ones; past that Serve answers 503 (backpressure) instead of queueing.
        queue_timeout_s: Longest wait for a model replica to take a request (every replica full, or the only
            one restarting after a crash); then 503 with ``Retry-After``.
        model_timeout_s: Longest wait for a model's answer once a replica took the request; then 503 with
            ``Retry-After``. Above the slowest legitimate input (3D sliding-window inference on CPU).
        retry_after_s: The ``Retry-After`` of a 503.
        allowed_hosts: ``Host`` header names answered (port ignored); others get 421. Loopback
            names by default (stops DNS rebinding); ``"*"`` or other names expose the app, which
            then needs ``api_key`` unless ``insecure`` is true.
        insecure: Serve an exposed app without an API key, deliberately.
        fast_path: 2D models whose preprocessing is resize + intensity normalization get it
            batched in the model deployment (the ingress only decodes); false: every request is
            preprocessed alone in the ingress by the package's MONAI chain (the older, slower path).
        group_model_calls: An ingress replica sends the requests that queue while a model is busy in one
            call (:mod:`tumorbench.serving.calls`; a Serve call costs about what a 2D forward pass does);
            false: one call per request (the older path).
    """

    models: list[str] = Field(default_factory=lambda: ["runs/best"])
    api_key: str | None = None
    max_upload_mb: float = Field(64.0, gt=0)
    max_pixels: int = Field(40_000_000, ge=1)
    max_voxels: int = Field(128 * 1024**2, ge=1)
    max_unpacked_mb: float = Field(1024.0, gt=0)
    num_replicas: int = Field(1, ge=1)
    autoscaling: dict[str, Any] | None = None
    cpus_per_replica: float = Field(0.5, ge=0)
    gpu_per_replica: float = Field(0.0, ge=0)
    ingress_replicas: int = Field(1, ge=1)
    ingress_cpus: float = Field(0.25, ge=0)
    torch_threads: int | None = Field(None, ge=1)
    max_ongoing_requests: int | None = Field(None, ge=1)
    max_concurrent_requests: int = Field(16, ge=1)
    max_queued_requests: int = Field(64, ge=0)
    queue_timeout_s: float = Field(1.0, gt=0)
    model_timeout_s: float = Field(30.0, gt=0)
    retry_after_s: int = Field(1, ge=0)
    allowed_hosts: list[str] = Field(default_factory=lambda: list(LOOPBACK_HOSTS), min_length=1)
    insecure: bool = False
    fast_path: bool = True
    group_model_calls: bool = True

    @model_validator(mode="after")
    def _check(self) -> AppArgs:
        if not self.models:
            raise ValueError("models: give at least one model package")
        problem = exposure_problem(
            tuple(self.allowed_hosts), self.api_key or os.environ.get(API_KEY_ENV), self.insecure
        )
        if problem:
            raise ValueError(problem)
        if self.max_ongoing_requests is not None and self.max_ongoing_requests < self.max_batch_size:
            raise ValueError("max_ongoing_requests must be >= max_batch_size, or a batch never fills")
        return self

    def model_ongoing_requests(self) -> int:
        """A model replica's ``max_ongoing_requests``: the setting, else twice the batch size or every request the
        ingress replicas admit, whichever is more. The ingress already bounds and sheds; a smaller bound here held
        the surplus in Serve's router, whose retry back-off left the cores idle (``bench/serve_load.py``, 64
        clients admitted against 32: 110 req/s where 32 clients made 187)."""
        admitted = self.max_concurrent_requests * self.ingress_replicas
        return self.max_ongoing_requests or max(2 * self.max_batch_size, admitted)

    def model_settings(self) -> dict[str, Any]:
        return ModelSettings(**self.model_dump(include=set(ModelSettings.model_fields))).model_dump()


def read_serve_config(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(args, where)`` of a Serve config holding the tumorbench application (``serve/config.yaml``).

    ``where``: ``host``, ``port``, ``request_timeout_s`` from ``http_options`` and the application's
    ``deployments`` overrides, as :func:`tumorbench.serving.app.serve_forever` takes them.

    Raises:
        DataError: not YAML, or no application importing ``tumorbench.serving.app:build_app``.
    """
    import yaml

    from tumorbench.errors import DataError

    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(path, f"cannot read the Serve config ({type(exc).__name__})") from exc
    apps = [a for a in config.get("applications") or [] if a.get("import_path") == "tumorbench.serving.app:build_app"]
    if len(apps) != 1:
        raise DataError(path, "needs exactly one application with import_path tumorbench.serving.app:build_app")
    http = config.get("http_options") or {}
    where = {
        "host": http.get("host", "127.0.0.1"),
        "port": int(http.get("port", 8000)),
        "request_timeout_s": float(http.get("request_timeout_s", 60.0)),
        "deployments": apps[0].get("deployments") or None,
    }
    return dict(apps[0].get("args") or {}), where
