"""``python -m datasets_scripts``: see :mod:`datasets_scripts.cli`."""

from .cli import main

main()
