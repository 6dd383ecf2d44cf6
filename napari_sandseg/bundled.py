"""Where the bundled synthetic sample lives, with a generated fallback.

The repository ships a small stack in ``sample_data/``. An install that does not carry that
folder (a wheel) gets the same stack generated on first use into a cache folder.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Shape and seed of the bundled stack (sample_data/README.md says the same).
BUNDLED_SHAPE = (64, 128, 128)
BUNDLED_SEED = 0
IMAGE_NAME = "sandstone_synthetic_images.tif"
MASK_NAME = "sandstone_synthetic_masks.tif"


def repo_sample_dir() -> Path:
    """``sample_data/`` beside the package in a source checkout (may not exist)."""
    return Path(__file__).resolve().parent.parent / "sample_data"


def cache_dir() -> Path:
    """Per-user cache folder (``$SANDSEG_CACHE`` or ``~/.cache/napari-sandseg``)."""
    return Path(os.environ.get("SANDSEG_CACHE", Path.home() / ".cache" / "napari-sandseg"))


def bundled_sample_paths() -> tuple[Path, Path]:
    """Paths of the bundled sample's image and mask stacks, generating them if absent.

    Returns
    -------
    tuple of Path
        ``(images, masks)`` TIFF stacks of shape :data:`BUNDLED_SHAPE`.
    """
    repo = repo_sample_dir()
    if (repo / IMAGE_NAME).is_file() and (repo / MASK_NAME).is_file():
        return repo / IMAGE_NAME, repo / MASK_NAME
    target = cache_dir() / "sample"
    images, masks = target / IMAGE_NAME, target / MASK_NAME
    if not (images.is_file() and masks.is_file()):
        from .io import write_volume
        from .sample import make_sandstone

        target.mkdir(parents=True, exist_ok=True)
        image, labels = make_sandstone(BUNDLED_SHAPE, seed=BUNDLED_SEED)
        write_volume(images, image, overwrite=True)
        write_volume(masks, labels, overwrite=True)
    return images, masks
