"""Heatmaps from MONAI's explainers: Grad-CAM, Grad-CAM++ and occlusion sensitivity, 2D and 3D.

``monai.visualize`` is the one library used (it is installed with MONAI, handles 3D inputs and
lets the scored quantity be chosen by subclassing ``ModelWithHooks``); ``grad-cam`` and ``captum``
would add a dependency for the same three methods.

What is explained:

- classification: the logit (Grad-CAM) or softmax probability (occlusion) of one class, by
  default the package's positive class for two classes, else the predicted class;
- segmentation: the foreground logits summed over the pixels the model segments on the clean
  input (all pixels when it segments none), "Seg-Grad-CAM"; occlusion watches the mean
  foreground probability over the same pixels.

Heatmaps are non-negative, on the model input's grid, scaled to a maximum of 1 (all zero when
the method finds no positive evidence). The target layer of Grad-CAM comes from the model
registry (``ModelInfo.cam_layer``), never from guessing at module names.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM, GradCAMpp, OcclusionSensitivity
from monai.visualize.class_activation_maps import ModelWithHooks
from torch import nn

from tumorbench.errors import TumorbenchError
from tumorbench.tasks import get_task

METHODS = ("gradcam", "gradcampp", "occlusion")
_DIVISOR = 32  # segmentation nets take sides that are multiples of 32 (as inference pads)
# A 3D net is explained on the whole (padded) volume in one pass with gradients: its activations must fit in
# memory. 160^3 voxels is a few GB for MONAI's full-width U-Net; larger volumes are refused, not run out of memory.
MAX_VOLUME_VOXELS = 160**3


class ExplainError(TumorbenchError, ValueError):
    """An explanation that cannot be made: unknown method, model without a target layer, bad input."""


@dataclass(frozen=True)
class ExplainConfig:
    """How heatmaps are made.

    Attributes:
        method: ``gradcam``, ``gradcampp`` or ``occlusion``.
        class_index: Class explained (classification); None: positive class, else predicted class.
        occlusion_fraction: Occluding patch side as a fraction of each image side.
        occlusion_overlap: Overlap of neighbouring patches (MONAI's sliding window).
    """

    method: str = "gradcam"
    class_index: int | None = None
    occlusion_fraction: float = 0.2
    occlusion_overlap: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ExplainError(f"unknown explanation method {self.method!r}; choose from {', '.join(METHODS)}")
        if not 0 < self.occlusion_fraction <= 1 or not 0 <= self.occlusion_overlap < 1:
            raise ExplainError("occlusion_fraction must be in (0, 1] and occlusion_overlap in [0, 1)")


def cam_layer(model_name: str) -> str:
    """The registered Grad-CAM target layer of ``model_name``; :class:`ExplainError` when it has none."""
    from tumorbench.models import model_info

    layer = model_info(model_name).cam_layer
    if layer is None:
        raise ExplainError(
            f"model {model_name!r} has no registered Grad-CAM target layer (cam_layer); "
            "use method 'occlusion', or register the model with cam_layer=..."
        )
    return layer


class _Hooks(ModelWithHooks):
    """MONAI's hooked model with tumorbench's explained score (see the module docstring)."""

    def __init__(self, model: nn.Module, layer: str, task: str) -> None:
        super().__init__(model, layer, register_forward=True, register_backward=True)
        self.task = task

    def class_score(self, logits: torch.Tensor, class_idx: int) -> torch.Tensor:
        if get_task(self.task).with_mask:
            return foreground_logit_sum(logits, int(class_idx))
        # The class's log-odds, what softmax decides on: a raw logit also carries evidence shared by
        # every class, which can dominate its Grad-CAM (and does for a blob-vs-noise classifier).
        others = torch.cat([logits[:, :class_idx], logits[:, class_idx + 1 :]], dim=1)
        return logits[:, class_idx] - torch.logsumexp(others, dim=1)

    def __call__(self, x, class_idx=None, retain_graph=False, **kwargs):
        # MONAI takes the argmax over channels when class_idx is None; a one-channel mask has class 0.
        out = super().__call__(x, class_idx=0 if class_idx is None else class_idx, retain_graph=retain_graph)
        # Grad-CAM++ multiplies each sample's map by exp(score), a constant for that sample that over- or
        # underflows for a sum over thousands of pixels or a confident log-odds: it is set to exp(0) = 1.
        self.score = torch.zeros_like(self.score)
        return out


def _backward_from(model: nn.Module, layer: str) -> None:
    """Make ``model`` (the explainer's private copy) compute only what Grad-CAM reads: d score / d ``layer``'s output.

    Its weights stop requiring gradients and ``layer``'s output becomes the graph's leaf, so the backward pass
    runs from the score down to ``layer`` alone, without weight gradients, and the layers before it run as in
    inference. The gradient at ``layer`` is the same; a SegResNet heatmap of a 64^3 volume took 2.9x less time.
    """
    for parameter in model.parameters():
        parameter.requires_grad_(False)

    def leaf(_module: nn.Module, _inputs: tuple, output: object) -> object:
        if torch.is_grad_enabled() and isinstance(output, torch.Tensor):
            return output.detach().requires_grad_(True)
        return None

    # Forward hooks run before the full backward hook wraps the output, so MONAI's hook still sees its gradient.
    model.get_submodule(layer).register_forward_hook(leaf)


def foreground_logit_sum(logits: torch.Tensor, channel: int = 0) -> torch.Tensor:
    """Grad-CAM target of a segmentation output ``(B, C, *spatial)``: per sample, the logits of ``channel``
    summed over the pixels the model segments (logit > 0), or over all pixels when it segments none."""
    channel_logits = logits[:, channel].flatten(1)
    mask = (channel_logits > 0).detach()
    mask = (mask | ~mask.any(dim=1, keepdim=True)).to(channel_logits.dtype)
    return (channel_logits * mask).sum(dim=1)


class _TargetScore(nn.Module):
    """A model reduced to one score per sample ``(B, 1)``, the quantity occlusion and deletion curves watch."""

    def __init__(self, model: nn.Module, task: str, class_index: int, reference: torch.Tensor | None) -> None:
        super().__init__()
        self.model, self.task, self.class_index = model, task, class_index
        self.reference = reference  # segmentation: logits of the clean input, fixing which pixels count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if not get_task(self.task).with_mask:
            return torch.softmax(out.float(), dim=1)[:, self.class_index : self.class_index + 1]
        return _score_logits(out, self)[:, None]


def _pad(x: torch.Tensor, task: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Zero-pad a segmentation input to sides divisible by 32 (inference does the same); returns the old sides."""
    spatial = tuple(x.shape[2:])
    pad = [(-s) % _DIVISOR for s in spatial] if get_task(task).with_mask else [0] * len(spatial)
    if any(pad):
        x = F.pad(x, [p for extra in reversed(pad) for p in (0, extra)])
    return x, spatial


def _crop(x: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    return x[(..., *(slice(0, s) for s in spatial))]


def normalize_heatmap(heatmap: np.ndarray) -> np.ndarray:
    """Negative values clipped, then divided by the maximum (an all-zero map stays zero)."""
    heatmap = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0, None)
    peak = float(heatmap.max()) if heatmap.size else 0.0
    return heatmap / peak if peak > 0 else heatmap


class Explainer:
    """Heatmaps of one model; works on a private copy (MONAI's hooks never touch the caller's model).

    Args:
        model: The classifier or segmentation net.
        model_name: Its registered name (selects the Grad-CAM layer).
        task: ``classification`` or ``segmentation``.
        config: Method and its settings.
        positive_index: Class explained by default for two-class classifiers.
    """

    def __init__(
        self,
        model: nn.Module,
        model_name: str,
        task: str,
        config: ExplainConfig = ExplainConfig(),
        positive_index: int | None = None,
    ) -> None:
        if get_task(task).endpoint is None:
            raise ExplainError(
                f"model {model_name!r} is a {task} model; only classifiers and segmentation nets can be explained"
            )
        self.model_name, self.task, self.config = model_name, task, config
        self.positive_index = positive_index
        self.model = copy.deepcopy(getattr(model, "module", model)).eval()
        for module in self.model.modules():  # backward hooks forbid in-place ops on hooked outputs
            if getattr(module, "inplace", False):
                module.inplace = False
        self._cam = self._build_cam() if config.method != "occlusion" else None

    def _build_cam(self) -> GradCAM:
        layer = cam_layer(self.model_name)
        if layer not in dict(self.model.named_modules()):
            raise ExplainError(
                f"model {self.model_name!r}: registered Grad-CAM layer {layer!r} is not a module "
                "of this instance (changed model keywords?)"
            )
        cls = GradCAMpp if self.config.method == "gradcampp" else GradCAM
        identity = lambda m: m  # noqa: E731  (MONAI's default normaliser flips the map; we scale it ourselves)
        cam = cls(nn_module=_Hooks(self.model, layer, self.task), target_layers=layer, postprocessing=identity)
        _backward_from(self.model, layer)
        return cam

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def class_index(self, x: torch.Tensor) -> int:
        """The class explained for a batch ``x`` (segmentation: channel 0)."""
        if get_task(self.task).with_mask:
            return 0
        if self.config.class_index is not None:
            return int(self.config.class_index)
        if self.positive_index is not None:
            return int(self.positive_index)
        with torch.no_grad():
            return int(self.model(x[:1].to(self.device).float()).argmax(dim=1)[0])

    def scorer(self, x: torch.Tensor) -> _TargetScore:
        """The model reduced to the explained score, for occlusion and deletion / insertion curves of ``x``."""
        reference = None
        if get_task(self.task).with_mask:
            padded, spatial = _pad(x.to(self.device).float(), self.task)
            with torch.no_grad():
                reference = _crop(self.model(padded), spatial)
        return _TargetScore(self.model, self.task, self.class_index(x), reference)

    def score(self, images: torch.Tensor, scorer: _TargetScore) -> np.ndarray:
        """``(B,)`` explained scores of ``images`` (``(B, C, *spatial)``), in forwards of at most
        MAX_VOLUME_VOXELS voxels: a deletion curve's 17 copies of a 128 x 128 x 40 CT in one forward took 4.2 GB."""
        per = max(1, MAX_VOLUME_VOXELS // max(1, images[0, 0].numel()))
        return np.concatenate([self._score(chunk, scorer) for chunk in torch.split(images, per)])

    def _score(self, images: torch.Tensor, scorer: _TargetScore) -> np.ndarray:
        padded, spatial = _pad(images.to(self.device).float(), self.task)
        with torch.no_grad():
            if get_task(self.task).with_mask:
                logits = _crop(self.model(padded), spatial)
                return _score_logits(logits, scorer).cpu().numpy()
            return scorer(padded)[:, 0].cpu().numpy()

    def heatmap(self, image: torch.Tensor) -> np.ndarray:
        """Heatmap ``(*spatial)`` of one model input ``(C, *spatial)`` (a slice stack for a 2D model on a volume)."""
        x = torch.as_tensor(image).float()
        if x.ndim < 3:
            raise ExplainError(f"expected a (C, *spatial) input, got shape {tuple(x.shape)}")
        model_dims = _model_dims(self.model)
        if model_dims == 3 and x[0].numel() > MAX_VOLUME_VOXELS:
            raise ExplainError(
                f"volume of {tuple(x.shape[1:])} voxels is over the {MAX_VOLUME_VOXELS:,} voxels a 3D "
                "explanation runs on in one pass; crop or resample it"
            )
        if model_dims == 2 and x.ndim == 4:  # a 2D net on a volume: slice by slice along the last axis
            maps = [self._raw(x[..., k][None])[0] for k in range(x.shape[-1])]
            return normalize_heatmap(np.stack(maps, axis=-1))
        return normalize_heatmap(self._raw(x[None])[0])

    def _raw(self, x: torch.Tensor) -> np.ndarray:
        """Unnormalised maps ``(B, *spatial)`` of a batch."""
        x = x.to(self.device)
        if self._cam is None:
            return np.stack([self._occlusion(x[i : i + 1]) for i in range(len(x))])
        padded, spatial = _pad(x, self.task)
        class_idx = self.class_index(x) if not get_task(self.task).with_mask else 0
        with torch.enable_grad(), warnings.catch_warnings():
            # The input needs no gradient, which torch mentions for every full backward hook.
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            maps = self._cam(padded, class_idx=class_idx)
        return _crop(maps, spatial)[:, 0].detach().cpu().numpy()

    def _occlusion(self, x: torch.Tensor) -> np.ndarray:
        padded, spatial = _pad(x, self.task)
        scorer = self.scorer(x)
        if scorer.reference is not None:  # the padded input scores against the padded clean prediction
            with torch.no_grad():
                scorer.reference = self.model(padded)
        sides = padded.shape[2:]
        mask = [max(2, int(round(s * self.config.occlusion_fraction))) for s in sides]
        occlusion = OcclusionSensitivity(
            scorer,
            mask_size=mask,
            n_batch=16,
            verbose=False,
            mode="mean_img",
            overlap=self.config.occlusion_overlap,
            activate=False,
        )
        with torch.no_grad(), warnings.catch_warnings():
            # MONAI 1.6 indexes with lists, which torch deprecates; nothing for us to act on.
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
            clean = float(scorer(padded)[0, 0])
            occluded, _ = occlusion(padded)
        # Importance = how much the score drops when a region is hidden.
        return (clean - _crop(occluded, spatial)[0, 0]).detach().cpu().numpy()


def _score_logits(logits: torch.Tensor, scorer: _TargetScore) -> torch.Tensor:
    """Mean foreground probability over the pixels segmented on the clean input (all when none or no reference)."""
    probs = torch.sigmoid(logits[:, scorer.class_index].float()).flatten(1)
    if scorer.reference is None:
        return probs.mean(dim=1)
    mask = (scorer.reference[:, scorer.class_index].flatten(1) > 0).float()
    mask = mask if mask.sum() > 0 else torch.ones_like(mask)
    return (probs * mask).sum(dim=1) / mask.sum(dim=1)


def _model_dims(model: nn.Module) -> int:
    """Spatial dimensionality of a net, from its first convolution."""
    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            return 3
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            return 2
    raise ExplainError(f"cannot tell the dimensionality of {type(model).__name__} (no convolution)")


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every parameter re-initialised (Adebayo et al. 2018, full randomisation).

    Every submodule with ``reset_parameters`` is reset under ``seed``; BatchNorm statistics are reset too.
    """
    clone = copy.deepcopy(getattr(model, "module", model))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return clone.eval()


def is_flat(heatmap: np.ndarray) -> bool:
    """Whether a heatmap carries no ranking at all (constant)."""
    return not np.isfinite(heatmap).all() or math.isclose(float(np.max(heatmap)), float(np.min(heatmap)))
