"""A small QPainter line plot (loss curves, per-slice IoU) that reports clicks.

matplotlib is not a dependency of napari or of this project, so instead of pulling it in for
two line charts we draw them with QPainter: axes with a few ticks, one polyline per series, a
legend below the axes (never over the curves), an optional vertical marker, and a
``clicked(x)`` signal in data coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QSize, Qt, Signal
from qtpy.QtGui import QColor, QFont, QFontMetricsF, QMouseEvent, QPainter, QPainterPath, QPaintEvent, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 46, 10, 22, 34
#: Legend geometry: colour swatch length, gap after it, gap between entries, row height.
_SWATCH, _SWATCH_GAP, _ENTRY_GAP, _ROW = 15, 4, 14, 15


@dataclass
class Series:
    """One line: x and y values (NaN y values leave gaps), a colour and a legend name."""

    name: str
    x: np.ndarray
    y: np.ndarray
    color: str
    points: bool = False


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


class LinePlot(QWidget):
    """Line chart widget.

    Signals
    -------
    clicked(float)
        x (data coordinates) of a left click inside the plot area.
    """

    clicked = Signal(float)

    def __init__(self, title: str = "", xlabel: str = "", ylabel: str = "", y_range: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.y_range = y_range
        self.series: dict[str, Series] = {}
        self.marker_x: float | None = None
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMouseTracking(False)

    def sizeHint(self) -> QSize:  # noqa: D102
        return QSize(320, 210)

    # ------------------------------------------------------------------ data

    def set_series(self, name: str, x: Sequence[float], y: Sequence[float], color: str, points: bool = False) -> None:
        """Add or replace the series ``name`` and repaint."""
        self.series[name] = Series(name, np.asarray(x, float), np.asarray(y, float), color, points)
        self.update()

    def clear(self) -> None:
        """Remove all series and the marker."""
        self.series.clear()
        self.marker_x = None
        self.update()

    def set_marker(self, x: float | None) -> None:
        """Draw (or remove, with None) a vertical marker line at ``x``."""
        self.marker_x = x
        self.update()

    # ------------------------------------------------------------------ geometry

    def _bounds(self) -> tuple[float, float, float, float]:
        xs = [s.x for s in self.series.values() if s.x.size]
        ys = [s.y[np.isfinite(s.y)] for s in self.series.values()]
        ys = [y for y in ys if y.size]
        if not xs:
            return 0.0, 1.0, 0.0, 1.0
        x0, x1 = min(float(x.min()) for x in xs), max(float(x.max()) for x in xs)
        if x1 <= x0:
            x0, x1 = x0 - 0.5, x1 + 0.5
        if self.y_range is not None:
            y0, y1 = self.y_range
        elif ys:
            y0, y1 = min(float(y.min()) for y in ys), max(float(y.max()) for y in ys)
            pad = (y1 - y0) * 0.08 or max(abs(y1) * 0.1, 0.1)
            y0, y1 = y0 - pad, y1 + pad
        else:
            y0, y1 = 0.0, 1.0
        return x0, x1, y0, y1

    def _small_font(self) -> QFont:
        font = QFont(self.font())
        font.setPointSizeF(max(font.pointSizeF() * 0.85, 7))
        return font

    def legend_rows(self) -> list[list[tuple[Series, float]]]:
        """The legend's entries as rows fitting the plot's width: ``[(series, x offset), ...]`` per row.

        A single series has no legend (the title names it).
        """
        if len(self.series) < 2:
            return []
        metrics = QFontMetricsF(self._small_font())
        width = max(self.width() - _MARGIN_LEFT - _MARGIN_RIGHT, 10)
        rows: list[list[tuple[Series, float]]] = []
        x = 0.0
        for s in self.series.values():
            entry = _SWATCH + _SWATCH_GAP + metrics.horizontalAdvance(s.name)
            if not rows or (rows[-1] and x + entry > width):
                rows.append([])
                x = 0.0
            rows[-1].append((s, x))
            x += entry + _ENTRY_GAP
        return rows

    def _area(self) -> QRectF:
        bottom = _MARGIN_BOTTOM + _ROW * len(self.legend_rows())
        return QRectF(
            _MARGIN_LEFT, _MARGIN_TOP,
            max(self.width() - _MARGIN_LEFT - _MARGIN_RIGHT, 10), max(self.height() - _MARGIN_TOP - bottom, 10),
        )

    def to_data_x(self, pixel_x: float) -> float:
        """Data x of a widget pixel column."""
        x0, x1, _, _ = self._bounds()
        area = self._area()
        return x0 + (pixel_x - area.left()) / area.width() * (x1 - x0)

    # ------------------------------------------------------------------ Qt

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: D102
        pos = event.pos()
        if event.button() == Qt.LeftButton and self._area().adjusted(-4, -4, 4, 4).contains(QPointF(pos)):
            self.clicked.emit(self.to_data_x(pos.x()))
        super().mousePressEvent(event)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: D102
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        fg = self.palette().color(self.foregroundRole())
        painter.fillRect(self.rect(), self.palette().color(self.backgroundRole()))
        area = self._area()
        x0, x1, y0, y1 = self._bounds()

        def px(x: float, y: float) -> QPointF:
            return QPointF(
                area.left() + (x - x0) / (x1 - x0) * area.width(),
                area.bottom() - (y - y0) / (y1 - y0) * area.height(),
            )

        painter.setFont(self._small_font())
        grid = QColor(fg)
        grid.setAlpha(45)
        for ty in nice_ticks(y0, y1):
            p = px(x0, ty)
            painter.setPen(QPen(grid, 1))
            painter.drawLine(QPointF(area.left(), p.y()), QPointF(area.right(), p.y()))
            painter.setPen(fg)
            painter.drawText(QRectF(0, p.y() - 8, _MARGIN_LEFT - 4, 16), Qt.AlignRight | Qt.AlignVCenter, f"{ty:g}")
        for tx in nice_ticks(x0, x1, 6):
            p = px(tx, y0)
            painter.setPen(fg)
            painter.drawLine(QPointF(p.x(), area.bottom()), QPointF(p.x(), area.bottom() + 3))
            painter.drawText(QRectF(p.x() - 30, area.bottom() + 3, 60, 14), Qt.AlignHCenter | Qt.AlignTop, f"{tx:g}")
        painter.setPen(QPen(fg, 1))
        painter.drawRect(area)
        painter.drawText(QRectF(0, 2, self.width(), 18), Qt.AlignHCenter | Qt.AlignTop, self.title)
        painter.drawText(QRectF(area.left(), area.bottom() + 17, area.width(), 14), Qt.AlignHCenter, self.xlabel)

        painter.save()
        painter.setClipRect(area.adjusted(-3, -3, 3, 3))
        for s in self.series.values():
            pen = QPen(QColor(s.color), 1.6)
            painter.setPen(pen)
            path = QPainterPath()
            drawing = False
            for x, y in zip(s.x, s.y):
                if not math.isfinite(y):
                    drawing = False
                    continue
                p = px(x, y)
                if drawing:
                    path.lineTo(p)
                else:
                    path.moveTo(p)
                    drawing = True
                if s.points or s.x.size == 1:
                    painter.setBrush(QColor(s.color))
                    painter.drawEllipse(p, 2.5, 2.5)
            painter.setBrush(Qt.NoBrush)
            painter.drawPath(path)
        if self.marker_x is not None:
            painter.setPen(QPen(QColor("#ff9900"), 1, Qt.DashLine))
            top, bottom = px(self.marker_x, y1), px(self.marker_x, y0)
            painter.drawLine(top, bottom)
        painter.restore()

        # legend: rows under the x-axis label, so it never hides a curve
        y = area.bottom() + _MARGIN_BOTTOM
        for row in self.legend_rows():
            for s, offset in row:
                x = area.left() + offset
                painter.setPen(QPen(QColor(s.color), 2))
                painter.drawLine(QPointF(x, y + _ROW / 2), QPointF(x + _SWATCH, y + _ROW / 2))
                painter.setPen(fg)
                left = x + _SWATCH + _SWATCH_GAP
                painter.drawText(QRectF(left, y, max(self.width() - left, 1), _ROW), Qt.AlignLeft | Qt.AlignVCenter, s.name)
            y += _ROW
        painter.end()
