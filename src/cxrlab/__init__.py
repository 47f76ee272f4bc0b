"""cxrlab: train, evaluate and explain chest X-ray classifiers rigorously."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
