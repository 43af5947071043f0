"""ASE calculators by name (energies in eV, forces in eV/Å): the labellers and the lattice-constant fits.

Takes a *spec* string (``emt``, ``chgnet``, ``MODULE:FACTORY``); gives an ASE calculator.

* ``registry``  spec -> calculator, its version and supported elements; one shared instance per process
* ``emt``       ``FastEMT``: ASE's EMT with whole-array numpy (same energies and forces)
"""
