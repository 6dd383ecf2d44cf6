"""Every choice a user can make, every default, and the "auto" decisions: the bottom layer.

The engine, the command line and the widgets all read their lists of valid values and their
defaults from here (``argparse`` choices, combo boxes, :meth:`TrainConfig.validate`), so a new
backbone, precision or strategy is added in one place. This module imports nothing of the
package but :mod:`napari_sandseg.errors`; everything else sits above it.

Values are checked once, where they enter (the CLI's parser, a widget's combo box,
:meth:`napari_sandseg.config.TrainConfig.validate`, the public engine functions), with
:func:`check_choice`: one wording for every "not one of these" message.
"""

from __future__ import annotations

from typing import Any, Callable, Collection

from .errors import ConfigError

#: ``crop_size`` / ``precision`` / ``strategy`` value meaning "decide on this machine, for this data".
AUTO = "auto"

#: Unet encoders that build, train, save and reload in Keras safe mode with segmentation-models
#: 1.0.1 on Keras 3 (checked one by one; the se-resnets/resnexts use Lambda layers and the
#: densenets use layer names Keras 3 refuses, so they are left out).
SUPPORTED_BACKBONES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "efficientnetb0",
    "efficientnetb1",
    "efficientnetb2",
    "efficientnetb3",
    "mobilenetv2",
)

#: The encoder of a new model unless the user picks another.
DEFAULT_BACKBONE = "resnet34"

#: Where an encoder's first weights come from: random, or ImageNet (from the Keras cache).
ENCODER_WEIGHTS = (None, "imagenet")

#: Numeric precisions a model can be built or copied in (Keras dtype policy names).
MODEL_PRECISIONS = ("float32", "mixed_bfloat16")

#: Precisions of training and prediction: a model's, or "auto" (:func:`auto_precision`).
PRECISIONS = (*MODEL_PRECISIONS, AUTO)

#: What the engine's functions compute in unless told otherwise: exact, and the same on every
#: machine. The command line, the widgets and the "project" recipe ask for :data:`AUTO`.
DEFAULT_PRECISION = "float32"

#: CPU flags of native bfloat16 dot products (Intel/AMD AVX512_BF16, Intel AMX).
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

#: Training losses (:func:`napari_sandseg.losses.get_loss`): masked cross-entropy, or plus soft Dice.
LOSSES = ("ce", "ce_dice")

#: Learning-rate schedules: constant, cosine decay to 0 over all steps, halve on plateau.
LR_SCHEDULES = ("constant", "cosine", "plateau")

#: Validation figures that can pick the best epoch and drive early stopping.
MONITORS = ("val_loss", "val_mean_iou")

#: How training is distributed (:func:`napari_sandseg.distribute.select_strategy`).
STRATEGIES = (AUTO, "default", "mirrored", "multiworker")

#: Unet encoders downsample 5 times; slice, crop and tile sizes are multiples of this.
SIZE_MULTIPLE = 32

#: Crop size ``crop_size="auto"`` picks on slices larger than it in both dimensions.
AUTO_CROP = 128

#: Slices per model call when predicting (``sandseg predict --batch-size``, the Segment widget).
PREDICT_BATCH_SIZE = 8

#: Largest tile side (pixels, a multiple of 32) sent to the model: 1024 x 1024 is
#: :data:`napari_sandseg.predict.MAX_PIXELS_PER_CALL`, so a tile costs what one capped model
#: call costs (about 0.5 GB of activations for a resnet34 Unet) however big the slice.
DEFAULT_TILE_SIZE = 1024

#: Pixels discarded at each inner tile border. Measured (``python benchmarks/memory.py --tiles``,
#: ``benchmarks/results/tiles.json``; 1024 x 1024 slices, 512-pixel tiles): abutting tiles of the
#: trained resnet34 Unet of ``benchmarks/accuracy.py`` on real sandstone change 2.4 % of the
#: labels within 8 px of a tile edge, 0.05 % at 32-64 px, 0.006 % at 96-128 px and none beyond
#: 128 px (probabilities within 5e-3, and 2e-6 beyond 192 px). With a 128 px halo the tiled
#: labels differ from the whole-slice ones on 6e-6 of the pixels (8e-6 with 192 px), with 96 px
#: on 2e-5, with 64 px on 7e-5. An untrained resnet34 reaches further (flips up to 384 px) but
#: random weights are no guide; the tiny test model needs 4 px. 128 px costs 1.56x the
#: whole-slice arithmetic on a 4096 x 4096 slice (25 tiles of 1024), against 1.47x for 96 px.
DEFAULT_TILE_HALO = 128


def min_tile_size(halo: int = DEFAULT_TILE_HALO) -> int:
    """Smallest tile that still advances past a ``halo`` on both sides (288 for the default)."""
    return 2 * halo + SIZE_MULTIPLE


def check_choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise the one "not supported" message.

    Parameters
    ----------
    name : str
        The setting, as the user wrote it (``"backbone"``, ``"precision"`` ...).
    value
        What was given.
    choices : collection
        The valid values (one of this module's lists).

    Raises
    ------
    ConfigError
        ``"<name>=<value> is not supported; choose one of [...]"``.
    """
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not supported; choose one of {list(choices)}")
    return value


def auto_precision(gpu: Callable[[], bool]) -> str:
    """What ``precision="auto"`` means on this machine, for training and prediction alike.

    bfloat16 only where it was measured to pay: a CPU that computes it natively, with no GPU.
    On a GPU "auto" is float32: the saved models are float32, and neither bfloat16 nor
    float16 (which would also need loss scaling) has been measured on a GPU here. Before
    issue 13 the engine process set Keras' global policy to ``mixed_float16`` on a GPU; the
    layers were built under an explicit float32 policy all the same, so only the optimizer
    differed (a loss-scale wrapper the command line never had).

    Parameters
    ----------
    gpu : callable
        Says whether the work runs on a GPU; asked only on a CPU with native bfloat16
        (:func:`native_bf16`), since answering may need TensorFlow.

    Returns
    -------
    str
        ``"mixed_bfloat16"`` on a native-bfloat16 CPU without a GPU, else ``"float32"``.
    """
    return "mixed_bfloat16" if native_bf16() and not gpu() else "float32"


def resolve_precision(precision: str, gpu: Callable[[], bool]) -> str:
    """``precision`` checked, with ``"auto"`` decided (:func:`auto_precision`).

    The one resolution of a precision: training (:meth:`napari_sandseg.config.TrainConfig.resolve_precision`)
    and prediction (:func:`napari_sandseg.predict.resolve_predict_precision`), from the command
    line or the engine process, all end here.

    Parameters
    ----------
    precision : {"float32", "mixed_bfloat16", "auto"}
        The choice (one of :data:`PRECISIONS`).
    gpu : callable
        As in :func:`auto_precision`.

    Returns
    -------
    str
        One of :data:`MODEL_PRECISIONS`.

    Raises
    ------
    ConfigError
        For a precision not in :data:`PRECISIONS`.
    """
    check_choice("precision", precision, PRECISIONS)
    return auto_precision(gpu) if precision == AUTO else precision


def native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bfloat16 dot products natively (AVX512_BF16 or AMX_BF16).

    Reads the flags of ``cpuinfo`` (Linux); False where that file does not exist.
    """
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return bool(BF16_CPU_FLAGS & set(line.split(":", 1)[-1].split()))
    except FileNotFoundError:  # not Linux: no cheap way to ask, keep float32
        return False
    return False
