"""Stage 0, the catalog: what to screen.

Takes a catalog YAML (``catalogs/*.yaml``); gives a validated :class:`~qecat_core.catalog.schema.Catalog`
and its bulks with lattice constants (Å).

* ``schema``      the pydantic catalog (metals, pairs, prototypes, bulks, facets, adsorbates, placement); no physics
* ``adsorbates``  OC20 adsorbates from fairchem-data-oc, and any molecule by SMILES (RDKit) or file
* ``bulks``       bulk cells of the prototypes, hcp/bcc metals and files, and their lattice constants
* ``files``       structure files a catalog names (CIF/POSCAR bulks, XYZ molecules), read and hashed
"""
