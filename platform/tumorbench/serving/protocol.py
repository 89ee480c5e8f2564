"""HTTP details of the tumorbench API: JSON errors, bounded body reading, upload parsing, model cards.

Uploads come as ``multipart/form-data`` with the file in the form field ``file`` (what
browsers, ``curl -F`` and ``requests`` send), or as a raw body with a file content type
(``application/octet-stream``, ``image/png``, ``application/dicom``, ``application/zip``...).
Multipart bodies are split here (boundary search on bytes) rather than by
python-multipart, which is not a dependency of the project.
"""

from __future__ import annotations

import email.message
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from tumorbench.tasks import get_task

RAW_TYPES = ("application/octet-stream", "image/png", "image/jpeg", "image/tiff", "image/bmp", "application/dicom",
             "application/zip", "application/x-zip-compressed", "application/gzip", "application/x-gzip")
FORM_FIELD = "file"
ERROR_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_input", 500: "internal_error"}
FORMATS = {2: ["PNG", "JPEG", "TIFF", "BMP", "DICOM (one slice)"],
           3: ["NIfTI (.nii / .nii.gz; 4D for several channels)", "zip of one DICOM series",
               "zip of per-channel NIfTI files in BraTS naming"]}
BRATS_ORDER = ["t1", "t1ce", "t2", "flair"]


class ApiError(Exception):
    """An error answered as ``{"error": code, "detail": text}`` with an HTTP status."""

    def __init__(self, status: int, detail: str, error: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail
        self.error = error or ERROR_CODES.get(status, "error")

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, "request_id": request_id}


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, f"invalid Content-Length {declared!r}") from None
        if size > limit:
            raise ApiError(413, f"body of {size:,} bytes is over the limit of {limit:,} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"body is over the limit of {limit:,} bytes")
    return bytes(body)


def _content_type(header: str) -> email.message.Message:
    message = email.message.Message()
    message["content-type"] = header
    return message


def parse_upload(content_type: str, body: bytes) -> bytes:
    """The uploaded file's bytes from a multipart form (field ``file``) or a raw body."""
    if not body:
        raise ApiError(400, "empty request body: upload a file as multipart form field 'file'")
    header = _content_type(content_type or "")
    kind = header.get_content_type() if content_type else ""
    if kind in RAW_TYPES:
        return body
    if kind != "multipart/form-data":
        raise ApiError(415, f"unsupported content type {content_type or '(none)'!r}: send multipart/form-data with a "
                            f"'file' field, or the raw file as one of {', '.join(RAW_TYPES)}")
    boundary = header.get_param("boundary")
    if not boundary or not isinstance(boundary, str):
        raise ApiError(400, "multipart/form-data without a boundary parameter")
    data = _form_field(body, boundary.encode("latin-1"), FORM_FIELD)
    if not data:
        raise ApiError(400, f"the form field '{FORM_FIELD}' is empty")
    return data


def _form_field(body: bytes, boundary: bytes, field: str) -> bytes:
    delimiter = b"--" + boundary
    if not body.startswith(delimiter) and (b"\r\n" + delimiter) not in body:
        raise ApiError(400, "malformed multipart body: boundary not found")
    if b"\r\n" + delimiter + b"--" not in b"\r\n" + body:
        raise ApiError(400, "malformed or truncated multipart body: closing boundary missing")
    names = []
    for part in (b"\r\n" + body).split(b"\r\n" + delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            raise ApiError(400, "malformed multipart part: no blank line after its headers")
        headers = HeaderParser().parsestr(head.decode("latin-1").lstrip("\r\n"))
        name = headers.get_param("name", header="content-disposition")
        names.append(str(name))
        if name == field:
            return content
    raise ApiError(400, f"multipart form has no field '{field}' (fields: {', '.join(names) or 'none'})")


def model_card(name: str, package: Path, manifest: Any) -> dict[str, Any]:
    """What ``GET /v1/models`` says about one served package."""
    preprocess = manifest.preprocess
    inputs = {"dims": manifest.data_dims, "channels": manifest.in_channels, "formats": FORMATS[manifest.data_dims],
              "resized_to": preprocess.get("spatial_size"), "normalize": preprocess.get("normalize")}
    if manifest.data.get("layout") in ("brats", "msd") and manifest.in_channels == 4:
        inputs["channel_order"] = BRATS_ORDER
    if preprocess.get("channels"):
        inputs["channels_fitted"] = f"grey and colour inputs are converted to {preprocess['channels']} channel(s)"
    metrics = {k: v for k, v in manifest.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"name": name, "task": manifest.task, "version": f"{package.name}@{manifest.created}",
            "architecture": manifest.name, "created": manifest.created, "epoch": manifest.epoch,
            "endpoint": get_task(manifest.task).endpoint,
            "classes": manifest.class_names, "positive_class": manifest.positive_class,
            "output_channels": manifest.channel_names, "metrics": metrics, "inputs": inputs,
            "data": {"layout": manifest.data.get("layout"), "split_fold": manifest.split.get("fold")}}


UPLOAD_OPENAPI = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": [FORM_FIELD],
                                       "properties": {FORM_FIELD: {"type": "string", "format": "binary"}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
