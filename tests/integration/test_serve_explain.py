"""``?explain=`` on the served API over loopback HTTP: heatmaps equal the offline ones; errors name the problem."""

from __future__ import annotations

import base64
import io
import socket
import time

import numpy as np
import pytest
import requests
from PIL import Image

from model_packages import CLS2D, SEG2D, make_package, synthetic_png
from tumorbench.explain.cases import explain_prepared, explainer_for
from tumorbench.inference import Predictor

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def app(ray_session, tmp_path_factory):
    from ray import serve

    from tumorbench.serving.runner import deploy

    root = tmp_path_factory.mktemp("serve_explain")
    packages = {name: make_package(root / name, spec) for name, spec in (("seg2d", SEG2D), ("cls2d", CLS2D))}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    deploy(
        {
            "models": [f"{n}={p}" for n, p in packages.items()],
            "cpus_per_replica": 0.1,
            "ingress_cpus": 0.1,
            "torch_threads": 1,
        },
        port=port,
        name="explain",
    )
    yield {"url": f"http://127.0.0.1:{port}", "packages": packages, "root": root}
    serve.shutdown()


def _post(app, route, path, **params):
    with open(path, "rb") as handle:
        return requests.post(f"{app['url']}{route}", files={"file": ("x.png", handle)}, params=params, timeout=120)


def test_served_gradcam_equals_offline_and_default_is_off(app):
    png = synthetic_png(app["root"] / "a.png", size=(90, 110))
    plain = _post(app, "/v1/segment", png)
    assert plain.status_code == 200 and "explanation" not in plain.json()
    answer = _post(app, "/v1/segment", png, explain="gradcam").json()
    explanation = answer["explanation"]
    assert explanation["available"] and explanation["method"] == "gradcam"
    served = np.asarray(Image.open(io.BytesIO(base64.b64decode(explanation["data"]))))
    predictor = Predictor.from_package(app["packages"]["seg2d"])
    offline = explain_prepared(
        predictor, explainer_for(predictor), predictor.preprocessor.prepare_file(png), curves=False
    ).heatmap
    assert served.shape == (90, 110)
    np.testing.assert_array_equal(served, np.round(offline * 255).astype(np.uint8))
    classified = _post(app, "/v1/classify", png, explain="occlusion").json()
    assert classified["explanation"]["available"] and "probabilities" in classified


def test_unknown_method_is_refused_naming_it(app):
    png = synthetic_png(app["root"] / "b.png")
    response = _post(app, "/v1/classify", png, explain="shap")
    assert response.status_code == 400 and "'shap'" in response.json()["detail"]


def test_explain_latency(app):
    """Median latency with and without explain (printed for the docs; the heatmap costs a backward pass)."""
    png = synthetic_png(app["root"] / "c.png", size=(256, 256))
    timings = {}
    for explain in (None, "gradcam", "occlusion"):
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            assert _post(app, "/v1/segment", png, **({"explain": explain} if explain else {})).status_code == 200
            runs.append(time.perf_counter() - start)
        timings[explain or "off"] = 1000 * float(np.median(runs))
    print(f"\nserved /v1/segment 256x256 PNG, median ms: {timings}")
    assert timings["off"] < timings["occlusion"]
