"""Applying a trained model: one predictor (PyTorch or ONNX), predicting files, ONNX export.

* :mod:`cxrlab.inference.predictor`: :class:`Predictor`, :func:`load_predictor` and the one
  precision policy every caller shares.
* :mod:`cxrlab.inference.split`: :func:`predict_split`, a run's own split (``predictions/*.csv``).
* :mod:`cxrlab.inference.files`: ``cxrlab predict`` (files and folders, streaming, to CSV).
* :mod:`cxrlab.inference.export`: ``cxrlab export --onnx``.

Importing this package imports no PyTorch; the ONNX path never does.
"""
