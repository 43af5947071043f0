"""What every stage shares and no stage owns.

* ``errors``      one-line user errors (``QecatError``, ``CatalogError``, ``InputError``)
* ``atomic``      atomic writes (temporary name, then ``os.replace``): text, JSON, Parquet, folders
* ``locks``       ``fcntl`` file locks that say who holds them
* ``hashing``     content hashes; noise-proof position bins for structure hashes and sids
* ``tags``        OC20 tag constants (0 subsurface, 1 surface, 2 adsorbate) and inferred tags
* ``structures``  reading anything ASE reads; writing fairchem ``.aselmdb`` shards
* ``config``      YAML files into pydantic configs with one-line errors
* ``pools``       process pools that notice a dead worker (retry once, else a one-line error naming the lost tasks)

Imports nothing from the other stages.
"""
