"""The results dataset: its schema, its queries and its pictures.

Takes the Parquet files a screen writes under ``results/``; gives DuckDB views, rankings and plots.

* ``schema``   every column and Arrow type, once (candidates, predictions, rankings, runs, labels)
* ``ranking``  AdsorbML ranking (minimum over placements) and snapshot keys
* ``query``    read-only DuckDB SQL over the results (``qecat query``)
* ``report``   the run summary table, the top of the ranking and the plots

Imports only :mod:`qecat_core.common`, so every stage can write its tables.
"""
