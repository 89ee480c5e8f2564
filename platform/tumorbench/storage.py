"""Where runs keep what must outlive a node: a local folder, a shared mount, or object storage.

A *location* is a plain path (one machine, or a mount every node shares, e.g. EFS
at ``/mnt/efs``) or a URI (``s3://bucket/prefix``, ``gs://bucket/prefix``). Ray Train
and Tune take it as their ``storage_path`` and resolve it the way this module does,
with ``pyarrow.fs.FileSystem.from_uri``: credentials and endpoint come from the
environment of each process (``AWS_*``, an instance profile, ``AWS_ENDPOINT_URL`` for
S3-compatible stores), so every node resolves the same URI to the same bucket.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tumorbench.errors import TumorbenchError

ENV = "TUMORBENCH_STORAGE"
# Object-storage settings that Ray's worker processes need as much as the driver (see worker_env).
_ENDPOINT_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_EC2_METADATA_DISABLED",
)
_KEY_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# pyarrow's type names -> URI schemes (its GCS filesystem is called "gcs", its URIs "gs://").
_SCHEMES = {"s3": "s3", "gcs": "gs"}


class StorageError(TumorbenchError, ValueError):
    """A storage location that cannot be used."""


def worker_env() -> dict[str, str]:
    """This process's S3 endpoint and region settings, for the Ray job's workers (its runtime env).

    Trials, Train controllers and workers resolve the storage URI themselves, so an endpoint set
    only in the driver's shell (MinIO, a local test server) must reach them. Keys go along only
    with a custom endpoint (such stores have no instance profile); on AWS, nodes use their
    instance profiles and no key is copied into Ray (whose dashboard shows a job's runtime env).
    """
    env = {k: os.environ[k] for k in _ENDPOINT_ENV if os.environ.get(k)}
    if "AWS_ENDPOINT_URL" in env or "AWS_ENDPOINT_URL_S3" in env:
        env |= {k: os.environ[k] for k in _KEY_ENV if os.environ.get(k)}
    return env


def is_remote(location: str | os.PathLike) -> bool:
    """True for a URI (``scheme://...``) other than ``file://``."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def normalize(location: str | os.PathLike) -> str:
    """A URI as given (without a trailing slash), or an absolute local path."""
    text = str(location)
    if is_remote(text):
        return text.rstrip("/")
    return os.path.abspath(os.path.expanduser(text.removeprefix("file://")))


def choose(given: str | None, default: str | os.PathLike) -> str:
    """``given``, else ``$TUMORBENCH_STORAGE``, else ``default`` (normalized)."""
    return normalize(given or os.environ.get(ENV) or default)


def join(location: str | os.PathLike, *parts: str) -> str:
    """``location/part/...`` for paths and URIs alike."""
    location = normalize(location)
    if is_remote(location):
        return "/".join([location, *(p.strip("/") for p in parts)])
    return os.path.join(location, *parts)


def resolve(location: str | os.PathLike):
    """(pyarrow filesystem, path inside it) of a location.

    Raises:
        StorageError: pyarrow cannot open the URI (unknown scheme, bad bucket name).
    """
    import pyarrow.fs

    location = normalize(location)
    if not is_remote(location):
        return pyarrow.fs.LocalFileSystem(), location
    try:
        return pyarrow.fs.FileSystem.from_uri(location)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, OSError) as exc:
        raise StorageError(f"storage {location}: {exc}") from exc


def uri_of(filesystem, path: str) -> str:
    """The location of ``path`` on ``filesystem`` (what a Ray ``Checkpoint`` holds) as a path or URI."""
    import pyarrow.fs

    if isinstance(filesystem, pyarrow.fs.LocalFileSystem):
        return path
    scheme = _SCHEMES.get(filesystem.type_name)
    if scheme is None:
        raise StorageError(f"no URI scheme for a {filesystem.type_name!r} filesystem ({path})")
    return f"{scheme}://{path}"


def exists(location: str | os.PathLike) -> bool:
    import pyarrow.fs

    filesystem, path = resolve(location)
    return filesystem.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def read_bytes(location: str | os.PathLike) -> bytes:
    filesystem, path = resolve(location)
    with filesystem.open_input_stream(path) as stream:
        return stream.read()


def read_text(location: str | os.PathLike) -> str:
    return read_bytes(location).decode()


def write_bytes(location: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` as the file at ``location`` (its folder made); a local file is replaced atomically."""
    filesystem, path = resolve(location)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    if is_remote(location):  # an object appears whole when its upload completes
        with filesystem.open_output_stream(path) as stream:
            stream.write(data)
        return
    scratch = Path(f"{path}.{os.getpid()}.part")
    scratch.write_bytes(data)
    scratch.replace(path)


def write_text(location: str | os.PathLike, text: str) -> None:
    write_bytes(location, text.encode())


def listing(location: str | os.PathLike) -> list[str]:
    """Every file below ``location``, relative to it, sorted."""
    import pyarrow.fs

    filesystem, path = resolve(location)
    infos = filesystem.get_file_info(pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted(info.path[len(path) :].lstrip("/") for info in infos if info.type == pyarrow.fs.FileType.File)


def upload(local: str | os.PathLike, location: str | os.PathLike) -> None:
    """Copy a local file or folder to ``location`` (nothing to do when it already is that folder)."""
    import pyarrow.fs

    local, target = Path(local).resolve(), normalize(location)
    if not is_remote(target) and Path(target).resolve() == local:
        return
    filesystem, path = resolve(target)
    if local.is_dir():
        filesystem.create_dir(path, recursive=True)
    else:
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pyarrow.fs.copy_files(
        str(local), path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=filesystem
    )


def download(location: str | os.PathLike, local: str | os.PathLike, *, skip: tuple[str, ...] = ()) -> Path:
    """Copy the folder at ``location`` into the local folder ``local`` (replaced), leaving out names in ``skip``."""
    local = Path(local)
    if local.exists():
        shutil.rmtree(local)
    if not is_remote(location):
        shutil.copytree(normalize(location), local, ignore=shutil.ignore_patterns(*skip))
        return local
    filesystem, path = resolve(location)
    for name in listing(location):
        if Path(name).name in skip:
            continue
        target = local / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with filesystem.open_input_stream(f"{path}/{name}") as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink)
    return local


@contextmanager
def local_folder(location: str | os.PathLike) -> Iterator[Path]:
    """The folder at ``location`` as a local path: itself, or a temporary download."""
    if not is_remote(location):
        yield Path(normalize(location))
        return
    with tempfile.TemporaryDirectory(prefix="tumorbench-") as scratch:
        yield download(location, Path(scratch) / "copy")


def _sees(path: str, token: str) -> bool:
    marker = Path(path)
    return marker.is_file() and marker.read_text() == token


def check_reachable(location: str | os.PathLike, *, timeout_s: float = 120.0) -> None:
    """On a cluster of several nodes, a local ``location`` must be one folder that every node sees.

    A marker file written here is looked for by a zero-CPU task pinned to each alive node.
    Object storage is not checked (each node resolves the URI itself).

    Raises:
        StorageError: Some node does not see the folder (it is this machine's own disk).
    """
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node for node in ray.nodes() if node["Alive"]]
    if is_remote(location) or len(nodes) < 2:
        return
    folder = Path(normalize(location))
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    marker = folder / f".tumorbench-shared-{token[:12]}"
    marker.write_text(token)
    probe = ray.remote(num_cpus=0)(_sees)
    try:
        seen = ray.get(
            [
                probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
                    str(marker), token
                )
                for node in nodes
            ],
            timeout=timeout_s,
        )
    finally:
        marker.unlink(missing_ok=True)
    blind = [node["NodeManagerAddress"] for node, ok in zip(nodes, seen) if not ok]
    if blind:
        raise StorageError(
            f"storage {folder} is a folder on this machine that {len(blind)} of the cluster's {len(nodes)} nodes "
            f"cannot see ({', '.join(blind)}): their checkpoints would be lost. Pass --storage s3://<bucket>/<prefix> "
            f"(or gs://...), or a folder on a mount every node shares (e.g. EFS at /mnt/efs), or set {ENV}"
        )
