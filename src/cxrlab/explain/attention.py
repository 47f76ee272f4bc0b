"""Does the model look at the lungs? CAM mass inside the lung mask, and the pointing game.

* :func:`lung_attention_ratio`: share of a CAM's total mass inside the lung mask. A CAM spread
  uniformly over the image scores :func:`lung_area_fraction` (the baseline every summary reports
  beside it); a model attending to the lungs scores above it, one attending to corners, text or
  borders below it.
* :func:`pointing_game`: whether the CAM's maximum falls inside the mask.

:func:`attention_frame` applies both to a batch (images without a usable mask get NaN and a
status saying why) and :func:`summarize_attention` summarises per class and for correct vs
incorrect predictions.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: Per-image mask states recorded by :func:`attention_frame`.
MASK_OK, MASK_MISSING, MASK_EMPTY, MASK_UNREADABLE = "ok", "missing", "empty", "unreadable"


def _check_pair(cam: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam = np.asarray(cam, dtype=np.float64)
    mask = np.asarray(mask).astype(bool)
    if cam.shape != mask.shape or cam.ndim != 2:
        raise ValueError(
            f"cam and mask must be 2-D arrays of the same shape; got {cam.shape} and {mask.shape}. "
            "Resize the mask to the CAM's grid first (cxrlab.explain.regions.load_mask)."
        )
    return cam, mask


def lung_attention_ratio(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the CAM's mass that lies inside the lung mask.

    Args:
        cam: (H, W) non-negative map (e.g. float32 in [0, 1]).
        mask: (H, W) bool (or 0/1), True inside the lungs.

    Returns:
        ``sum(cam * mask) / sum(cam)`` in [0, 1]; NaN with a warning when the CAM has no mass or
        the mask is empty (undefined, not zero).
    """
    cam, mask = _check_pair(cam, mask)
    cam = np.clip(cam, 0.0, None)
    total = float(cam.sum())
    if not mask.any():
        warnings.warn(
            "Lung mask is empty; the lung attention ratio is undefined (NaN).", stacklevel=2
        )
        return float("nan")
    if total <= 0.0 or not np.isfinite(total):
        warnings.warn(
            "CAM has no positive mass; the lung attention ratio is undefined (NaN).", stacklevel=2
        )
        return float("nan")
    return float(cam[mask].sum() / total)


