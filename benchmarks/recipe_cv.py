"""Compare training recipes by k-fold cross-validation: out-of-fold predictions, paired tests.

Every image of the dataset is predicted once, out of fold, by a model that did not see it (nor
its near-duplicates: the folds are group-aware), so a recipe is scored on all N images instead of
one 15% test split (on rdb-mini: 1,200 images, one image = 0.08 points instead of 0.56). All
recipes share the folds (one split seed), so two recipes are compared image by image: McNemar's
exact test on the discordant images and a paired bootstrap of the accuracy and macro-F1
differences, Holm-adjusted over the comparisons with the reference recipe.

Each (recipe, fold, seed) is an ordinary run directory trained and evaluated by ``cxrlab cv``'s
resumable cell, under ``OUT/<recipe>/``: rerunning the script reuses finished cells, so recipes and
seeds can be added one at a time. Ensembles: ``--ensemble`` averages the probabilities of the
seeds of each recipe *within each outer fold* (every member trained on that fold's training images
only), which is how an ensemble is scored out of fold. ``--tta N`` predicts each fold's test images
with N test-time transforms (:mod:`cxrlab.inference.tta`).

Usage (2-core CPU, rdb-mini):

    python benchmarks/recipe_cv.py --data DATA --out runs/recipe64 --size 64 --epochs 20 \\
        --folds 3 --recipes default lr1e-3 lr4e-3 --seeds 0
    python benchmarks/recipe_cv.py ... --recipes default --seeds 0 1 2 --ensemble --tta 4

Writes ``OUT/recipe_cv-vs-<reference>.{json,md}`` (the table printed at the end).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.io import write_csv, write_text

#: name -> TrainConfig overrides on top of the model's recipe (README, "Recipe choices, measured").
NO_INTENSITY = dict(brightness=0.0, contrast=0.0, gamma=0.0)
RECIPES: dict[str, dict] = {
    "default": {},
    "lr1e-3": dict(lr=1e-3),
    "lr4e-3": dict(lr=4e-3),
    "epochs2x": dict(_epochs_factor=2),
    "epochs-half": dict(_epochs_factor=0.5),
    "aug-none": dict(augment=dict(rotate=0.0, shift=0.0, scale=0.0, **NO_INTENSITY)),
    "aug-no-intensity": dict(augment=NO_INTENSITY),
    "aug-intensity-0.2": dict(augment=dict(brightness=0.2, contrast=0.2, gamma=0.2)),
    # the seed project's geometry (rotation 20, shift 0.2), without its horizontal flip
    "aug-seed-geometry": dict(augment=dict(rotate=20.0, shift=0.2)),
    "ema0.99": dict(ema_decay=0.99),
    "ema0.998": dict(ema_decay=0.998),
    "batch32": dict(batch_size=32),
    "ls0": dict(label_smoothing=0.0),
    "size2x": dict(_size_factor=2),
    "size2x-epochs-half": dict(_size_factor=2, _epochs_factor=0.5),
    "refit": dict(refit=True),
    "size2x-refit": dict(_size_factor=2, refit=True),
    "clahe": dict(preprocess=dict(method="clahe")),
    "gamma": dict(preprocess=dict(method="gamma")),
    # the seed project's CNN with the seed's own recipe (Adam, plateau, early stopping, its
    # augmentation incl. the horizontal flip); only epochs and size follow the benchmark
    "seed-cnn": dict(model="seed-cnn"),
}

log = logging.getLogger("recipe_cv")


def recipe_config(name: str, args):
    """The TrainConfig of one recipe at the benchmark's size and epochs."""
    from cxrlab.config import load_config

    overrides = dict(RECIPES[name])
    epochs = round(args.epochs * overrides.pop("_epochs_factor", 1))
    size = round(args.size * overrides.pop("_size_factor", 1))
    return load_config(
        data=args.data, out=args.out / name, model=overrides.pop("model", args.model),
        image_size=size, epochs=epochs, seed=args.seeds[0], progress=False,
        cache_dir=args.cache_dir, split={"seed": args.split_seed}, **overrides,
    )  # fmt: skip


def run_recipe(name: str, cfg, args) -> list[Path]:
    """Train and evaluate every (fold, seed) of one recipe (finished cells are reused)."""
    from cxrlab.training.cv import run_cv

    start = time.perf_counter()
    result = run_cv(cfg, folds=args.folds, seeds=args.seeds, n_boot=200, make_figures=False)
    log.info("%s: %d cells in %.0f s (%d trained)", name, len(result.run_dirs),
             time.perf_counter() - start, len(result.trained))  # fmt: skip
    return result.run_dirs


def fold_predictions(run_dir: Path, tta: int, out: Path) -> pd.DataFrame:
    """One cell's test-fold predictions: the saved ones, or recomputed with ``tta`` transforms."""
    from cxrlab.rundir import RunDir

    run = RunDir(run_dir)
    if tta <= 1:
        return pd.read_csv(run.predictions("test"))
    cached = out / f"{run_dir.name}-tta{tta}.csv"
    if cached.is_file() and cached.stat().st_mtime > run.checkpoint().stat().st_mtime:
        return pd.read_csv(cached)
    from cxrlab.inference.split import predict_split

    frame = predict_split(run_dir, "test", tta=tta)
    write_csv(cached, frame)
    return frame


