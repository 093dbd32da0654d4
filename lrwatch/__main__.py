"""``python -m lrwatch``: the same as the ``lrwatch`` console script."""

from lrwatch.cli import app

app()
