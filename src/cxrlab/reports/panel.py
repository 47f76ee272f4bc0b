"""The paper-ready CAM panel: per image, the radiograph, its CAM and the class probabilities.

Two images per row at double-column width (7.2 in), fonts of 7 pt or more at that size. The
radiograph is shown at the resolution it was loaded at (the caller loads it above the model's
input size), the CAM is stretched over it with the perceptually uniform ``viridis`` map and one
colorbar, and the lung outline is drawn where a mask exists. No title is baked in: the caption
(method, layer, target) belongs to the report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxrlab.reports.style import (
    CAM_CMAP,
    DOUBLE_COLUMN,
    MIN_FONT_SIZE,
    PALETTE,
    wrapped_label,
)

#: Colours of the predicted class's bar (Okabe-Ito bluish green / vermillion) and the others.
_CORRECT, _WRONG, _OTHER = PALETTE[2], PALETTE[3], "#9e9e9e"
_PER_ROW = 2
_OUTLINE = "#F0E442"  # Okabe-Ito yellow: visible over viridis and grey


def cam_panel(
    grays: Sequence[np.ndarray],
    overlays: Sequence[np.ndarray] | None,
    probs: np.ndarray,
    *,
    classes: Sequence[str],
    labels: Sequence[str],
    names: Sequence[str],
    title: str = "",
    lung_ratios: Sequence[float] | None = None,
    cams: Sequence[np.ndarray] | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
):
    """Draw the panel and return the matplotlib figure (the caller saves and closes it).

    Args:
        grays: N (H, W) uint8 images, at display resolution.
        overlays: N (H, W, 3) uint8 pre-blended overlays, used only when ``cams`` is None.
        probs: (N, K) class probabilities in model output order.
        classes: Class names in output order.
        labels: True class names ("" when unknown).
        names: Short name shown for each image (file name).
        title: Drawn only when given (default none: captions go in the report).
        lung_ratios: Lung attention ratio per image (NaN: no mask), shown under the CAM.
        cams: N (h, w) float maps in [0, 1] (any grid; stretched over the image), drawn with a
            colorbar.
        masks: N lung masks (bool, any grid) or None; their outline is drawn on the CAM.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n, k = len(grays), len(classes)
    rows = (n + _PER_ROW - 1) // _PER_ROW
    row_h = max(1.45, 0.17 * k + 0.8)
    rc = {"font.size": MIN_FONT_SIZE + 1, "xtick.labelsize": MIN_FONT_SIZE,
          "ytick.labelsize": MIN_FONT_SIZE}  # fmt: skip
    with plt.rc_context(rc):
        fig = plt.figure(figsize=(DOUBLE_COLUMN, row_h * rows + 0.6), layout="constrained")
        fig.get_layout_engine().set(w_pad=0.02, h_pad=0.03, wspace=0.02, hspace=0.06)
        # per image: radiograph, CAM, class labels + bars; a thin spacer between the two images
        ratios = [1.0, 1.0, 1.25, 0.1] * _PER_ROW
        grid = fig.add_gridspec(rows, len(ratios), width_ratios=ratios)
        mappable, cam_axes = None, []
        for i in range(n):
            r, c = divmod(i, _PER_ROW)
            ax_img = fig.add_subplot(grid[r, 4 * c])
            ax_ov = fig.add_subplot(grid[r, 4 * c + 1])
            ax_bar = fig.add_subplot(grid[r, 4 * c + 2])
            cam_axes.append(ax_ov)
            drawn = _draw_one(
                ax_img, ax_ov, ax_bar, grays[i], None if overlays is None else overlays[i],
                probs[i], classes=classes, label=labels[i], name=names[i],
                ratio=None if lung_ratios is None else lung_ratios[i],
                cam=None if cams is None else cams[i], mask=None if masks is None else masks[i],
            )  # fmt: skip
            mappable = drawn if drawn is not None else mappable
        if mappable is not None:
            bar = fig.colorbar(mappable, ax=cam_axes, location="bottom", shrink=0.5,
                               aspect=40, pad=0.01)  # fmt: skip
            outline = " Yellow line: lung mask." if masks is not None and any(
                m is not None for m in masks) else ""  # fmt: skip
            bar.set_label("CAM: 0 = least, 1 = most attributed to the explained class." + outline,
                          fontsize=MIN_FONT_SIZE)  # fmt: skip
            bar.ax.tick_params(labelsize=MIN_FONT_SIZE)
        if title:
            fig.suptitle(title, fontsize=MIN_FONT_SIZE + 1)
    return fig


