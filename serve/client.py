"""A small client of the tumorbench HTTP API.

    python serve/client.py classify scan.png
    python serve/client.py segment case.nii.gz --mask-out mask.nii.gz
    python serve/client.py segment slice.png --explain gradcam --explanation-out heat.png
    python serve/client.py models --url http://127.0.0.1:8000

or from Python: ``TumorbenchClient("http://127.0.0.1:8000").segment("slice.png")``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import requests


class TumorbenchError(RuntimeError):
    """An error answer of the API: ``status``, ``error`` code and ``detail``."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"HTTP {status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


class TumorbenchClient:
    """Calls ``/v1/models``, ``/v1/classify`` and ``/v1/segment`` of a running tumorbench app.

    Args:
        url: Base URL of the application.
        api_key: Sent as ``X-API-Key`` (default: ``$TUMORBENCH_API_KEY``).
        timeout_s: Per-request timeout.
    """

    def __init__(
        self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout_s: float = 300.0
    ) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self.session = requests.Session()
        key = api_key or os.environ.get("TUMORBENCH_API_KEY")
        if key:
            self.session.headers["X-API-Key"] = key

    def _answer(self, response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = {"error": "not_json", "detail": response.text[:500]}
        if response.status_code >= 400:
            raise TumorbenchError(response.status_code, str(body.get("error")), str(body.get("detail")))
        return body

    def health(self) -> dict[str, Any]:
        return self._answer(self.session.get(f"{self.url}/healthz", timeout=self.timeout_s))

    def models(self) -> list[dict[str, Any]]:
        """Name, task, version, training metrics and accepted inputs of every served model."""
        return self._answer(self.session.get(f"{self.url}/v1/models", timeout=self.timeout_s))["models"]

    def _upload(self, route: str, path: str | Path, model: str | None, explain: str | None = None) -> dict[str, Any]:
        path = Path(path)
        params = {k: v for k, v in (("model", model), ("explain", explain)) if v}
        with path.open("rb") as handle:
            response = self.session.post(
                f"{self.url}{route}", files={"file": (path.name, handle)}, params=params or None, timeout=self.timeout_s
            )
        return self._answer(response)

    def classify(self, path: str | Path, model: str | None = None, explain: str | None = None) -> dict[str, Any]:
        """Label and class probabilities of a PNG/JPEG, NIfTI, DICOM file or zipped DICOM series;
        ``explain="gradcam"`` (or ``gradcampp`` / ``occlusion``) adds a heatmap under ``["explanation"]``."""
        return self._upload("/v1/classify", path, model, explain)

    def segment(self, path: str | Path, model: str | None = None, explain: str | None = None) -> dict[str, Any]:
        """Mask (base64 in ``["mask"]["data"]``), area / volume, lesions and boxes; ``explain`` as for classify."""
        return self._upload("/v1/segment", path, model, explain)

    @staticmethod
    def save_mask(answer: dict[str, Any], path: str | Path) -> Path:
        """Write a segmentation answer's mask (PNG for 2D, gzipped NIfTI for 3D) to ``path``."""
        path = Path(path)
        path.write_bytes(base64.b64decode(answer["mask"]["data"]))
        return path

    @staticmethod
    def save_explanation(answer: dict[str, Any], path: str | Path) -> Path:
        """Write an answer's heatmap (8-bit PNG for 2D, gzipped NIfTI for 3D, on the upload's grid) to ``path``.

        Raises:
            TumorbenchError: The answer has no explanation, or the server could not make it (the reason).
        """
        explanation = answer.get("explanation")
        if not explanation or not explanation.get("available"):
            reason = explanation.get("reason") if explanation else "no explanation was requested"
            raise TumorbenchError(200, "explanation_unavailable", str(reason))
        path = Path(path)
        path.write_bytes(base64.b64decode(explanation["data"]))
        return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tumorbench HTTP client")
    parser.add_argument("command", choices=["classify", "segment", "models", "health"])
    parser.add_argument("file", nargs="?", help="image to upload (classify / segment)")
    parser.add_argument("--url", default=os.environ.get("TUMORBENCH_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=None, help="default: $TUMORBENCH_API_KEY")
    parser.add_argument("--model", default=None, help="model name, when several of the task are served")
    parser.add_argument("--mask-out", default=None, help="segment: write the mask file here")
    parser.add_argument(
        "--explain",
        default=None,
        choices=["gradcam", "gradcampp", "occlusion"],
        help="also return a heatmap made with this method",
    )
    parser.add_argument("--explanation-out", default=None, help="write the heatmap file here (with --explain)")
    args = parser.parse_args(argv)
    client = TumorbenchClient(args.url, args.api_key)
    try:
        if args.command in ("classify", "segment"):
            if not args.file:
                parser.error(f"{args.command} needs a FILE")
            answer = getattr(client, args.command)(args.file, args.model, args.explain)
            if args.mask_out and "mask" in answer:
                client.save_mask(answer, args.mask_out)
            if args.explanation_out:
                client.save_explanation(answer, args.explanation_out)
            for key in ("mask", "explanation"):  # keep the terminal readable
                if "data" in answer.get(key, {}):
                    answer[key]["data"] = f"<{len(answer[key]['data'])} base64 characters>"
        else:
            answer = client.models() if args.command == "models" else client.health()
    except TumorbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except requests.RequestException as exc:
        print(f"error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(answer, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
