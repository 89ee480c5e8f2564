"""Guards on the repository layout that keep imports working."""

from __future__ import annotations

import importlib
import sys

from conftest import REPO_ROOT


def test_platform_folder_is_not_a_package():
    # A platform/__init__.py would shadow the standard library module torch, ray and pytest use.
    assert not (REPO_ROOT / "platform" / "__init__.py").exists()


def test_stdlib_platform_module_is_the_real_one():
    import platform

    assert platform.__file__.startswith(sys.base_prefix) or "lib/python" in platform.__file__
    assert callable(platform.system)


def test_package_imports_from_platform_folder():
    module = importlib.import_module("tumorbench")
    assert (REPO_ROOT / "platform" / "tumorbench").resolve() == __import__("pathlib").Path(
        module.__file__
    ).parent.resolve()
