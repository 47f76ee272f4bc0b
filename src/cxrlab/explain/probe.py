"""Shortcut probes: does a trained model need the lungs, or does it read something else?

``probe_run`` evaluates a run's model on its test split four ways and writes ``probe.json``:

1. **lungs removed**: the lung fields blacked out (set to 0). A model that classifies from the
   lungs should fall to chance; one that keeps its accuracy reads something outside them.
2. **lungs only**: everything but the lungs blacked out (how much of the skill lives in the lungs).
3. **border only**: only the outer frame kept (:data:`~cxrlab.explain.regions.BORDER_FRACTION`
   = 12 % of the side on each edge), where burnt-in text, markers and scanner borders live.
4. **source probe** (when the split has more than one known source): a standardised logistic
   regression on the model's penultimate features predicting each image's source, stratified
   cross-validated, beside the majority-source rate and a *label baseline* (the same regression
   on the true class alone: sources confounded with classes are predictable from the class, so
   only accuracy above that baseline shows the features encode the source itself).

Lung fields come from the split's lung masks (``mask_path``); images without a usable mask use
the central fallback region (:func:`~cxrlab.explain.regions.central_lung_region`: two ellipses
over the typical lung fields), recorded in ``probe.json``. With masks, the lung attention ratio
of Grad-CAM maps is summarised as well.

``shortcut_suspected`` is true when any of these rules fires (chance = the majority-class rate of
the split, which is at least 1/K; thresholds chosen on synthetic data with and without a planted
shortcut, where they separate the two with a wide margin):

* ``lungs_removed``: accuracy with the lungs blacked out > max(chance + 0.25,
  chance + 0.5 * (clean accuracy - chance)), i.e. the model keeps more than half of its skill
  above chance without the lungs, and at least 25 points above chance;
* ``border_only``: accuracy from the border frame alone > chance + 0.25;
* ``source_identifiable`` (only with >= 30 images with known sources): source-probe accuracy >
  max(majority-source rate, label baseline) + 0.15.

Mean lung attention below the lung-area baseline is reported as supporting evidence
(``low_lung_attention``) but does not set the flag: CAMs of small, coarse layers are too blurred
for a reliable threshold.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab import __version__
from cxrlab.errors import ConfigError, DataError
from cxrlab.explain._rundir import load_images, load_masks, load_run, split_rows
from cxrlab.explain.attention import MASK_OK, attention_frame, summarize_attention
from cxrlab.explain.regions import (
    BORDER_FRACTION,
    CENTRAL_LUNG_ELLIPSES,
    border_frame,
    central_lung_region,
)
from cxrlab.io import write_json

logger = logging.getLogger(__name__)

#: Probe output file inside the run directory.
PROBE_FILE = "probe.json"

#: Rule thresholds (see the module docstring); recorded in every probe.json.
THRESHOLDS: dict[str, float] = {
    "lungs_removed_margin": 0.25,
    "lungs_removed_retained_fraction": 0.5,
    "border_only_margin": 0.25,
    "source_margin": 0.15,
    "source_min_images": 30,
}


@dataclass
class ProbeResult:
    """What :func:`probe_run` found.

    Attributes:
        path: The probe.json written.
        shortcut_suspected: Whether any flagging rule fired.
        summary: The plain-language summary.
        report: The full probe.json content.
    """

    path: Path
    shortcut_suspected: bool
    summary: str
    report: dict

    def to_dict(self) -> dict:
        """The probe.json content."""
        return self.report


def wilson_interval(successes: int, n: int, *, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion; (nan, nan) when ``n`` is 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, *, labels: list) -> dict:
    """Accuracy (with a 95 % Wilson interval), macro-F1 over ``labels`` and predicted fractions.

    Args:
        y_true: (N,) true labels.
        y_pred: (N,) predicted labels.
        labels: Every class, so a class never predicted still counts in the macro-F1 as 0.
    """
    from sklearn.metrics import f1_score

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n = len(y_true)
    hits = int((y_true == y_pred).sum())
    return {
        "n": n,
        "accuracy": hits / n if n else float("nan"),
        "accuracy_ci95": list(wilson_interval(hits, n)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
        if n
        else float("nan"),
        "predicted_fraction": {
            str(c): float(np.mean(y_pred == c)) if n else float("nan") for c in labels
        },
    }


def chance_levels(y_true: np.ndarray, *, labels: list) -> dict:
    """Reference scores of guessing, from the class prevalences of ``y_true``.

    Returns:
        ``uniform`` (1/K), ``majority`` (always predicting the most frequent class; the ``chance``
        the rules use), ``majority_class``, ``macro_f1_majority`` (macro-F1 of that constant
        guess) and ``macro_f1_uniform`` (expected macro-F1 of uniform random guessing,
        ``mean_k 2 p_k / (1 + K p_k)``).
    """
    y_true = np.asarray(y_true)
    k = len(labels)
    prev = np.array([np.mean(y_true == c) for c in labels]) if len(y_true) else np.full(k, np.nan)
    j = int(np.nanargmax(prev)) if len(y_true) else 0
    p = prev[j]
    return {
        "uniform": 1.0 / k,
        "majority": float(p),
        "majority_class": str(labels[j]),
        "macro_f1_majority": float(2 * p / (1 + p) / k),
        "macro_f1_uniform": float(np.mean(2 * prev / (1 + k * prev))),
    }


def source_probe(
    features: np.ndarray,
    sources: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    folds: int = 5,
    seed: int = 0,
) -> dict:
    """How well the penultimate features predict the image source (cross-validated).

    A standardised multinomial logistic regression, stratified ``folds``-fold (fewer when the
    smallest source has fewer images). Images with an unknown source (``""``) and sources with a
    single image are left out.

    Args:
        features: (N, D) features.
        sources: (N,) source names.
        labels: (N,) true class names, for the label baseline (the same regression on the one-hot
            class alone).
        folds: Maximum number of folds.
        seed: Seed of the fold assignment.

    Returns:
        ``status`` ("ok" or "skipped" with a ``reason``), ``n``, ``n_sources``, ``folds``,
        ``accuracy``, ``macro_f1``, ``balanced_accuracy``, ``majority_rate``,
        ``label_baseline_accuracy`` (None without labels), ``excluded``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    sources = np.asarray(sources, dtype=object).astype(str)
    known = sources != ""
    counts = pd.Series(sources[known]).value_counts()
    keep = known & np.isin(sources, counts[counts >= 2].index.to_numpy())
    excluded = {
        "unknown_source": int((~known).sum()),
        "single_image_sources": int((counts < 2).sum()),
    }
    y = sources[keep]
    n_sources = len(set(y))
    if n_sources < 2:
        return {
            "status": "skipped",
            "reason": f"{n_sources} known source(s) with at least 2 images; need 2 or more.",
            "n": int(keep.sum()),
            "excluded": excluded,
        }
    k = int(min(folds, pd.Series(y).value_counts().min()))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)

    def cv_predict(x: np.ndarray) -> np.ndarray:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on tiny folds
            return cross_val_predict(model, x, y, cv=cv)

    x = np.asarray(features, dtype=np.float64)[keep]
    pred = cv_predict(x)
    names = sorted(set(y))
    out = {
        "status": "ok",
        "n": int(len(y)),
        "n_sources": n_sources,
        "folds": k,
        "accuracy": float(np.mean(pred == y)),
        "macro_f1": float(f1_score(y, pred, labels=names, average="macro", zero_division=0)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "majority_rate": float(counts[counts >= 2].max() / len(y)),
        "label_baseline_accuracy": None,
        "excluded": excluded,
    }
    if labels is not None:
        lab = np.asarray(labels, dtype=object).astype(str)[keep]
        onehot = (lab[:, None] == np.array(sorted(set(lab)))[None, :]).astype(np.float64)
        out["label_baseline_accuracy"] = float(np.mean(cv_predict(onehot) == y))
    return out


def shortcut_rules(
    *,
    clean_accuracy: float,
    lungs_removed_accuracy: float,
    border_only_accuracy: float,
    chance: float,
    source: dict | None = None,
    attention: dict | None = None,
    thresholds: dict[str, float] | None = None,
) -> list[dict]:
    """Evaluate the flagging rules of the module docstring.

    Args:
        clean_accuracy: Accuracy on unmodified images.
        lungs_removed_accuracy: Accuracy with the lungs blacked out.
        border_only_accuracy: Accuracy from the border frame alone.
        chance: The majority-class rate.
        source: :func:`source_probe`'s result, if any.
        attention: :func:`~cxrlab.explain.attention.summarize_attention`'s result, if any.
        thresholds: Overrides of :data:`THRESHOLDS` (default: none).

    Returns:
        One dict per rule: ``name``, ``rule`` (in words), ``value``, ``threshold``,
        ``evaluated``, ``triggered`` and ``flags`` (whether it counts toward
        ``shortcut_suspected``).
    """
    t = THRESHOLDS if thresholds is None else {**THRESHOLDS, **thresholds}
    removed_thr = max(
        chance + t["lungs_removed_margin"],
        chance + t["lungs_removed_retained_fraction"] * (clean_accuracy - chance),
    )
    rules = [
        {
            "name": "lungs_removed",
            "rule": (
                "accuracy with the lungs blacked out > max(chance + "
                f"{t['lungs_removed_margin']}, chance + {t['lungs_removed_retained_fraction']} * "
                "(clean accuracy - chance))"
            ),
            "value": lungs_removed_accuracy,
            "threshold": removed_thr,
            "evaluated": True,
            "triggered": bool(lungs_removed_accuracy > removed_thr),
            "flags": True,
        },
        {
            "name": "border_only",
            "rule": f"accuracy from the border frame alone > chance + {t['border_only_margin']}",
            "value": border_only_accuracy,
            "threshold": chance + t["border_only_margin"],
            "evaluated": True,
            "triggered": bool(border_only_accuracy > chance + t["border_only_margin"]),
            "flags": True,
        },
    ]
    src_rule = {
        "name": "source_identifiable",
        "rule": (
            f"source-probe accuracy > max(majority-source rate, label baseline) + "
            f"{t['source_margin']} (needs >= {int(t['source_min_images'])} images with known "
            "sources)"
        ),
        "value": None,
        "threshold": None,
        "evaluated": False,
        "triggered": False,
        "flags": True,
    }
    if source and source.get("status") == "ok" and source["n"] >= t["source_min_images"]:
        base = max(source["majority_rate"], source.get("label_baseline_accuracy") or 0.0)
        src_rule.update(
            value=source["accuracy"],
            threshold=base + t["source_margin"],
            evaluated=True,
            triggered=bool(source["accuracy"] > base + t["source_margin"]),
        )
    rules.append(src_rule)
    att_rule = {
        "name": "low_lung_attention",
        "rule": "mean lung attention ratio < mean lung-area fraction (supporting evidence only)",
        "value": None,
        "threshold": None,
        "evaluated": False,
        "triggered": False,
        "flags": False,
    }
    overall = (attention or {}).get("overall") or {}
    if overall.get("n"):
        att_rule.update(
            value=overall["lung_ratio_mean"],
            threshold=overall["lung_area_mean"],
            evaluated=True,
            triggered=bool(overall["lung_ratio_mean"] < overall["lung_area_mean"]),
        )
    rules.append(att_rule)
    return rules


def _pct(v: float | None) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.0f}%"


