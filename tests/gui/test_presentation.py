"""First-run polish (issue 10, outcome 6): legends beside, not over, the curves; plain names; rounded figures."""

from __future__ import annotations

import pytest

from napari_sandseg._widgets._common import plain_metric_names
from napari_sandseg._widgets._plots import _MARGIN_BOTTOM, _ROW, LinePlot
from napari_sandseg.metrics import format_figure, metric_label

pytestmark = pytest.mark.gui


def test_the_legend_sits_below_the_plot_area(qtbot):
    plot = LinePlot("loss", "epoch", "loss")
    qtbot.addWidget(plot)
    plot.resize(300, 220)
    names = ["training loss (per batch)", "training loss", "validation loss", "validation mean IoU"]
    for i, name in enumerate(names):
        plot.set_series(name, [1, 2, 3], [1.0 - 0.1 * i, 0.8, 0.7], "#3c9be8")
    rows = plot.legend_rows()
    assert [s.name for row in rows for s, _ in row] == names
    assert len(rows) >= 2  # 300 px cannot hold four entries on one line
    area = plot._area()
    assert area.bottom() + _MARGIN_BOTTOM + _ROW * len(rows) <= plot.height()  # under the axes, inside the widget
    assert area.height() >= 60
    plot.grab()  # paints without error

    single = LinePlot("mean IoU per slice")
    qtbot.addWidget(single)
    single.set_series("mean IoU", [0, 1], [0.5, 0.6], "#3c9be8")
    assert single.legend_rows() == []  # the title names a lone curve


def test_internal_metric_names_read_as_words():
    assert metric_label("val_mean_iou") == "validation mean IoU"
    assert metric_label("val_loss") == "validation loss"
    assert (plain_metric_names("best weights of epoch 3 (val_mean_iou 0.81); best epoch by val_loss")
            == "best weights of epoch 3 (validation mean IoU 0.81); best epoch by validation loss")


def test_figures_are_rounded_by_kind():
    assert format_figure("loss", 1.4756016731262207) == "1.476"
    assert format_figure("val_loss", 0.000123456) == "0.0001235"
    assert format_figure("val_mean_iou", 0.81234567) == "0.812"
    assert format_figure("pixel_accuracy", 0.93149) == "0.931"
    assert format_figure("loss", float("nan")) == "n/a" and format_figure("loss", None) == "n/a"
