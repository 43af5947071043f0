"""Stage 1, enumeration: adsorbate-slab candidates from a catalog.

Takes a :class:`~qecat_core.catalog.schema.Catalog`; gives ``shards/shard-*.aselmdb`` (OC20-tagged
initial structures) and ``candidates.parquet`` (sid, metadata, configuration text), the same sids
on every machine.

* ``slabs``       slab templates (every termination) and their realisation per bulk
* ``sites``       adsorption sites, merged by environment fingerprint
* ``placement``   an adsorbate put on a site, and the name of the site it sits on
* ``text``        CatBERTa-style configuration strings from a structure
* ``molecules``   a molecule from coordinates -> canonical SMILES with the binding atoms marked (RDKit)
* ``surface``     the lattice (fcc, hcp, bcc) and Miller index of any slab
* ``infer``       the metadata of a bare structure (adsorbate, bulk formula, lattice, Miller index)
* ``describe``    ``qecat describe``: what is given and what is inferred, per structure
* ``candidates``  the enumeration itself: candidates per bulk, shards, index, sampling
"""
