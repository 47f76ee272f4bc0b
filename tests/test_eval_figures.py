"""Figures: PNG (300 dpi) + PDF written, journal widths, fonts >= 7 pt at print size, no baked-in
titles, class names readable and not overlapping, and the defects the report issue listed."""

import itertools

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from PIL import Image

from cxrlab.evaluation.calibration import apply_temperature, reliability_curve
from cxrlab.reports import figures as F

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


@pytest.fixture(scope="module")
def predictions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    z = rng.normal(size=(200, 4)) * 2
    z[np.arange(200), y] += 2
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return np.array(CLASSES, dtype=object)[y], p


def _texts(fig):
    FigureCanvasAgg(fig).draw()
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def _assert_readable(fig):
    texts = _texts(fig)
    assert texts
    small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < 7]
    assert not small
    width = fig.get_size_inches()[0]
    assert min(abs(width - 3.5), abs(width - 7.2)) < 1e-6, width
    assert not (fig._suptitle and fig._suptitle.get_text())
    assert not small


def _assert_no_overlap(labels):
    boxes = [t.get_window_extent() for t in labels if t.get_text()]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)


def test_confusion_matrix_counts_and_normalised(tmp_path):
    cm = np.array([[50, 2, 1, 0], [3, 40, 5, 2], [0, 4, 60, 1], [1, 0, 2, 30]])
    for normalize in (False, True):
        fig = F.plot_confusion_matrix(cm, CLASSES, normalize=normalize)
        _assert_readable(fig)
        ax = fig.axes[0]
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks == ["COVID", "Lung\nOpacity", "Normal", "Viral\nPneumonia"]
        _assert_no_overlap(ax.get_xticklabels())
        _assert_no_overlap(ax.get_yticklabels())
        cells = [t.get_text() for t in ax.texts]
        assert ("94.3%\n(50)" in cells) if normalize else ("50" in cells)  # 50 / 53 = 94.3%
    paths = F.save_figure(fig, tmp_path / "figures" / "confusion_matrix")
    assert [p.name for p in paths] == ["confusion_matrix.png", "confusion_matrix.pdf"]
    with Image.open(paths[0]) as im:
        assert round(im.info["dpi"][0]) == 300
    assert paths[1].read_bytes()[:4] == b"%PDF"


def test_confusion_matrix_with_an_empty_row():
    cm = np.array([[3, 1], [0, 0]])
    fig = F.plot_confusion_matrix(cm, ["A", "B"], normalize=True)
    assert "n/a" in [t.get_text() for t in fig.axes[0].texts]


def test_roc_and_pr_legends_carry_auc(predictions):
    y, p = predictions
    roc = F.plot_roc_curves(y, p, labels=CLASSES)
    _assert_readable(roc)
    legend = [t.get_text() for t in roc.axes[0].get_legend().get_texts()]
    assert len(legend) == 6 and legend[1].startswith("Lung Opacity (AUC 0.")
    assert legend[-2].startswith("macro average (mean AUC") and legend[-1] == "chance"
    assert roc.axes[0].get_title() == ""
    pr = F.plot_pr_curves(y, p, labels=CLASSES)
    _assert_readable(pr)
    assert pr.axes[0].get_title() == ""
    pr_legend = pr.axes[0].get_legend()
    assert pr_legend.get_title().get_text().startswith("macro AP")
    assert "prevalence (chance level)" in [t.get_text() for t in pr_legend.get_texts()]


def test_reliability_before_after(predictions):
    y, p = predictions
    before = reliability_curve(y, p, labels=CLASSES)
    after = reliability_curve(y, apply_temperature(p, 1.5), labels=CLASSES)
    fig = F.plot_reliability(before, after, ece_before=0.1, ece_after=0.02, temperature=1.5)
    _assert_readable(fig)
    assert len(fig.axes) == 2
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert "ECE = 0.100" in titles[0] and "T = 1.50" in titles[1]
    # bin counts are printed, and the gap bars are unfilled outlines (the accuracy bar's top
    # stays visible)
    counts = [int(t.get_text()) for t in fig.axes[0].texts]
    assert sum(counts) == int(before["count"].sum())
    gap = [
        b
        for b in fig.axes[0].patches
        if b.get_label() == "gap to mean confidence" or (not b.get_fill() and b.get_hatch())
    ]
    assert gap and not any(b.get_fill() for b in gap)
    single = F.plot_reliability(before)
    assert len(single.axes) == 1 and single.get_size_inches()[0] == 3.5


