"""The paper-ready CAM panel: one row per image (image, CAM overlay, class probabilities)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Colours of the predicted class's bar.
_CORRECT, _WRONG, _OTHER = "#1a9850", "#d73027", "#9e9e9e"


def cam_panel(
    grays: Sequence[np.ndarray],
    overlays: Sequence[np.ndarray],
    probs: np.ndarray,
    *,
    classes: Sequence[str],
    labels: Sequence[str],
    names: Sequence[str],
    title: str = "",
    lung_ratios: Sequence[float] | None = None,
):
    """Draw the panel and return the matplotlib figure (the caller saves and closes it).

    Args:
        grays: N (S, S) uint8 images.
        overlays: N (S, S, 3) uint8 CAM overlays.
        probs: (N, K) class probabilities in model output order.
        classes: Class names in output order.
        labels: True class names ("" when unknown).
        names: Short name shown for each image (file name).
        title: Figure title (method, layer, target).
        lung_ratios: Lung attention ratio per image (NaN: no mask), shown above the overlay.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n, k = len(grays), len(classes)
    row_h = max(2.3, 0.32 * k + 1.4)
    fig, axes = plt.subplots(
        n, 3, figsize=(10.0, row_h * n + 1.4), squeeze=False,
        gridspec_kw={"width_ratios": [1.0, 1.0, 1.35], "wspace": 0.08, "hspace": 0.45},
    )  # fmt: skip
    for i in range(n):
        pred = int(np.argmax(probs[i]))
        label = labels[i]
        known = label in classes
        correct = known and classes[pred] == label
        verdict = "correct" if correct else ("incorrect" if known else "label unknown")
        ax_img, ax_ov, ax_bar = axes[i]
        ax_img.imshow(grays[i], cmap="gray", vmin=0, vmax=255)
        ax_img.set_title(names[i], fontsize=10, loc="left")
        colour = _CORRECT if correct else (_WRONG if known else "black")
        ax_img.set_ylabel(
            f"{(label or '?').replace('_', ' ')}\n{verdict}",
            fontsize=12,
            fontweight="bold",
            color=colour,
        )
        ax_ov.imshow(overlays[i])
        if lung_ratios is not None and np.isfinite(lung_ratios[i]):
            ax_ov.set_title(f"lung attention {lung_ratios[i]:.2f}", fontsize=10, loc="left")
        for ax in (ax_img, ax_ov):
            ax.set_xticks([])
            ax.set_yticks([])
        colors = [_OTHER] * k
        colors[pred] = _CORRECT if correct or not known else _WRONG
        y = np.arange(k)
        ax_bar.barh(y, probs[i], color=colors, height=0.65)
        ax_bar.set_xlim(0, 1)
        ax_bar.set_yticks(y)
        ax_bar.set_yticklabels(
            [c.replace("_", " ") + (" (true)" if c == label else "") for c in classes], fontsize=10
        )
        for tick, c in zip(ax_bar.get_yticklabels(), classes, strict=True):
            if c == label:
                tick.set_fontweight("bold")
        ax_bar.invert_yaxis()
        ax_bar.yaxis.tick_right()
        ax_bar.tick_params(axis="x", labelsize=9)
        for yy, p in zip(y, probs[i], strict=True):
            inside = p > 0.85  # label inside the bar's end, in white, where it would not fit
            ax_bar.text(
                p - 0.02 if inside else p + 0.02, yy, f"{p:.2f}", va="center", fontsize=9,
                ha="right" if inside else "left", color="white" if inside else "black",
            )  # fmt: skip
        ax_bar.spines[["top", "left"]].set_visible(False)
        if i == 0:
            ax_img.set_title(f"image\n{names[i]}", fontsize=10, loc="left")
            ax_ov.set_title("CAM (blue low, red high)" + (
                f"\nlung attention {lung_ratios[i]:.2f}"
                if lung_ratios is not None and np.isfinite(lung_ratios[i]) else ""
            ), fontsize=10, loc="left")  # fmt: skip
            ax_bar.set_title("class probability", fontsize=10, loc="left")
    if title:
        fig.suptitle(title, fontsize=12, y=1 - 0.2 / (row_h * n + 1.4))
    fig.subplots_adjust(left=0.08, right=0.86, top=1 - 1.2 / (row_h * n + 1.4), bottom=0.03)
    return fig
