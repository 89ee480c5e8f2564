"""Prediction from a model package with the preprocessing it was trained with; answers at the input's geometry.

A :class:`Preprocessor` rebuilds the package's validation transform chain from
``model.json`` (``PreprocessConfig(**manifest.preprocess)``, no augmentation) and
turns one image into a model input; it needs no weights, so an HTTP front end can
run it. A :class:`Predictor` adds the model: ``predict_batch`` runs the forward pass
on preprocessed inputs (sliding-window / per-slice inference for volumes, as in
validation), ``postprocess`` maps the answer back:

- classification: class probabilities and a label (two classes: the positive class
  when its probability exceeds the threshold);
- segmentation: foreground probabilities are taken back through the inverse of the
  invertible preprocessing steps (resize, crop, resampling) and the RAS
  reorientation to the input's own voxel grid, thresholded, and measured: area in
  mm^2 (2D; pixel spacing from DICOM, else 1 mm, said in ``notes``) or volume in mL
  (3D, spacing from the affine), lesions as face-connected components with their
  bounding boxes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai import transforms as mt
from monai.data import MetaTensor
from monai.utils import TraceKeys
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from tumorbench.data.io import ImageData, to_canonical
from tumorbench.data.layouts.brats import sequence_order
from tumorbench.errors import DataError
from tumorbench.package import ModelManifest, read_manifest
from tumorbench.package.weights import load_model
from tumorbench.results import ClassificationResult, SegmentationResult, measure_mask
from tumorbench.tasks import get_task
from tumorbench.transforms import PreprocessConfig, build_transforms
from tumorbench.uploads import UploadError, UploadLimits, read_upload

__all__ = ["Predictor", "Prepared", "Preprocessor", "predict_volume"]  # the results: tumorbench.results

_DIVISOR = 32  # every registered segmentation net accepts sides that are multiples of 32
_ROI_CAP = 64  # sliding-window side when the package names none (as validation does)


@dataclass(frozen=True, eq=False)
class Prepared:
    """One input after preprocessing, with what is needed to map an answer back onto it.

    Attributes:
        image: ``(C, *spatial)`` model input; a ``MetaTensor`` carrying its applied operations.
        shape: Spatial shape of the input as given (2D: rows, columns; 3D: I, J, K).
        affine: Voxel -> RAS world mm of the input as given (identity for 2D images).
        spacing: Millimetres per axis of ``shape``.
        spacing_known: False when the format carries no spacing (PNG / JPEG: 1 mm assumed).
        canonical: Whether the volume was turned to RAS before preprocessing.
        input_format: ``image2d``, ``nifti`` or ``dicom``.
    """

    image: MetaTensor
    shape: tuple[int, ...]
    affine: np.ndarray
    spacing: tuple[float, ...]
    spacing_known: bool
    canonical: bool
    input_format: str


class Preprocessor:
    """A package's validation preprocessing, from its manifest alone (no weights)."""

    def __init__(self, manifest: ModelManifest, limits: UploadLimits = UploadLimits()) -> None:
        self.manifest, self.limits = manifest, limits
        self.config = PreprocessConfig(**manifest.preprocess)
        chain = build_transforms(self.config, None, spatial_dims=manifest.data_dims, with_mask=False, train=False)
        # The first step reads files; uploads arrive as ImageData, so the rest of the chain runs on
        # what the same loader would have produced (built below, channel fitting by the loader itself).
        self._loader, self._rest = chain.transforms[0], mt.Compose(chain.transforms[1:])

    @classmethod
    def from_package(cls, directory: str | Path, limits: UploadLimits = UploadLimits()) -> Preprocessor:
        return cls(read_manifest(directory), limits)

    def prepare_file(self, path: str | Path, *, label: str | None = None) -> Prepared:
        """Read an (untrusted) file with :func:`tumorbench.uploads.read_upload` and preprocess it."""
        return self.prepare_image(read_upload(path, self.limits, label=label))

    def prepare_image(self, image: ImageData) -> Prepared:
        """Preprocess an image; raises :class:`UploadError` (422) when it does not fit the model."""
        source = str(image.meta.get("path", "<image>"))
        array, loaded_affine, spacing, known = self.layout(image)
        loaded = MetaTensor(
            torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)),
            affine=torch.as_tensor(loaded_affine, dtype=torch.float64),
            meta={"filename_or_obj": source},
        )
        prepared = self._rest({"image": loaded})["image"]
        shape = tuple(int(s) for s in (array.shape[1:] if self.manifest.data_dims == 2 else image.array.shape[:3]))
        return Prepared(
            prepared,
            shape,
            np.asarray(image.affine, float),
            tuple(float(s) for s in spacing),
            known,
            self.manifest.data_dims == 3 and self.config.canonical,
            str(image.meta.get("format", "")),
        )

    def layout(self, image: ImageData) -> tuple[np.ndarray, np.ndarray, tuple, bool]:
        """Channel-first array with the model's channels, its affine, spacing per axis, spacing known."""
        source = str(image.meta.get("path", "<image>"))
        array, affine, spacing, known = self._layout(image, source)
        # a zip of BraTS-named sequences, for a model trained in another order (the Decathlon's FLAIR, T1w...)
        order = sequence_order(image.meta.get("channel_names") or [], self.manifest.data.get("channels") or [])
        if order is not None and len(order) == len(array):
            array = array[order]
        try:
            array = self._loader._fit_channels(array, source)
        except DataError as exc:
            raise UploadError(source, exc.problem, 422) from exc
        if array.shape[0] != self.manifest.in_channels:
            raise UploadError(
                source,
                f"has {array.shape[0]} channels; model {self.manifest.name} takes {self.manifest.in_channels}",
                422,
            )
        return array, affine, spacing, known

    def _layout(self, image: ImageData, source: str) -> tuple[np.ndarray, np.ndarray, tuple, bool]:
        """Channel-first array as the training loader lays it out, its affine, spacing per axis, spacing known."""
        fmt, array = image.meta.get("format"), image.array
        if self.manifest.data_dims == 2:
            if fmt == "image2d":  # a radiograph read from DICOM knows its pixel spacing (rows, columns)
                known = bool(image.meta.get("spacing_known"))
                return array, image.affine, (tuple(image.spacing) if known else (1.0, 1.0)), known
            if array.ndim == 3 and array.shape[2] == 1:  # one DICOM slice: (columns, rows, 1) -> (1, rows, columns)
                return array[:, :, 0].T[None], np.eye(4), (image.spacing[1], image.spacing[0]), True
            raise UploadError(
                source,
                f"is a volume of shape {array.shape}; model {self.manifest.name} takes 2D "
                "images (PNG, JPEG or one DICOM slice)",
                422,
            )
        if fmt == "image2d":
            raise UploadError(
                source,
                f"is a 2D image; model {self.manifest.name} takes 3D volumes (NIfTI, a zipped "
                "DICOM series or zipped NIfTI modalities)",
                422,
            )
        if array.ndim not in (3, 4):
            raise UploadError(source, f"unsupported volume shape {array.shape}", 422)
        loaded = to_canonical(image) if self.config.canonical else image
        channels = loaded.array[None] if array.ndim == 3 else np.moveaxis(loaded.array, -1, 0)
        return channels, loaded.affine, image.spacing, True

    def restore(self, prepared: Prepared, probabilities: torch.Tensor) -> np.ndarray:
        """Map a ``(C, *model_spatial)`` probability map back onto the input's voxel grid."""
        source = prepared.image
        pred = MetaTensor(
            torch.as_tensor(probabilities, dtype=torch.float32),
            meta=dict(source.meta),
            applied_operations=_portable(copy.deepcopy(source.applied_operations)),
        )
        out = self._rest.inverse({"image": pred})["image"] if source.applied_operations else pred
        array = out.as_tensor().numpy() if isinstance(out, MetaTensor) else np.asarray(out)
        if prepared.canonical:
            back = ornt_transform(axcodes2ornt("RAS"), io_orientation(prepared.affine))
            array = np.moveaxis(apply_orientation(np.moveaxis(array, 0, -1), back), -1, 0)
        if tuple(array.shape[1:]) != prepared.shape:
            raise RuntimeError(f"inverse preprocessing gave shape {array.shape[1:]}, expected {prepared.shape}")
        return np.ascontiguousarray(array)


