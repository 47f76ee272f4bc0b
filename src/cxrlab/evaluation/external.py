"""``evaluate_external``: score a trained run on another collection, after a leakage audit.

Steps (``cxrlab evaluate RUN --data FOLDER``):

1. read the external set (:func:`cxrlab.data.external.load_external`: any scanner layout, or a
   folder plus an index CSV) and map its classes to the run's;
2. **audit** it against every image of the run's train, val and test splits
   (:mod:`cxrlab.data.overlap`: sha1 and the splitter's perceptual hash); matches are listed in
   ``overlap.csv`` and left out unless ``keep_overlap``;
3. predict the rest with the run's checkpoint (the one decode loop and forward pass);
4. metrics with the same schema and interval methods as :func:`~cxrlab.evaluation.evaluate_run`,
   the temperature and operating thresholds fitted on the internal validation split applied to
   the external set (``transfer``), the internal test next to the external set
   (``internal_vs_external``) and metrics per source (``per_source``).

Everything is written into ``RUN/external/<name>/`` (:class:`cxrlab.rundir.ExternalDir`):
``predictions.csv``, ``overlap.csv``, ``skipped.csv`` (when rows were left out),
``metrics.json``, ``tables/`` and ``figures/``. The run's own files and the external folder are
never written to.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlab import __version__
from cxrlab.data.dedupe import DEFAULT_THRESHOLD
from cxrlab.data.external import ExternalSet, load_external
from cxrlab.data.overlap import OVERLAP_COLUMNS, find_overlap, hash_images, reference_hashes
from cxrlab.errors import DataError
from cxrlab.evaluation.bootstrap import bootstrap_metrics
from cxrlab.evaluation.calibration import temperature_scaling
from cxrlab.evaluation.evaluate import (
    DEFINITIONS,
    METRICS_FORMAT,
    ensemble_entry,
    metrics_entries,
)
from cxrlab.evaluation.operating_points import operating_points
from cxrlab.evaluation.per_source import SetSummary, comparison, per_source
from cxrlab.evaluation.predictions import Predictions, read_predictions
from cxrlab.io import refuse_inside, write_csv, write_json
from cxrlab.rundir import ExternalDir, RunDir, split_fingerprint

logger = logging.getLogger(__name__)


@dataclass
class ExternalResult:
    """What :func:`evaluate_external` computed and wrote.

    Attributes:
        run_dir: The run.
        out: ``RUN/external/<name>/``.
        classes: The model's classes.
        metrics: The content of the external ``metrics.json``.
        overlap: The audit's pairs (:data:`~cxrlab.data.overlap.OVERLAP_COLUMNS`).
        external: The external set as read.
        files: Written files by short name.
    """

    run_dir: Path
    out: ExternalDir
    classes: list[str]
    metrics: dict[str, Any]
    overlap: pd.DataFrame
    external: ExternalSet
    files: dict[str, Path] = field(default_factory=dict)

    def value(self, name: str) -> float:
        return self.metrics["metrics"][name]["value"]


def internal_predictions(
    run: RunDir, split: str, classes: Sequence[str], *, device=None, tta: int = 1
) -> Predictions | None:
    """The run's saved predictions of a split, or (missing/stale/other TTA) predicted now, never
    written."""
    from cxrlab.evaluation.runs import predictions_tta

    path = run.predictions(split)
    checkpoint = run.model_file()
    if path.is_file() and (
        checkpoint is None
        or (path.stat().st_mtime >= checkpoint.stat().st_mtime
            and predictions_tta(run, split) == tta)
    ):  # fmt: skip
        return read_predictions(path, classes)
    if checkpoint is None or not run.has_split():
        return None
    from cxrlab.inference.split import predict_split

    logger.info("Predicting the run's %s split in memory (predictions/%s.csv is not fresh)", split,
                split)  # fmt: skip
    try:
        frame = predict_split(run, split, device=device, tta=tta)
    except DataError as exc:
        logger.warning("Could not predict the %s split of %s: %s", split, run.path, exc)
        return None
    return Predictions.from_frame(frame, classes)


def _audit(
    ext: ExternalSet, run: RunDir, threshold: int, workers: int | None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """(hashes of the external images, overlap pairs, unreadable path -> reason)."""
    hashed = hash_images(ext.index["path"].tolist(), workers=workers)
    reference = reference_hashes(run.reference_split(), workers=workers)
    pairs = find_overlap(hashed.frame, reference, threshold=threshold)
    return hashed.frame, pairs, hashed.errors


def _overlap_summary(pairs: pd.DataFrame, n_checked: int, threshold: int, keep: bool) -> dict:
    best = pairs.drop_duplicates("path")
    return {
        "n_checked": int(n_checked),
        "n_matched": int(len(best)),
        "by_match": {str(k): int(v) for k, v in best["match"].value_counts().items()},
        "by_split": {str(k): int(v) for k, v in best["matched_split"].value_counts().items()},
        "n_pairs": int(len(pairs)),
        "threshold": int(threshold),
        "hash": "256-bit DCT perceptual hash (cxrlab.data.dedupe.phash) and sha1 of the bytes; "
        "external images also hashed with their dark borders trimmed",
        "excluded": not keep,
        "file": "overlap.csv",
        "note": (
            "matched external images are kept in the metrics (--keep-overlap)"
            if keep
            else "matched external images are left out of the metrics"
        ),
    }


def _transfer(
    val: Predictions | None, test: Predictions | None, ext_true, ext_probs, classes, name: str
) -> tuple[dict, dict, dict]:
    """(external calibration, external operating points, transfer summary)."""
    if val is None:
        note = "no validation predictions: neither temperature nor thresholds can be transferred"
        from cxrlab.evaluation.calibration import calibration_summary, reliability_curve

        cal = {
            "temperature": None,
            "note": note,
            "before": calibration_summary(ext_true, ext_probs, labels=classes),
            "reliability_before": reliability_curve(ext_true, ext_probs, labels=classes),
        }
        return cal, {"classes": {}, "note": note}, {"note": note}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # reported in the 'note' fields
        cal = temperature_scaling(val.y_true, val.probs, ext_true, ext_probs, labels=classes)
        cal_int = (
            temperature_scaling(val.y_true, val.probs, test.y_true, test.probs, labels=classes)
            if test is not None
            else None
        )
    points = operating_points(val.y_true, val.probs, ext_true, ext_probs, labels=classes)
    points["applied_to"] = name
    points_int = (
        operating_points(val.y_true, val.probs, test.y_true, test.probs, labels=classes)
        if test is not None
        else {"classes": {}}
    )
    transfer: dict[str, Any] = {
        "temperature": cal.get("temperature"),
        "temperature_fit": {k: v for k, v in cal["fit"].items()},
        "ece": {
            "internal_test": {
                "before": cal_int["before"]["ece"] if cal_int else None,
                "after": cal_int.get("after", {}).get("ece") if cal_int else None,
            },
            name: {"before": cal["before"]["ece"], "after": cal.get("after", {}).get("ece")},
        },
        "thresholds": {},
    }
    for c, rules in points["classes"].items():
        for rule, e in rules.items():
            if e.get("threshold") is None:
                continue
            internal = points_int["classes"].get(c, {}).get(rule, {}).get("test")
            transfer["thresholds"].setdefault(c, {})[rule] = {
                "threshold": e["threshold"],
                "val": {"sensitivity": e["val_sensitivity"], "specificity": e["val_specificity"]},
                "internal_test": {k: internal[k] for k in ("sensitivity", "specificity")}
                if internal
                else None,
                name: {k: e["test"][k] for k in ("sensitivity", "specificity")},
            }
    return cal, points, transfer


def evaluate_external(
    run_dir: str | os.PathLike,
    data: str | os.PathLike,
    *,
    name: str | None = None,
    index: str | os.PathLike | None = None,
    path_column: str = "path",
    label_column: str = "label",
    source_column: str | None = None,
    class_map: Mapping[str, str] | Iterable[str] | None = None,
    drop_class: Sequence[str] = (),
    drop_unmapped: bool = False,
    keep_overlap: bool = False,
    threshold: int = DEFAULT_THRESHOLD,
    n_boot: int = 1000,
    seed: int = 0,
    device=None,
    make_figures: bool = True,
    workers: int | None = None,
    tta: int = 1,
) -> ExternalResult:
    """Audit an external set against a run's images, score the rest, write RUN/external/<name>/.

    Args:
        run_dir: A finished run directory (checkpoint and split.csv).
        data: The external folder (any scanner layout, or the folder ``index`` refers to).
        name: Results folder name (default: the folder's name).
        index: Optional CSV listing the images (``path_column``, ``label_column``, and
            ``source_column`` when given).
        class_map: External label -> model class (``{"COVID-19": "COVID"}`` or
            ``["COVID-19=COVID"]``).
        drop_class: External labels to leave out.
        drop_unmapped: Leave out every label that is neither a model class nor mapped.
        keep_overlap: Keep the images the audit matched (they are still listed).
        threshold: Perceptual-hash distance (of 256 bits) of a near duplicate.
        n_boot: Bootstrap resamples; seed: their seed.
        device: Where the model runs (default: CUDA when available).
        make_figures: Draw the figures.
        workers: Reader threads.
        tta: Test-time views averaged per image (1 = off), for the external set and the
            internal val/test it is compared with; recorded in metrics.json.

    Raises:
        DataError: The folder is missing, empty, without class folders, holds only unknown
            classes, or every image overlaps the run's images (see :mod:`cxrlab.data.external`).
    """
    from cxrlab.data.images import decode_many
    from cxrlab.evaluation.external_report import write_outputs
    from cxrlab.inference.predictor import load_predictor
    from cxrlab.inference.tta import describe_tta, with_tta

    transforms = describe_tta(tta)
    run = RunDir.open(run_dir)
    checkpoint = run.model_file() or run.checkpoint()  # an ensemble: its manifest
    classes = run.read_classes()
    data = Path(data).expanduser()
    out = run.external(name or data.resolve().name)
    refuse_inside(out.path, data, "The results folder RUN/external/<name>")
    ext = load_external(
        data, classes, index=index, path_column=path_column, label_column=label_column,
        source_column=source_column, class_map=class_map, drop_class=drop_class,
        drop_unmapped=drop_unmapped, workers=workers,
    )  # fmt: skip
    skipped = [ext.skipped]
    hashes, pairs, unreadable = _audit(ext, run, threshold, workers)
    index_df = ext.index.merge(hashes[["path", "sha1"]], on="path", how="inner")
    if unreadable:
        skipped.append(
            pd.DataFrame({"path": list(unreadable), "reason": list(unreadable.values())})
        )
    matched = set(pairs["path"])
    n_matched = int(index_df["path"].isin(matched).sum())
    logger.info("Leakage audit: %d of %d external images match the run's images", n_matched,
                len(index_df))  # fmt: skip
    if not keep_overlap:
        if n_matched == len(index_df):
            raise DataError(
                f"Every one of the {len(index_df)} readable images of the external set {data} "
                f"matches an image of the run {run.path} (train, val or test; exact or near "
                "duplicate), so nothing external is left to score. Use a collection the run was "
                "not trained on (audit candidates first with `cxrlab data overlap FOLDER_A "
                "FOLDER_B`), or pass --keep-overlap to score them anyway (not an external test)."
            )
        left = index_df["path"].isin(matched)
        skipped.append(pd.DataFrame({"path": index_df.loc[left, "path"],
                                     "reason": "matches a run image (overlap.csv)"}))  # fmt: skip
        index_df = index_df[~left].reset_index(drop=True)

    predictor = with_tta(load_predictor(checkpoint, device=device), tta)
    decoded = decode_many(index_df["path"].tolist(), predictor.image_size, workers=workers,
                          preprocess=predictor.preprocess)  # fmt: skip
    if not decoded.ok.all():
        bad = np.flatnonzero(~decoded.ok)
        skipped.append(pd.DataFrame({"path": index_df["path"].to_numpy()[bad],
                                     "reason": [decoded.errors[i] for i in bad]}))  # fmt: skip
    if not decoded.ok.any():
        raise DataError(f"No image of the external set {data} could be decoded for the model.")
    index_df = index_df[decoded.ok].reset_index(drop=True)
    probs, _ = predictor.predict_images(decoded.images[decoded.ok])
    y_true = index_df["label"].to_numpy(dtype=object)
    predicted = np.asarray(classes, dtype=object)[probs.argmax(axis=1)]
    present = [c for c in classes if (y_true == c).any()]
    absent = [c for c in classes if c not in present]

    result = bootstrap_metrics(y_true, probs, labels=classes, n_boot=n_boot, seed=seed)
    val = internal_predictions(run, "val", classes, device=device, tta=tta)
    test = internal_predictions(run, "test", classes, device=device, tta=tta)
    calibration, points, transfer = _transfer(val, test, y_true, probs, classes, out.name)
    ext_summary = SetSummary(y_true, probs, labels=classes, present=present, n_boot=n_boot,
                             seed=seed + 1)  # fmt: skip
    versus = None
    sources_int = None
    if test is not None:
        int_summary = SetSummary(test.y_true, test.probs, labels=classes, present=present,
                                 n_boot=n_boot, seed=seed)  # fmt: skip
        versus = comparison(int_summary, {out.name: ext_summary})
        split_src = run.read_split().set_index("path")["source"]
        test_sources = pd.Series(test.paths).map(split_src).fillna("").to_numpy()
        sources_int = per_source(test.y_true, test.probs, test_sources, labels=classes,
                                 n_boot=n_boot, seed=seed)  # fmt: skip
    sources_ext = per_source(y_true, probs, index_df["source"].to_numpy(), labels=classes,
                             n_boot=n_boot, seed=seed)  # fmt: skip

    frame = pd.DataFrame({"path": index_df["path"], "label": y_true, "predicted": predicted})
    for j, c in enumerate(classes):
        frame[c] = probs[:, j]
    frame["original_label"] = index_df["original_label"].to_numpy()
    frame["source"] = index_df["source"].to_numpy()
    frame["sha1"] = index_df["sha1"].to_numpy()
    frame["overlap"] = frame["path"].isin(matched)
    fingerprint = split_fingerprint(frame[["sha1", "label"]])
    metrics = {
        "cxrlab_version": __version__,
        "format": METRICS_FORMAT,
        "split": "external",
        "external_set": out.name,
        "data": str(ext.root),
        "index": str(Path(index).resolve()) if index is not None else None,
        "predictions": "predictions.csv",
        "classes": classes,
        "classes_present": present,
        "classes_absent": absent,
        "classes_note": (
            f"the external set has no image of {absent}: metrics.json's macro averages count "
            "them as 0 (the internal schema); internal_vs_external and per_source average over "
            "the classes present; the full confusion matrix is kept"
            if absent
            else "every model class is present"
        ),
        "class_mapping": ext.mapping,
        "n": result["n"],
        "n_per_class": result["n_per_class"],
        "test_set": fingerprint,
        "test_set_hash": fingerprint["sha1"],
        "overlap": _overlap_summary(pairs, len(hashes), threshold, keep_overlap),
        "tta": int(tta),
        "tta_transforms": transforms,
        **ensemble_entry(run),
        "n_skipped": int(sum(len(s) for s in skipped)),
        **metrics_entries(result),
        "calibration": {
            **{k: v for k, v in calibration.items() if not hasattr(v, "shape")},
            "applied_to": out.name,
            "reliability": {
                when: calibration[f"reliability_{when}"].to_dict(orient="list")
                for when in ("before", "after")
                if f"reliability_{when}" in calibration
            },
        },
        "operating_points": points,
        "transfer": transfer,
        "internal_vs_external": versus,
        "per_source": {"internal_test": sources_int, out.name: sources_ext},
        "definitions": {
            **DEFINITIONS,
            "overlap": "an external image matches a run image when their sha1 are equal "
            "(exact) or their perceptual hashes differ in at most 'threshold' of 256 bits "
            "(near), also after trimming the external image's dark borders",
        },
    }
    out.path.mkdir(parents=True, exist_ok=True)
    files = {
        "predictions": write_csv(out.predictions, frame),
        "overlap": write_csv(out.overlap, pairs.rename(columns={"path": "external_path"})),
    }
    skipped_df = pd.concat(skipped, ignore_index=True)
    if len(skipped_df):
        files["skipped"] = write_csv(out.skipped, skipped_df)
    files["metrics"] = write_json(out.metrics, metrics)
    metrics = json.loads(files["metrics"].read_text())
    files.update(
        write_outputs(out, metrics, y_true, probs, calibration, keep_overlap=keep_overlap,
                      make_figures=make_figures)
    )  # fmt: skip
    logger.info("Wrote %s and %d other files", files["metrics"], len(files) - 1)
    return ExternalResult(run.path, out, classes, metrics, pairs, ext, files)


__all__ = ["OVERLAP_COLUMNS", "ExternalResult", "evaluate_external", "internal_predictions"]
