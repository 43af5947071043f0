"""The ``qecat`` command line (typer): one subcommand per pipeline stage.

* ``main``    validate, enumerate, describe, label, dataset, adsorbates, screen, query
* ``model``   train, evaluate, predict, predict-text
* ``common``  one-line errors and quiet library warnings

``python -m qecat_core.cli`` runs the same command as the ``qecat`` console script.
"""
