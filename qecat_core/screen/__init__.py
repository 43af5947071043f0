"""Stage 4, screening: predictions for every candidate of a catalog that a model has not scored yet.

Takes a :class:`~qecat_core.screen.config.ScreenConfig`; gives the results dataset under
``results/`` (predictions, rankings, verification, run summaries; :mod:`qecat_core.results`).

* ``config``     the typed screen config and SLURM settings (shared by CLI, Prefect flow and SLURM)
* ``plan``       enumerate (cached), plan what is new, run the shard jobs
* ``jobs``       predictors and the job functions submitit runs
* ``executors``  submitit executors (local, SLURM arrays chunked under MaxArraySize, inline)
* ``collect``    publish new predictions exactly once
* ``rank``       AdsorbML ranking and movers
* ``verify``     the best systems relaxed with the labeller
* ``pipeline``   ``run_screen``: every step, and the run summary
"""
