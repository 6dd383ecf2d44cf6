"""``sandseg gui`` / ``python -m napari_sandseg``: napari with the plugin docked and the sample open."""

from __future__ import annotations

from typing import Any

#: Dock widgets opened by the launcher, in tab order (display names from napari.yaml).
WIDGETS = ("Train", "Segment", "Correct and fine-tune", "Evaluate", "Export")
PLUGIN = "napari-sandseg"


def open_viewer(show: bool = True) -> Any:
    """A napari viewer with the bundled sample loaded and every sandseg widget docked.

    Parameters
    ----------
    show : bool
        Show the window (False for tests and screenshots that do not need it on screen).

    Returns
    -------
    napari.viewer.Viewer
    """
    import napari

    from .bundled import bundled_sample_paths

    viewer = napari.Viewer(title="napari-sandseg", show=show)
    # The repository's sample_data/ stacks, or (installed without them) a generated copy.
    images, masks = bundled_sample_paths()
    viewer.open(images, plugin=PLUGIN)
    viewer.open(masks, plugin=PLUGIN)
    docks = dock_widgets(viewer)
    docks[WIDGETS[0]][0].raise_()  # Train is the first step
    return viewer


def dock_widgets(viewer: Any) -> dict[str, tuple[Any, Any]]:
    """Dock every sandseg widget, tabbed on the right; returns ``{name: (dock, widget)}``."""
    return {name: viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True) for name in WIDGETS}


def main() -> None:
    """Open the viewer and run napari's event loop until the window closes."""
    import napari

    open_viewer(show=True)
    napari.run()
