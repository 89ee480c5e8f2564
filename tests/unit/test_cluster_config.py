"""cluster.yaml: valid for Ray's cluster launcher, and wired to this repository.

Validation runs offline: ``prepare_config`` only merges Ray's bundled AWS
defaults; the AWS bootstrap step that needs boto3 and credentials
(``provider_cls.bootstrap_config``) is what ``ray up`` does afterwards and is
not exercised here.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO_ROOT / "cluster.yaml"
CONSTRAINTS = REPO_ROOT / "requirements" / "constraints.txt"
SCHEMA_PATH = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    with CLUSTER_YAML.open() as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def _ray_check(config: dict[str, Any]) -> dict[str, Any]:
    """What ``ray up`` does before touching the cloud: fill defaults, then validate."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _worker_types(config: dict[str, Any]) -> dict[str, Any]:
    head = config["head_node_type"]
    return {k: v for k, v in config["available_node_types"].items() if k != head}


def _pip_installs(commands: list[str]) -> list[list[str]]:
    """Each ``pip install`` in the commands, as argument lists after ``install``."""
    found = []
    for command in commands:
        for part in re.split(r"&&|;|\|\|", command):
            words = shlex.split(part)
            for i in range(len(words) - 1):
                if words[i].endswith("pip") and words[i + 1] == "install":
                    found.append(words[i + 2 :])
    return found


