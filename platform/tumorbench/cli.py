"""The ``tumorbench`` command line.

Heavy imports (torch, MONAI, Ray) happen inside the commands that need them,
so ``tumorbench --help`` answers at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tumorbench.cli_data import DATA_COMMANDS, LAYOUT_CHOICES
from tumorbench.errors import TumorbenchError


class _Group(click.Group):
    """A group that turns tumorbench's own errors into one clear line and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TumorbenchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tumorbench")
def main() -> None:
    """tumorbench: train, tune, compare and serve tumor detectors on Ray."""


@main.group(cls=_Group, commands=DATA_COMMANDS)
def data() -> None:
    """Make, check, split and preview datasets."""


@main.command()
@click.option("--task", type=click.Choice(["classification", "segmentation", "gan"]), required=True)
@click.option("--model", required=True, help="Registered model name (see `tumorbench models`).")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Dataset root.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run folder.")
@click.option("--layout", type=click.Choice(LAYOUT_CHOICES), default="auto", show_default=True)
@click.option("--fold", type=click.IntRange(min=0), default=0, show_default=True, help="Validation fold.")
@click.option("--folds", "n_folds", type=click.IntRange(min=2), default=5, show_default=True)
@click.option(
    "--split-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Existing split file (default: <out>/splits.json, made on first use).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--gpus/--no-gpus", "use_gpu", default=None, help="Use a GPU per worker (default: if the cluster has them)."
)
@click.option("--pretrained", is_flag=True, help="Start from ImageNet weights (classifiers).")
@click.option(
    "--image-size", type=int, multiple=True, help="Resize inputs (repeat per axis: --image-size 128 --image-size 128)."
)
@click.option(
    "--spatial-dims", type=click.Choice(["2", "3"]), default="2", show_default=True, help="Model dimensionality."
)
@click.option("--augment", type=click.Choice(["none", "light", "medium", "strong"]), default="light", show_default=True)
@click.option(
    "--normalize", type=click.Choice(["zscore", "minmax", "ct_window", "none"]), default="zscore", show_default=True
)
@click.option("--channels", type=int, default=None, help="Force image channels (1 grey, 3 RGB) for mixed data.")
@click.option("--patience", type=click.IntRange(min=0), default=0, show_default=True, help="Early stopping (0: off).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--gan-checkpoint",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A trained GAN checkpoint whose samples augment classifier training (same split file and fold).",
)
@click.option(
    "--synthetic-fraction",
    type=click.FloatRange(0, 4),
    default=0.0,
    show_default=True,
    help="Generated images per real training image (needs --gan-checkpoint).",
)
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=JSON",
    help="Any other training setting, merged key by key onto the flags, e.g. "
    "--option freeze_backbone_epochs=2 --option preprocess.contrast=clahe "
    "--option model_kwargs='{\"width\": 8}'.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
@click.option("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray).")
def train(**opts) -> None:
    """Train one model on one fold with Ray Train; checkpoints are model packages."""
    from tumorbench.training.trainer import fit
    from tumorbench.tuning.trial import best_checkpoint

    config = _train_config(opts)
    result = fit(config, resume=opts["resume"], address=opts["address"])
    click.echo(f"finished: {config.out}/train")
    if result.best_checkpoints:
        checkpoint, metrics = best_checkpoint(result, config.selection_metric, config.selection_mode)
        click.echo(f"best checkpoint: {checkpoint} (epoch {metrics.get('epoch')})")


def _train_config(opts: dict):
    from tumorbench.training.config import TrainConfig, TrainConfigError, merge_settings
    from tumorbench.transforms import AugmentConfig, PreprocessConfig

    spatial_dims = int(opts["spatial_dims"])
    preprocess = PreprocessConfig(
        normalize=opts["normalize"], spatial_size=tuple(opts["image_size"]) or None, channels=opts["channels"]
    )
    values = dict(
        task=opts["task"],
        model=opts["model"],
        data=str(opts["data"]),
        out=str(opts["out"]),
        layout=opts["layout"],
        fold=opts["fold"],
        n_folds=opts["n_folds"],
        split_file=str(opts["split_file"]) if opts["split_file"] else None,
        epochs=opts["epochs"],
        batch_size=opts["batch_size"],
        lr=opts["lr"],
        workers=opts["workers"],
        use_gpu=opts["use_gpu"],
        pretrained=opts["pretrained"],
        spatial_dims=spatial_dims,
        patience=opts["patience"],
        seed=opts["seed"],
        preprocess=preprocess,
        synthetic_fraction=opts["synthetic_fraction"],
        gan_checkpoint=str(opts["gan_checkpoint"]) if opts["gan_checkpoint"] else None,
        augment=AugmentConfig.preset(opts["augment"], spatial_dims=2),
    )
    options = {}
    for option in opts["options"]:
        key, _, raw = option.partition("=")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    try:  # --option preprocess.contrast=clahe keeps the other preprocess flags (the one merge rule)
        return TrainConfig.from_dict(merge_settings(values, options))
    except TypeError as exc:
        raise TrainConfigError(str(exc)) from exc


