"""Cross-validated accuracy on the real slices: k folds, both recipes, with and without TTA.

Usage
-----
    python benchmarks/crossval.py                     # the whole plan (resumes; see below)
    python benchmarks/crossval.py --folds 1 --seeds 0 --recipes project
    python benchmarks/crossval.py --summary           # print (and store) the table so far
    python benchmarks/crossval.py --summary --update-accuracy   # ... and put it into accuracy.json
    python benchmarks/crossval.py --quick --out /tmp/cv.json   # smoke run: corners, resnet18, 2 epochs

Protocol. The 9 consistently labelled slices (all but slice 4) are cut into :data:`FOLDS`: each
fold tests on 2 slices, segmented whole, and trains on the other 7. Fold 0 tests on slices 0
and 9, the split of ``accuracy.py``'s slices protocol. Slice 4 (labelled by another annotator)
is never trained on and is reported apart. Each recipe validates inside its training part only:
``project`` on the bottom strip of every training slice (kept out of its crops), ``classic`` on
a seeded 10 % of its training patches; best weights and early stopping follow those validation
figures. No figure of the test slices is computed until training has finished, so recipe
choices made from this script's output can only be made on validation figures.

Every trained model is scored on its test slices without and with D4 test-time augmentation
(8 flips/rotations), so the two recipes compare like for like either way.

Resuming. Each (fold, seed, recipe) result is merged into the results file (default
``benchmarks/results/crossval.json``) as soon as it is finished, and runs already there are
skipped, so the table can be filled over several sittings (one training is 15-25 minutes on
2 cores). ``--summary`` computes, per recipe and TTA setting, the mean and standard deviation
over folds (each fold first averaged over its seeds) of per-class IoU and mean IoU, the
spread over seeds on folds run with several, and the same for slice 4.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import _common as C

#: Slices labelled the same way (slice 4 had another annotator).
CONSISTENT = tuple(i for i in range(10) if i != C.OTHER_ANNOTATOR_SLICE)
#: Test slices of each fold; the rest of :data:`CONSISTENT` trains. Fold 0 is accuracy.py's
#: split; the four folds test 8 of the 9 slices (slice 8 always trains).
FOLDS = ((0, 9), (1, 5), (2, 6), (3, 7))
RECIPES = ("classic", "project")
#: Default plan: every fold with seed 0, and fold 0 with a second seed (seed spread).
DEFAULT_SEEDS = {0: (0, 1)}
SLICE4 = "slice 4, other annotator"


def run_key(fold: int, seed: int, recipe: str) -> str:
    """Key of one result in the file."""
    return f"fold{fold}/seed{seed}/{recipe}"


def fold_split(images: np.ndarray, masks: np.ndarray, fold: int) -> tuple[C.Split, dict]:
    """The training part of ``fold`` as a :class:`_common.Split`, and its test sets.

    The Split's ``test`` holds only the bottom strip of the training slices (the project's
    validation region), which the trainers' per-epoch record evaluates: the test slices stay
    out of the trainers entirely and are scored afterwards.
    """
    import project_recipe as P

    test = FOLDS[fold]
    train = [i for i in CONSISTENT if i not in test]
    base = C.Split(protocol="slices", train_images=images[train], train_ids=masks[train], test={})
    _, _, xv, yv = P.split_for_training(base, 0, False)
    split = C.Split(
        protocol="slices", train_images=base.train_images, train_ids=base.train_ids,
        test={"validation strip of the training slices (recorded per epoch only)": (xv, yv)},
        description=f"fold {fold}: train on slices {train}, test on slices {list(test)} at full size",
    )
    sets = {
        f"slices {test[0]} and {test[1]}": (images[list(test)], masks[list(test)]),
        SLICE4: (images[[C.OTHER_ANNOTATOR_SLICE]], masks[[C.OTHER_ANNOTATOR_SLICE]]),
    }
    return split, sets


def train_and_score(images: np.ndarray, masks: np.ndarray, fold: int, seed: int, recipe: str, quick: bool,
                    log: Callable[[str], None]) -> dict[str, Any]:
    """Train ``recipe`` on ``fold``'s training part; score the model on its test sets, without and with TTA."""
    import accuracy as A

    C.start_clock()
    C.set_seed(seed)
    split, sets = fold_split(images, masks, fold)
    log(f"== fold {fold} / seed {seed} / {recipe} :: {split.description}")
    trainer = A.train_classic if recipe == "classic" else A.train_project
    start = time.perf_counter()
    # The trainers' per-epoch record evaluates split.test, which here is the validation strip.
    model, eval_cb, details, norm_fn = trainer(split, seed, quick, lambda m: log(m.replace("held-out", "val-strip")))
    train_s = time.perf_counter() - start
    scores = {}
    for label, tta in (("no_tta", False), ("tta", True)):
        cms = C.evaluate_sets(model, sets, norm_fn, tta=tta)
        scores[label] = {name: C.report(cm) for name, cm in cms.items()}
    test_name = next(iter(sets))
    for label in scores:
        log(f"   {label}: {test_name} mean IoU {scores[label][test_name]['mean_iou']:.4f}, "
            f"{SLICE4} {scores[label][SLICE4]['mean_iou']:.4f}")
    return {
        "fold": fold, "seed": seed, "recipe": recipe, "test_slices": list(FOLDS[fold]),
        "test_set": test_name, "scores": scores,
        "epochs": len(eval_cb.records), "train_seconds": round(train_s, 1),
        "validation_per_epoch": [r["test_mean_iou"] for r in eval_cb.records],
        "settings": A.CLASSIC if recipe == "classic" else A.PROJECT,
        "details": {k: v for k, v in details.items() if k != "without_tta"},
        "quick": quick,
        **C.stamp(),
    }


