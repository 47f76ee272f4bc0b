"""``cxrlab serve``: the local web page (prediction itself is :mod:`cxrlab.inference`)."""
