"""The ``gan`` task (conditional DCGAN training) and the generated images of a GAN-augmented classifier.

GAN training:

- The GAN sees the preprocessed training images at its own ``image_size`` with
  min-max normalization (checked before any worker starts), mapped [0, 1] -> [-1, 1]
  to match the generator's tanh, without augmentation (it would be learnt as part of
  the data). It trains on the training fold only: the split's validation fold is
  never read, so generated images carry no validation information.
- Every batch is one discriminator step (reals and detached fakes, one forward) and
  one generator step, each with its own Adam (betas (0.5, 0.999), both at ``lr``;
  no weight decay, warm-up, scheduler or gradient clipping: spectral norm already
  bounds the discriminator). Training runs in fp32: GAN losses are fragile under
  fp16 scaling, and a 64x64 DCGAN gains little from mixed precision.
- Under DDP the generator and the discriminator are wrapped separately, so each
  backward all-reduces exactly the module whose forward ran through its wrapper.
- Adversarial losses do not measure sample quality, so checkpoints are ranked by
  ``epoch`` (the ``gan`` task's primary metric): the latest are kept, and patience never stops a GAN.
- Each epoch rank 0 writes a grid of samples from fixed noise (seeded by ``seed``;
  one row per class) as ``samples.png`` in the checkpoint and ``<out>/samples/epoch_XXXX.png``.

GAN-augmented classifier: :func:`synthetic_dataset` generates, once per worker,
``round(synthetic_fraction * shard size)`` images for the training loader only.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from tumorbench.errors import DataError
from tumorbench.models import model_info
from tumorbench.models.gan import ConditionalGAN, discriminator_loss, generator_loss
from tumorbench.package import ModelManifest, read_manifest
from tumorbench.package.weights import load_weights
from tumorbench.tasks import Gan, get_task
from tumorbench.training import data as fold_data
from tumorbench.training.checkpoint import load_training_state, save_checkpoint
from tumorbench.training.config import TrainConfig, TrainConfigError
from tumorbench.training.state import LoopState
from tumorbench.transforms import AugmentConfig, PreprocessConfig
from tumorbench.transforms.custom import _LUMA  # the grey conversion real images get (LoadCased)

BETAS = (0.5, 0.999)
SAMPLES_PER_CLASS = 8
SAMPLE_GRID = "samples.png"
# Half an 8-bit grey level: the generator's tanh never reaches -1, but the real images'
# background is exactly 0 after min-max, and z-score (nonzero=True) must skip it in both.
BLACK = 0.5 / 255


def gan_image_size(config: TrainConfig) -> int:
    return int(config.model_kwargs.get("image_size", model_info(config.model).default_kwargs["image_size"]))


def check_gan_config(config: TrainConfig, data_dims: int) -> None:
    """The GAN's preprocessing must produce min-max images of the GAN's own size."""
    size = gan_image_size(config)
    if data_dims != 2:
        raise TrainConfigError(f"{config.data}: a GAN trains on 2D images, this dataset holds volumes")
    if config.preprocess.spatial_size != (size, size):
        raise TrainConfigError(
            f"model {config.model!r} makes {size}x{size} images: set spatial_size to "
            f"({size}, {size}) (--image-size {size} --image-size {size}), "
            f"got {config.preprocess.spatial_size}"
        )
    if config.preprocess.normalize != "minmax":
        raise TrainConfigError(
            f"a GAN needs normalize='minmax' (its tanh output is [-1, 1]), got {config.preprocess.normalize!r}"
        )


def check_gan_source(
    config: TrainConfig,
    manifest: ModelManifest,
    class_names: Sequence[str] | None = None,
    split_hash: str | None = None,
) -> None:
    """Refuse a GAN that cannot augment this classifier, or that saw its validation cases.

    ``class_names`` and ``split_hash`` are checked when given (the worker knows them;
    the driver checks what it can before the split file exists).
    """
    source = Path(config.gan_checkpoint or "")
    if not getattr(get_task(config.task), "gan_augmented", False):
        raise TrainConfigError(f"gan_checkpoint augments classifiers only, not {config.task} training")
    if not isinstance(get_task(manifest.task), Gan):
        raise DataError(source, f"is a {manifest.task} model, not a GAN")
    if config.preprocess.normalize not in ("zscore", "minmax"):
        raise TrainConfigError(
            f"generated images can only be normalized with zscore or minmax, not {config.preprocess.normalize!r}"
        )
    for step in ("denoise", "contrast"):
        if manifest.preprocess.get(step, "none") != getattr(config.preprocess, step):
            raise DataError(
                source,
                f"GAN images were made with {step}={manifest.preprocess.get(step)!r}, "
                f"the classifier uses {getattr(config.preprocess, step)!r}",
            )
    if class_names is not None and list(manifest.class_names or []) != list(class_names):
        raise DataError(source, f"GAN classes {manifest.class_names} differ from the classifier's {list(class_names)}")
    if split_hash is not None and (manifest.split.get("hash"), manifest.split.get("fold")) != (split_hash, config.fold):
        raise DataError(
            source,
            f"GAN was trained on fold {manifest.split.get('fold')} of split "
            f"{str(manifest.split.get('hash'))[:12]}, the classifier validates on fold "
            f"{config.fold} of split {split_hash[:12]}: its images could leak validation "
            f"cases (train the GAN with the classifier's split file and fold)",
        )


def gan_optimizers(model: ConditionalGAN, lr: float) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Generator and discriminator optimizers (DCGAN's Adam betas)."""
    return (
        torch.optim.Adam(model.generator.parameters(), lr=lr, betas=BETAS),
        torch.optim.Adam(model.discriminator.parameters(), lr=lr, betas=BETAS),
    )