@main.command("predict")
@click.option(
    "--package",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Model package folder (model.json + model.pt).",
)
@click.argument("source", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Mask file: .dcm writes a DICOM Segmentation (DICOM input), else PNG (2D) or .nii.gz (3D).",
)
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5, show_default=True)
def predict_command(package: Path, source: Path, out: Path | None, threshold: float) -> None:
    """Predict one input offline (image, NIfTI, MetaImage, NRRD, DICOM file, series folder or zip); print the JSON."""
    from tumorbench.data.io import read_image
    from tumorbench.inference import Predictor
    from tumorbench.results import mask_file

    predictor = Predictor.from_package(package, threshold=threshold)
    seg_sources = None
    if out is not None and out.suffix.lower() == ".dcm":
        from tumorbench.dicomseg import sources_for

        seg_sources = sources_for(source)  # before the forward pass: a non-DICOM input fails at once
    # A series folder, or a header whose data file lies beside it (.mhd + .raw): local files, read in place.
    local = source.is_dir() or source.suffix.lower() in (".mhd", ".nhdr")
    result = predictor.predict_image(read_image(source)) if local else predictor.predict_file(source)
    summary = result.summary()
    if out is not None:
        if summary["task"] != "segmentation":
            raise click.UsageError("--out writes a segmentation mask; this package is a classifier")
        if seg_sources is not None:
            from tumorbench.dicomseg import package_version, result_to_dicom_seg

            blob = result_to_dicom_seg(
                result, seg_sources, predictor.manifest, package_version(package, predictor.manifest)
            )
        else:
            blob = mask_file(result)[1]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(blob)
        summary["mask_file"] = str(out)
    click.echo(json.dumps(summary, indent=1))


@main.command("compare", context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def compare_command(args: tuple[str, ...]) -> None:
    """Run a comparison study (the options of experiments/compare.py; --help lists them)."""
    from tumorbench.study.cli import main as compare_main

    sys.exit(compare_main(list(args), prog="tumorbench compare"))


@main.command("models")
@click.option("--task", type=click.Choice(["classification", "segmentation", "gan"]), default=None)
def list_models_command(task: str | None) -> None:
    """List the registered models."""
    from tumorbench.models import list_models, model_info

    for name in list_models(task):
        info = model_info(name)
        dims = "/".join(f"{d}D" for d in info.spatial_dims)
        click.echo(f"{name:24s} {info.task:15s} {dims:6s} {info.description}")


@main.command("explain")
@click.option(
    "--package",
    "package",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Model package (model.json + model.pt).",
)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--method", type=click.Choice(["gradcam", "gradcampp", "occlusion"]), default="gradcam", show_default=True
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option(
    "--mask",
    "masks",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Truth mask per FILE, in the same order (adds pointing game and energy in tumor).",
)
def explain_command(package: Path, files: tuple[Path, ...], method: str, out: Path, masks: tuple[Path, ...]) -> None:
    """Heatmaps of a packaged model on FILEs: overlays (PNG), heatmaps on each file's grid, scores.csv."""
    from tumorbench.explain.files import explain_files

    if masks and len(masks) != len(files):
        raise click.UsageError(f"{len(masks)} --mask for {len(files)} files: give one mask per file, in order")
    table = explain_files(package, files, method=method, out=out, masks=masks or None)
    click.echo(f"explained {len(files)} file(s) with {method}; wrote {out} (overlays, heatmaps, scores.csv)")
    for column in ("pointing", "energy_in_tumor", "deletion_auc", "insertion_auc"):
        if column in table.columns:
            click.echo(f"  {column}: mean {table[column].mean():.3f}")


@main.command("serve")
@click.option(
    "--models",
    "models",
    multiple=True,
    metavar="DIR",
    help="Model package, folder of packages, or a training run (--out of `tumorbench train`, or its "
    "train/): its best checkpoint; NAME=DIR names it.",
)
@click.argument("more_models", nargs=-1, metavar="[DIR]...")
@click.option("--host", default="127.0.0.1", show_default=True, help="Listen address (loopback unless you say).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--max-batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--batch-wait-ms", type=click.FloatRange(min=0), default=10.0, show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5, show_default=True)
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True, help="Replicas per model.")
@click.option(
    "--gpu-per-replica",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="GPU fraction per model replica, used when the cluster has GPUs.",
)
@click.option("--api-key", envvar="TUMORBENCH_API_KEY", default=None, help="Require this key (X-API-Key) on /v1/*.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=64.0, show_default=True)
@click.option("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a new local Ray).")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without an API key.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A Serve config (serve/config.yaml): its http_options, args and deployments replace the options above "
    "(--models still overrides its models). Unlike `serve run`, SIGTERM stops it cleanly.",
)
def serve_command(
    models: tuple[str, ...],
    more_models: tuple[str, ...],
    host: str,
    port: int,
    max_batch_size: int,
    batch_wait_ms: float,
    threshold: float,
    replicas: int,
    gpu_per_replica: float,
    api_key: str | None,
    max_upload_mb: float,
    address: str | None,
    insecure: bool,
    config_file: Path | None,
) -> None:
    """Serve model packages over HTTP with Ray Serve until Ctrl-C / SIGTERM, then exit 0 (see serve/config.yaml)."""
    import pydantic

    from tumorbench.serving.runner import serve_forever
    from tumorbench.serving.settings import read_serve_config

    entries = []
    for entry in (*models, *more_models):  # absolute: Serve builds the application in another process
        name, sep, path = entry.rpartition("=") if "=" in entry else ("", "", entry)
        entries.append(f"{name}{sep}{Path(path).expanduser().resolve()}")
    if config_file is None and not entries:
        raise click.UsageError("give --models (or --config serve/config.yaml)")
    args = {
        "models": entries,
        "max_batch_size": max_batch_size,
        "batch_wait_timeout_s": batch_wait_ms / 1000,
        "threshold": threshold,
        "num_replicas": replicas,
        "gpu_per_replica": gpu_per_replica,
        "api_key": api_key,
        "max_upload_mb": max_upload_mb,
        "insecure": insecure,
    }
    where: dict = {"host": host, "port": port}
    if config_file is not None:
        args, where = read_serve_config(config_file)
        args = args | ({"models": entries} if entries else {})
    try:
        serve_forever(args, address=address, **where)
    except pydantic.ValidationError as exc:  # settings refused before Ray starts (e.g. exposed without an API key)
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
