"""Status texts of training shared by the Train and Correct widgets (plain strings, no Qt)."""

from __future__ import annotations

from typing import Any

from ..metrics import format_figure, metric_label


def epoch_text(ev: Any) -> str:
    """Status line of a finished epoch: its figures, rounded and in plain words."""
    figures = [("loss", ev.loss), ("val_loss", ev.val_loss), ("val_mean_iou", ev.logs.get("val_mean_iou"))]
    shown = ", ".join(f"{metric_label(name)} {format_figure(name, value)}" for name, value in figures if value is not None)
    return f"epoch {ev.epoch + 1}/{ev.epochs}: {shown}"


def training_result_text(summary: Any, monitor: str, epochs: int, cut_short: int | None = None) -> str:
    """How a run ended and which epoch's weights were kept, in one line.

    Parameters
    ----------
    summary : napari_sandseg.engine_requests.TrainSummary
        ``history`` (complete epochs only), ``best_epoch`` (0-based or None), ``cancelled``.
    monitor : str
        The validation figure that picked the kept epoch (``TrainConfig.monitor``).
    epochs : int
        Epochs asked for.
    cut_short : int, optional
        0-based epoch that a cancel cut short (a ``"stopped"`` event), if any.

    Returns
    -------
    str
        e.g. ``"Cancelled: stopped at epoch 3 of 20; kept epoch 2 (validation mean IoU 0.812)"``.
    """
    done = len(summary.history.get("loss", []))
    if summary.cancelled:
        at = cut_short + 1 if cut_short is not None else done
        head = f"Cancelled: stopped at epoch {at} of {epochs}" if at else "Cancelled before the first epoch"
    elif done < epochs:
        head = f"Done: stopped early after epoch {done} of {epochs} (no better {metric_label(monitor)})"
    else:
        head = f"Done: {done} epoch(s)"
    best = summary.best_epoch
    figures = summary.history.get(monitor, [])
    if best is None:
        return f"{head}; no epoch finished, so the partly trained weights were kept"
    figure = f" ({metric_label(monitor)} {format_figure(monitor, figures[best])})" if best < len(figures) else ""
    return f"{head}; kept epoch {best + 1}{figure}"
