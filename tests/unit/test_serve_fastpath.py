"""The batched request path equals the package's MONAI chain (per image) on whole batches; RLE masks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from model_packages import CLS2D, SEG2D, make_package
from tumorbench.data.io import ImageData
from tumorbench.inference import Predictor, Preprocessor
from tumorbench.serving.fastpath import BatchPath, raw_input, supported
from tumorbench.serving.protocol import mask_payload, run_lengths


def _image(shape: tuple[int, int], seed: int, channels: int = 3) -> ImageData:
    rng = np.random.default_rng(seed)
    array = rng.uniform(0, 255, (channels, *shape)).astype(np.float32)
    array[:, : shape[0] // 4] = 0  # a zero band: z-score over nonzero voxels must skip it
    return ImageData(array, np.eye(4), (1.0, 1.0), {"format": "image2d", "path": "x"})


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    torch.set_num_threads(1)
    return Predictor.from_package(make_package(tmp_path_factory.mktemp("seg") / "p", SEG2D))


@pytest.mark.parametrize("normalize", ["zscore", "minmax", "ct_window", "none"])
@pytest.mark.parametrize("shape", [(256, 200), (40, 50), (64, 64)])  # shrink (smoothed), grow, same size
def test_batched_preprocessing_equals_the_monai_chain(seg, normalize, shape):
    manifest = dataclasses.replace(seg.manifest, preprocess={**seg.manifest.preprocess, "normalize": normalize})
    chain = Preprocessor(manifest)
    path = BatchPath(seg)
    path.config = chain.config
    images = [_image(shape, seed) for seed in range(3)]
    expected = torch.stack([chain.prepare_image(im).image.as_tensor() for im in images])
    got = path.preprocess(torch.from_numpy(np.stack([raw_input(chain, im).array for im in images])))
    scale = float(expected.abs().max())
    assert got.shape == expected.shape == (3, 3, 64, 64)
    torch.testing.assert_close(got, expected, atol=1e-5 * max(scale, 1.0), rtol=1e-5)


def test_8bit_pixels_ship_as_uint8_and_preprocess_the_same(seg):
    image = _image((120, 100), 3)
    pixels = ImageData(np.round(image.array), image.affine, image.spacing, image.meta)  # as a PNG decodes
    raw = raw_input(seg.preprocessor, pixels)
    assert raw.array.dtype == np.uint8 and raw.array.nbytes * 4 == pixels.array.nbytes
    assert raw_input(seg.preprocessor, image).array.dtype == np.float32  # fractions, or over 255, stay float
    shifted = ImageData(pixels.array + 1, image.affine, image.spacing, image.meta)  # 256 does not fit
    assert raw_input(seg.preprocessor, shifted).array.dtype == np.float32
    path = BatchPath(seg)
    expected = seg.preprocessor.prepare_image(pixels).image.as_tensor()[None]
    torch.testing.assert_close(path.preprocess(torch.from_numpy(raw.array[None])), expected, atol=1e-5, rtol=1e-5)


def test_batched_answers_equal_per_request_answers(seg):
    images = [_image((256, 256), 0), _image((120, 100), 1), _image((256, 256), 2)]
    raws = [raw_input(seg.preprocessor, im) for im in images]
    path = BatchPath(seg)
    probabilities = path.run(raws)  # two shapes: two forward groups
    for image, raw, probs in zip(images, raws, probabilities):
        prepared = seg.preprocessor.prepare_image(image)
        forward = seg.predict_batch([prepared.image])[0]
        expected = seg.postprocess(prepared, forward, 0.5)
        got = path.finish(raw, probs, 0.5)
        assert probs.shape == (1, *image.array.shape[1:])
        np.testing.assert_allclose(probs.numpy(), seg.preprocessor.restore(prepared, forward), atol=1e-5)
        assert (got.mask != expected.mask).mean() < 1e-3  # float sums may flip a pixel at the threshold
        assert got.summary()["area_mm2"] == pytest.approx(expected.summary()["area_mm2"], rel=1e-2)


def test_batched_classification_and_supported_chains(tmp_path):
    cls = Predictor.from_package(make_package(tmp_path / "c", CLS2D))
    image = _image((90, 70), 3, channels=1)  # grey: the loader repeats it to the model's 3 channels
    prepared = cls.preprocessor.prepare_image(image)
    expected = cls.postprocess(prepared, cls.predict_batch([prepared.image])[0], 0.5)
    path = BatchPath(cls)
    got = path.finish(None, path.run([raw_input(cls.preprocessor, image)])[0], 0.5)
    assert got.label == expected.label
    np.testing.assert_allclose(list(got.probabilities.values()), list(expected.probabilities.values()), rtol=1e-4)
    config = cls.preprocessor.config
    assert supported(config, 2) and not supported(config, 3)
    assert not supported(dataclasses.replace(config, spacing=(1.0, 1.0)), 2)
    assert not supported(dataclasses.replace(config, denoise="median"), 2)
    assert not supported(dataclasses.replace(config, crop_foreground=True), 2)


@pytest.mark.parametrize(
    "values, counts",
    [([1, 1, 0, 1], [0, 2, 1, 1]), ([0, 0, 0], [3]), ([1], [0, 1]), ([0, 1, 1, 0, 0], [1, 2, 2])],
)
def test_run_lengths(values, counts):
    assert run_lengths(np.array(values)) == counts


def test_rle_mask_decodes_to_the_mask():
    import json

    from tumorbench.serving.protocol import FastJSONResponse

    rng = np.random.default_rng(0)
    mask = (rng.uniform(size=(2, 7, 5)) > 0.6).astype(np.uint8)
    mask[1, 0, 0] = 1  # a channel starting inside the mask: its first run of 0 is empty
    payload = {"mask": mask_payload(type("R", (), {"mask": mask})(), "rle"), "score": float("nan")}
    answer = json.loads(FastJSONResponse(payload).body)  # as the client reads it
    assert answer["score"] is None  # JSON has no NaN
    body = answer["mask"]
    assert body["counts"][1][0] == 0
    assert body["shape"] == [7, 5] and body["encoding"] == "rle"
    for channel, counts in zip(mask, body["counts"]):
        decoded = np.repeat(np.arange(len(counts)) % 2, counts).reshape(body["shape"])
        np.testing.assert_array_equal(decoded, channel)
