"""The Train widget's settings: the project recipe carries through, and its command repeats the run."""

from __future__ import annotations

import pytest

from napari_sandseg._widgets._train_widget import TrainWidget
from napari_sandseg.command_lines import train_command
from napari_sandseg.cli import _train_config, build_parser
from napari_sandseg.config import TrainConfig


def _cli_config(args: list) -> TrainConfig:
    text = [str(a) for a in args]
    assert text[:2] == ["sandseg", "train"]
    return _train_config(build_parser().parse_args(text[1:]))


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig.default(test_fraction=0.0),
        TrainConfig.default(backbone="resnet18", epochs=7, batch_size=4, patience=0, learning_rate=5e-4,
                            val_fraction=0.25, test_fraction=0.0, augment=False, sparse=True, seed=3,
                            monitor="val_loss", precision="mixed_bfloat16", warmup_epochs=2, crops_per_epoch=None),
        TrainConfig.default(test_fraction=0.0, precision="float32", warmup_epochs=0, crops_per_epoch=50),
    ],
)
def test_train_command_reproduces_the_config_exactly(config, tmp_path):
    args = train_command(config, tmp_path / "images.tif", tmp_path / "masks.tif", tmp_path / "model.keras")
    assert _cli_config(args) == config


def test_widget_config_is_the_project_recipe_with_its_monitor_and_precision(make_napari_viewer):
    widget = TrainWidget(make_napari_viewer())
    config = widget.config()
    default = TrainConfig.default()
    for name in ("warmup_epochs", "crop_size", "crops_per_epoch", "loss", "lr_schedule", "monitor", "precision"):
        assert getattr(config, name) == getattr(default, name), name
    assert (widget.monitor.currentData(), widget.precision.currentText()) == ("val_mean_iou", "auto")
    # The user reads plain labels; the config gets the internal names.
    assert [widget.monitor.itemText(i) for i in range(widget.monitor.count())] == ["validation loss", "validation mean IoU"]
    widget.monitor.setCurrentIndex(widget.monitor.findData("val_loss"))
    widget.precision.setCurrentText("float32")
    config = widget.config()
    assert (config.monitor, config.precision) == ("val_loss", "float32")
    args = train_command(config, "i.tif", "m.tif", "o.keras")
    assert _cli_config(args) == config