def _option(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def _pinned(name: str) -> str:
    for line in CONSTRAINTS.read_text().splitlines():
        pkg, sep, version = line.partition("==")
        if sep and pkg.strip().lower() == name:
            return version.strip()
    raise AssertionError(f"{CONSTRAINTS}: no pin for {name}")


def test_matches_ray_json_schema(raw, schema):
    jsonschema.validate(raw, schema)


def test_passes_ray_validate_config(raw):
    validate_config(raw)  # the file as written (it carries cluster_synced_files)
    prepared = _ray_check(raw)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["max_workers"] == raw["max_workers"]


def test_gpu_worker_type_declares_gpus(raw):
    workers = _worker_types(raw)
    gpu_types = {k: v for k, v in workers.items() if v["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no worker type declares GPU resources"
    for name, node in gpu_types.items():
        # g5.xlarge: 4 vCPU and one A10G; the declaration must not promise more.
        if node["node_config"]["InstanceType"] == "g5.xlarge":
            assert node["resources"] == {"CPU": 4, "GPU": 1}, name
    head = raw["available_node_types"][raw["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0


def test_worker_counts_are_consistent(raw):
    workers = _worker_types(raw)
    for name, node in workers.items():
        assert 0 <= node["min_workers"] <= node["max_workers"] <= raw["max_workers"], name
    assert sum(n["min_workers"] for n in workers.values()) <= raw["max_workers"]
    assert raw["idle_timeout_minutes"] > 0 and raw["upscaling_speed"] > 0


def test_every_node_type_pins_an_image(raw):
    # Without ImageId Ray falls back to an old DLAMI whose driver cannot run torch 2.14.
    for name, node in raw["available_node_types"].items():
        assert node["node_config"].get("ImageId"), name


def test_setup_installs_this_repository_with_constraints(raw):
    mounts = raw["file_mounts"].items()
    repo_mounts = [remote for remote, local in mounts if (REPO_ROOT / local).resolve() == REPO_ROOT]
    assert len(repo_mounts) == 1, "cluster.yaml must mount the repository root once"
    remote = repo_mounts[0].rstrip("/")
    installs = _pip_installs(raw["setup_commands"])
    constraints = f"{remote}/requirements/constraints.txt"
    assert any(_option(args, "-c") == constraints and _option(args, "-e") == remote for args in installs), installs
    assert CONSTRAINTS.is_file()
    # setup_commands run on every node: Ray prepends them to head and worker setup.
    prepared = _ray_check(raw)
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert prepared[key][: len(raw["setup_commands"])] == raw["setup_commands"]


def test_every_pip_install_uses_the_constraints(raw):
    commands = raw["setup_commands"] + raw["head_setup_commands"] + raw["worker_setup_commands"]
    for args in _pip_installs(commands):
        targets = [a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1] not in ("-c", "-e")]
        if targets and all(re.match(r"pip\b", t) for t in targets):
            continue  # upgrading pip itself needs no constraints
        assert _option(args, "-c") is not None, args


def test_image_is_built_from_the_pinned_ray(raw):
    docker = raw["docker"]
    images = [docker[k] for k in ("image", "head_image", "worker_image") if k in docker]
    assert len(images) == 1, "one image for every node"
    # Our image (docker/Dockerfile) in ECR, tagged with the Ray version and Python it is built from.
    tag = re.fullmatch(r"[\w.-]+\.dkr\.ecr\.([\w-]+)\.amazonaws\.com/tumorbench:(\d+\.\d+\.\d+)-(py\d+)-gpu", images[0])
    assert tag, images
    assert tag.group(1) == raw["provider"]["region"]
    base = re.search(r"^FROM rayproject/ray:(\d+\.\d+\.\d+)-(py\d+)-gpu$", DOCKERFILE.read_text(), re.M)
    assert base, f"{DOCKERFILE}: no FROM rayproject/ray:<version>-<py>-gpu"
    assert base.group(1) == tag.group(2) == _pinned("ray") and base.group(2) == tag.group(3)
    # The image holds the dependencies (CUDA torch): setup only links the repository.
    assert "-c /tmp/tumorbench/requirements/constraints.txt" in DOCKERFILE.read_text()


def test_storage_and_data_do_not_go_through_the_laptop(raw):
    # No data folder in file_mounts (`ray up` would rsync it laptop -> head -> every worker).
    assert all("data" not in local for local in raw["file_mounts"].values()), raw["file_mounts"]
    setup = " ; ".join(raw["setup_commands"])
    assert "s3://" in setup and "/home/ray/data" in setup
    # GPU workers write checkpoints to the S3 storage: they carry an instance profile.
    for name, node in _worker_types(raw).items():
        assert node["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::"), name
    assert "--storage s3://" in CLUSTER_YAML.read_text() and ".tumorbench-commit" in CLUSTER_YAML.read_text()


def test_start_commands_follow_ray_layout(raw):
    head = " ; ".join(raw["head_start_ray_commands"])
    worker = " ; ".join(raw["worker_start_ray_commands"])
    assert raw["head_start_ray_commands"][0] == "ray stop" == raw["worker_start_ray_commands"][0]
    bootstrap = "--autoscaling-config=~/ray_bootstrap_config.yaml"
    for needle in ("ray start --head", "--port=6379", bootstrap):
        assert needle in head
    assert "--address=$RAY_HEAD_IP:6379" in worker


def test_token_auth_has_its_token(raw):
    starts = raw["head_start_ray_commands"] + raw["worker_start_ray_commands"]
    if any("RAY_AUTH_MODE=token" in c for c in starts):
        assert raw["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
        assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)


def _misspelled_key(cfg):
    cfg["max_wrokers"] = cfg.pop("max_workers")


def _string_count(cfg):
    cfg["max_workers"] = "four"


def _string_gpu(cfg):
    next(iter(_worker_types(cfg).values()))["resources"]["GPU"] = "one"


def _missing_resources(cfg):
    del next(iter(_worker_types(cfg).values()))["resources"]


def _unknown_head(cfg):
    cfg["head_node_type"] = "head.gpu"


def _too_many_min_workers(cfg):
    next(iter(_worker_types(cfg).values()))["min_workers"] = cfg["max_workers"] + 1


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (_misspelled_key, jsonschema.ValidationError, "max_wrokers"),
        (_string_count, jsonschema.ValidationError, "'four' is not of type 'integer'"),
        (_string_gpu, jsonschema.ValidationError, "'one' is not of type 'integer'"),
        (_missing_resources, jsonschema.ValidationError, "'resources' is a required property"),
        (_unknown_head, ValueError, "head_node_type"),
        (_too_many_min_workers, ValueError, "min_workers"),
    ],
)
def test_broken_copies_are_rejected(raw, mutate, error, message):
    broken = copy.deepcopy(raw)
    mutate(broken)
    with pytest.raises(error, match=re.escape(message)):
        _ray_check(broken)
