"""Stage 0, the catalog: what to screen.

Takes a catalog YAML (``catalogs/*.yaml``); gives a validated :class:`~qecat_core.catalog.schema.Catalog`
and its bulks with lattice constants (Å).

* ``schema``      the pydantic catalog (metals, pairs, prototypes, facets, adsorbates, placement); no physics
* ``adsorbates``  OC20 adsorbates from fairchem-data-oc (geometry and binding atoms)
* ``bulks``       bulk cells of the prototypes and their lattice constants (Vegard or relaxed)
"""