def _summary(report: dict) -> str:
    chance = report["chance"]["majority"]
    clean = report["clean"]["accuracy"]
    removed = report["probes"]["lungs_removed"]["accuracy"]
    only = report["probes"]["lungs_only"]["accuracy"]
    border = report["probes"]["border_only"]["accuracy"]
    region = (
        "lung masks"
        if report["lung_region"]["source"] == "masks"
        else "an approximate central lung region (no masks)"
        if report["lung_region"]["source"] == "central_fallback"
        else "lung masks where available, else an approximate central region"
    )
    fired = [r for r in report["rules"] if r["triggered"] and r["flags"]]
    parts = [
        f"On {report['n_images']} {report['split']} images (chance {_pct(chance)}, clean accuracy "
        f"{_pct(clean)}), blacking out the lungs ({region}) leaves {_pct(removed)} accuracy, the "
        f"lungs alone give {_pct(only)} and the outer border alone {_pct(border)}."
    ]
    if fired:
        why = {
            "lungs_removed": "it keeps much of its accuracy without the lungs",
            "border_only": "the image border alone predicts the class",
            "source_identifiable": (
                "its features identify the image source beyond what the class explains"
            ),
        }
        parts.append(
            "Shortcut suspected: " + "; ".join(why[r["name"]] for r in fired) + ". The model "
            "likely relies on something outside the lungs (text, markers, borders, source "
            "artefacts); inspect the CAM panel and consider a source-held-out split."
        )
    elif clean - chance < 0.1:
        parts.append(
            "No rule flags a shortcut, but the model is near chance on unmodified images, so the "
            "probes have little skill to take away."
        )
    else:
        parts.append("No rule flags a shortcut: without the lungs the model loses its skill.")
    src = report["source_probe"]
    if src.get("status") == "ok":
        parts.append(
            f"Source probe: {_pct(src['accuracy'])} over {src['n_sources']} sources (majority "
            f"{_pct(src['majority_rate'])}, from the class alone "
            f"{_pct(src['label_baseline_accuracy'])})."
        )
    att = report["lung_attention"].get("overall") or {}
    if att.get("n"):
        parts.append(
            f"Mean lung attention {att['lung_ratio_mean']:.2f} vs {att['lung_area_mean']:.2f} "
            "for a uniform map."
        )
    if report["n_images"] < 30:
        parts.append(f"Only {report['n_images']} images: treat these rates as rough.")
    return " ".join(parts)


