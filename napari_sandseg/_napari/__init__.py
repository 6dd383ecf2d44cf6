"""The napari glue: reader, writer, layer conventions, sample data and the launcher (no widgets here).

Everything napari calls through the npe2 manifest (``napari.yaml``) that is not a dock widget; it
imports the engine (``napari_sandseg/*.py``) and napari, never the widgets (``napari_sandseg/_widgets``).
"""
