"""HTTP details of the tumorbench API: JSON errors, bounded upload receiving, query options, model cards.

Uploads come as ``multipart/form-data`` with the file in the form field ``file`` (what
browsers, ``curl -F`` and ``requests`` send), or as a raw body with a file content type
(``application/octet-stream``, ``image/png``, ``application/dicom``, ``application/zip``...).
Either way the file is streamed to disk: raw bodies directly, forms through Starlette's
``request.form`` (python-multipart: one file, a few fields, at most 8 header lines of 4 kB
per part), so no upload is ever held in memory whole and a hostile form costs little CPU.
"""

from __future__ import annotations

import asyncio
import base64
import email.message
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse

from tumorbench.tasks import get_task

RAW_TYPES = (
    "application/octet-stream",
    "image/png",
    "image/jpeg",
    "image/tiff",
    "image/bmp",
    "application/dicom",
    "application/zip",
    "application/x-zip-compressed",
    "application/gzip",
    "application/x-gzip",
)
FORM_FIELD = "file"
MAX_FORM_FIELDS = 8  # besides the file; browsers and clients send none
MAX_FIELD_BYTES = 64 * 1024
INLINE_COPY_BYTES = 1024**2  # Starlette keeps a form's file in memory up to 1 MB: written out on the event loop
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    421: "misdirected_request",
    422: "invalid_input",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}
FORMATS = {
    2: ["PNG", "JPEG", "TIFF", "BMP", "DICOM (one slice)"],
    3: [
        "NIfTI (.nii / .nii.gz; 4D for several channels)",
        "MetaImage (.mha) or NRRD (.nrrd) holding its data",
        "zip of one DICOM series",
        "zip of per-channel NIfTI files in BraTS naming",
    ],
}
BRATS_ORDER = ["t1", "t1ce", "t2", "flair"]


class ApiError(Exception):
    """An error answered as ``{"error": code, "detail": text}`` with an HTTP status (and optional headers)."""

    def __init__(
        self, status: int, detail: str, error: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}
        self.error = error or ERROR_CODES.get(status, "error")

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, "request_id": request_id}


@dataclass(frozen=True)
class RequestOptions:
    """The query options of ``/v1/classify`` and ``/v1/segment``: the one place that parses them."""

    model: str | None = None
    output: str = "json"  # segment: "json" or "dicom-seg"
    explain: str | None = None  # a heatmap method (tumorbench.explain), off by default
    mask: str = "png"  # segment's JSON: "png" (base64 PNG / NIfTI file), "rle" (run lengths) or "none"


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """Whether a listen address or host name stays on this machine."""
    import ipaddress

    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(header: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a request's ``Host`` header (port stripped) is in ``allowed`` (``"*"``: any).

    A web page can reach a loopback service by DNS rebinding (its own name resolving to
    127.0.0.1); its requests still carry that name as Host, so a loopback-only allow-list stops them.
    """
    if "*" in allowed:
        return True
    if not header:
        return False
    host = header.strip().lower()
    host = host[1 : host.index("]")] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]
    return host in allowed


def exposure_problem(allowed_hosts: tuple[str, ...], api_key: str | None, insecure: bool) -> str | None:
    """Why an application reachable from other machines may not start as configured, or None."""
    exposed = [h for h in allowed_hosts if h == "*" or not is_loopback(h)]
    if exposed and not api_key and not insecure:
        return (
            f"allowed_hosts {exposed} reach beyond this machine but no API key is set: set api_key (or "
            f"TUMORBENCH_API_KEY), or insecure: true to serve without one deliberately"
        )
    return None


def _content_type(header: str) -> email.message.Message:
    message = email.message.Message()
    message["content-type"] = header
    return message


def _check_declared_length(request: Any, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        size = int(declared)
    except ValueError:
        raise ApiError(400, "invalid Content-Length") from None
    if size > limit:
        raise ApiError(413, f"body of {size:,} bytes is over the limit of {limit:,} bytes")


def _bounded_receive(request: Any, limit: int) -> Any:
    """The request's ASGI ``receive``, refusing with 413 as soon as the body passes ``limit`` bytes."""
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise ApiError(413, f"body is over the limit of {limit:,} bytes")
        return message

    return receive


async def discard_body(request: Any, limit: int) -> None:
    """Read and drop the body (at most ``limit`` bytes) so an early answer reaches a client still sending."""
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            return


async def receive_upload(request: Any, limit: int, dest: Path) -> int:
    """Write the uploaded file (multipart field ``file`` or a raw body) to ``dest``; returns its size."""
    content_type = request.headers.get("content-type", "")
    kind = _content_type(content_type).get_content_type() if content_type else ""
    if kind not in RAW_TYPES and kind != "multipart/form-data":
        raise ApiError(
            415,
            f"unsupported content type {kind or '(none)'!r}: send multipart/form-data with a "
            f"'{FORM_FIELD}' field, or the raw file as one of {', '.join(RAW_TYPES)}",
        )
    _check_declared_length(request, limit)
    bounded = Request(request.scope, _bounded_receive(request, limit))
    if kind in RAW_TYPES:
        size = 0
        with open(dest, "wb") as sink:  # noqa: ASYNC230 - chunks of the server's size (64 kB): short writes
            async for chunk in bounded.stream():
                sink.write(chunk)
                size += len(chunk)
    else:
        size = await _receive_form(bounded, dest)
    if size == 0:
        raise ApiError(400, f"empty upload: send a file as multipart form field '{FORM_FIELD}' or as the raw body")
    return size


async def _receive_form(request: Request, dest: Path) -> int:
    try:  # the file part spools to an unnamed temporary file past 1 MB
        form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FIELD_BYTES)
    except MultiPartException as exc:
        raise ApiError(400, f"malformed multipart body: {exc.message}") from None
    try:
        upload = form.get(FORM_FIELD)
        if not isinstance(upload, UploadFile):  # field names are the client's text: not echoed
            raise ApiError(400, f"multipart form has no file in the field '{FORM_FIELD}' ({len(form)} other field(s))")

        def copy() -> int:
            upload.file.seek(0)
            with open(dest, "wb") as sink:
                shutil.copyfileobj(upload.file, sink, 1 << 20)
                return sink.tell()

        if (upload.size or 0) <= INLINE_COPY_BYTES:  # still in memory: copying costs less than a thread hop
            return copy()
        return await asyncio.to_thread(copy)
    finally:
        await form.close()


