"""``explain_run``: CAM overlays, a paper-ready panel and lung attention for a trained run."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.data.images import resize_square
from cxrlab.errors import ConfigError, DataError
from cxrlab.explain._rundir import fill_masks, load_images, load_masks, load_run, split_rows
from cxrlab.explain.attention import attention_frame, summarize_attention
from cxrlab.explain.cam import (
    CamMethod,
    compute_cams,
    overlay,
    record_cam_resolution,
    resolve_layer,
)
from cxrlab.inference.predictor import to_unit_batch
from cxrlab.io import atomic_path, savefig, write_csv, write_json
from cxrlab.rundir import RunDir

logger = logging.getLogger(__name__)


@dataclass
class ExplainResult:
    """What :func:`explain_run` wrote.

    Attributes:
        out_dir: The output folder.
        panel_png: The panel figure (PNG, 300 dpi).
        panel_pdf: The same panel as PDF (vector, for papers).
        overlays: One overlay PNG per image, in panel order.
        table: One row per image: path, label, predicted, correct, target (class explained),
            probability per class, mask_status, lung_ratio, pointing_hit, lung_area.
        attention: :func:`~cxrlab.explain.attention.summarize_attention` of the images.
        skipped: Unreadable images left out, ``{path: reason}``.
    """

    out_dir: Path
    panel_png: Path
    panel_pdf: Path
    overlays: list[Path]
    table: pd.DataFrame
    attention: dict
    skipped: dict[str, str] = field(default_factory=dict)


def select_examples(
    labels: Sequence[str],
    predicted: Sequence[str],
    *,
    classes: Sequence[str],
    n: int,
    seed: int = 0,
) -> np.ndarray:
    """Pick ``n`` images covering every class and both correct and incorrect predictions.

    The groups (class, correct) for every class, then (class, incorrect) for every class, are
    visited round-robin, each giving one randomly drawn member per round (seeded), until ``n`` are
    chosen or all are used; so every class appears before any appears twice where it can.

    Returns:
        Indices into ``labels``, ordered by class, then correct before incorrect.
    """
    labels, predicted = np.asarray(labels, dtype=object), np.asarray(predicted, dtype=object)
    rng = np.random.default_rng(seed)
    order = {c: i for i, c in enumerate(classes)}
    groups = []  # every class's correct group first, then every class's incorrect group
    for correct in (True, False):
        for c in classes:
            members = np.flatnonzero((labels == c) & ((predicted == c) == correct))
            groups.append(list(rng.permutation(members)))
    chosen: list[int] = []
    while len(chosen) < n and any(groups):
        for g in groups:
            if g and len(chosen) < n:
                chosen.append(int(g.pop(0)))
    chosen.sort(key=lambda i: (order.get(labels[i], len(order)), labels[i] != predicted[i], i))
    return np.asarray(chosen, dtype=np.int64)


def _stem(path: str) -> str:
    return Path(path).stem.replace(" ", "_")[:60]


def explain_run(
    run_dir: str | os.PathLike,
    *,
    images: Sequence[str | os.PathLike] | None = None,
    split: str = "test",
    n: int = 8,
    method: CamMethod = "gradcam",
    target: str | int = "predicted",
    layer: str | None = None,
    out: str | os.PathLike | None = None,
    seed: int = 0,
    batch_size: int = 32,
    device: str | None = None,
    segmenter: str | os.PathLike | None = None,
) -> ExplainResult:
    """Explain a trained run's predictions with class activation maps.

    Writes into ``out`` (default ``RUN_DIR/explain``): ``overlays/NN_<class>_<file>.png`` per
    image, ``cam_panel.png`` and ``cam_panel.pdf`` (rows grouped by class, correct before
    incorrect), ``explain.csv`` (per image) and ``explain.json`` (settings, lung attention
    summary, notices).

    Args:
        run_dir: A run directory written by ``cxrlab train``.
        images: Explain these files instead of a split (labels and masks are taken from
            split.csv when the path is listed there, else unknown).
        split: Split of split.csv to draw from when ``images`` is not given.
        n: How many images to draw from the split (covering classes and correct/incorrect).
        method: ``gradcam``, ``gradcam++``, ``scorecam`` or ``eigencam``.
        target: ``"predicted"``, ``"true"`` or a class name: which class each map explains.
        layer: Dotted layer name; default the model's ``cam_layer``.
        out: Output folder.
        seed: Seed of the example selection.
        batch_size: Images per CAM batch.
        device: Where to run (default: CUDA when present).
        segmenter: Lung segmenter for images without a mask file (lung attention ratio and
            pointing game); explain.json's ``mask_origin`` records each mask's origin.

    Raises:
        RunDirError, CheckpointError: The run directory is incomplete.
        ConfigError: Unknown method, layer or target class, or ``target="true"`` for images
            without a known label.
        DataError: The split is empty or no image could be read.
    """
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}.")
    run = load_run(run_dir, device=device)
    meta, model, classes = run.meta, run.model, list(run.meta.classes)
    layer = layer or meta.cam_layer
    resolve_layer(model, layer)  # fail before any decoding
    out_dir = Path(out) if out is not None else RunDir(run.run_dir).explain

    if images:
        known = run.split if len(run.split) else None
        rows = pd.DataFrame({"path": [str(Path(p)) for p in images]})
        if known is not None:
            lookup = known.drop_duplicates("path").set_index("path")
            resolved = [str(Path(p).resolve()) for p in rows["path"]]
            for col in ("label", "mask_path", "width", "height"):
                if col in lookup.columns:
                    rows[col] = [
                        lookup[col].get(p, lookup[col].get(r, ""))
                        for p, r in zip(rows["path"], resolved, strict=True)
                    ]
        for col in ("label", "mask_path"):
            if col not in rows.columns:
                rows[col] = ""
        grays, ok, skipped = load_images(
            rows["path"].tolist(), meta.image_size, run.predictor.preprocess
        )
    else:
        candidates = split_rows(run, split)
        grays, ok, skipped = load_images(
            candidates["path"].tolist(), meta.image_size, run.predictor.preprocess
        )
        candidates, grays = candidates[ok].reset_index(drop=True), grays[ok]
        probs, _ = run.predictor.predict_images(grays)
        predicted = [classes[i] for i in probs.argmax(axis=1)]
        pick = select_examples(
            candidates["label"].tolist(), predicted, classes=classes, n=n, seed=seed
        )
        rows, grays = candidates.iloc[pick].reset_index(drop=True), grays[pick]
        ok = np.ones(len(rows), dtype=bool)
    rows, grays = rows[ok].reset_index(drop=True), grays[ok]
    if rows.empty:
        raise DataError(f"None of the images to explain could be read: {skipped}.")
    labels = [str(v) for v in rows["label"]]
    if target == "true" and not all(lab in classes for lab in labels):
        missing = [p for p, lab in zip(rows["path"], labels, strict=True) if lab not in classes]
        raise ConfigError(
            f"target 'true' needs each image's true label, but {len(missing)} image(s) are not in "
            f"the run's split.csv (first: {missing[0]}). Use --target predicted or a class name."
        )

    probs, _ = run.predictor.predict_images(grays)
    predicted = [classes[i] for i in probs.argmax(axis=1)]
    x = to_unit_batch(grays)
    cams = compute_cams(
        model, x, method=method, target=target, labels=labels if target == "true" else None,
        layer=layer, batch_size=batch_size,
    )  # fmt: skip
    if target == "predicted":
        target_names = predicted
    elif target == "true":
        target_names = labels
    else:
        from cxrlab.explain.cam import class_index

        target_names = [classes[class_index(classes, target)]] * len(rows)

    masks, status = load_masks(rows, meta.image_size)
    origin = fill_masks(
        masks, status, rows["path"].tolist(), meta.image_size, segmenter, run.predictor.preprocess
    )
    att = attention_frame(
        cams, masks, paths=rows["path"].tolist(), labels=labels, predicted=predicted,
        mask_status=status,
    )  # fmt: skip
    summary = summarize_attention(att, classes=classes)
    record_cam_resolution(
        summary, model, layer, meta.image_size, notify=bool(summary["n_with_mask"])
    )

    # The panel and overlays show each image near its source resolution, not the model's grid.
    size = display_size(rows, meta.image_size)
    shown, shown_ok, _ = load_images(rows["path"].tolist(), size)
    shown = np.stack([s if good else resize_square(g, size)
                      for s, good, g in zip(shown, shown_ok, grays, strict=True)])  # fmt: skip
    shown_masks, _ = load_masks(rows, size)
    overlays_rgb = [overlay(g, c) for g, c in zip(shown, cams, strict=True)]
    overlay_paths = []
    for i, (path, rgb) in enumerate(zip(rows["path"], overlays_rgb, strict=True)):
        name = f"{i:02d}_{(labels[i] or 'unknown').replace(' ', '_')}_{_stem(path)}.png"
        overlay_paths.append(_save_png(rgb, out_dir / "overlays" / name))

    from cxrlab.reports.panel import cam_panel

    fig = cam_panel(
        shown, None, probs, classes=classes, labels=labels,
        names=[Path(p).name for p in rows["path"]], lung_ratios=att["lung_ratio"].to_numpy(),
        cams=cams, masks=shown_masks,
    )  # fmt: skip
    try:
        png = savefig(fig, out_dir / "cam_panel.png", dpi=300)
        pdf = savefig(fig, out_dir / "cam_panel.pdf")
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)

    table = att.copy()
    table.insert(4, "target", target_names)
    for j, c in enumerate(classes):
        table[c] = probs[:, j]
    table["overlay"] = [str(p) for p in overlay_paths]
    write_csv(out_dir / "explain.csv", table)
    write_json(
        out_dir / "explain.json",
        {
            "run_dir": str(run.run_dir),
            "method": method,
            "layer": layer,
            "target": target,
            "split": None if images else split,
            "n_images": len(rows),
            "classes": classes,
            "image_size": meta.image_size,
            "display_size": size,
            "skipped_images": skipped,
            "lung_attention": summary,
            "mask_origin": origin,
            "panel": {"png": str(png), "pdf": str(pdf)},
        },
    )
    logger.info("Wrote %d CAM overlays and the panel %s", len(rows), png)
    return ExplainResult(out_dir, png, pdf, overlay_paths, table, summary, skipped)


def display_size(rows: pd.DataFrame, image_size: int, *, cap: int = 320) -> int:
    """Side of the square the panel shows images at: the source's (median of ``width`` and
    ``height`` when split.csv records them), at least the model's input, at most ``cap``."""
    sides = []
    for col in ("width", "height"):
        if col in rows.columns:
            sides.extend(pd.to_numeric(rows[col], errors="coerce").dropna().tolist())
    source = int(np.median(sides)) if sides else 4 * image_size
    return int(min(max(source, image_size), max(cap, image_size)))


def _save_png(rgb: np.ndarray, path: Path) -> Path:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(rgb, mode="RGB").save(tmp, format="PNG")
    return path
