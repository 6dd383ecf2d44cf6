"""Choose the fine-tune learning rate and epochs on validation slices (issue 11, outcome 4).

From a model trained on the scribbles of ``interactive.py`` (``--keep-models DIR`` keeps it as
``DIR/scribbles.keras``), the 10 largest wrong regions of slice 2 are painted with their true
class and the model is fine-tuned exactly as the Correct widget does (``interactive.finetune_arm``),
once per variant. Scored on slices 3, 6 and 7: never trained on (no scribbles), and not the test
slices 0 and 9, so the choice uses validation data only.

Usage: ``python benchmarks/finetune_lr.py --model DIR/scribbles.keras``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import interactive as bench  # noqa: E402
from _common import RESULTS, load_data, stamp, write_json  # noqa: E402

#: Slices the choice is scored on.
VALIDATION_SLICES = (3, 6, 7)
#: (learning rate, epochs) tried; the model was trained at 1e-3.
VARIANTS = ((1e-3, 1), (1e-4, 1), (3e-4, 2), (1e-4, 3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the scribbles model (interactive.py --keep-models)")
    parser.add_argument("--out", type=Path, default=RESULTS / "finetune_lr.json")
    args = parser.parse_args(argv)
    import napari_sandseg._widgets._correct_widget as correct
    from napari_sandseg.config import TrainConfig

    bench.TEST_SLICES = VALIDATION_SLICES  # finetune_arm scores "held out" slices: here, validation ones
    correct.FINETUNE_LR_FACTOR = 1.0  # the variants set the rate themselves
    images, masks, _ = load_data()
    painted = bench.simulate_scribbles(masks, bench.SCRIBBLE_SLICES, 0)
    engine = bench.start_engine()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="sandseg-ftlr-") as tmp:
            for i, (lr, epochs) in enumerate(VARIANTS):
                correct.FINETUNE_EPOCHS = epochs
                cfg = TrainConfig.default(test_fraction=0.0, sparse=True, seed=0, learning_rate=lr)
                (Path(tmp) / str(i)).mkdir()
                r = bench.finetune_arm(engine, images, masks, painted, cfg, args.model, Path(tmp) / str(i), 0)
                rows.append({"learning_rate": lr, "epochs": epochs, "finetune_s": r["finetune_s"],
                             "corrected_region_accuracy": r["corrected_region_accuracy"],
                             "validation_mean_iou": r["held_out_mean_iou"]})
                print(rows[-1], flush=True)
    finally:
        engine.shutdown()
    write_json(args.out, {"validation_slices": VALIDATION_SLICES, "corrected_slice": bench.CORRECT_SLICE,
                          "model": str(args.model), "variants": rows, **stamp()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
