"""Compare runs on the same test set: McNemar, DeLong and paired bootstrap differences.

Runs are comparable when their test sets have the same fingerprint (sha1 of the sorted
(image sha1, label) pairs), whatever their training seeds: until split control lands, runs that
share a split.csv but were trained with other seeds compare like any others. Each run is named
in the tables with its model, training seed and split seed (from its config.yaml).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from cxrlab.errors import CxrlabError, DataError
from cxrlab.evaluation.bootstrap import (
    bootstrap_metrics,
    bootstrap_settings,
    interval_settings,
    paired_bootstrap_difference,
)
from cxrlab.evaluation.delong import delong_ovr
from cxrlab.evaluation.predictions import Predictions
from cxrlab.evaluation.runs import (
    ensure_predictions,
    load_predictions,
)
from cxrlab.io import write_json, write_text
from cxrlab.reports import tables
from cxrlab.rundir import RunDir

logger = logging.getLogger(__name__)

#: Metrics whose paired differences are bootstrapped.
DIFF_METRICS = ("accuracy", "macro_f1", "macro_roc_auc")


def mcnemar_exact(y_true, y_pred_a, y_pred_b) -> dict[str, Any]:
    """McNemar's exact test of equal error rates of two classifiers on the same samples.

    The two-sided exact binomial test (p = 1/2) on the discordant pairs: ``b`` samples only A
    classifies correctly, ``c`` only B does. With no discordant pair the p-value is 1.

    Returns:
        ``{"b", "c", "n_discordant", "p_value", "test"}``.
    """
    y_true = np.asarray(y_true, dtype=object)
    a = np.asarray(y_pred_a, dtype=object) == y_true
    b_ = np.asarray(y_pred_b, dtype=object) == y_true
    if not (len(a) == len(b_) == len(y_true)):
        raise ValueError("y_true, y_pred_a and y_pred_b must have the same length.")
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    p = float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue) if b + c else 1.0
    return {
        "b": b,
        "c": c,
        "n_discordant": b + c,
        "p_value": p,
        "test": "McNemar exact (two-sided binomial test on discordant pairs)",
    }


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control over all pairs)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="mergesort")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


@dataclass
class ComparisonResult:
    """What :func:`compare_runs` computed.

    Attributes:
        runs: Run name -> {"run_dir", "n", "metrics": {name: {value, ci_low, ci_high}}}.
        pairs: One dict per pair: run_a, run_b, McNemar counts and p-values, differences A - B.
        test_set: The shared test-set fingerprint.
        files: Written files by short name.
    """

    runs: dict[str, dict[str, Any]]
    pairs: list[dict[str, Any]]
    test_set: dict[str, Any]
    bootstrap: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "test_set": self.test_set,
            "bootstrap": self.bootstrap,
            "intervals": interval_settings(self.bootstrap["confidence"]),
            "runs": self.runs,
            "pairs": self.pairs,
        }


def _run_names(run_dirs: list[Path]) -> list[str]:
    names = [d.name for d in run_dirs]
    if len(set(names)) == len(names):
        return names
    return [str(d) for d in run_dirs]


def run_identity(run_dir: Path) -> dict[str, Any]:
    """Model, training seed and split seed of a run, from its config.yaml (None when unknown).

    The split seed is ``split.seed`` when the config has one, else the training seed (cxrlab
    train derives the split from it).
    """
    from cxrlab.rundir import RunDir

    try:
        config = RunDir(run_dir).read_config()
    except CxrlabError as exc:
        logger.warning("%s", exc)
        config = {}
    split = config.get("split") if isinstance(config.get("split"), dict) else {}
    seed = config.get("seed")
    return {
        "model": config.get("model"),
        "seed": seed,
        "split_seed": split.get("seed", seed),
    }


def check_same_test_set(run_dirs: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Fingerprint every run's test set and refuse if they differ.

    Raises:
        DataError: Naming the runs of each distinct test set.
    """
    run_dirs = [Path(d) for d in run_dirs]
    prints = {d: RunDir(d).fingerprint() for d in run_dirs}
    groups: dict[str, list[Path]] = {}
    for d, fp in prints.items():
        groups.setdefault(fp["sha1"], []).append(d)
    if len(groups) > 1:
        parts = [
            f"test set {h[:10]} (n={prints[ds[0]]['n']}, keyed by {prints[ds[0]]['key']} from "
            f"{prints[ds[0]]['from']}): {', '.join(str(d) for d in ds)}"
            for h, ds in groups.items()
        ]
        raise DataError(
            "Runs can only be compared on identical test sets, but these differ: "
            + "; ".join(parts)
            + ". Train them with the same data, split method, fractions and seed (or the same "
            "split.csv), or compare each group separately."
        )
    return next(iter(prints.values()))


