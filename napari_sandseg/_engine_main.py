"""Bootstrap of the engine process: ``python -m napari_sandseg._engine_main FD``.

The engine is started as this module, not through ``multiprocessing``'s spawn, because spawn
re-imports the parent's ``__main__``: a plain napari script (a viewer built at top level, with
no ``if __name__ == "__main__":`` guard) would run again inside the engine and open a second
window. Here nothing of the user's runs; the engine only imports napari_sandseg.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection


def main(argv: list[str]) -> None:
    """Serve napari over the socket whose file descriptor is ``argv[0]``."""
    from .engine_server import serve

    serve(Connection(int(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