def pointing_game(cam: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the CAM's maximum lies inside the lung mask.

    Ties are broken by the first maximum in row-major order. A CAM with no positive value points
    nowhere and counts as a miss.

    Args:
        cam: (H, W) map.
        mask: (H, W) bool, True inside the lungs.
    """
    cam, mask = _check_pair(cam, mask)
    if not np.any(cam > 0):
        return False
    return bool(mask.flat[int(np.argmax(cam))])


def lung_area_fraction(mask: np.ndarray) -> float:
    """Fraction of the image inside the mask: the ratio a uniform CAM would get."""
    mask = np.asarray(mask).astype(bool)
    return float(mask.mean()) if mask.size else float("nan")


def attention_frame(
    cams: np.ndarray,
    masks: Sequence[np.ndarray | None],
    *,
    paths: Sequence[str],
    labels: Sequence[str],
    predicted: Sequence[str],
    mask_status: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per-image lung attention of a batch.

    Args:
        cams: (N, S, S) CAMs.
        masks: N entries: (S, S) bool masks on the CAM's grid, or None where there is none.
        paths: Image paths (for reporting).
        labels: True class names.
        predicted: Predicted class names.
        mask_status: Why a mask is None (``"missing"``, ``"unreadable"``); default "missing".

    Returns:
        Columns ``path``, ``label``, ``predicted``, ``correct``, ``mask_status`` (ok, missing,
        empty, unreadable), ``lung_ratio``, ``pointing_hit`` (float 1/0, NaN without a mask),
        ``lung_area``.
    """
    n = len(cams)
    if not (len(masks) == len(paths) == len(labels) == len(predicted) == n):
        raise ValueError("cams, masks, paths, labels and predicted must have one entry per image.")
    status = list(mask_status) if mask_status is not None else [None] * n
    rows = []
    for i in range(n):
        mask = masks[i]
        ratio = hit = area = float("nan")
        if mask is None:
            state = status[i] if status[i] not in (None, MASK_OK) else MASK_MISSING
        elif not np.asarray(mask).any():
            state = MASK_EMPTY
        else:
            state = MASK_OK
            area = lung_area_fraction(mask)
            hit = float(pointing_game(cams[i], mask))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # flat CAMs are counted in the summary instead
                ratio = lung_attention_ratio(cams[i], mask)
        rows.append(
            {
                "path": str(paths[i]),
                "label": labels[i],
                "predicted": predicted[i],
                "correct": labels[i] == predicted[i],
                "mask_status": state,
                "lung_ratio": ratio,
                "pointing_hit": hit,
                "lung_area": area,
            }
        )
    columns = [
        "path",
        "label",
        "predicted",
        "correct",
        "mask_status",
        "lung_ratio",
        "pointing_hit",
        "lung_area",
    ]
    return pd.DataFrame(rows, columns=columns)


def _stats(frame: pd.DataFrame) -> dict:
    valid = frame[frame["lung_ratio"].notna()]
    n = len(valid)
    ratio = valid["lung_ratio"].to_numpy(dtype=float)
    area = valid["lung_area"].to_numpy(dtype=float)
    return {
        "n": int(n),
        "lung_ratio_mean": float(ratio.mean()) if n else float("nan"),
        "lung_ratio_median": float(np.median(ratio)) if n else float("nan"),
        "lung_ratio_std": float(ratio.std(ddof=1)) if n > 1 else float("nan"),
        "lung_area_mean": float(area.mean()) if n else float("nan"),
        "ratio_over_area": float(ratio.mean() / area.mean())
        if n and area.mean() > 0
        else float("nan"),
        "pointing_rate": float(valid["pointing_hit"].mean()) if n else float("nan"),
    }


def summarize_attention(frame: pd.DataFrame, *, classes: Sequence[str]) -> dict:
    """Summarise :func:`attention_frame` overall, per class and for correct vs incorrect.

    Images without a usable mask are excluded from every statistic and listed by path. The
    baseline ``lung_area_mean`` (the mean ratio a uniform CAM would get) sits beside every mean
    ratio; ``ratio_over_area`` > 1 means more attention on the lungs than a uniform map.

    Returns:
        A JSON-ready dict: ``overall``, ``per_class``, ``correct``, ``incorrect`` (each with ``n``,
        ``lung_ratio_mean/median/std``, ``lung_area_mean``, ``ratio_over_area``,
        ``pointing_rate``), ``n_images``, ``n_with_mask``, ``empty_masks``, ``unreadable_masks``,
        ``n_without_mask``, ``flat_cams`` and ``notice`` (a sentence when masks were missing).
    """
    status = frame["mask_status"]
    ok = frame[status == MASK_OK]
    flat = ok[ok["lung_ratio"].isna()]
    out = {
        "n_images": int(len(frame)),
        "n_with_mask": int((status == MASK_OK).sum()),
        "n_without_mask": int((status == MASK_MISSING).sum()),
        "empty_masks": frame.loc[status == MASK_EMPTY, "path"].tolist(),
        "unreadable_masks": frame.loc[status == MASK_UNREADABLE, "path"].tolist(),
        "flat_cams": flat["path"].tolist(),
        "overall": _stats(ok),
        "per_class": {c: _stats(ok[ok["label"] == c]) for c in classes},
        "correct": _stats(ok[ok["correct"]]),
        "incorrect": _stats(ok[~ok["correct"]]),
        "notice": None,
    }
    notes = []
    if out["n_without_mask"]:
        notes.append(
            f"{out['n_without_mask']} of {len(frame)} images have no lung mask and are not in the "
            "lung attention statistics"
        )
    if out["empty_masks"]:
        notes.append(f"{len(out['empty_masks'])} empty mask(s) excluded")
    if out["unreadable_masks"]:
        notes.append(f"{len(out['unreadable_masks'])} unreadable mask(s) excluded")
    if len(flat):
        notes.append(f"{len(flat)} CAM(s) without positive mass excluded")
    if notes:
        out["notice"] = "; ".join(notes) + "."
        logger.warning("Lung attention: %s", out["notice"])
    return out


def add_notice(summary: dict, sentence: str) -> None:
    """Append a sentence (lower-case start, no final stop) to a summary's ``notice``."""
    sentence = sentence[0].upper() + sentence[1:] + "."
    summary["notice"] = f"{summary['notice']} {sentence}" if summary.get("notice") else sentence
