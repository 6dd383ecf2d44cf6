"""The ``sandseg`` command line equivalent to what a widget did, built from typed values.

Every widget shows the command that repeats its run (the Command box). They are all built by
:func:`command_line`, from the settings the run used; the helpers below say which settings of
each job become which option. ``tests/test_command_lines.py`` parses each one with the CLI's
own parser (:func:`napari_sandseg.cli.build_parser`) and checks it gets the settings back.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence, Union

from .choices import AUTO, PREDICT_BATCH_SIZE
from .units import format_voxel_size

if TYPE_CHECKING:
    from .config import TrainConfig
    from .model_package import PackageMetadata
    from .units import VoxelSize

#: The command's name on the shell.
PROGRAM = "sandseg"

#: What an option may be given as (see :func:`command_line`).
Option = Union[str, "os.PathLike[str]", int, float, bool, Sequence[str], None]


def command_line(command: str, **options: Option) -> list[str]:
    """``[PROGRAM, command, "--option", "value", ...]``, the options in the order given.

    Parameters
    ----------
    command : str
        The sub-command (``"train"``, ``"predict"``, ``"export-model"`` ...).
    **options
        Each keyword is an option, as the parser's attribute spells it (``batch_size`` ->
        ``--batch-size``, ``no_test`` -> ``--no-test``). None leaves the option out (the CLI's
        default applies); True gives the bare flag, False leaves it out; a list or tuple repeats
        the option once per item; anything else is the option's value as text (a float as
        ``repr`` writes it, so it parses back to the same number).

    Returns
    -------
    list of str
        The words of the command line (``_widgets._common.format_command`` quotes them).
    """
    words = [PROGRAM, command]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                words += [flag, str(item)]
        else:
            words += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    return words


def voxel_size_text(voxel_size: VoxelSize | None) -> str | None:
    """``--voxel-size``'s value for ``voxel_size``; None (left out) when it is unknown or in pixels."""
    if voxel_size is None or voxel_size[1] == "px":
        return None
    return format_voxel_size(voxel_size)


def train_command(config: TrainConfig, images: os.PathLike, masks: os.PathLike, out: os.PathLike,
                  init_model: os.PathLike | None = None, voxel_size: VoxelSize | None = None) -> list[str]:
    """The ``sandseg train`` command that repeats a run of the Train widget (or a fine-tune).

    Every recipe setting the widget sets is spelled out, so the command trains the same
    whatever the CLI's preset; ``voxel_size`` (the images', recorded in the sidecar) when it is
    physical.
    """
    return command_line(
        "train", images=images, masks=masks, out=out, backbone=config.backbone, epochs=config.epochs,
        batch_size=config.batch_size, patience=config.patience, learning_rate=config.learning_rate,
        val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed,
        augment=config.augment, no_augment=not config.augment, warmup_epochs=config.warmup_epochs,
        monitor=config.monitor, precision=config.precision,
        crops_per_epoch="none" if config.crops_per_epoch is None else config.crops_per_epoch,
        sparse=config.sparse, init_model=init_model, voxel_size=voxel_size_text(voxel_size),
    )


def predict_command(model: os.PathLike, images: os.PathLike, out: os.PathLike,
                    probabilities: os.PathLike | None = None, uncertainty: os.PathLike | None = None, *,
                    batch_size: int = PREDICT_BATCH_SIZE, precision: str = AUTO,
                    voxel_size: VoxelSize | None = None, overwrite: bool = False) -> list[str]:
    """The ``sandseg predict`` command of a segmentation; the CLI's defaults are left out.

    ``voxel_size`` (the one the outputs keep) is spelled out when it is physical, so the
    command writes the same spacing whatever the image file carries.
    """
    return command_line(
        "predict", model=model, images=images, out=out, probabilities=probabilities, uncertainty=uncertainty,
        batch_size=None if batch_size == PREDICT_BATCH_SIZE else batch_size,
        precision=None if precision == AUTO else precision, voxel_size=voxel_size_text(voxel_size),
        overwrite=overwrite,
    )


def evaluate_command(truth: os.PathLike, pred: os.PathLike, voxel_size: VoxelSize | None = None,
                     json: os.PathLike | None = None) -> list[str]:
    """The ``sandseg evaluate`` command that gives the same figures (in ``voxel_size`` when physical)."""
    return command_line("evaluate", truth=truth, pred=pred, voxel_size=voxel_size_text(voxel_size), json=json)


def analyze_command(labels: os.PathLike, truth: os.PathLike | None, voxel_size: VoxelSize | None,
                    pore_class: int | str, pore_sizes: bool = True) -> list[str]:
    """The ``sandseg analyze`` command that measures the same (``pore_sizes=False``: without them)."""
    return command_line("analyze", labels=labels, truth=truth, voxel_size=voxel_size_text(voxel_size),
                        pore_class=pore_class, no_pore_sizes=not pore_sizes)


def export_command(model: os.PathLike, out: os.PathLike, metadata: PackageMetadata,
                   images: os.PathLike | None = None, test: bool = True) -> list[str]:
    """The ``sandseg export-model`` command of an export (also what the Export button runs).

    ``--overwrite`` always: the save dialog asked before replacing a package.
    """
    return command_line(
        "export-model", model=model, out=out, images=images, name=metadata.name or None,
        author=tuple(metadata.authors), license=metadata.license,
        voxel_size=voxel_size_text(metadata.voxel_size), no_test=not test, overwrite=True,
    )