def gan_step(
    generator, discriminator, opt_g, opt_d, real: torch.Tensor, labels: torch.Tensor, z_dim: int
) -> dict[str, float]:
    """One discriminator step then one generator step; returns sums over the batch.

    Args:
        generator, discriminator: The modules (or their DDP wrappers).
        real: Images in [-1, 1], ``(N, C, H, W)``; fakes are conditioned on the same ``labels``.
    """
    n = len(real)
    fake = generator(torch.randn(n, z_dim, device=real.device), labels)
    # One forward over reals and fakes (no BatchNorm in D, so nothing mixes between them).
    logits = discriminator(torch.cat([real, fake.detach()]), torch.cat([labels, labels]))
    d_loss = discriminator_loss(logits[:n], logits[n:])
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    # The generator step also fills D's gradients; the next D step clears them first.
    g_loss = generator_loss(discriminator(fake, labels))
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    probs = torch.sigmoid(logits.detach().float())
    return {
        "d_loss": float(d_loss.detach()) * n,
        "g_loss": float(g_loss.detach()) * n,
        "d_real": float(probs[:n].sum()),
        "d_fake": float(probs[n:].sum()),
        "images": n,
    }


def gan_epoch(generator, discriminator, opt_g, opt_d, loader, z_dim: int, device: torch.device) -> dict[str, float]:
    """One pass over this worker's shard; means over all workers' images."""
    generator.train()
    discriminator.train()
    sums = np.zeros(5)
    for batch in loader:
        real = batch["image"].float().to(device) * 2 - 1
        labels = torch.as_tensor(batch["label"]).long().to(device)
        step = gan_step(generator, discriminator, opt_g, opt_d, real, labels, z_dim)
        sums += [step[k] for k in ("d_loss", "g_loss", "d_real", "d_fake", "images")]
    local_images = int(sums[-1])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        total = torch.as_tensor(sums, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(total)
        sums = total.cpu().numpy()
    means = sums[:4] / max(sums[4], 1)
    return dict(zip(("d_loss", "g_loss", "d_real", "d_fake"), means.tolist())) | {"train_images": local_images}


@torch.no_grad()
def fixed_samples(model: ConditionalGAN, seed: int, per_class: int = SAMPLES_PER_CLASS) -> torch.Tensor:
    """``per_class`` images of every class, class-major, from noise fixed by ``seed`` (eval-mode BatchNorm)."""
    was_training = model.training
    labels = torch.arange(model.num_classes).repeat_interleave(per_class)
    model.eval()
    images = model.sample(labels, generator=torch.Generator().manual_seed(seed)).float().cpu()
    model.train(was_training)
    return images


def write_sample_grid(
    images: torch.Tensor, class_names: Sequence[str], paths: Sequence[str | Path], title: str = ""
) -> None:
    """Save generator output ([-1, 1], class-major) as one labelled row per class to every path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(class_names)
    cols = len(images) // rows
    pictures = ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.2 + 0.4), squeeze=False)
    for index, axis in enumerate(axes.flat):
        picture = pictures[index]
        axis.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=1)
        axis.set_xticks([])
        axis.set_yticks([])
        if index % cols == 0:
            axis.set_ylabel(class_names[index // cols], fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    for path in paths:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=80)
    plt.close(fig)


def train_gan(
    config: TrainConfig,
    model: ConditionalGAN,
    cases: fold_data.FoldCases,
    device: torch.device,
    manifest_for: Callable[[dict, int], ModelManifest],
) -> None:
    """The ``gan`` task's worker loop; ``manifest_for(metrics, epoch)`` describes a checkpoint."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    generator = ray.train.torch.prepare_model(model.generator)
    discriminator = ray.train.torch.prepare_model(model.discriminator)
    opt_g, opt_d = gan_optimizers(model, config.lr)
    # No augmentation: a GAN reproduces its training distribution, flipped and rotated brains included.
    loader = fold_data.train_loader(config.replace(augment=AugmentConfig()), cases, rank, world)
    state = _resume(model, opt_g, opt_d)
    for epoch in range(state.epoch + 1, config.epochs):
        started = time.perf_counter()
        stats = gan_epoch(generator, discriminator, opt_g, opt_d, loader, model.z_dim, device)
        seconds = time.perf_counter() - started
        state.update(float(epoch), epoch, "max")  # the latest is the best: see the module docstring
        state.epoch = epoch
        metrics = stats | {
            "epoch": epoch,
            "lr": config.lr,
            "train_seconds": seconds,
            "images_per_second": stats["train_images"] * world / seconds,
        }
        state.history.append(dict(metrics))
        _report(
            config,
            rank,
            metrics,
            model,
            cases.class_names or [],
            {"optimizer_g": opt_g.state_dict(), "optimizer_d": opt_d.state_dict(), "loop": vars(state)},
            manifest_for(metrics, epoch),
        )


def _resume(model: ConditionalGAN, opt_g, opt_d):
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return LoopState()
    with checkpoint.as_directory() as directory:
        load_weights(directory, model)
        saved = load_training_state(directory)
    opt_g.load_state_dict(saved["optimizer_g"])
    opt_d.load_state_dict(saved["optimizer_d"])
    return LoopState(**saved["loop"])


def _report(config, rank, metrics, model, class_names, training_state, manifest) -> None:
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    epoch = metrics["epoch"]
    with tempfile.TemporaryDirectory() as directory:
        save_checkpoint(directory, model, manifest, training_state)
        write_sample_grid(
            fixed_samples(model, config.seed),
            class_names,
            [Path(directory) / SAMPLE_GRID, Path(config.out) / "samples" / f"epoch_{epoch:04d}.png"],
            title=f"{config.model} epoch {epoch}",
        )
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(directory),
            checkpoint_dir_name=f"checkpoint_epoch_{epoch:04d}",
        )