def _aligned(preds: list[Predictions], run_dirs: list[Path]) -> list[Predictions]:
    """Reorder every run's predictions to the first run's row order (by path, else by sha1)."""

    def keyed(p: Predictions, mapping: dict[str, str] | None) -> pd.Index:
        keys = (
            p.paths
            if mapping is None
            else np.array([mapping.get(x, x) for x in p.paths], dtype=object)
        )
        return pd.Index(keys)

    for use_sha1 in (False, True):
        maps = [RunDir(d).path_to_sha1() if use_sha1 else None for d in run_dirs]
        if use_sha1 and not all(maps):
            break
        keys = [keyed(p, m) for p, m in zip(preds, maps, strict=True)]
        if all(k.is_unique for k in keys) and all(set(k) == set(keys[0]) for k in keys[1:]):
            out = []
            for p, k in zip(preds, keys, strict=True):
                idx = k.get_indexer(keys[0])
                out.append(
                    Predictions(
                        paths=p.paths[idx],
                        y_true=p.y_true[idx],
                        y_pred=p.y_pred[idx],
                        probs=p.probs[idx],
                        classes=p.classes,
                        source=p.source,
                        extra=p.extra.iloc[idx].reset_index(drop=True),
                    )
                )
            for p, d in zip(out[1:], run_dirs[1:], strict=True):
                if not np.array_equal(p.y_true, out[0].y_true):
                    raise DataError(
                        f"{d}/predictions/test.csv labels some images differently from "
                        f"{run_dirs[0]}; "
                        "the runs did not use the same labels. Re-run `cxrlab evaluate` on both."
                    )
            return out
    raise DataError(
        "The runs' predictions/test.csv files do not cover the same images (by path or by sha1), "
        f"although their split manifests match: {', '.join(str(d) for d in run_dirs)}. Delete the "
        "stale predictions files and re-run `cxrlab evaluate` on each run."
    )


def compare_runs(
    run_dirs: Sequence[str | os.PathLike],
    *,
    out: str | os.PathLike | None = "comparison",
    n_boot: int = 1000,
    seed: int = 0,
    device=None,
) -> ComparisonResult:
    """Compare two or more runs on their (identical) test set.

    Each run gets its metrics with their intervals; each pair gets McNemar's exact test on
    per-image correctness, DeLong's test of the ROC AUC difference per class one-vs-rest and for
    the macro AUC (both p-values also Holm-adjusted over all pairs), and paired bootstrap CIs of
    the accuracy, macro-F1 and macro-AUC differences (A - B, the same resamples for both runs).

    Args:
        run_dirs: At least two run directories (predictions are computed when missing).
        out: Folder for comparison.json/.md/.tex (None: write nothing).
        n_boot: Bootstrap resamples.
        seed: Bootstrap seed.
        device: Device for computing missing predictions.

    Raises:
        DataError: The runs' test sets (or classes) differ.
    """
    run_dirs = [RunDir.open(d).path for d in run_dirs]
    if len(run_dirs) < 2:
        raise DataError("Pass at least two run directories to compare.")
    if len({d.resolve() for d in run_dirs}) < len(run_dirs):
        raise DataError(f"A run directory was given twice: {[str(d) for d in run_dirs]}.")
    for d in run_dirs:
        ensure_predictions(d, ("test",), device=device)
    test_set = check_same_test_set(run_dirs)
    preds = []
    for d in run_dirs:
        preds.append(load_predictions(d, "test", RunDir(d).read_classes()))
    classes = list(preds[0].classes)
    for d, p in zip(run_dirs[1:], preds[1:], strict=True):
        if list(p.classes) != classes:
            raise DataError(
                f"{d} has classes {list(p.classes)} but {run_dirs[0]} has {classes}; runs must "
                "share "
                "classes in the same order to be compared."
            )
    preds = _aligned(preds, run_dirs)
    names = _run_names(run_dirs)
    runs = {}
    for name, d, p in zip(names, run_dirs, preds, strict=True):
        r = bootstrap_metrics(
            p.y_true, p.probs, labels=classes, y_pred=p.y_pred, n_boot=n_boot, seed=seed
        )
        runs[name] = {
            "run_dir": str(d),
            **run_identity(d),
            "n": r["n"],
            "metrics": r["metrics"],
        }
    pairs = []
    for (i, a), (j, b) in combinations(enumerate(names), 2):
        pa, pb = preds[i], preds[j]
        test = mcnemar_exact(pa.y_true, pa.y_pred, pb.y_pred)
        diff = paired_bootstrap_difference(
            pa.y_true, pa.probs, pb.probs, labels=classes, y_pred_a=pa.y_pred, y_pred_b=pb.y_pred,
            metrics=DIFF_METRICS, n_boot=n_boot, seed=seed,
        )  # fmt: skip
        delong = delong_ovr(pa.y_true, pa.probs, pb.probs, labels=classes)
        pairs.append(
            {"run_a": a, "run_b": b, "mcnemar": test, "delong": delong, "difference": diff}
        )
    for pair, adj in zip(pairs, holm_adjust([p["mcnemar"]["p_value"] for p in pairs]), strict=True):
        pair["mcnemar"]["p_value_holm"] = adj
    macro = [p for p in pairs if "p_value" in p["delong"]["macro"]]
    for pair, adj in zip(
        macro, holm_adjust([p["delong"]["macro"]["p_value"] for p in macro]), strict=True
    ):
        pair["delong"]["macro"]["p_value_holm"] = adj
    result = ComparisonResult(
        runs=runs, pairs=pairs, test_set=test_set, bootstrap=bootstrap_settings(n_boot, seed, 0.95)
    )
    if out is not None:
        result.files = write_comparison(result, out)
    return result


