"""``python -m napari_sandseg``: open napari with the plugin docked and the bundled sample."""

from ._napari.launch import main

if __name__ == "__main__":
    main()