def test_training_curves_handle_missing_columns():
    full = pd.DataFrame(
        {"epoch": [0, 1, 2], "train_loss": [1.0, 0.8, 0.6], "val_loss": [1.1, 0.9, 0.8],
         "val_acc": [0.5, 0.6, 0.7], "val_f1": [0.4, 0.5, 0.6], "lr": [1e-3, 1e-3, 1e-4]}
    )  # fmt: skip
    fig = F.plot_training_curves(full)
    _assert_readable(fig)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == ["Training loss", "Validation loss", "Validation metrics", "Learning rate"]
    assert fig.axes[0].lines[0].get_xdata().tolist() == [1, 2, 3]  # epochs shown from 1
    marked = F.plot_training_curves(full, chosen_epoch=2, train_loss_note="label smoothing 0.1")
    for ax in marked.axes:  # the chosen epoch is a vertical line in every panel
        assert any(list(line.get_xdata()) == [2, 2] for line in ax.lines)
    assert "label smoothing 0.1" in marked.axes[0].get_ylabel()
    partial = F.plot_training_curves(full[["epoch", "val_loss"]])
    assert [ax.get_title(loc="left") for ax in partial.axes] == ["Validation loss"]
    assert len(partial.axes[0].lines) == 1
    assert F.plot_training_curves(pd.DataFrame({"epoch": [0, 1], "other": [1, 2]})) is None
    no_epoch = F.plot_training_curves(pd.DataFrame({"train_loss": [1.0, np.nan, 0.5]}))
    assert no_epoch.axes[0].lines[0].get_xdata().tolist() == [1, 3]


def test_display_name():
    assert F.display_name("Viral Pneumonia") == "Viral\nPneumonia"
    assert F.display_name("Lung_Opacity") == "Lung\nOpacity"
    assert F.display_name("COVID") == "COVID"


def test_palette_is_colour_blind_safe_and_class_names_have_one_spelling(predictions):
    from cxrlab.reports.style import PALETTE, class_label
    from cxrlab.reports.tables import per_class_table

    y, p = predictions
    roc = F.plot_roc_curves(y, p, labels=CLASSES)
    colours = [matplotlib.colors.to_hex(line.get_color()) for line in roc.axes[0].lines[:4]]
    assert colours == [c.lower() for c in PALETTE[:4]]
    assert class_label("Lung_Opacity") == "Lung Opacity"
    table = per_class_table({"Lung_Opacity": {"support": 3}})
    assert table["Class"].tolist() == ["Lung Opacity"]


def test_cam_panel_fits_a_page_with_colorbar_and_lung_outline():
    from matplotlib.collections import LineCollection
    from matplotlib.contour import ContourSet

    from cxrlab.reports.panel import cam_panel

    rng = np.random.default_rng(0)
    size = 128  # displayed above the model's 32 px grid
    grays = [rng.integers(0, 255, (size, size), dtype=np.uint8) for _ in range(3)]
    mask = np.zeros((size, size), dtype=bool)
    mask[30:90, 20:60] = True
    probs = rng.dirichlet(np.ones(4), 3)
    fig = cam_panel(
        grays, None, probs, classes=CLASSES, labels=["COVID", "Lung_Opacity", ""],
        names=["a.png", "b.png", "c.png"], cams=[rng.random((4, 4)) for _ in range(3)],
        masks=[mask, None, None], lung_ratios=np.array([0.5, np.nan, np.nan]),
    )  # fmt: skip
    FigureCanvasAgg(fig).draw()
    assert tuple(fig.get_size_inches())[0] == 7.2 and not fig._suptitle
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert min(t.get_fontsize() for t in texts) >= 7
    shown = [t.get_text() for t in texts]
    assert "Lung Opacity\ncorrect" in shown or "Lung Opacity\nincorrect" in shown
    assert not any("Lung_Opacity" == s for s in shown if "\n" not in s and ".png" not in s)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert images[0].get_array().shape == (size, size)  # the radiograph at display size
    assert any(im.get_cmap().name == "viridis" for im in images)
    assert any("CAM" in ax.get_xlabel() for ax in fig.axes)  # the colorbar
    outlines = [c for ax in fig.axes for c in ax.collections
                if isinstance(c, (ContourSet, LineCollection))]  # fmt: skip
    assert len(outlines) >= 1  # only the first image has a mask