def plan(folds: list[int], seeds: list[int] | None, recipes: list[str]) -> list[tuple[int, int, str]]:
    """(fold, seed, recipe) to run: the given seeds on every fold, else :data:`DEFAULT_SEEDS` (seed 0 elsewhere)."""
    return [(f, s, r) for f in folds for s in (seeds or DEFAULT_SEEDS.get(f, (0,))) for r in recipes]


def run_plan(todo: list[tuple[int, int, str]], out: Path, quick: bool, log: Callable[[str], None]) -> None:
    """Run every (fold, seed, recipe) not yet in ``out``, writing each result as it finishes."""
    pending = [t for t in todo if run_key(*t) not in C.read_json(out).get("runs", {})]
    log(f"{len(todo) - len(pending)} of {len(todo)} runs already in {out}; {len(pending)} to go")
    if not pending:
        return
    images, masks, source = C.load_data(quick)
    for fold, seed, recipe in pending:
        rec = train_and_score(images, masks, fold, seed, recipe, quick, log)
        rec["data"] = source
        data = C.read_json(out)  # re-read: another sitting may have written meanwhile
        data.setdefault("runs", {})[run_key(fold, seed, recipe)] = rec
        data["protocol"] = __doc__.split("Protocol. ", 1)[1].split("\n\n", 1)[0].replace("\n", " ")
        data["folds"] = {str(i): list(t) for i, t in enumerate(FOLDS)}
        C.write_json(out, data)
        log(f"wrote {out} [{run_key(fold, seed, recipe)}]")


def _mean_sd(values: list[float]) -> dict[str, Any]:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    sd = float(arr.std(ddof=1)) if len(arr) > 1 else None
    return {"mean": round(float(arr.mean()), 4) if len(arr) else None, "sd": None if sd is None else round(sd, 4),
            "n": int(len(arr))}


def summarize(runs: dict[str, dict]) -> dict[str, Any]:
    """Per recipe and TTA setting: mean +/- sd over folds of per-class and mean IoU (seeds averaged
    within a fold first), the seed spread on folds with several seeds, and slice 4 alike."""
    table: dict[str, Any] = {}
    for recipe in RECIPES:
        mine = [r for r in runs.values() if r["recipe"] == recipe]
        if not mine:
            continue
        for label in ("no_tta", "tta"):
            entry: dict[str, Any] = {}
            for target in ("test", SLICE4):
                by_fold: dict[int, list[dict]] = {}
                for r in mine:
                    name = r["test_set"] if target == "test" else SLICE4
                    by_fold.setdefault(r["fold"], []).append(r["scores"][label][name])
                fold_means = {f: _average(reports) for f, reports in sorted(by_fold.items())}
                entry[target] = {
                    "mean_iou": _mean_sd([m["mean_iou"] for m in fold_means.values()]),
                    "per_class_iou": {c: _mean_sd([m["per_class_iou"][c] for m in fold_means.values()])
                                      for c in C.CLASS_NAMES},
                    "folds": sorted(by_fold),
                    "mean_iou_per_fold": {str(f): round(m["mean_iou"], 4) for f, m in fold_means.items()},
                    "seed_sd_of_mean_iou": {str(f): _mean_sd([x["mean_iou"] for x in reps])["sd"]
                                            for f, reps in by_fold.items() if len(reps) > 1},
                }
            table[f"{recipe}/{label}"] = entry
    return table


def _average(reports: list[dict]) -> dict[str, Any]:
    """Mean of several runs' mean and per-class IoU (the seeds of one fold)."""
    return {
        "mean_iou": float(np.mean([r["mean_iou"] for r in reports])),
        "per_class_iou": {c: _nanmean([r["per_class_iou"].get(c) for r in reports]) for c in C.CLASS_NAMES},
    }


