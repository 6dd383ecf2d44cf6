"""The training configuration: one dataclass shared by the widget, the CLI and the sidecar.

With :mod:`napari_sandseg.choices` (the lists of valid values and the defaults) this is the
configuration layer: it imports nothing of the package above it, so everything can read it.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .choices import (
    AUTO,
    AUTO_CROP,
    BF16_CPU_FLAGS,
    DEFAULT_BACKBONE,
    DEFAULT_PRECISION,
    ENCODER_WEIGHTS,
    LOSSES,
    LR_SCHEDULES,
    MONITORS,
    PRECISIONS,
    SIZE_MULTIPLE,
    STRATEGIES,
    SUPPORTED_BACKBONES,
    auto_precision,
    check_choice,
    native_bf16,
    resolve_precision,
)
from .errors import ConfigError

# The lists and "auto" decisions live in choices; callers have long read these from here.
__all__ = [
    "AUTO", "AUTO_CROP", "BF16_CPU_FLAGS", "DEFAULT_PRESET", "LR_SCHEDULES", "MONITORS", "PRECISIONS", "PRESETS",
    "TrainConfig", "auto_precision", "native_bf16", "split_advice", "split_counts",
]

#: Named recipes as overrides of the defaults. "classic" is the reference recipe; a
#: benchmark-chosen recipe can be added here (and made the default) without touching callers.
PRESETS: dict[str, dict[str, Any]] = {
    "classic": {},
    # The benchmark winner (benchmarks/README.md: mean IoU 0.928 vs 0.886 on the real slices):
    # random 128x128 crops (384 per epoch) of slices bigger than that, D4 augmentation,
    # cross-entropy + Dice, one warm-up epoch then cosine decay, the best epoch by validation
    # mean IoU, bfloat16 where the CPU has it. Patience is longer than classic's because the
    # decaying rate keeps improving late.
    "project": {
        "augment": True, "loss": "ce_dice", "lr_schedule": "cosine", "warmup_epochs": 1, "patience": 10,
        "monitor": "val_mean_iou", "precision": AUTO, "crop_size": AUTO, "crops_per_epoch": 384,
    },
}

#: The recipe the CLI and the Train widget start from.
DEFAULT_PRESET = "project"


@dataclass
class TrainConfig:
    """Settings of one training run; the defaults are the reference ("classic") recipe.

    Attributes
    ----------
    backbone : str
        Unet encoder (see :data:`napari_sandseg.choices.SUPPORTED_BACKBONES`).
    epochs : int
        Maximum number of epochs.
    batch_size : int
        Slices (or crops) per batch.
    learning_rate : float
        Adam learning rate.
    optimizer : str
        Only ``"adam"`` for now (kept explicit so the sidecar says what was used).
    loss : {"ce", "ce_dice"}
        Masked cross-entropy, or cross-entropy plus soft Dice.
    patience : int
        Early stopping: epochs without improvement of ``monitor`` before stopping (0 = never).
    val_fraction : float
        Fraction of annotated slices used for validation, in (0, 1).
    test_fraction : float
        Fraction held out for the final test (never trained on), in [0, 1).
    seed : int
        Seed of the split, shuffling, crops, augmentation and weight initialisation.
    augment : bool
        Random flips and 90-degree rotations.
    sparse : bool
        Targets follow the napari Labels convention (0 = unpainted, k = class k-1) and only
        painted pixels are trained on.
    encoder_weights : {None, "imagenet"}
        Start the encoder from ImageNet weights (must be in the Keras cache).
    crop_size : int, "auto" or None
        Train on random square crops of this size (multiple of 32); None = whole slices.
        ``"auto"`` is decided against the slices when training starts
        (:meth:`resolve_crop`): 128 when they are larger than 128 in both dimensions, else
        whole slices. A number is always used as given.
    crops_per_epoch : int or None
        With crops: random crops drawn from the training slices per epoch (the slices are
        listed repeatedly, each listing cut at its own random place). None = one crop per
        training slice. Needs ``crop_size``; unused when ``"auto"`` decides on whole slices.
        Volumes trained from on-the-fly patches use ``patches_per_epoch`` instead.
    lr_schedule : {"constant", "cosine", "plateau"}
        Learning-rate schedule.
    warmup_epochs : int
        Raise the learning rate linearly from ``learning_rate / 10`` to ``learning_rate`` over
        the first this many epochs, then follow ``lr_schedule`` (cosine decays to 0 over the
        remaining epochs). 0 = no warm-up. Not with ``"plateau"``, which sets the rate itself.
    monitor : {"val_loss", "val_mean_iou"}
        Validation figure that picks the best epoch (the weights kept and checkpointed) and
        drives early stopping and ``"plateau"``: the loss (lower is better) or the mean IoU
        over the classes, from one confusion matrix of all annotated validation pixels
        (higher is better).
    precision : {"float32", "mixed_bfloat16", "auto"}
        Numeric precision of training. ``"mixed_bfloat16"`` computes in bfloat16 with float32
        weights and softmax output (1.3-1.8x faster on CPUs with AVX512_BF16); ``"auto"``
        picks it when the CPU has native bfloat16 and no GPU is used, else float32
        (:meth:`resolve_precision`). The saved model and ``TrainResult.model`` always compute
        in float32, so they predict the same on any machine.
    jit_compile : bool
        Compile the training step with XLA.
    run_eagerly : bool
        Run the training step op by op instead of as a traced graph: slower per step, but no
        graph-tracing start-up (~15 s on CPU), so quicker for a handful of steps (debugging,
        tiny sparse annotations, tests).
    strategy : {"auto", "default", "mirrored", "multiworker"}
        How training is distributed (see :mod:`napari_sandseg.distribute`): ``"auto"`` uses
        every GPU when there are several and the ``TF_CONFIG`` cluster when one is set.
        ``batch_size`` is the global batch, shared by all replicas.
    patches_per_epoch : int or None
        For volumes trained from on-the-fly patches (:mod:`napari_sandseg.patches`): patches
        drawn per epoch; None = as many as cover the training slices once.
    """

    backbone: str = DEFAULT_BACKBONE
    epochs: int = 50
    batch_size: int = 16
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    loss: str = "ce"
    patience: int = 5
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    augment: bool = False
    sparse: bool = False
    encoder_weights: str | None = None
    crop_size: int | str | None = None
    lr_schedule: str = "constant"
    jit_compile: bool = False
    run_eagerly: bool = False
    strategy: str = "auto"
    patches_per_epoch: int | None = None
    warmup_epochs: int = 0
    monitor: str = "val_loss"
    precision: str = DEFAULT_PRECISION
    crops_per_epoch: int | None = None

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "TrainConfig":
        """Config of a named recipe in :data:`PRESETS`, with ``overrides`` applied."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def default(cls, **overrides: Any) -> "TrainConfig":
        """The recipe the CLI and the Train widget start from (:data:`DEFAULT_PRESET`)."""
        return cls.preset(DEFAULT_PRESET, **overrides)

    @classmethod
    def classic(cls, **overrides: Any) -> "TrainConfig":
        """The reference recipe: resnet34, Adam 1e-3, cross-entropy, 50 epochs, batch 16."""
        return cls.preset("classic", **overrides)

    def replace(self, **changes: Any) -> "TrainConfig":
        """Copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the model sidecar)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], strict: bool = True) -> "TrainConfig":
        """Inverse of :meth:`to_dict`.

        Parameters
        ----------
        data : dict
            Field values; missing fields take their defaults.
        strict : bool
            Raise :class:`ConfigError` on unknown keys (user input); ``False`` ignores them
            (a sidecar written by a newer version).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown and strict:
            raise ConfigError(f"unknown training setting(s) {unknown}; valid are {sorted(known)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def validate(self, n_slices: int | None = None, slice_shape: tuple[int, int] | None = None) -> "TrainConfig":
        """Check every setting; with ``n_slices``/``slice_shape`` also the split and crop.

        Parameters
        ----------
        n_slices : int, optional
            Number of annotated slices that will be split into train/val/test.
        slice_shape : (int, int), optional
            ``(Y, X)`` of the slices, to check ``crop_size`` against.

        Returns
        -------
        TrainConfig
            ``self``, so calls can be chained.

        Raises
        ------
        ConfigError
            Naming the setting, its value and the valid range.
        """
        check_choice("backbone", self.backbone, SUPPORTED_BACKBONES)
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("patience", self.patience, 0)
        _check_int("seed", self.seed, 0)
        if not _is_number(self.learning_rate) or not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if self.optimizer != "adam":
            raise ConfigError(f"optimizer={self.optimizer!r} is not supported; use 'adam'")
        check_choice("loss", self.loss, LOSSES)
        if not _is_number(self.val_fraction) or not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if not _is_number(self.test_fraction) or not 0 <= self.test_fraction < 1:
            raise ConfigError(f"test_fraction must be in [0, 1), got {self.test_fraction!r}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(
                f"val_fraction + test_fraction must be below 1 to leave slices for training, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        check_choice("encoder_weights", self.encoder_weights, ENCODER_WEIGHTS)
        if self.crop_size is not None and self.crop_size != AUTO:
            if isinstance(self.crop_size, str):
                raise ConfigError(f"crop_size must be an integer, 'auto' or None, got {self.crop_size!r}")
            _check_int("crop_size", self.crop_size, SIZE_MULTIPLE)
            if self.crop_size % SIZE_MULTIPLE:
                lower = max(SIZE_MULTIPLE, self.crop_size // SIZE_MULTIPLE * SIZE_MULTIPLE)
                raise ConfigError(
                    f"crop_size must be a multiple of {SIZE_MULTIPLE} (the Unet halves the size 5 "
                    f"times), got {self.crop_size}; try {lower} or {lower + SIZE_MULTIPLE}"
                )
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("strategy", self.strategy, STRATEGIES)
        if self.patches_per_epoch is not None:
            _check_int("patches_per_epoch", self.patches_per_epoch, 1)
        self._validate_recipe()
        for name in ("augment", "sparse", "jit_compile", "run_eagerly"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if n_slices is not None:
            n_train, n_val, _ = split_counts(n_slices, self.val_fraction, self.test_fraction)
            if n_train < 1 or n_val < 1:
                raise ConfigError(split_advice(n_slices, self.val_fraction, self.test_fraction))
        if slice_shape is not None and isinstance(self.crop_size, numbers.Integral) and self.crop_size > min(slice_shape):
            raise ConfigError(
                f"crop_size={self.crop_size} is larger than the slices ({slice_shape[0]} x "
                f"{slice_shape[1]}); use None (whole slices) or at most {min(slice_shape) // 32 * 32}"
            )
        return self

    def _validate_recipe(self) -> None:
        """Check warm-up, monitor, precision and crops per epoch (see :meth:`validate`)."""
        _check_int("warmup_epochs", self.warmup_epochs, 0)
        if self.warmup_epochs > 0 and self.lr_schedule == "plateau":
            raise ConfigError(
                f"warmup_epochs={self.warmup_epochs} cannot be combined with lr_schedule='plateau' (which sets "
                "the learning rate itself); use lr_schedule 'constant' or 'cosine', or warmup_epochs=0"
            )
        check_choice("monitor", self.monitor, MONITORS)
        check_choice("precision", self.precision, PRECISIONS)
        if self.crops_per_epoch is not None:
            _check_int("crops_per_epoch", self.crops_per_epoch, 1)
            if self.crop_size is None:
                raise ConfigError(
                    f"crops_per_epoch={self.crops_per_epoch} needs random crops, but crop_size is None (whole "
                    "slices, each used once per epoch); set crop_size (a number or 'auto') or crops_per_epoch=None"
                )

    def resolve_crop(self, slice_shape: tuple[int, int]) -> "TrainConfig":
        """Copy with ``crop_size="auto"`` decided for slices of ``slice_shape``.

        ``"auto"`` becomes :data:`AUTO_CROP` (128) when the slices are larger than that in both
        dimensions; smaller slices are trained whole (``crop_size=None``) and then
        ``crops_per_epoch`` does not apply (set to None). A numeric or None ``crop_size`` is
        returned unchanged.

        Parameters
        ----------
        slice_shape : (int, int)
            ``(Y, X)`` of the training slices.
        """
        if self.crop_size != AUTO:
            return self
        if min(slice_shape) > AUTO_CROP:
            return self.replace(crop_size=AUTO_CROP)
        return self.replace(crop_size=None, crops_per_epoch=None)

    def resolve_precision(self, gpu: bool) -> "TrainConfig":
        """Copy with ``precision="auto"`` decided for this machine.

        Parameters
        ----------
        gpu : bool
            Whether training runs on a GPU. ``"auto"`` becomes ``"mixed_bfloat16"`` on a CPU
            with native bfloat16 (:func:`native_bf16`) and no GPU, else ``"float32"``.
        """
        if self.precision != AUTO:
            return self
        return self.replace(precision=resolve_precision(self.precision, lambda: gpu))


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Number of (train, val, test) slices for ``n`` slices; parts may be empty."""
    n_test = int(round(n * test_fraction)) if test_fraction > 0 else 0
    if test_fraction > 0 and n_test == 0 and n >= 3:
        n_test = 1  # a requested test part is never silently dropped
    n_val = max(1, int(round(n * val_fraction))) if n > 0 else 0
    n_train = n - n_val - n_test
    return n_train, n_val, n_test


def split_advice(n: int, val_fraction: float, test_fraction: float) -> str:
    """Message explaining why a split of ``n`` slices fails and what would work."""
    n_train, n_val, n_test = split_counts(n, val_fraction, test_fraction)
    msg = (
        f"cannot split {n} annotated slice(s) with val_fraction={val_fraction} and "
        f"test_fraction={test_fraction}: that leaves {n_train} for training, {n_val} for "
        f"validation and {n_test} for testing; training and validation each need at least one"
    )
    if n >= 3:
        msg += (
            f". With {n} slices, val_fraction={1 / n:.2f} and test_fraction={1 / n:.2f} "
            "(or test_fraction=0) would work"
        )
    elif n == 2:
        msg += ". With 2 slices use val_fraction=0.5 and test_fraction=0"
    else:
        msg += ". Annotate at least 2 slices (one to train on, one to validate)"
    return msg


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