# --- GAN-augmented classifier -------------------------------------------------------------------


def synthetic_labels(class_counts: Sequence[float], n: int, seed: int) -> np.ndarray:
    """``n`` labels in the training class proportions (largest remainder), in seeded random order.

    Proportional allocation rather than independent draws: with a few dozen images,
    draws could skew the class balance the classifier's loss weights assume.
    """
    counts = np.asarray(class_counts, float)
    quota = n * counts / counts.sum()
    allocated = np.floor(quota).astype(int)
    remainder_order = np.argsort(-(quota - allocated), kind="stable")
    allocated[remainder_order[: n - allocated.sum()]] += 1
    labels = np.repeat(np.arange(len(counts)), allocated)
    return np.random.default_rng(seed).permutation(labels)


def generated_to_input(
    images: torch.Tensor, preprocess: PreprocessConfig, size: Sequence[int], channels: int
) -> torch.Tensor:
    """Map generator output into a classifier's input space, as the real images are mapped.

    The GAN learned min-max images, so [-1, 1] -> [0, 1] recovers one (pixels within
    half a grey level of black become exactly 0, as a real background is). Then, in
    the real chain's order: channels as ``LoadCased`` makes them (grey repeated,
    RGB -> ITU-R 601 luma), the same MONAI resize (bilinear, anti-aliased), and the
    classifier's own intensity transform with the same arguments.

    Args:
        images: ``(N, C, H, W)`` in [-1, 1].
        preprocess: The classifier's preprocessing (``zscore`` or ``minmax``).
        size: The classifier's input size ``(H, W)``.
        channels: The classifier's input channels.
    """
    from monai import transforms as mt

    x = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    x = torch.where(x < BLACK, torch.zeros_like(x), x)
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.repeat(1, channels, 1, 1)
        elif x.shape[1] == 3 and channels == 1:
            x = torch.einsum("c,nchw->nhw", torch.as_tensor(_LUMA), x)[:, None]
        else:
            raise TrainConfigError(f"generated images have {x.shape[1]} channels, the classifier needs {channels}")
    steps = (
        [mt.Resize(tuple(size), mode="bilinear", align_corners=False, anti_aliasing=True)]
        if tuple(x.shape[2:]) != tuple(size)
        else []
    )
    if preprocess.normalize == "zscore":
        steps.append(mt.NormalizeIntensity(nonzero=True, channel_wise=True))
    elif preprocess.normalize == "minmax":
        steps.append(mt.ScaleIntensity(minv=0.0, maxv=1.0, channel_wise=True))
    else:
        raise TrainConfigError(f"generated images cannot be normalized with {preprocess.normalize!r}")
    chain = mt.Compose(steps)
    return torch.stack([torch.as_tensor(chain(image)).float() for image in x])