def runs_table(result: ComparisonResult) -> pd.DataFrame:
    """One row per run: model, seed, split seed, then accuracy, macro F1/recall/AUC, ECE."""
    frame = tables.comparison_table({name: r["metrics"] for name, r in result.runs.items()})
    ids = pd.DataFrame(
        [
            {
                "Model": _text(r.get("model")),
                "Seed": _text(r.get("seed")),
                "Split seed": _text(r.get("split_seed")),
            }
            for r in result.runs.values()
        ]
    )
    return pd.concat([frame[["Run"]], ids, frame.drop(columns="Run")], axis=1)


def _text(value) -> str:
    return "unknown" if value is None else str(value)


def pairs_table(result: ComparisonResult) -> pd.DataFrame:
    """One row per pair: McNemar (raw and Holm p), DeLong macro AUC p, differences with CIs."""
    rows = []
    for p in result.pairs:
        m = p["mcnemar"]
        row = {
            "Run A": p["run_a"],
            "Run B": p["run_b"],
            "Only A correct": str(m["b"]),
            "Only B correct": str(m["c"]),
            "McNemar p": _format_p(m["p_value"]),
            "Holm p": _format_p(m["p_value_holm"]),
        }
        macro = p.get("delong", {}).get("macro", {})
        row["DeLong macro AUC p"] = _format_p(macro["p_value"]) if "p_value" in macro else "n/a"
        row["DeLong Holm p"] = (
            _format_p(macro["p_value_holm"]) if "p_value_holm" in macro else "n/a"
        )
        for name, entry in p["difference"].items():
            label, pct = tables.METRIC_DISPLAY[name]
            unit = "pp, " if pct else ""
            row[f"Δ {label.replace(' (%)', '')} ({unit}95% CI)"] = tables.format_ci(
                entry, percent=pct
            )
        rows.append(row)
    return pd.DataFrame(rows)


def delong_table(result: ComparisonResult) -> pd.DataFrame:
    """One row per (pair, class or macro): the AUCs, their difference with CI and DeLong's p."""
    rows = []
    for p in result.pairs:
        d = p.get("delong")
        if not d:
            continue
        for cls, e in [*d["per_class"].items(), ("macro", d["macro"])]:
            row = {"Run A": p["run_a"], "Run B": p["run_b"], "Class (vs rest)": cls}
            if "p_value" not in e:
                row["AUC A"] = row["AUC B"] = "n/a"
                row["Δ AUC (95% CI)"] = e.get("undefined", "undefined")
                row["DeLong p"] = "n/a"
            else:
                row["AUC A"] = f"{e['auc_a']:.3f}"
                row["AUC B"] = f"{e['auc_b']:.3f}"
                row["Δ AUC (95% CI)"] = tables.format_ci(
                    {"value": e["difference"], "ci_low": e["ci_low"], "ci_high": e["ci_high"]},
                    percent=False,
                )
                row["DeLong p"] = _format_p(e["p_value"])
            rows.append(row)
    return pd.DataFrame(rows)


def _format_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def write_comparison(result: ComparisonResult, out: str | os.PathLike) -> dict[str, Path]:
    """Write comparison.json, comparison.md and comparison.tex atomically into ``out``."""
    out = Path(out)
    fp = result.test_set
    b = result.bootstrap
    note = (
        f"Shared test set {fp['sha1'][:10]} (n = {fp['n']}). McNemar: exact two-sided binomial "
        f"test on discordant images; DeLong: paired test of ROC AUCs (one-vs-rest; macro = mean "
        f"over classes); Holm: adjusted over {len(result.pairs)} pair(s). Differences are A - B "
        f"(rates in percentage points) with paired {b['method']} CIs ({b['n_boot']} resamples, "
        f"seed {b['seed']}); DeLong CIs are difference +/- 1.96 SE."
    )
    runs, pairs, delong = runs_table(result), pairs_table(result), delong_table(result)
    md = (
        "## Runs\n\n"
        + tables.to_markdown(runs)
        + "\n## Pairwise comparisons\n\n"
        + tables.to_markdown(pairs)
        + "\n## ROC AUC differences (DeLong)\n\n"
        + tables.to_markdown(delong)
        + "\n"
        + note
        + "\n"
    )
    runs_tex = tables.to_latex(
        runs, caption="Runs on the shared test set (95% CIs).", label="tab:runs"
    )
    pairs_tex = tables.to_latex(
        pairs, caption="Pairwise comparisons.", label="tab:pairs", notes=note
    )
    delong_tex = tables.to_latex(
        delong, caption="ROC AUC differences, DeLong's test.", label="tab:delong", notes=note
    )
    tex = runs_tex + "\n" + pairs_tex + "\n" + delong_tex
    return {
        "json": write_json(out / "comparison.json", result.to_dict()),
        "md": write_text(out / "comparison.md", md),
        "tex": write_text(out / "comparison.tex", tex),
    }
