"""Paper outputs: tables, figures and the CAM panel, drawn from results already computed.

* :mod:`cxrlab.reports.tables`: Markdown and LaTeX (booktabs) tables of metrics with intervals.
* :mod:`cxrlab.reports.figures`: confusion matrices, ROC/PR curves, reliability diagrams,
  training curves (PNG and PDF).
* :mod:`cxrlab.reports.panel`: the CAM paper panel (image, overlay, class probabilities per row).

Nothing here computes a metric or runs a model: evaluation and explanation produce the numbers
and images, these modules lay them out.
"""
