"""OC20 tags inferred for structures that come without them."""

import numpy as np
import pytest
from ase.build import add_adsorbate, fcc111
from ase.constraints import FixAtoms

from qecat_core.common.errors import InputError
from qecat_core.common.tags import ensure_tags, infer_tags


def _slab_with_oh():
    slab = fcc111("Pt", (2, 2, 4), vacuum=8.0)  # ASE tags layers 1 (top) .. 4
    add_adsorbate(slab, "O", 1.3, "fcc")
    add_adsorbate(slab, "H", 2.3, "fcc")
    return slab


def test_ase_layer_tags_are_remapped_to_oc20():
    atoms = ensure_tags(_slab_with_oh())
    tags = atoms.get_tags()
    assert list(tags[-2:]) == [2, 2]
    z = atoms.positions[:, 2]
    assert (tags[:-2] == 1).sum() == 8 and (tags[:-2] == 0).sum() == 8  # upper / lower half
    assert z[tags == 1].min() > z[tags == 0].max()
    fixed = [c for c in atoms.constraints if isinstance(c, FixAtoms)][0].get_indices()
    assert set(fixed) == set(np.nonzero(tags == 0)[0])


def test_existing_fixatoms_defines_subsurface():
    atoms = _slab_with_oh()
    atoms.set_tags(0)
    atoms.set_constraint(FixAtoms(indices=range(4)))  # only the bottom layer fixed
    tags = infer_tags(atoms)
    assert (tags == 0).sum() == 4 and (tags == 1).sum() == 12 and (tags == 2).sum() == 2


def test_valid_oc20_tags_are_kept():
    atoms = _slab_with_oh()
    atoms.set_tags([0] * 12 + [1] * 4 + [2, 2])
    assert list(ensure_tags(atoms).get_tags()) == [0] * 12 + [1] * 4 + [2, 2]


def test_cannot_infer_without_adsorbate_on_top():
    clean = fcc111("Pt", (2, 2, 3), vacuum=8.0)
    clean.set_tags(0)
    with pytest.raises(InputError, match="no adsorbate atoms"):
        infer_tags(clean, "clean.xyz")
    buried = fcc111("Pt", (2, 2, 3), vacuum=8.0)
    buried[0].symbol = "O"  # an O inside the slab is not an adsorbate
    buried.set_tags(0)
    with pytest.raises(InputError, match="buried.xyz: missing tags"):
        infer_tags(buried, "buried.xyz")
