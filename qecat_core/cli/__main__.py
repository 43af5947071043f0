"""``python -m qecat_core.cli``: the ``qecat`` command without its console script."""

from qecat_core.cli.main import app

app(prog_name="qecat")
