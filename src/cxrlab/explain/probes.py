"""Shortcut probes as pure functions: a model, images and lung fields in, scores out.

Nothing here reads or writes a run directory (that is :func:`cxrlab.explain.probe.probe_run`),
and nothing judges the scores (that is :mod:`cxrlab.explain.shortcut_rules`). The probes:

1. **lungs removed**: the lung fields blacked out (set to 0). A model that classifies from the
   lungs should fall to chance; one that keeps its accuracy reads something outside them.
2. **lungs only**: everything but the lungs blacked out (how much of the skill lives in the lungs).
3. **border only**: only the outer frame kept (:data:`~cxrlab.explain.regions.BORDER_FRACTION`
   = 12 % of the side on each edge), where burnt-in text, markers and scanner borders live.
4. **source probe** (when there is more than one known source): a standardised logistic
   regression on the model's penultimate features predicting each image's source, stratified
   cross-validated, beside the majority-source rate and a *label baseline* (the same regression
   on the true class alone: sources confounded with classes are predictable from the class, so
   only accuracy above that baseline shows the features encode the source itself).
5. **lung attention**: the Grad-CAM lung attention ratio and pointing game on the images that
   have lung masks.

Lung fields come from the lung masks; images without a usable mask use the central fallback
region (:func:`~cxrlab.explain.regions.central_lung_region`: two ellipses over the typical lung
fields), see :func:`lung_fields`.

Images are (N, S, S) uint8 as ``load_for_model`` returns them; masks and lung fields are (S, S)
bool on the same grid.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from cxrlab.evaluation.intervals import proportion_interval
from cxrlab.explain.attention import MASK_MISSING, MASK_OK, attention_frame, summarize_attention
from cxrlab.explain.regions import BORDER_FRACTION, border_frame, central_lung_region
from cxrlab.inference.predictor import TorchPredictor

#: What each occlusion probe keeps of the image (recorded in probe.json).
OCCLUSIONS: dict[str, str] = {
    "lungs_removed": "lung fields set to 0 (black), the rest unchanged",
    "lungs_only": "everything outside the lung fields set to 0",
    "border_only": (
        f"only the outer {BORDER_FRACTION:.0%} of the side on each edge kept, the centre set to 0"
    ),
}


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, *, labels: list) -> dict:
    """Accuracy (metrics.json's 95 % Clopper-Pearson interval), macro-F1, predicted fractions.

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
        "accuracy_ci95": list(proportion_interval(hits, n)),
        "accuracy_ci_method": "Clopper-Pearson",
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


def lung_fields(masks: Sequence[np.ndarray | None], size: int) -> tuple[np.ndarray, int]:
    """Each image's lung field: its mask when usable, else the central fallback region.

    Args:
        masks: N entries: an (S, S) bool lung mask, or None where there is none. An all-False
            mask is not usable.
        size: S, the side of the model's grid.

    Returns:
        ``(lung, n_masks)``: (N, S, S) bool lung fields and how many came from masks.
    """
    fallback = central_lung_region(size)
    lung = np.empty((len(masks), size, size), dtype=bool)
    n_masks = 0
    for i, m in enumerate(masks):
        if m is not None and m.any():
            lung[i] = m
            n_masks += 1
        else:
            lung[i] = fallback
    return lung, n_masks


def occluded_images(images: np.ndarray, lung: np.ndarray) -> dict[str, np.ndarray]:
    """The inputs of the occlusion probes, keyed as :data:`OCCLUSIONS`.

    Args:
        images: (N, S, S) uint8.
        lung: (N, S, S) or (S, S) bool lung fields (:func:`lung_fields`).

    Returns:
        ``lungs_removed``, ``lungs_only`` and ``border_only``: (N, S, S) uint8 copies with the
        removed pixels set to 0.
    """
    frame = border_frame(images.shape[-1])
    return {
        "lungs_removed": np.where(lung, 0, images).astype(np.uint8),
        "lungs_only": np.where(lung, images, 0).astype(np.uint8),
        "border_only": np.where(frame, images, 0).astype(np.uint8),
    }


def predict_labels(
    model: torch.nn.Module,
    images: np.ndarray,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    features: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predicted class names of uint8 images, and the penultimate features when asked.

    Args:
        model: A :class:`~cxrlab.models.CxrClassifier` (its ``meta.classes`` name the outputs).
        images: (N, S, S) uint8.
        batch_size: Images per forward pass.
        device: Where to run (default: CUDA when present).
        features: Also return the (N, D) penultimate features (else None).
    """
    predictor = TorchPredictor(model, device=device)
    probs, feats = predictor.predict_images(images, batch_size=batch_size, features=features)
    classes = np.asarray(list(model.meta.classes), dtype=object)
    return classes[probs.argmax(axis=1)].astype(str), feats


def occlusion_probes(
    model: torch.nn.Module,
    images: np.ndarray,
    lung: np.ndarray,
    labels: Sequence[str],
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> dict[str, dict]:
    """The model's scores on the occluded images (lungs removed, lungs only, border only).

    Args:
        model: A :class:`~cxrlab.models.CxrClassifier`.
        images: (N, S, S) uint8.
        lung: (N, S, S) bool lung fields (:func:`lung_fields`).
        labels: (N,) true class names.
        batch_size: Images per forward pass.
        device: Where to run.

    Returns:
        One :func:`classification_scores` dict per probe, keyed as :data:`OCCLUSIONS`, with its
        ``description``.
    """
    classes = list(model.meta.classes)
    y = np.asarray(labels).astype(str)
    out = {}
    for name, x in occluded_images(images, lung).items():
        pred, _ = predict_labels(model, x, batch_size=batch_size, device=device)
        out[name] = {
            **classification_scores(y, pred, labels=classes),
            "description": OCCLUSIONS[name],
        }
    return out


def lung_attention(
    model: torch.nn.Module,
    images: np.ndarray,
    masks: Sequence[np.ndarray | None],
    labels: Sequence[str],
    predicted: Sequence[str],
    *,
    mask_status: Sequence[str] | None = None,
    paths: Sequence[str] | None = None,
    limit: int | None = 1000,
    seed: int = 0,
    batch_size: int = 64,
    layer: str | None = None,
) -> dict:
    """Grad-CAM (target: the predicted class) lung attention summary of the images.

    Args:
        model: A :class:`~cxrlab.models.CxrClassifier`.
        images: (N, S, S) uint8.
        masks: N entries: (S, S) bool lung masks, or None where there is none.
        labels: (N,) true class names.
        predicted: (N,) predicted class names.
        mask_status: Why a mask is None (default: "ok" where there is one, else "missing").
        paths: Image paths for the per-image rows (default: "0", "1", ...).
        limit: Cap on the images given CAMs (a seeded random subset; None: all).
        seed: Seed of that subset.
        batch_size: Images per CAM pass.
        layer: CAM layer (default: the model's ``cam_layer``).

    Returns:
        :func:`~cxrlab.explain.attention.summarize_attention`'s dict plus ``status`` ("ok"),
        ``method``, ``layer``, ``cam_resolution``, ``subset`` (None when every image was used)
        and ``masks_ok``.
    """
    from cxrlab.explain.cam import compute_cams, record_cam_resolution

    n = len(images)
    if mask_status is None:
        mask_status = [MASK_MISSING if m is None else MASK_OK for m in masks]
    paths = [str(i) for i in range(n)] if paths is None else [str(p) for p in paths]
    labels, predicted = np.asarray(labels).astype(str), np.asarray(predicted).astype(str)
    idx = np.arange(n)
    if limit is not None and n > limit:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=limit, replace=False))
    x = images[idx][:, None].astype(np.float32) / 255.0
    cams = compute_cams(
        model, x, method="gradcam", target="predicted", layer=layer, batch_size=batch_size
    )
    frame = attention_frame(
        cams, [masks[i] for i in idx], paths=[paths[i] for i in idx],
        labels=labels[idx].tolist(), predicted=predicted[idx].tolist(),
        mask_status=[mask_status[i] for i in idx],
    )  # fmt: skip
    summary = summarize_attention(frame, classes=list(model.meta.classes))
    layer = layer or model.meta.cam_layer
    record_cam_resolution(summary, model, layer, images.shape[-1])
    summary["status"] = "ok"
    summary["method"] = "gradcam, target: predicted class"
    summary["layer"] = layer
    summary["subset"] = None if len(idx) == n else f"{len(idx)} of {n} images (seed {seed})"
    summary["masks_ok"] = int(sum(s == MASK_OK for s in mask_status))
    return summary
