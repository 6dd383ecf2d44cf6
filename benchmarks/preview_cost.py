"""Cost of the live preview: one 1024 x 996 slice segmented by a resnet34 Unet (float32).

The Train widget's preview segments the slice in view once per epoch; compare the figure with
the epoch durations of ``results/interactive.json``. Usage: ``python benchmarks/preview_cost.py``.
"""

from __future__ import annotations

import os
import time

from napari_sandseg.classmap import ClassMap
from napari_sandseg.data import Normalization
from napari_sandseg.model import ModelInfo, build_model
from napari_sandseg.predict import predict_volume
from napari_sandseg.sample import make_sandstone


def main(repeats: int = 4) -> None:
    model = build_model("resnet34", 4, None)
    info = ModelInfo(config={}, class_map=ClassMap((0, 1, 2, 3)), normalization=Normalization(0.0, 1.0),
                     backbone="resnet34", n_classes=4)
    images, _ = make_sandstone((8, 1024, 996), seed=0)
    walls, cpus = [], []
    for z in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        predict_volume(model, images[z : z + 1], info, batch_size=1)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    print(f"one 1024 x 996 slice: wall {[round(w, 2) for w in walls]} s, CPU {[round(c, 2) for c in cpus]} s "
          f"(the first call traces); load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