def _portable(value: Any) -> Any:
    # MONAI matches a recorded operation to the transform *instance* that applied it; the input
    # may have been preprocessed in another process (Serve's ingress) by a chain rebuilt from the
    # same manifest, whose operations undo in the same order, so the instance check is switched off.
    if isinstance(value, dict):
        if TraceKeys.ID in value:
            value[TraceKeys.ID] = TraceKeys.NONE
        for item in value.values():
            _portable(item)
    elif isinstance(value, list):
        for item in value:
            _portable(item)
    return value


class Predictor:
    """A packaged model with its preprocessing: ``predict_file`` / ``predict_image`` / ``predict_batch``."""

    def __init__(
        self,
        model: torch.nn.Module,
        manifest: ModelManifest,
        *,
        device: str | torch.device = "cpu",
        threshold: float = 0.5,
        limits: UploadLimits = UploadLimits(),
    ) -> None:
        if get_task(manifest.task).endpoint is None:
            raise ValueError(f"cannot serve a {manifest.task} model {manifest.name!r}")
        self.model, self.manifest = model.eval(), manifest
        self.device, self.threshold = torch.device(device), float(threshold)
        self.preprocessor = Preprocessor(manifest, limits)

    @classmethod
    def from_package(cls, directory: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> Predictor:
        """Load weights (``weights_only=True``) and the validated manifest of a package."""
        model, manifest = load_model(directory, device)
        return cls(model, manifest, device=device, **kwargs)

    def predict_file(self, path: str | Path, *, threshold: float | None = None):
        """Predict one file: PNG/JPEG, NIfTI, a DICOM file or a zip of a DICOM series / NIfTI modalities."""
        prepared = self.preprocessor.prepare_file(path)
        return self.postprocess(prepared, self.predict_batch([prepared.image])[0], threshold)

    def predict_image(self, image: ImageData, *, threshold: float | None = None):
        """Predict one image already read (see :mod:`tumorbench.data.io`)."""
        prepared = self.preprocessor.prepare_image(image)
        return self.postprocess(prepared, self.predict_batch([prepared.image])[0], threshold)

    @torch.no_grad()
    def predict_batch(self, images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Probabilities of preprocessed inputs: ``(K,)`` per class, or ``(C, *spatial)`` foreground maps.

        Inputs of equal shape run as one batch; volumes for segmentation run one by one
        with sliding-window (3D models) or per-slice (2D models) inference.
        """
        plain = [x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x) for x in images]
        m = self.manifest
        if get_task(m.task).with_mask and m.data_dims == 3:
            return [
                predict_volume(
                    self.model, x, model_dims=m.spatial_dims, roi_size=self._roi(x.shape[1:]), device=self.device
                )
                for x in plain
            ]
        groups: dict[tuple, list[int]] = {}
        for i, x in enumerate(plain):
            groups.setdefault(tuple(x.shape), []).append(i)
        out: list[torch.Tensor] = [torch.empty(0)] * len(plain)
        for indices in groups.values():
            probs = self._forward(torch.stack([plain[i] for i in indices]).float().to(self.device))
            for i, p in zip(indices, probs.cpu()):
                out[i] = p
        return out

    def _roi(self, spatial: Sequence[int]) -> tuple[int, ...]:
        if self.manifest.roi_size:
            return tuple(self.manifest.roi_size)
        return tuple(min(_ROI_CAP, _DIVISOR * math.ceil(s / _DIVISOR)) for s in spatial)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if not get_task(self.manifest.task).with_mask:  # one probability per class
            return torch.softmax(self.model(batch).float(), dim=1)
        spatial = batch.shape[2:]
        pad = [(-s) % _DIVISOR for s in spatial]
        if any(pad):  # zero padding at the end of each axis, cropped off again below
            batch = F.pad(batch, [p for extra in reversed(pad) for p in (0, extra)])
        logits = self.model(batch)[(..., *(slice(0, s) for s in spatial))]
        return torch.sigmoid(logits.float())

    def postprocess(self, prepared: Prepared, probabilities: torch.Tensor, threshold: float | None = None):
        """A :class:`ClassificationResult` or :class:`SegmentationResult` from ``predict_batch`` output."""
        threshold = self.threshold if threshold is None else float(threshold)
        if not get_task(self.manifest.task).with_mask:
            return self._classification(np.asarray(probabilities, dtype=float), threshold)
        probs = self.preprocessor.restore(prepared, probabilities)
        mask = (probs > threshold).astype(np.uint8)
        unit = float(np.prod(prepared.spacing)) / (1.0 if mask.ndim == 3 else 1000.0)  # mm^2, or mL
        names = self.manifest.channel_names or (
            ["tumor"] if len(mask) == 1 else [f"channel{c}" for c in range(len(mask))]
        )
        regions = [
            {"name": name, **measure_mask(channel, unit, "area_mm2" if mask.ndim == 3 else "volume_ml")}
            for name, channel in zip(names, mask)
        ]
        return SegmentationResult(mask, prepared.affine, prepared.spacing, prepared.spacing_known, threshold, regions)

    def _classification(self, probs: np.ndarray, threshold: float) -> ClassificationResult:
        names = list(self.manifest.class_names or [str(i) for i in range(len(probs))])
        positive = self.manifest.positive_class
        if len(names) == 2 and positive in names:
            p = probs[names.index(positive)]
            label = positive if p > threshold else names[1 - names.index(positive)]
        else:
            label = names[int(np.argmax(probs))]
        return ClassificationResult(label, {n: float(p) for n, p in zip(names, probs)}, threshold, positive)


@torch.no_grad()
def predict_volume(
    model: torch.nn.Module,
    image: torch.Tensor,
    *,
    model_dims: int,
    roi_size: Sequence[int] | None,
    device: torch.device,
) -> torch.Tensor:
    """Foreground probabilities ``(C, I, J, K)`` of one volume ``(C_in, I, J, K)``."""
    from monai.inferers import SliceInferer, sliding_window_inference

    batch = torch.as_tensor(image).float().to(device)[None]
    if model_dims == 2:
        # A 2D model reads the volume one axial slice at a time.
        inferer = SliceInferer(roi_size=tuple(batch.shape[2:4]), spatial_dim=2, sw_batch_size=8, progress=False)
        logits = inferer(batch, model)
    else:
        roi = tuple(roi_size) if roi_size else tuple(min(s, 64) for s in batch.shape[2:])
        logits = sliding_window_inference(batch, roi, sw_batch_size=2, predictor=model, overlap=0.25)
    return torch.sigmoid(logits[0].float()).cpu()
