"""Qt widgets of the napari plugin (one module per job); they call the engine and hold no model logic."""