def _nanmean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def print_summary(table: dict[str, Any], log: Callable[[str], None]) -> None:
    """The table as text: one line per recipe, TTA setting and target."""
    def fmt(s: dict) -> str:
        return "   n/a" if s["mean"] is None else (f"{s['mean']:.4f}" + (f" ± {s['sd']:.4f}" if s["sd"] is not None else ""))

    log(f"{'recipe/tta':18s} {'target':26s} {'mean IoU':18s} " + " ".join(f"{c:18s}" for c in C.CLASS_NAMES))
    for key, entry in table.items():
        for target, t in entry.items():
            name = "test slices" if target == "test" else target
            log(f"{key:18s} {name:26s} {fmt(t['mean_iou']):18s} "
                + " ".join(f"{fmt(t['per_class_iou'][c]):18s}" for c in C.CLASS_NAMES)
                + f" folds {t['folds']}")


def update_accuracy(summary: dict[str, Any], runs: dict[str, dict], path: Path) -> dict[str, Any]:
    """Put the cross-validated slices figures into ``accuracy.json`` (its keys kept).

    ``slices/<recipe>/mean_iou`` and ``per_class_iou`` become the cross-validated means without
    TTA (like for like: neither recipe uses TTA there), with their sd, the TTA figures beside them,
    and the earlier single-split entry kept whole under ``single_split``. The whole table goes to
    ``crossval``. ``patches`` is not cross-validated (one seeded split), which its entry says.
    """
    data = C.read_json(path)
    for recipe in RECIPES:
        key = f"{recipe}/no_tta"
        if key not in summary:
            continue
        single = C.accuracy_run(data, "slices", recipe)
        data.setdefault("slices", {})
        test = summary[key]["test"]
        tta = summary[f"{recipe}/tta"]["test"]
        mine = [r for r in runs.values() if r["recipe"] == recipe]
        data["slices"][recipe] = {
            "mean_iou": test["mean_iou"]["mean"],
            "mean_iou_sd": test["mean_iou"]["sd"],
            "per_class_iou": {c: v["mean"] for c, v in test["per_class_iou"].items()},
            "per_class_iou_sd": {c: v["sd"] for c, v in test["per_class_iou"].items()},
            "mean_iou_tta": tta["mean_iou"]["mean"],
            "mean_iou_tta_sd": tta["mean_iou"]["sd"],
            "folds": test["folds"],
            "runs": sorted(run_key(r["fold"], r["seed"], r["recipe"]) for r in mine),
            SLICE4: {"mean_iou": summary[key][SLICE4]["mean_iou"]},
            "statistic": ("cross-validated: mean and sd over folds (seeds averaged within a fold), no TTA; "
                          "each fold tests 2 whole slices (see crossval.protocol)"),
            C.SINGLE_SPLIT: single,
        }
    if "patches" in data:
        for entry in data["patches"].values():
            entry["statistic"] = "one seeded 90/10 split of the patches (not cross-validated)"
    data["crossval"] = {"table": summary, "folds": {str(i): list(t) for i, t in enumerate(FOLDS)},
                        "source": "benchmarks/results/crossval.json", **C.stamp()}
    C.write_json(path, data)
    return data


def main(argv: list[str] | None = None) -> None:
    """Run what is missing of the plan, or print the summary."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", type=int, nargs="+", choices=range(len(FOLDS)), default=list(range(len(FOLDS))))
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="seeds for every chosen fold (default: 0, and 0 and 1 on fold 0)")
    ap.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 256 x 256 corners of the slices, resnet18, 2 epochs (write it with --out)")
    ap.add_argument("--summary", action="store_true", help="only summarise the results file (and store the table in it)")
    ap.add_argument("--out", type=Path, default=None, help="results file (default benchmarks/results/crossval.json)")
    ap.add_argument("--log", type=Path, default=None, help="also append the log to this file")
    ap.add_argument("--update-accuracy", action="store_true",
                    help="write the cross-validated means into benchmarks/results/accuracy.json (keys kept)")
    args = ap.parse_args(argv)
    out = args.out or C.RESULTS / "crossval.json"
    if args.quick and args.out is None:
        out = C.RESULTS / "quick" / "crossval.json"
    log = C.logger(args.log)
    if not args.summary:
        run_plan(plan(args.folds, args.seeds, args.recipes), out, args.quick, log)
    data = C.read_json(out)
    if not data.get("runs"):
        raise SystemExit(f"no results in {out} yet")
    data["summary"] = summarize(data["runs"])
    data["summary_note"] = ("mean ± sd over folds (seeds averaged within a fold first); sd needs 2 or more folds. "
                            "Recipe choices are made on validation figures only, never on these")
    C.write_json(out, data)
    print_summary(data["summary"], log)
    if args.update_accuracy:
        update_accuracy(data["summary"], data["runs"], C.RESULTS / "accuracy.json")
        log(f"cross-validated means written to {C.RESULTS / 'accuracy.json'}")


if __name__ == "__main__":
    main()
