"""Lung segmentation: a U-Net trained from scratch on image/mask pairs (``cxrlab segment``).

* :mod:`cxrlab.segment.data`: pair discovery and checks (missing, misaligned, non-binary, empty).
* :mod:`cxrlab.segment.model`: :class:`SegMeta`, the network, its checkpoint, the forward pass,
  Dice/IoU, and :func:`masks_for_files` (masks where files have none).
* :mod:`cxrlab.segment.train`: ``segment train`` (a run directory like a classifier's).
* :mod:`cxrlab.segment.apply`: ``segment predict`` (masks and overlays) and ONNX export.

Nothing here is imported by ``cxrlab.segment`` itself, so the explain side may use the model
module without loading the training code.
"""
