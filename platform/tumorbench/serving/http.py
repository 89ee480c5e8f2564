"""The FastAPI side of the tumorbench ingress: the app object, query options, JSON errors, Host check, counts.

Kept apart from :mod:`tumorbench.serving.app` (the deployments): what any route shares, with no
per-replica state of its own (the middleware finds this replica's ``Ingress`` through Serve).
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency's annotations at runtime.

import logging
import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from tumorbench.serving.protocol import LOOPBACK_HOSTS, ApiError, RequestOptions, host_allowed

logger = logging.getLogger("ray.serve")
UPLOAD_PREFIX = "tumorbench-upload-"  # + "<pid>-": folders of dead processes are swept at start


async def request_options(  # async: FastAPI runs a plain ``def`` dependency in its thread pool, a hop per request
    model: str | None = Query(None, description="model name (GET /v1/models)"),
    output: str = Query(
        "json", pattern="^(json|dicom-seg)$", description="segment: json, or dicom-seg (a DICOM SEG of a DICOM upload)"
    ),
    explain: str | None = Query(
        None, description="a heatmap on the upload's grid: gradcam, gradcampp or occlusion (default: none)"
    ),
    mask: str = Query(
        "png",
        pattern="^(png|rle|none)$",
        description="segment, JSON output: the mask as base64 PNG / NIfTI (png), run lengths (rle) or left out (none)",
    ),
) -> RequestOptions:
    """Every query option of the prediction routes, parsed in one place."""
    return RequestOptions(model=model, output=output, explain=explain, mask=mask)


def sweep_stale_uploads(root: str | None = None) -> int:
    """Remove upload folders of processes that no longer run (killed mid-request); returns how many."""
    import shutil

    removed = 0
    for folder in Path(root or tempfile.gettempdir()).glob(f"{UPLOAD_PREFIX}*"):
        pid = folder.name[len(UPLOAD_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


Options = Annotated[RequestOptions, Depends(request_options)]
api = FastAPI(
    title="tumorbench",
    version="1",
    description="Tumor classification and segmentation from PNG/JPEG, NIfTI and DICOM uploads.",
)


def _error_response(exc: ApiError, request: Request) -> JSONResponse:
    # Details name the upload generically ("upload: ..."), never client file names or DICOM tags.
    logger.info("request %s %s -> %d %s: %s", request_id(request), request.url.path, exc.status, exc.error, exc.detail)
    return JSONResponse(exc.body(request_id(request)), status_code=exc.status, headers=exc.headers)


def request_id(request: Request) -> str:
    # Serve's proxy puts its request id (the client's X-Request-ID, or a new one) in the headers.
    if not hasattr(request.state, "request_id"):
        request.state.request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    return request.state.request_id


def _ingress() -> Any:
    """This replica's :class:`Ingress`, or None outside a replica.

    Not a module global set by ``Ingress.__init__``: Serve ships the class by value, so its methods
    write their own copy of this module's globals while this middleware reads the imported module's.
    """
    try:
        return serve.get_replica_context().servable_object
    except Exception:  # RayServeException outside a replica
        return None


class _Guard:
    """Host allow-list first, then count the answer by route and status.

    A plain ASGI middleware: Starlette's ``@app.middleware("http")`` runs every request in an extra
    task with its body piped through a memory stream, a cost paid on the hot path for two checks.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        ingress = _ingress()
        status = 500  # what Starlette's outer ServerErrorMiddleware answers if the app raises

        async def counted(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if host_allowed(Headers(scope=scope).get("host"), getattr(ingress, "allowed_hosts", LOOPBACK_HOSTS)):
                await self.app(scope, receive, counted)
            else:
                error = ApiError(421, "this server does not answer for that Host name")
                await _error_response(error, Request(scope))(scope, receive, counted)
        finally:
            if getattr(ingress, "telemetry", None) is not None:
                ingress.telemetry.count(scope["path"], status)


api.add_middleware(_Guard)


@api.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return _error_response(exc, request)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error_response(ApiError(exc.status_code, str(exc.detail)), request)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _error_response(
        ApiError(422, "; ".join(str(e.get("msg")) for e in exc.errors()), "invalid_request"), request
    )


@api.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id(request)
    logger.exception("request %s failed", rid)
    return _error_response(ApiError(500, f"internal error; see the server log for request {rid}"), request)
