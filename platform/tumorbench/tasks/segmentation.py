"""Voxel-wise tumor segmentation (2D slices or 3D volumes): sigmoid masks, per-patient Dice first."""

from __future__ import annotations

import math
from typing import Any

from tumorbench.tasks.base import Task, TaskError, register_task


@register_task
class Segmentation(Task):
    name = "segmentation"
    metrics = ("dice", "iou", "hd95", "sensitivity", "precision")
    primary = "dice"
    lower_is_better = frozenset({"hd95"})
    shown = ("dice", "dice_sd", "iou", "hd95")
    key_metrics = ("iou", "hd95", "sensitivity", "precision")
    target = "mask"
    stratify = "has_tumor"
    dedupe = False  # slices of one patient may repeat bytes (empty slices); patients are the unit
    endpoint = "/v1/segment"
    regions = ("WT", "TC", "ET")  # BraTS whole tumor, tumor core, enhancing tumor

    def check_config(self, config: Any, data_dims: int) -> None:
        super().check_config(config, data_dims)
        if data_dims == 3 and config.spatial_dims == 2 and config.sampling.mode != "slice2d":
            raise TaskError("a 2D model on volumes needs sampling mode 'slice2d'")

    def init_model(self, model: Any, config: Any, out_channels: int) -> None:
        if config.foreground_prior:
            init_output_bias(model, out_channels, config.foreground_prior)

    def split_frame(self, frame: Any) -> Any:
        from tumorbench.data.check import add_tumor_presence

        return add_tumor_presence(frame)

    def loss(self, config: Any, class_counts: Any):
        from monai.losses import DiceCELoss

        # Batch Dice: slices without tumor do not turn the Dice term into noise.
        return DiceCELoss(sigmoid=True, batch=True)

    def batch_target(self, batch: dict, device: Any):
        mask = batch["mask"].float()
        check_binary_mask(mask)
        return mask.to(device)

    def validate(self, config: Any, model: Any, val_set: Any, cases: Any, device: Any):
        """Per-patient metrics of every rank's patients (2D slices stacked per patient) and their means."""
        from tumorbench.training.validation import gather, segmentation_records, summarize_segmentation

        records = gather(
            segmentation_records(
                model,
                val_set,
                data_dims=cases.data_dims,
                model_dims=config.spatial_dims,
                roi_size=config.roi_size or config.sampling.patch_size,
                device=device,
                channel_names=mask_channel_names(config),
            )
        )
        return summarize_segmentation(records), records

    def output_channels(self, sample: dict, class_names: list[str] | None) -> int:
        return int(sample["mask"].shape[0])

    # -- out-of-fold results ----------------------------------------------------------------------
    def check_predictions(self, df: Any, source: str) -> Any:
        from tumorbench.evaluation.oof import require_columns

        require_columns(df, ["dice"], source)
        return df

    def metric_names(self, pred: Any) -> list[str]:
        from tumorbench.evaluation.oof import REGION_METRICS

        return [m for m in self.metrics + REGION_METRICS if m in pred.columns]

    def fold_values(self, g: Any, metrics: list[str], binary: bool) -> dict[str, float]:
        """The fold's mean per-patient value of each metric (NaN skipped)."""
        return {m: float(g[m].mean()) for m in metrics}

    def pooled_row(
        self, g: Any, metrics: list[str], binary: bool, n_boot: int, alpha: float, seed: int
    ) -> dict[str, float]:
        from tumorbench.evaluation.leaderboard import mean_pooled_row

        return mean_pooled_row(g, metrics, n_boot, alpha, seed)

    def case_tests(self, primary: str, pred: Any) -> list:
        from tumorbench.evaluation.paired import wilcoxon_case_test

        metric = primary if primary.startswith("dice") and primary in pred.columns else "dice"
        return [wilcoxon_case_test(metric)]

    def primary_test(self, primary: str) -> str:
        return "wilcoxon" if primary.startswith("dice") else "corrected_t"

    def pair_cases(self, pair: Any, metric: str | None) -> Any:
        if metric is None:
            return pair
        return pair[pair[f"{metric}_ref"].notna() & pair[f"{metric}_other"].notna()]

    def report_figures(
        self, pred: Any, lb: Any, reference: str, primary: str, n_boot: int, seed: int, class_names: Any = None
    ) -> str:
        from tumorbench.reporting.report import segmentation_figures

        return segmentation_figures(pred, lb, reference, primary)

    def oof_rows(self, records: list[dict], class_names: list[str] | None) -> list[dict]:
        from tumorbench.study.results import segmentation_row

        return [segmentation_row(r) for r in records]

    def baseline_rows(
        self,
        name: str,
        train: Any,
        val: Any,
        class_names: list[str] | None,
        seed: int,
        params: dict[str, Any],
        shared: Any = None,
    ) -> Any:
        from tumorbench.study.results import segmentation_baseline_rows

        return segmentation_baseline_rows(name, train, val, seed, params)


def check_binary_mask(mask: Any) -> None:
    """Sigmoid Dice+CE is bounded only for targets in [0, 1]: raw label maps ({0,1,2,4}) must be mapped first."""
    import torch

    if mask.numel() and (float(mask.min()) < 0 or float(mask.max()) > 1):
        found = sorted({float(v) for v in torch.unique(mask)[:8]})
        raise TaskError(
            f"segmentation masks hold labels {found}; the sigmoid loss needs {{0, 1}} targets: "
            f"set preprocess.label_map to 'binary' (any label is tumor) or 'brats' (WT/TC/ET)"
        )


def mask_channel_names(config: Any) -> list[str] | None:
    """Names of the mask channels: the BraTS regions when labels are mapped to them."""
    return ["WT", "TC", "ET"] if config.preprocess.label_map == "brats" else None


def init_output_bias(model: Any, out_channels: int, prior: float) -> bool:
    """Start the output layer at the foreground prior (logit of ``prior``), as RetinaNet does.

    Tumor is a few percent of the pixels; from the default bias (p = 0.5 everywhere)
    Adam needs thousands of steps just to learn that most pixels are background.

    Returns:
        Whether an output convolution with a bias was found.
    """
    import torch

    convs = (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)
    last = [
        m for m in model.modules() if isinstance(m, convs) and m.out_channels == out_channels and m.bias is not None
    ]
    if not last:
        return False
    with torch.no_grad():
        last[-1].bias.fill_(math.log(prior / (1 - prior)))
    return True