def probe_run(
    run_dir: str | os.PathLike,
    *,
    split: str = "test",
    batch_size: int = 64,
    device: str | None = None,
    attention: bool = True,
    attention_max_images: int | None = 1000,
    cam_layer: str | None = None,
    seed: int = 0,
) -> ProbeResult:
    """Run the shortcut probes on one split of a trained run and write ``RUN_DIR/probe.json``.

    Args:
        run_dir: A run directory written by ``cxrlab train``.
        split: Which split of split.csv to probe (default the test split).
        batch_size: Images per forward pass.
        device: Where to run (default: CUDA when present).
        attention: Compute the Grad-CAM lung attention summary when masks exist.
        attention_max_images: Cap on the images given CAMs (a seeded random subset; None: all).
        cam_layer: Layer of the lung attention CAMs (default: the model's ``cam_layer``).
        seed: Seed of the source-probe folds and the attention subset.

    Returns:
        A :class:`ProbeResult`; the same content is in ``probe.json``.

    Raises:
        RunDirError, CheckpointError: The run directory is incomplete.
        DataError: The split is empty or none of its images can be read.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
    run = load_run(run_dir, device=device)
    meta, model, classes = run.meta, run.model, list(run.meta.classes)
    size = meta.image_size
    rows = split_rows(run, split)
    images, ok, skipped = load_images(rows["path"].tolist(), size)
    rows, images = rows[ok].reset_index(drop=True), images[ok]
    if rows.empty:
        raise DataError(f"None of the {split} images of {run.run_dir} could be read.")
    y = rows["label"].astype(str).to_numpy()
    n = len(rows)
    logger.info("Probing %d %s images of %s", n, split, run.run_dir)

    masks, status = load_masks(rows, size)
    fallback = central_lung_region(size)
    lung = np.empty((n, size, size), dtype=bool)
    n_masks = 0
    for i, m in enumerate(masks):
        if m is not None and m.any():
            lung[i] = m
            n_masks += 1
        else:
            lung[i] = fallback
    region_source = "masks" if n_masks == n else "central_fallback" if n_masks == 0 else "mixed"
    if n_masks < n:
        logger.warning(
            "%d of %d images have no usable lung mask; the probes use the central fallback region "
            "for them.", n - n_masks, n,
        )  # fmt: skip
    frame = border_frame(size)

    def scores(batch: np.ndarray, *, feats: bool = False):
        probs, f = run.predictor.predict_images(batch, batch_size=batch_size, features=feats)
        pred = np.asarray(classes, dtype=object)[probs.argmax(axis=1)].astype(str)
        return classification_scores(y, pred, labels=classes), pred, f

    clean, clean_pred, features = scores(images, feats=True)
    probes = {
        "lungs_removed": scores(np.where(lung, 0, images).astype(np.uint8))[0],
        "lungs_only": scores(np.where(lung, images, 0).astype(np.uint8))[0],
        "border_only": scores(np.where(frame, images, 0).astype(np.uint8))[0],
    }
    probes["lungs_removed"]["description"] = "lung fields set to 0 (black), the rest unchanged"
    probes["lungs_only"]["description"] = "everything outside the lung fields set to 0"
    probes["border_only"]["description"] = (
        f"only the outer {BORDER_FRACTION:.0%} of the side on each edge kept, the centre set to 0"
    )
    chance = chance_levels(y, labels=classes)

    sources = rows["source"].astype(str).to_numpy()
    if len(set(sources) - {""}) > 1:
        src = source_probe(features, sources, labels=y, seed=seed)
    else:
        src = {
            "status": "skipped",
            "reason": "the split has fewer than two distinct known sources (split.csv 'source').",
        }

    if n_masks and attention:
        att = _attention(
            model, images, masks, status, rows, y, clean_pred, classes,
            limit=attention_max_images, seed=seed, batch_size=batch_size, layer=cam_layer,
        )  # fmt: skip
    else:
        att = {
            "status": "skipped",
            "reason": "no lung masks in split.csv (mask_path)" if not n_masks else "disabled",
        }

    rules = shortcut_rules(
        clean_accuracy=clean["accuracy"],
        lungs_removed_accuracy=probes["lungs_removed"]["accuracy"],
        border_only_accuracy=probes["border_only"]["accuracy"],
        chance=chance["majority"],
        source=src,
        attention=att,
    )
    suspected = any(r["triggered"] and r["flags"] for r in rules)
    report = {
        "run_dir": str(run.run_dir),
        "cxrlab_version": __version__,
        "model": meta.model_name,
        "image_size": size,
        "classes": classes,
        "split": split,
        "n_images": n,
        "skipped_images": skipped,
        "chance": chance,
        "clean": clean,
        "probes": probes,
        "lung_region": {
            "source": region_source,
            "n_masks": n_masks,
            "n_fallback": n - n_masks,
            "fallback": (
                "two ellipses (centre x, centre y, semi-axis x, semi-axis y as fractions of the "
                f"side): {[list(e) for e in CENTRAL_LUNG_ELLIPSES]}"
            ),
            "border_fraction": BORDER_FRACTION,
        },
        "source_probe": src,
        "lung_attention": att,
        "thresholds": dict(THRESHOLDS),
        "rules": rules,
        "shortcut_suspected": suspected,
    }
    report["summary"] = _summary(report)
    path = write_json(run.run_dir / PROBE_FILE, report)
    logger.info("%s", report["summary"])
    return ProbeResult(
        path=path, shortcut_suspected=suspected, summary=report["summary"], report=report
    )


def _attention(
    model, images, masks, status, rows, y, pred, classes, *, limit, seed, batch_size, layer
) -> dict:
    from cxrlab.explain.cam import compute_cams, record_cam_resolution

    idx = np.arange(len(rows))
    if limit is not None and len(idx) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=limit, replace=False))
    x = images[idx][:, None].astype(np.float32) / 255.0
    cams = compute_cams(
        model, x, method="gradcam", target="predicted", layer=layer, batch_size=batch_size
    )
    frame = attention_frame(
        cams, [masks[i] for i in idx], paths=rows["path"].to_numpy()[idx].tolist(),
        labels=y[idx].tolist(), predicted=pred[idx].tolist(), mask_status=[status[i] for i in idx],
    )  # fmt: skip
    summary = summarize_attention(frame, classes=classes)
    layer = layer or model.meta.cam_layer
    record_cam_resolution(summary, model, layer, images.shape[-1])
    summary["status"] = "ok"
    summary["method"] = "gradcam, target: predicted class"
    summary["layer"] = layer
    summary["subset"] = (
        None if len(idx) == len(rows) else f"{len(idx)} of {len(rows)} images (seed {seed})"
    )
    summary["masks_ok"] = int(sum(s == MASK_OK for s in status))
    return summary
