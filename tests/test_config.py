"""TrainConfig: the recipe fields (warm-up, monitor, precision, crops per epoch), presets, "auto"."""

from __future__ import annotations

import dataclasses

import pytest

import napari_sandseg.choices as choices_module
from napari_sandseg.config import AUTO_CROP, PRESETS, TrainConfig, native_bf16
from napari_sandseg.errors import ConfigError

#: The reference recipe, field by field: the "classic" preset must stay exactly this.
CLASSIC = {
    "backbone": "resnet34", "epochs": 50, "batch_size": 16, "learning_rate": 1e-3, "optimizer": "adam",
    "loss": "ce", "patience": 5, "val_fraction": 0.1, "test_fraction": 0.1, "seed": 0, "augment": False,
    "sparse": False, "encoder_weights": None, "crop_size": None, "lr_schedule": "constant", "jit_compile": False,
    "run_eagerly": False, "strategy": "auto", "patches_per_epoch": None, "warmup_epochs": 0, "monitor": "val_loss",
    "precision": "float32", "crops_per_epoch": None,
}


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"warmup_epochs": -1}, r"warmup_epochs must be an integer >= 0, got -1"),
        ({"warmup_epochs": 1.5}, r"warmup_epochs must be an integer >= 0, got 1.5"),
        ({"warmup_epochs": True}, r"warmup_epochs must be an integer"),
        ({"warmup_epochs": 1, "lr_schedule": "plateau"}, r"warmup_epochs=1 cannot be combined with lr_schedule='plateau'"),
        ({"monitor": "val_accuracy"}, r"monitor='val_accuracy' is not supported; choose one of \['val_loss', 'val_mean_iou'\]"),
        ({"precision": "bfloat16"}, r"precision='bfloat16' is not supported; choose one of \['float32', 'mixed_bfloat16', 'auto'\]"),
        ({"crop_size": 64, "crops_per_epoch": 0}, r"crops_per_epoch must be an integer >= 1, got 0"),
        ({"crop_size": 64, "crops_per_epoch": 2.5}, r"crops_per_epoch must be an integer >= 1"),
        ({"crops_per_epoch": 384}, r"crops_per_epoch=384 needs random crops, but crop_size is None"),
        ({"crop_size": "big"}, r"crop_size must be an integer, 'auto' or None, got 'big'"),
    ],
)
def test_new_settings_are_validated_with_the_setting_named(changes, pattern):
    with pytest.raises(ConfigError, match=pattern):
        TrainConfig(**changes).validate()


def test_valid_values_of_the_new_settings_pass():
    TrainConfig(warmup_epochs=3, lr_schedule="constant", monitor="val_mean_iou", precision="mixed_bfloat16",
                crop_size=64, crops_per_epoch=10).validate()
    TrainConfig(crop_size="auto", crops_per_epoch=1, precision="auto").validate(slice_shape=(64, 64))


def test_classic_preset_is_exactly_the_reference_recipe():
    assert dataclasses.asdict(TrainConfig.classic()) == CLASSIC
    assert TrainConfig() == TrainConfig.classic() and PRESETS["classic"] == {}


def test_project_preset_is_the_benchmark_winner():
    cfg = TrainConfig.default()
    expected = {
        "augment": True, "loss": "ce_dice", "lr_schedule": "cosine", "warmup_epochs": 1, "monitor": "val_mean_iou",
        "precision": "auto", "patience": 10, "crop_size": "auto", "crops_per_epoch": 384,
    }
    assert {name: getattr(cfg, name) for name in expected} == expected
    # everything else is the reference recipe's
    assert {k: v for k, v in dataclasses.asdict(cfg).items() if k not in expected} == {
        k: v for k, v in CLASSIC.items() if k not in expected
    }
    cfg.validate(n_slices=10, slice_shape=(64, 64))


def test_old_sidecar_config_without_the_new_fields_loads_with_defaults():
    old = {k: v for k, v in CLASSIC.items() if k not in ("warmup_epochs", "monitor", "precision", "crops_per_epoch")}
    old.update(loss="ce_dice", crop_size=64)
    cfg = TrainConfig.from_dict(old)
    assert (cfg.warmup_epochs, cfg.monitor, cfg.precision, cfg.crops_per_epoch) == (0, "val_loss", "float32", None)
    assert cfg.loss == "ce_dice" and cfg.crop_size == 64
    new = TrainConfig.default().resolve_crop((256, 256)).resolve_precision(gpu=True)
    assert TrainConfig.from_dict(new.to_dict()) == new


@pytest.mark.parametrize(
    "shape, crop, crops",
    [((160, 160), AUTO_CROP, 384), ((1024, 996), 128, 384), ((64, 64), None, None), ((128, 128), None, None),
     ((128, 500), None, None), ((129, 129), 128, 384)],
)
def test_auto_crop_is_128_only_on_slices_larger_than_128(shape, crop, crops):
    cfg = TrainConfig.default().resolve_crop(shape)
    assert (cfg.crop_size, cfg.crops_per_epoch) == (crop, crops)
    cfg.validate(slice_shape=shape)


def test_a_crop_size_the_user_set_is_never_changed():
    assert TrainConfig.default(crop_size=64).resolve_crop((500, 500)).crop_size == 64
    assert TrainConfig.default(crop_size=64).resolve_crop((64, 64)).crop_size == 64
    whole = TrainConfig.default(crop_size=None, crops_per_epoch=None).resolve_crop((500, 500))
    assert whole.crop_size is None and whole.crops_per_epoch is None
    with pytest.raises(ConfigError, match="larger than the slices"):
        TrainConfig.default(crop_size=256).validate(slice_shape=(160, 160))


@pytest.mark.parametrize(
    "bf16, gpu, expected",
    [(True, False, "mixed_bfloat16"), (True, True, "float32"), (False, False, "float32"), (False, True, "float32")],
)
def test_auto_precision_is_bfloat16_only_on_a_native_bf16_cpu_without_gpu(monkeypatch, bf16, gpu, expected):
    monkeypatch.setattr(choices_module, "native_bf16", lambda: bf16)
    assert TrainConfig.default().resolve_precision(gpu).precision == expected
    for chosen in ("float32", "mixed_bfloat16"):  # an explicit choice is kept
        assert TrainConfig.default(precision=chosen).resolve_precision(gpu).precision == chosen


def test_native_bf16_reads_the_cpu_flags(tmp_path):
    with_flag = tmp_path / "with"
    with_flag.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n\n")
    without = tmp_path / "without"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\nbugs\t\t: avx512_bf16_fake\n")
    amx = tmp_path / "amx"
    amx.write_text("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert native_bf16(str(with_flag)) and native_bf16(str(amx))
    assert not native_bf16(str(without))
    assert not native_bf16(str(tmp_path / "missing"))
