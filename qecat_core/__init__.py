"""qecat: QE-Catalytic adsorption-energy model and high-throughput screening pipeline.

Units throughout: energies in eV, lengths in Å. OC20 conventions: tags 0 = fixed subsurface,
1 = surface (free), 2 = adsorbate; adsorbates named by OC20 SMILES such as ``*OH``.
"""

import os as _os

# One BLAS/OpenMP thread per process unless the user says otherwise: EMT relaxations of ~40 atoms
# are ~15x slower with multi-threaded OpenBLAS, and we parallelise over processes instead.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_os.environ.setdefault("WANDB_MODE", "disabled")

__version__ = "0.1.0"
