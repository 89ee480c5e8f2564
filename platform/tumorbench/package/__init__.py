"""The model package: a folder with ``model.json`` (the manifest) and ``model.pt`` (the weights).

Training writes packages, inference and Serve read them. This module and
:mod:`~tumorbench.package.locate` never import torch; :mod:`~tumorbench.package.weights`
(``save_package``, ``load_model``) does.
"""

from __future__ import annotations

from tumorbench.package.locate import best_checkpoint, checkpoints, find_packages
from tumorbench.package.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    READABLE_VERSIONS,
    WEIGHTS,
    ModelManifest,
    PackageError,
    is_package,
    package_versions,
    read_manifest,
    write_manifest,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "READABLE_VERSIONS",
    "WEIGHTS",
    "ModelManifest",
    "PackageError",
    "best_checkpoint",
    "checkpoints",
    "find_packages",
    "is_package",
    "package_versions",
    "read_manifest",
    "write_manifest",
]
