"""``python -m cxrlab``."""

from cxrlab.cli import main

main()
