"""Worker set-up: torch threads from the CPUs a worker holds, loader processes per GPU, CPU sizing."""

from __future__ import annotations

import torch

from tumorbench.training.config import TrainConfig
from tumorbench.training.data import configure_threads, loader_workers
from tumorbench.training.tasks import channels_last, to_device
from tumorbench.training.trainer import worker_resources


def test_threads_follow_the_cpus_held():
    before = torch.get_num_threads()
    try:
        assert configure_threads(1.9) == 2 and torch.get_num_threads() == 2
        assert configure_threads(0.9) == 1 and torch.get_num_threads() == 1
        assert configure_threads(0.3) == 1  # never zero
    finally:
        torch.set_num_threads(before)


def test_loader_processes_only_on_gpu():
    assert loader_workers(torch.device("cpu"), cpus=8) == 0
    assert loader_workers(torch.device("cuda"), cpus=8) == 7  # one CPU stays with the training loop
    assert loader_workers(torch.device("cuda"), cpus=1) == 0


def test_one_worker_gets_the_machine_two_share_it():
    config = TrainConfig(task="segmentation", model="unet", data="/d", out="/o")
    assert worker_resources(config, cpus=2, use_gpu=False) == {"CPU": 1.9}
    assert worker_resources(config.replace(workers=2), cpus=2, use_gpu=False) == {"CPU": 0.95}


def test_cpu_keeps_the_default_layout():
    config = TrainConfig(task="segmentation", model="unet", data="/d", out="/o")
    model = torch.nn.Conv2d(3, 4, 3)
    assert channels_last(model, config, torch.device("cpu")) is model
    batch = to_device(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.device("cpu"))
    assert batch.dtype == torch.float32 and batch.is_contiguous()
