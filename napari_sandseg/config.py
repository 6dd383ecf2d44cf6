"""The training configuration: one dataclass shared by the widget, the CLI and the sidecar."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .data import SIZE_MULTIPLE, split_advice, split_counts
from .distribute import STRATEGIES
from .errors import ConfigError
from .losses import LOSSES
from .model import SUPPORTED_BACKBONES

#: Learning-rate schedules: constant, cosine decay to 0 over all steps, halve on plateau.
LR_SCHEDULES = ("constant", "cosine", "plateau")

#: Named recipes as overrides of the defaults. "classic" is the reference recipe; a
#: benchmark-chosen recipe can be added here (and made the default) without touching callers.
PRESETS: dict[str, dict[str, Any]] = {
    "classic": {},
    # The part of the benchmark winner (benchmarks/README.md: mean IoU 0.928 vs 0.886 on the
    # real slices) that TrainConfig expresses: D4 augmentation, cross-entropy + Dice, cosine
    # learning-rate decay. Patience is longer because the decaying rate keeps improving late.
    "project": {"augment": True, "loss": "ce_dice", "lr_schedule": "cosine", "patience": 10},
}

#: The recipe the CLI and the Train widget start from.
DEFAULT_PRESET = "project"


@dataclass
class TrainConfig:
    """Settings of one training run; the defaults are the reference ("classic") recipe.

    Attributes
    ----------
    backbone : str
        Unet encoder (see ``model.SUPPORTED_BACKBONES``).
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
        Early stopping: epochs without ``val_loss`` improvement before stopping (0 = never).
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
    crop_size : int or None
        Train on random square crops of this size (multiple of 32); None = whole slices.
    lr_schedule : {"constant", "cosine", "plateau"}
        Learning-rate schedule.
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

    backbone: str = "resnet34"
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
    crop_size: int | None = None
    lr_schedule: str = "constant"
    jit_compile: bool = False
    run_eagerly: bool = False
    strategy: str = "auto"
    patches_per_epoch: int | None = None

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
        if self.backbone not in SUPPORTED_BACKBONES:
            raise ConfigError(f"backbone={self.backbone!r} is not supported; choose one of {list(SUPPORTED_BACKBONES)}")
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("patience", self.patience, 0)
        _check_int("seed", self.seed, 0)
        if not _is_number(self.learning_rate) or not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if self.optimizer != "adam":
            raise ConfigError(f"optimizer={self.optimizer!r} is not supported; use 'adam'")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss={self.loss!r} is not supported; choose one of {list(LOSSES)}")
        if not _is_number(self.val_fraction) or not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if not _is_number(self.test_fraction) or not 0 <= self.test_fraction < 1:
            raise ConfigError(f"test_fraction must be in [0, 1), got {self.test_fraction!r}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(
                f"val_fraction + test_fraction must be below 1 to leave slices for training, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        if self.encoder_weights not in (None, "imagenet"):
            raise ConfigError(f"encoder_weights must be None or 'imagenet', got {self.encoder_weights!r}")
        if self.crop_size is not None:
            _check_int("crop_size", self.crop_size, SIZE_MULTIPLE)
            if self.crop_size % SIZE_MULTIPLE:
                lower = max(SIZE_MULTIPLE, self.crop_size // SIZE_MULTIPLE * SIZE_MULTIPLE)
                raise ConfigError(
                    f"crop_size must be a multiple of {SIZE_MULTIPLE} (the Unet halves the size 5 "
                    f"times), got {self.crop_size}; try {lower} or {lower + SIZE_MULTIPLE}"
                )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule={self.lr_schedule!r} is not supported; choose one of {list(LR_SCHEDULES)}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy={self.strategy!r} is not supported; choose one of {list(STRATEGIES)}")
        if self.patches_per_epoch is not None:
            _check_int("patches_per_epoch", self.patches_per_epoch, 1)
        for name in ("augment", "sparse", "jit_compile", "run_eagerly"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if n_slices is not None:
            n_train, n_val, _ = split_counts(n_slices, self.val_fraction, self.test_fraction)
            if n_train < 1 or n_val < 1:
                raise ConfigError(split_advice(n_slices, self.val_fraction, self.test_fraction))
        if slice_shape is not None and self.crop_size is not None and self.crop_size > min(slice_shape):
            raise ConfigError(
                f"crop_size={self.crop_size} is larger than the slices ({slice_shape[0]} x "
                f"{slice_shape[1]}); use None (whole slices) or at most {min(slice_shape) // 32 * 32}"
            )
        return self


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
