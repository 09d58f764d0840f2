"""Image classification folders laid out as ``root/<class>/<image>`` (torchvision ImageFolder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeloom.data.pair import TensorPair

IMAGE_SIZE = 32
EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp"})


def scan_imagefolder(path: str | Path) -> tuple[list[str], list[Path], np.ndarray]:
    """List classes (sorted sub-folder names) and their image files.

    Parameters
    ----------
    path : str or Path
        Root folder; every non-hidden sub-folder is a class, labelled by its sorted position.

    Returns
    -------
    classes : list of str
        Class names; label ``i`` is ``classes[i]``.
    files : list of Path
        Image files (by extension, case-insensitive), sorted within each class.
    labels : np.ndarray
        int64 label of each file.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a folder, has fewer than two classes, or a class has no image.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise FileNotFoundError(f"{root} needs at least two class sub-folders, found {classes}")
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        images = sorted(
            f
            for f in (root / name).iterdir()
            if f.is_file() and f.suffix.lower() in EXTENSIONS and not f.name.startswith(".")
        )
        if not images:
            raise FileNotFoundError(f"class folder {root / name} holds no images")
        files.extend(images)
        labels.extend([label] * len(images))
    return classes, files, np.asarray(labels, dtype=np.int64)


def load_images(files: list[Path], labels: np.ndarray) -> TensorPair:
    """Decode images with Pillow as RGB, resized to 32x32, scaled to [0, 1].

    Raises
    ------
    ImportError
        If Pillow is not installed.
    """
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError("the imagefolder dataset needs Pillow: pip install pillow") from err
    arrays = []
    for file in files:
        with Image.open(file) as image:
            rgb = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            arrays.append(np.asarray(rgb, dtype=np.uint8))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
    return TensorPair(x.contiguous(), torch.from_numpy(labels))
