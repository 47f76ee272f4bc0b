"""One look for every paper output: journal widths, print font sizes, palette, class names.

* Widths: a single journal column is 3.5 in, a double column (full page width) 7.2 in
  (Radiology, RSNA journals, most Elsevier/Springer titles). Figures are drawn at the size they
  are printed at, so a font size here is the size on paper.
* Fonts: 8 pt body, never under 7 pt (tick labels, legends, cell annotations).
* Palette: Okabe and Ito's colour-blind-safe set (Wong, Nature Methods 2011); sequential maps
  are ``cividis`` (heat maps) and ``viridis`` (CAM), both perceptually uniform and readable in
  every common colour-vision deficiency; jet is not used.
* Class names: :func:`class_label` is the one spelling shown to a reader, in tables, figures and
  the report (``Lung_Opacity`` -> ``Lung Opacity``); files keep the dataset's folder names.
"""

from __future__ import annotations

import textwrap

#: Journal column widths, inches.
SINGLE_COLUMN = 3.5
DOUBLE_COLUMN = 7.2
#: Font sizes at print size, points.
FONT_SIZE = 8
MIN_FONT_SIZE = 7
#: Raster resolution of PNG output.
DPI = 300
#: Okabe-Ito colours (black last; yellow left out: too pale on white for thin lines).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
HEATMAP_CMAP = "cividis"
CAM_CMAP = "viridis"


def class_label(name: str) -> str:
    """The display spelling of a class name: underscores as spaces (``Lung_Opacity``)."""
    return str(name).replace("_", " ")


def wrapped_label(name: str, width: int = 10) -> str:
    """:func:`class_label` wrapped onto lines of ``width`` characters (axis ticks)."""
    return textwrap.fill(class_label(name), width=width, break_long_words=False)
