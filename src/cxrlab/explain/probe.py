"""Shortcut probes of a trained run: ``probe_run`` writes ``RUN_DIR/probe.json``.

Does a trained model need the lungs, or does it read something else? :func:`probe_run` loads a
run's model and one split's images and lung masks, and :func:`probe_images` runs the pure probes
of :mod:`cxrlab.explain.probes` on them (lungs removed, lungs only, border only, the source probe
on penultimate features, Grad-CAM lung attention) and judges the scores with the rules of
:mod:`cxrlab.explain.shortcut_rules`, which also write the plain-language summary.

Lung fields come from the split's lung masks (``mask_path``); images without a usable mask use
the central fallback region, recorded in ``probe.json``. With masks, the lung attention ratio of
Grad-CAM maps is summarised as well.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrlab import __version__
from cxrlab.errors import ConfigError, DataError
from cxrlab.explain._rundir import fill_masks, load_images, load_masks, load_run, split_rows
from cxrlab.explain.probes import (
    chance_levels,
    classification_scores,
    lung_attention,
    lung_fields,
    occlusion_probes,
    predict_labels,
    source_probe,
)
from cxrlab.explain.regions import BORDER_FRACTION, CENTRAL_LUNG_ELLIPSES
from cxrlab.explain.shortcut_rules import THRESHOLDS, probe_summary, shortcut_rules
from cxrlab.io import write_json
from cxrlab.rundir import RunDir

logger = logging.getLogger(__name__)


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


def probe_images(
    model: torch.nn.Module,
    images: np.ndarray,
    labels: Sequence[str],
    *,
    masks: Sequence[np.ndarray | None] | None = None,
    mask_status: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    paths: Sequence[str] | None = None,
    split: str = "test",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    attention: bool = True,
    attention_max_images: int | None = 1000,
    cam_layer: str | None = None,
    seed: int = 0,
) -> dict:
    """Run every shortcut probe on in-memory images and judge the scores.

    Args:
        model: A :class:`~cxrlab.models.CxrClassifier`.
        images: (N, S, S) uint8, S the model's input size (``load_for_model``).
        labels: (N,) true class names, each one of ``model.meta.classes``.
        masks: N entries: (S, S) bool lung masks or None (default: none, so the central fallback
            region for every image and no lung attention).
        mask_status: Why a mask is None, per image (as
            :func:`~cxrlab.explain.probes.lung_attention` takes it).
        sources: (N,) image sources ("" when unknown) for the source probe (default: none).
        paths: Image paths for the lung attention rows.
        split: Name of the split the images come from (for the summary).
        batch_size: Images per forward pass.
        device: Where to run (default: CUDA when present).
        attention: Compute the Grad-CAM lung attention summary when masks exist.
        attention_max_images: Cap on the images given CAMs (a seeded random subset; None: all).
        cam_layer: Layer of the lung attention CAMs (default: the model's ``cam_layer``).
        seed: Seed of the source-probe folds and the attention subset.

    Returns:
        The probe report (probe.json without the run fields): ``model``, ``image_size``,
        ``classes``, ``split``, ``n_images``, ``chance``, ``clean``, ``probes``, ``lung_region``,
        ``source_probe``, ``lung_attention``, ``thresholds``, ``rules``, ``shortcut_suspected``
        and ``summary``.

    Raises:
        ConfigError: ``batch_size`` is below 1.
        DataError: No images, mismatched lengths, or labels the model does not know.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
    classes = list(model.meta.classes)
    n, size = len(images), images.shape[-1]
    y = np.asarray(labels).astype(str)
    masks = [None] * n if masks is None else list(masks)
    if n == 0 or images.ndim != 3 or len(y) != n or len(masks) != n:
        raise DataError(
            "probe_images needs N >= 1 images as an (N, S, S) array with N labels and N masks; "
            f"got images of shape {images.shape}, {len(y)} labels and {len(masks)} masks."
        )
    unknown = sorted(set(y) - set(classes))
    if unknown:
        raise DataError(f"Labels {unknown} are not classes of the model (classes {classes}).")
    lung, n_masks = lung_fields(masks, size)
    region_source = "masks" if n_masks == n else "central_fallback" if n_masks == 0 else "mixed"
    if n_masks < n:
        logger.warning(
            "%d of %d images have no usable lung mask; the probes use the central fallback region "
            "for them.", n - n_masks, n,
        )  # fmt: skip

    clean_pred, features = predict_labels(
        model, images, batch_size=batch_size, device=device, features=True
    )
    clean = classification_scores(y, clean_pred, labels=classes)
    probes = occlusion_probes(model, images, lung, y, batch_size=batch_size, device=device)
    chance = chance_levels(y, labels=classes)

    src_names = np.asarray([""] * n if sources is None else sources, dtype=object).astype(str)
    if len(set(src_names) - {""}) > 1:
        src = source_probe(features, src_names, labels=y, seed=seed)
    else:
        src = {
            "status": "skipped",
            "reason": "the split has fewer than two distinct known sources (split.csv 'source').",
        }

    if n_masks and attention:
        att = lung_attention(
            model, images, masks, y, clean_pred, mask_status=mask_status, paths=paths,
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
    report = {
        "model": model.meta.model_name,
        "image_size": size,
        "classes": classes,
        "split": split,
        "n_images": n,
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
        "shortcut_suspected": any(r["triggered"] and r["flags"] for r in rules),
    }
    report["summary"] = probe_summary(report)
    return report


def probe_run(
    run_dir: str | os.PathLike,
    *,
    split: str = "test",
    device: str | None = None,
    segmenter: str | os.PathLike | None = None,
    **options: Any,
) -> ProbeResult:
    """Run the shortcut probes on one split of a trained run and write ``RUN_DIR/probe.json``.

    Args:
        run_dir: A run directory written by ``cxrlab train``.
        split: Which split of split.csv to probe (default the test split).
        device: Where to run (default: CUDA when present).
        segmenter: A lung segmenter (``cxrlab segment train`` output): images whose split.csv
            row has no usable mask get the segmenter's, and probe.json's ``mask_origin`` records
            where each mask came from (file, segmenter or none).
        options: The keyword options of :func:`probe_images` (``batch_size``, ``attention``,
            ``attention_max_images``, ``cam_layer``, ``seed``).

    Returns:
        A :class:`ProbeResult`; the same content is in ``probe.json``.

    Raises:
        RunDirError, CheckpointError: The run directory is incomplete.
        DataError: The split is empty or none of its images can be read.
    """
    if options.get("batch_size", 1) < 1:
        raise ConfigError(f"batch_size must be at least 1, got {options['batch_size']}.")
    run = load_run(run_dir, device=device)
    size = run.meta.image_size
    rows = split_rows(run, split)
    images, ok, skipped = load_images(rows["path"].tolist(), size, run.predictor.preprocess)
    rows, images = rows[ok].reset_index(drop=True), images[ok]
    if rows.empty:
        raise DataError(f"None of the {split} images of {run.run_dir} could be read.")
    logger.info("Probing %d %s images of %s", len(rows), split, run.run_dir)
    masks, status = load_masks(rows, size)
    origin = fill_masks(
        masks, status, rows["path"].tolist(), size, segmenter, run.predictor.preprocess
    )
    found = probe_images(
        run.model, images, rows["label"].astype(str).to_numpy(), masks=masks, mask_status=status,
        sources=rows["source"].astype(str).to_numpy(), paths=rows["path"].tolist(), split=split,
        device=run.device, **options,
    )  # fmt: skip
    report = {
        "run_dir": str(run.run_dir),
        "cxrlab_version": __version__,
        "skipped_images": skipped,
        **found,
        "mask_origin": origin,
    }
    path = write_json(RunDir(run.run_dir).probe, report)
    logger.info("%s", report["summary"])
    return ProbeResult(
        path=path,
        shortcut_suspected=report["shortcut_suspected"],
        summary=report["summary"],
        report=report,
    )