def oof(run_dirs: list[Path], seeds: list[int], classes: list[str], tta: int, out: Path):
    """Out-of-fold (paths, labels, probs) of one seed (``seeds=[s]``) or the seeds' ensemble.

    Members of an ensemble are the seeds of one fold: trained on that fold's training images,
    they predict its test images; their probabilities are averaged image by image.
    """
    from cxrlab.evaluation.cv_summary import parse_cv_run_name

    by_fold: dict[int, list[pd.DataFrame]] = {}
    for d in run_dirs:
        fold, seed = parse_cv_run_name(d.name)
        if seed in seeds:
            by_fold.setdefault(fold, []).append(fold_predictions(d, tta, out))
    paths, labels, probs = [], [], []
    for frames in by_fold.values():
        frames = [f.set_index("path").sort_index() for f in frames]
        if any(not f.index.equals(frames[0].index) for f in frames):
            raise SystemExit("Members of one fold predicted different test images.")
        paths.append(frames[0].index.to_numpy())
        labels.append(frames[0]["label"].to_numpy())
        probs.append(np.mean([f[list(classes)].to_numpy() for f in frames], axis=0))
    order = np.argsort(np.concatenate(paths))
    return (np.concatenate(paths)[order], np.concatenate(labels)[order],
            np.concatenate(probs)[order])  # fmt: skip


def fit_seconds(run_dirs: list[Path], seeds: list[int]) -> float:
    from cxrlab.evaluation.cv_summary import parse_cv_run_name
    from cxrlab.rundir import RunDir

    total = 0.0
    for d in run_dirs:
        if parse_cv_run_name(d.name)[1] in seeds:
            summary = RunDir(d).read_json(RunDir(d).summary)
            total += float(summary.get("seconds") or 0.0)
            total += float((summary.get("refit") or {}).get("seconds") or 0.0)
    return total


def seed_spread(runs: dict, recipes: list[str], args, classes) -> list[dict]:
    """Each recipe's single-seed out-of-fold accuracy per seed, and its mean difference from the
    reference's same seeds: how much of a difference seed-to-seed variation alone makes."""
    accuracy: dict[str, dict[int, float]] = {}
    for name in recipes:
        accuracy[name] = {}
        for seed in args.seeds:
            _, y, probs = oof(runs[name], [seed], classes, 1, args.out / name / "tta")
            accuracy[name][seed] = float(np.mean(np.array(classes)[probs.argmax(axis=1)] == y))
    ref = accuracy[args.reference]
    out = []
    for name, acc in accuracy.items():
        values = np.array(list(acc.values()))
        delta = None if name == args.reference else float(np.mean([acc[s] - ref[s] for s in acc]))
        out.append({"recipe": name, "accuracy": acc, "mean": float(values.mean()),
                    "sd": float(values.std(ddof=1)), "delta_mean": delta})  # fmt: skip
    return out


def pct(x, sign: str = "") -> str:
    return "n/a" if x is None else f"{100 * x:{sign}.1f}"