class SyntheticDataset(torch.utils.data.Dataset):
    """Generated images as case dicts shaped like the real ones (``image``, ``label``, ids)."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray, first_index: int = 0) -> None:
        self.images, self.labels, self.first_index = images, torch.as_tensor(labels, dtype=torch.long), first_index

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        from monai.data import MetaTensor

        # A MetaTensor, like the real images, so a batch mixing both collates.
        return {
            "image": MetaTensor(self.images[index]),
            "label": self.labels[index],
            "case_id": f"synthetic-{self.first_index + index:06d}",
            "patient_id": "synthetic",
        }


@torch.no_grad()
def synthetic_dataset(
    config: TrainConfig, cases: fold_data.FoldCases, rank: int, world: int, device: torch.device
) -> SyntheticDataset | None:
    """This rank's generated training images (None when the fraction rounds to none)."""
    from tumorbench.package.weights import load_model

    check_gan_source(config, read_manifest(config.gan_checkpoint), cases.class_names, cases.split_hash)
    n = round(config.synthetic_fraction * len(fold_data.train_shard(config, cases, rank, world)))
    if n == 0:
        return None
    gan, _ = load_model(config.gan_checkpoint, device)
    counts = np.bincount([case["label"] for case in cases.train], minlength=len(cases.class_names or []))
    labels = synthetic_labels(counts, n, seed=config.seed + rank)
    noise = torch.Generator().manual_seed(config.seed * 1000 + rank)
    images = torch.cat(
        [gan.sample(torch.as_tensor(part), generator=noise).cpu() for part in np.array_split(labels, max(1, n // 64))]
    )
    reference = fold_data.transforms_for(config, cases.data_dims, train=False)(dict(cases.train[0]))["image"]
    images = generated_to_input(images, config.preprocess, tuple(reference.shape[1:]), int(reference.shape[0]))
    return SyntheticDataset(images, labels, first_index=rank * n)