def _draw_one(ax_img, ax_ov, ax_bar, gray, rgb, p, *, classes, label, name, ratio, cam, mask):
    k = len(classes)
    pred = int(np.argmax(p))
    known = label in classes
    correct = known and classes[pred] == label
    verdict = "correct" if correct else ("incorrect" if known else "label unknown")
    h, w = np.asarray(gray).shape[:2]
    ax_img.imshow(gray, cmap="gray", vmin=0, vmax=255, interpolation="lanczos")
    ax_img.set_title(_short(name), fontsize=MIN_FONT_SIZE, loc="left")
    ax_img.set_xlabel(
        f"{wrapped_label(label, 12) if label else '?'}\n{verdict}", fontsize=MIN_FONT_SIZE,
        fontweight="bold", color=_CORRECT if correct else (_WRONG if known else "black"),
    )  # fmt: skip
    mappable = None
    if cam is not None:
        ax_ov.imshow(gray, cmap="gray", vmin=0, vmax=255, interpolation="lanczos")
        mappable = ax_ov.imshow(
            np.clip(np.nan_to_num(np.asarray(cam, dtype=np.float32)), 0, 1), cmap=CAM_CMAP,
            vmin=0, vmax=1, alpha=0.45, extent=(-0.5, w - 0.5, h - 0.5, -0.5),
            interpolation="bilinear",
        )  # fmt: skip
    elif rgb is not None:
        ax_ov.imshow(rgb)
    if mask is not None:
        m = np.asarray(mask, dtype=np.float32)
        ax_ov.contour(
            np.linspace(-0.5, w - 0.5, m.shape[1]), np.linspace(-0.5, h - 0.5, m.shape[0]), m,
            levels=[0.5], colors=_OUTLINE, linewidths=0.7,
        )  # fmt: skip
        ax_ov.set_xlim(-0.5, w - 0.5)
        ax_ov.set_ylim(h - 0.5, -0.5)
    if ratio is not None and np.isfinite(ratio):
        ax_ov.set_xlabel(f"lung attention {ratio:.2f}", fontsize=MIN_FONT_SIZE)
    for ax in (ax_img, ax_ov):
        ax.set_xticks([])
        ax.set_yticks([])
    colors = [_OTHER] * k
    colors[pred] = _CORRECT if correct or not known else _WRONG
    y = np.arange(k)
    ax_bar.barh(y, p, color=colors, height=0.65)
    ax_bar.set_xlim(0, 1)
    ax_bar.set_yticks(y)
    ax_bar.set_yticklabels([wrapped_label(c, 10) for c in classes], fontsize=MIN_FONT_SIZE)
    for tick, c in zip(ax_bar.get_yticklabels(), classes, strict=True):
        if c == label:
            tick.set_fontweight("bold")
    ax_bar.invert_yaxis()
    ax_bar.tick_params(axis="x", labelsize=MIN_FONT_SIZE)
    ax_bar.set_xlabel("probability", fontsize=MIN_FONT_SIZE)
    ax_bar.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])
    for yy, v in zip(y, p, strict=True):
        inside = v > 0.7
        ax_bar.text(
            v - 0.02 if inside else v + 0.02, yy, f"{v:.2f}", va="center", fontsize=MIN_FONT_SIZE,
            ha="right" if inside else "left", color="white" if inside else "black",
        )  # fmt: skip
    ax_bar.spines[["top", "right"]].set_visible(False)
    return mappable


def _short(name: str, width: int = 26) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."
