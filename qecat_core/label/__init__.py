"""Stage 2, labels: relaxed adsorption energies from a calculator, and the training dataset.

Takes structures (``.aselmdb`` or anything ASE reads); gives ``OUT.parquet`` with OC20-referenced
E_ads (eV) and anomaly flags, and the relaxed structures in ``OUT.aselmdb``.

* ``relax``       the resumable labelling run (clean slabs cached by content hash, process pool)
* ``references``  gas-phase references and OC20 chemical potentials
* ``anomaly``     desorbed / dissociated / surface-changed flags
* ``dataset``     the EMT dataset with OC20-like splits (``qecat dataset build``)
"""