def main() -> None:
    from cxrlab.evaluation.bootstrap import bootstrap_metrics, paired_bootstrap_difference
    from cxrlab.evaluation.compare import holm_adjust, mcnemar_exact
    from cxrlab.evaluation.intervals import proportion_interval
    from cxrlab.rundir import RunDir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=["default"])
    p.add_argument("--reference", default="default", help="recipe every other is compared with")
    p.add_argument("--ensemble", action="store_true", help="also score each recipe's seed ensemble")
    p.add_argument("--tta", type=int, nargs="+", default=[1], help="test-time transforms (1 = off)")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--train-only", action="store_true", help="train the cells, skip the table")
    p.add_argument("--name", default=None, help="the table's file stem (recipe_cv-vs-REFERENCE)")
    args = p.parse_args()
    warnings.simplefilter("ignore")  # undefined per-class metrics of weak recipes: in the JSON
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("cxrlab").setLevel(logging.WARNING)
    import lightning.pytorch  # noqa: F401  (sets its loggers' levels on import: quieted after it)

    for name in ("lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)

    recipes = list(dict.fromkeys([args.reference, *args.recipes]))
    cfgs = {name: recipe_config(name, args) for name in recipes}
    runs = {name: run_recipe(name, cfgs[name], args) for name in recipes}
    if args.train_only:
        return
    classes = RunDir(runs[args.reference][0]).read_classes()
    variants = []  # (label, recipe, seeds, tta)
    for name in recipes:
        for tta in args.tta:
            variants.append((f"{name} seed {args.seeds[0]}" + f" tta{tta}" * (tta > 1), name,
                             [args.seeds[0]], tta))  # fmt: skip
            if args.ensemble and len(args.seeds) > 1:
                label = f"{name} ensemble of {len(args.seeds)}" + f" tta{tta}" * (tta > 1)
                variants.append((label, name, list(args.seeds), tta))
    scored = {}
    for label, name, seeds, tta in variants:
        paths, y, probs = oof(runs[name], seeds, classes, tta, args.out / name / "tta")
        scored[label] = (paths, y, probs, name, seeds, tta)
    ref_label = variants[0][0]
    ref_paths, y_ref, p_ref = scored[ref_label][:3]
    rows, pvals = [], []
    for label, (paths, y, probs, name, seeds, tta) in scored.items():
        if not np.array_equal(paths, ref_paths):
            raise SystemExit(f"{label} was not scored on the reference's images (other folds?).")
        pred = np.array(classes, dtype=object)[probs.argmax(axis=1)]
        correct = int(np.sum(pred == y))
        lo, hi = proportion_interval(correct, len(y))
        boot = bootstrap_metrics(y, probs, labels=classes, n_boot=args.n_boot, seed=0)
        f1 = boot["metrics"]["macro_f1"]
        row = {
            "variant": label, "recipe": name, "seeds": seeds, "tta": tta, "n": len(y),
            "model": cfgs[name].model, "image_size": cfgs[name].image_size,
            "epochs": cfgs[name].epochs,
            "accuracy": correct / len(y), "accuracy_ci": [lo, hi],
            "macro_f1": f1["value"], "macro_f1_ci": [f1["ci_low"], f1["ci_high"]],
            "train_seconds": fit_seconds(runs[name], seeds),
            "overrides": {k: v for k, v in RECIPES[name].items()},
        }  # fmt: skip
        if label != ref_label:
            pred_ref = np.array(classes, dtype=object)[p_ref.argmax(axis=1)]
            row["mcnemar"] = mcnemar_exact(y, pred, pred_ref)
            row["difference"] = paired_bootstrap_difference(
                y, probs, p_ref, labels=classes, n_boot=args.n_boot, seed=0
            )
            pvals.append(row["mcnemar"]["p_value"])
        rows.append(row)
    for row, adj in zip([r for r in rows if "mcnemar" in r], holm_adjust(pvals), strict=True):
        row["mcnemar"]["p_value_holm"] = adj

    head = (
        f"Out-of-fold comparison on {args.data.name} ({rows[0]['n']} images, {args.folds} folds, "
        f"split seed {args.split_seed}; recipes at {args.size} px and {args.epochs} epochs unless "
        "they change them); 95% "
        "CIs (accuracy: Clopper-Pearson; macro-F1 and differences: paired bootstrap, "
        f"{args.n_boot} resamples); McNemar exact vs {ref_label} (Holm over the table)."
    )
    lines = [head, "",
             f"| variant | model, px, epochs | accuracy (%) | macro-F1 (%) | Δ accuracy vs "
             f"{ref_label} (pp) | Δ macro-F1 (pp) | McNemar p (Holm) | training s |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        acc = f"{pct(r['accuracy'])} ({pct(r['accuracy_ci'][0])}-{pct(r['accuracy_ci'][1])})"
        f1 = f"{pct(r['macro_f1'])} ({pct(r['macro_f1_ci'][0])}-{pct(r['macro_f1_ci'][1])})"
        cells = ["", "", ""]
        if "difference" in r:
            cells = []
            for m in ("accuracy", "macro_f1"):
                d = r["difference"][m]
                cells.append(f"{pct(d['value'], '+')} ({pct(d['ci_low'], '+')} to "
                             f"{pct(d['ci_high'], '+')})")  # fmt: skip
            cells.append(f"{r['mcnemar']['p_value']:.3g} ({r['mcnemar']['p_value_holm']:.3g})")
        setting = f"{r['model']}, {r['image_size']}, {r['epochs']}"
        lines.append(f"| {r['variant']} | {setting} | {acc} | {f1} | {' | '.join(cells)} | "
                     f"{r['train_seconds']:.0f} |")  # fmt: skip
    per_seed = seed_spread(runs, recipes, args, classes) if len(args.seeds) > 1 else []
    if per_seed:
        lines += ["", f"Single-seed out-of-fold accuracy of each seed (no TTA); Δ: mean over seeds "
                  f"of (recipe - {args.reference}) with the same seed.", "",
                  "| recipe | accuracy per seed (%) | mean ± SD (%) | Δ mean (pp) |",
                  "|---|---|---|---|"]  # fmt: skip
        for r in per_seed:
            each = ", ".join(f"{pct(a)} (seed {s})" for s, a in r["accuracy"].items())
            delta = "" if r["delta_mean"] is None else pct(r["delta_mean"], "+")
            lines.append(f"| {r['recipe']} | {each} | {pct(r['mean'])} ± {pct(r['sd'])} | "
                         f"{delta} |")  # fmt: skip
    stem = args.out / (args.name or f"recipe_cv-vs-{args.reference}")
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
              "per_seed": per_seed}  # fmt: skip
    write_text(stem.with_suffix(".json"), json.dumps(record, indent=1, default=str))
    write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
