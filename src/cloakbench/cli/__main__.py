"""``python -m cloakbench.cli``: the same command line as ``cloakbench``."""

from . import app

app()
