"""Image-level classification (tumor yes/no, malignancy, tumor type): softmax over classes, AUC first."""

from __future__ import annotations

from typing import Any

from tumorbench.tasks.base import Task, register_task


@register_task
class Classification(Task):
    name = "classification"
    metrics = ("auc", "accuracy", "precision", "recall", "specificity", "f1")
    primary = "auc"
    shown = ("accuracy", "auc", "f1", "recall", "specificity")
    key_metrics = ("accuracy", "f1", "recall", "specificity")
    target = "label"
    stratify = "label"
    dedupe = True
    endpoint = "/v1/classify"
    gan_augmented = True  # a conditional GAN's samples can join its training folds

    def check_config(self, config: Any, data_dims: int) -> None:
        """Classifiers may freeze their backbone; nothing to refuse."""

    def param_groups(self, model: Any, config: Any) -> list[dict[str, Any]]:
        from tumorbench.models.pretrained import param_groups

        # A lower backbone learning rate protects pretrained features; a random backbone gets the full rate.
        multiplier = config.backbone_lr_mult if config.pretrained else 1.0
        return param_groups(model, config.lr, multiplier)

    def loss(self, config: Any, class_counts: Any):
        """Cross-entropy, weighted by inverse class frequency when every class is present."""
        import torch

        weights = None
        if class_counts is not None and (class_counts > 0).all():
            weights = torch.as_tensor(class_counts.sum() / (len(class_counts) * class_counts), dtype=torch.float32)
        return torch.nn.CrossEntropyLoss(weight=weights)

    def batch_target(self, batch: dict, device: Any):
        import torch

        return torch.as_tensor(batch["label"]).long().to(device)

    def validate(self, config: Any, model: Any, val_set: Any, cases: Any, device: Any):
        """Per-case class probabilities of every rank's cases and the metric panel over them."""
        from tumorbench.training.validation import classification_records, gather, summarize_classification

        records = gather(classification_records(model, val_set, device=device))
        return summarize_classification(records, positive_index(config, cases.class_names)), records

    def output_channels(self, sample: dict, class_names: list[str] | None) -> int:
        return len(class_names or [])

    # -- out-of-fold results ----------------------------------------------------------------------
    def check_predictions(self, df: Any, source: str) -> Any:
        from tumorbench.evaluation.oof import check_classification

        return check_classification(df, source)

    def is_binary(self, pred: Any) -> bool:
        from tumorbench.evaluation.oof import is_binary

        return is_binary(pred)

    def metric_names(self, pred: Any) -> list[str]:
        return list(self.metrics)

    def fold_values(self, g: Any, metrics: list[str], binary: bool) -> dict[str, float]:
        from tumorbench.evaluation.oof import classification_values

        return classification_values(g, binary)

    def pooled_row(
        self, g: Any, metrics: list[str], binary: bool, n_boot: int, alpha: float, seed: int
    ) -> dict[str, float]:
        from tumorbench.evaluation.leaderboard import classification_pooled_row

        return classification_pooled_row(g, metrics, binary, n_boot, alpha, seed)

    def case_tests(self, primary: str, pred: Any) -> list:
        from tumorbench.evaluation.paired import classification_case_tests

        return classification_case_tests(pred)

    def primary_test(self, primary: str) -> str:
        """The per-case test of the primary metric itself, else the fold-level corrected t-test."""
        return {"auc": "delong", "accuracy": "mcnemar"}.get(primary, "corrected_t")

    def pair_cases(self, pair: Any, metric: str | None) -> Any:
        from tumorbench.evaluation.paired import check_same_labels

        return check_same_labels(pair)

    def report_figures(
        self, pred: Any, lb: Any, reference: str, primary: str, n_boot: int, seed: int, class_names: Any = None
    ) -> str:
        from tumorbench.reporting.report import classification_figures

        return classification_figures(pred, lb, reference, n_boot, seed, class_names)

    def oof_rows(self, records: list[dict], class_names: list[str] | None) -> list[dict]:
        from tumorbench.study.results import classification_row

        return [classification_row(r, class_names or []) for r in records]

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
        from tumorbench.study.results import classification_baseline_rows

        return classification_baseline_rows(name, train, val, class_names, seed, params, shared)


def positive_index(config: Any, class_names: list[str] | None) -> int:
    """The class scored as positive by binary metrics: ``config.positive_class``, else the last class."""
    names = class_names or []
    return names.index(config.positive_class) if config.positive_class in names else len(names) - 1