def mask_payload(result: Any, encoding: str) -> dict[str, Any]:
    """The ``mask`` of a segment response: the mask file in base64 (``png``) or run lengths (``rle``).

    ``rle``: per channel, the lengths of alternating runs of 0 and 1 over the mask in C order
    (row-major, array index order), starting with a run of 0 (possibly empty); ``shape`` gives the grid.
    """
    if encoding == "rle":  # numpy run lengths: pickled as bytes to the ingress, written out by orjson
        return {
            "encoding": "rle",
            "shape": list(result.mask.shape[1:]),
            "counts": [run_length_array(c) for c in result.mask],
        }
    from tumorbench.results import mask_file

    media_type, blob = mask_file(result)
    return {"media_type": media_type, "encoding": "base64", "data": base64.b64encode(blob).decode("ascii")}


def run_lengths(mask: Any) -> list[int]:
    """Lengths of alternating runs of 0 and non-0 in ``mask`` (C order), the first a run of 0."""
    return run_length_array(mask).tolist()


def run_length_array(mask: Any) -> Any:
    """:func:`run_lengths` as an ``int64`` array."""
    import numpy as np

    flat = np.asarray(mask).ravel() != 0
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], edges, [flat.size])))
    return np.concatenate(([0], counts)) if flat.size and flat[0] else counts


class FastJSONResponse(JSONResponse):
    """A JSON answer written by orjson, numpy arrays included (an RLE mask: 0.07 ms where the standard
    library took 0.9 ms for 8,400 runs, with the lists it needs made and pickled across the Ray hop)."""

    def render(self, content: Any) -> bytes:
        import orjson

        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def model_card(name: str, package: Path, manifest: Any) -> dict[str, Any]:
    """What ``GET /v1/models`` says about one served package."""
    preprocess = manifest.preprocess
    inputs = {
        "dims": manifest.data_dims,
        "channels": manifest.in_channels,
        "formats": FORMATS[manifest.data_dims],
        "resized_to": preprocess.get("spatial_size"),
        "normalize": preprocess.get("normalize"),
    }
    order = manifest.data.get("channels")  # the training catalog's channel names (packages since session 13)
    if order and len(order) == manifest.in_channels > 1:
        inputs["channel_order"] = order
    elif manifest.data.get("layout") == "brats" and manifest.in_channels == 4:
        inputs["channel_order"] = BRATS_ORDER
    if preprocess.get("channels"):
        inputs["channels_fitted"] = f"grey and colour inputs are converted to {preprocess['channels']} channel(s)"
    metrics = {k: v for k, v in manifest.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {
        "name": name,
        "task": manifest.task,
        "version": f"{package.name}@{manifest.created}",
        "architecture": manifest.name,
        "created": manifest.created,
        "epoch": manifest.epoch,
        "endpoint": get_task(manifest.task).endpoint,
        "classes": manifest.class_names,
        "positive_class": manifest.positive_class,
        "output_channels": manifest.channel_names,
        "metrics": metrics,
        "inputs": inputs,
        "data": {"layout": manifest.data.get("layout"), "split_fold": manifest.split.get("fold")},
    }


UPLOAD_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FORM_FIELD],
                    "properties": {FORM_FIELD: {"type": "string", "format": "binary"}},
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
